"""Graphcore IPU execution through PopTorch (and popdist under poprun).

PopTorch comes with the Poplar SDK, not from PyPI, so it is imported only when ``--device ipu`` is asked for, and a
missing PopTorch is an error that says what to install. The mappings from `IpuSettings` to ``poptorch.Options``
calls and from `OptimizerSettings` to a ``poptorch.optim`` optimizer are pure functions of their typed arguments and
the module handed in, so they are unit-tested with a recording stand-in for PopTorch; the hardware path itself is not
exercised in CI.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ipu_cnn.backends.base import Criterion, MixFn, StepResult
from ipu_cnn.backends.distributed import DistContext, under_poprun
from ipu_cnn.backends.optim import OptimizerSettings, parameter_groups

POPTORCH_MISSING = ("poptorch is not installed; IPU support needs the Poplar SDK's PopTorch wheel — use --device cpu "
                    "or cuda")

#: PopART's ``autoRecomputation`` values for ``--recompute-mode`` (Standard, RecomputeAll), as the Graphcore app set.
_RECOMPUTATION = {"auto": 1, "manual": 3}


def import_poptorch() -> ModuleType:
    """``import poptorch``, or a `RuntimeError` that says PopTorch comes with the Poplar SDK."""
    try:
        import poptorch  # type: ignore[import-not-found]
    except ImportError as error:
        raise RuntimeError(POPTORCH_MISSING) from error
    return poptorch


@dataclass(frozen=True)
class IpuSettings:
    """What ``poptorch.Options`` is built from (the options of the same names; inference leaves the training ones
    at their defaults)."""

    replicas: int = 1
    device_iterations: int = 1
    seed: int = 0
    precision: str = "32.32"
    gradient_accumulation: int = 1
    auto_loss_scaling: bool = False
    half_partial: bool = False
    enable_stochastic_rounding: bool = False
    recompute_mode: str = "none"
    available_memory_proportion: float | None = None
    executable_cache_dir: str | None = None
    #: inference on data made on the IPU itself (the benchmark's ``--data synthetic``): no host I/O at all
    synthetic_data: bool = False


def ipu_options(settings: IpuSettings, poptorch: ModuleType, *, training: bool = True,
                popdist: ModuleType | None = None) -> Any:
    """Build ``poptorch.Options`` for a run: replication, device iterations, gradient accumulation with mean
    reduction, partials type, stochastic rounding, automatic loss scaling, recomputation, memory proportion, seed,
    executable cache and output mode.

    Args:
        settings: the run's IPU settings.
        poptorch: the PopTorch module (or a stand-in exposing the same names).
        training: options for ``trainingModel`` (accumulation, loss scaling) or for ``inferenceModel``.
        popdist: the popdist module when running under poprun; its ``poptorch.Options`` sets the instance's
            replicas and the distributed environment.
    """
    s = settings
    opts = popdist.poptorch.Options() if popdist is not None else poptorch.Options()
    if popdist is None:
        opts.replicationFactor(int(s.replicas))
    opts.deviceIterations(int(s.device_iterations))
    opts.randomSeed(int(s.seed))
    if training:
        opts.Training.gradientAccumulation(int(s.gradient_accumulation))
        opts.Training.accumulationAndReplicationReductionType(poptorch.ReductionType.Mean)
        if s.auto_loss_scaling:
            opts.Training.setAutomaticLossScaling(True)
    if s.precision.startswith("16"):
        if s.half_partial:
            opts.Precision.setPartialsType(torch.float16)
        else:
            opts.Precision.setPartialsType(torch.float32)
    if s.enable_stochastic_rounding:
        opts.Precision.enableStochasticRounding(True)
    if training and s.recompute_mode in _RECOMPUTATION:
        opts._Popart.set("autoRecomputation", _RECOMPUTATION[s.recompute_mode])
    if s.available_memory_proportion:
        opts.setAvailableMemoryProportion({"IPU0": float(s.available_memory_proportion)})
    cache = s.executable_cache_dir
    if cache:
        opts.enableExecutableCaching(str(cache))
    if s.synthetic_data and not training:
        opts.enableSyntheticData(True)
    opts.outputMode(poptorch.OutputMode.All)
    return opts


def ipu_optimizer(settings: OptimizerSettings, precision: str, param_groups: Iterable[dict[str, Any]],
                  poptorch: ModuleType) -> Any:
    """The ``poptorch.optim`` optimizer for ``--optimizer`` with the precision's state types and static loss scale.

    ``sgd`` keeps separate accumulation and velocity tensors (``use_combined_accum=False``: PyTorch's SGD maths);
    ``sgd_combined`` merges them to save memory, as in the Graphcore app. ``rmsprop_tf`` is PopTorch's TensorFlow
    variant (epsilon inside the square root, learning rate in the momentum).
    """
    name = settings.name
    groups = list(param_groups)
    state_type = torch.float16 if precision == "16.16" else torch.float32
    scale = float(settings.loss_scaling) if settings.loss_scaling else 1.0
    common: dict[str, Any] = {"lr": float(settings.lr), "weight_decay": float(settings.weight_decay),
                              "loss_scaling": scale}
    if name in ("sgd", "sgd_combined"):
        return poptorch.optim.SGD(groups, momentum=float(settings.momentum), use_combined_accum=name == "sgd_combined",
                                  velocity_accum_type=state_type, **common)
    if name == "adamw":
        return poptorch.optim.AdamW(groups, eps=float(settings.eps), accum_type=state_type,
                                    first_order_momentum_accum_type=state_type,
                                    second_order_momentum_accum_type=torch.float32, **common)
    if name in ("rmsprop", "rmsprop_tf"):
        return poptorch.optim.RMSprop(groups, alpha=float(settings.rmsprop_decay), eps=float(settings.eps),
                                      momentum=float(settings.momentum), use_tf_variant=name == "rmsprop_tf",
                                      accum_type=state_type, first_order_momentum_accum_type=state_type,
                                      second_order_momentum_accum_type=torch.float32, **common)
    raise ValueError(f"--optimizer {name!r} has no PopTorch equivalent here: use sgd, sgd_combined, adamw, rmsprop or "
                     "rmsprop_tf")


class _ModelWithLoss(nn.Module):
    """PopTorch needs the loss computed inside the model: ``forward(images, targets) -> (logits, loss)``."""

    def __init__(self, model: nn.Module, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 poptorch: ModuleType) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self._poptorch = poptorch

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> Any:
        logits = self.model(images)
        if targets is None:
            return logits
        loss = self.criterion(logits, targets)
        return logits, self._poptorch.identity_loss(loss, reduction="none")


class IpuBackend:
    """Training and evaluation on IPUs: ``poptorch.trainingModel`` fed with combined host batches.

    One host batch holds ``micro_batch_size x gradient_accumulation x replicas x device_iterations`` samples (the
    loader's batch size for this backend): one call runs ``device_iterations`` optimizer steps on the device.
    Untested in CI (no IPU there); the option and optimizer mappings it uses are.
    """

    name = "ipu"
    channels_last = False
    pin_memory = False

    def __init__(self, settings: IpuSettings, dist: DistContext | None = None, *, eval_batch_size: int,
                 poptorch: ModuleType | None = None) -> None:
        """`eval_batch_size` is the host batch evaluation compiles for (shorter last batches are padded to it);
        `poptorch` replaces the real module (tests)."""
        self.poptorch = poptorch if poptorch is not None else import_poptorch()
        self.settings = settings
        self.eval_batch_size = int(eval_batch_size)
        self.dist = dist or DistContext()
        self.device = torch.device("cpu")  # host tensors: PopTorch moves them
        self.popdist: ModuleType | None = None
        if under_poprun():
            import popdist as popdist_module  # type: ignore[import-not-found]
            import popdist.poptorch  # type: ignore[import-not-found]  # noqa: F401

            self.popdist = popdist_module
        self._inference: Any = None
        self._inference_source: nn.Module | None = None
        self._training_model: Any = None

    def data_shard(self) -> tuple[int, int]:
        """One process feeds all its replicas; under poprun each instance reads its own shard."""
        if self.dist.launcher != "poprun":
            return 0, 1
        return self.dist.rank, self.dist.world_size

    def prepare_model(self, model: nn.Module, training: bool = True) -> nn.Module:
        """Contiguous memory and, for 16.16, half weights (PopTorch compiles the model later, in the steps)."""
        model = model.to(memory_format=torch.contiguous_format)
        if self.settings.precision == "16.16":
            model = model.half()
        return model

    def create_optimizer(self, model: nn.Module, settings: OptimizerSettings) -> Any:
        """The ``poptorch.optim`` optimizer, with the precision's state types and the static loss scale."""
        return ipu_optimizer(settings, self.settings.precision, parameter_groups(model, float(settings.weight_decay)),
                             self.poptorch)

    def create_scaler(self) -> None:
        """None: PopTorch scales losses on the device (``--auto-loss-scaling``, or the optimizer's static scale)."""
        return None

    def create_train_step(self, model: nn.Module, optimizer: Any, criterion: Criterion, *, accumulation: int = 1,
                          scaler: torch.amp.GradScaler | None = None, mix: MixFn | None = None,
                          after_step: Callable[[], None] | None = None) -> IpuTrainStep:
        """The compiled training model's step (gradient accumulation happens on the device: `accumulation` is in
        the settings' ``gradient_accumulation``; `scaler` is unused)."""
        wrapped = _ModelWithLoss(model, criterion, self.poptorch)
        options = ipu_options(self.settings, self.poptorch, training=True, popdist=self.popdist)
        training_model = self.poptorch.trainingModel(wrapped, options=options, optimizer=optimizer)
        self._training_model = training_model
        return IpuTrainStep(training_model, optimizer, mix, after_step)

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.contiguous(), labels

    def release_host_batch(self) -> None:
        return None

    def synchronize(self) -> None:
        return None

    def sync_weights_to_host(self) -> None:
        """Copy the trained weights from the IPUs into the host model (before evaluation and checkpoints)."""
        if self._training_model is not None:
            self._training_model.copyWeightsToHost()
        if self._inference is not None:
            self._inference.copyWeightsToDevice()

    @property
    def fixed_batch(self) -> int:
        """Samples one evaluation or prediction call takes (shorter batches are padded to it)."""
        return self.eval_batch_size

    @property
    def inference_model(self) -> Any:
        """The compiled ``poptorch.inferenceModel`` of the last evaluated model (None before the first call)."""
        return self._inference

    def _infer(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits of `images` through `model` compiled for inference; a short batch is padded to the
        compiled batch size and the padding's outputs dropped."""
        if self._inference is None or self._inference_source is not model:
            options = ipu_options(self.settings, self.poptorch, training=False, popdist=self.popdist)
            self._inference = self.poptorch.inferenceModel(model.eval(), options=options)
            self._inference_source = model
        full = self.eval_batch_size
        n = int(images.shape[0])
        if n < full:
            images = torch.cat([images, images.new_zeros((full - n, *images.shape[1:]))])
        return self._inference(images.contiguous())[:n].float()

    def eval_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> StepResult:
        """Evaluate one batch (plain cross-entropy; PopTorch models are compiled without the training loss)."""
        n = int(labels.shape[0])
        logits = self._infer(model, images)
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        return StepResult(loss, (logits.argmax(1) == labels).sum(), n)

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits on the host of one batch of images."""
        return self._infer(model, images)

    def close(self) -> None:
        """Release the IPUs held by the compiled models."""
        for compiled in (self._inference, self._training_model):
            if compiled is not None:
                compiled.detachFromDevice()


class IpuTrainStep:
    """One host call of the PopTorch training model; pushes learning-rate changes to the device when they happen."""

    def __init__(self, training_model: Any, optimizer: Any, mix: MixFn | None,
                 after_step: Callable[[], None] | None) -> None:
        self.training_model = training_model
        self.optimizer = optimizer
        self.mix = mix
        self.after_step = after_step
        self._sent_lrs = [g["lr"] for g in optimizer.param_groups]

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        if lrs != self._sent_lrs:
            self.training_model.setOptimizer(self.optimizer)
            self._sent_lrs = lrs
        targets: torch.Tensor = labels
        if self.mix is not None:
            images, targets = self.mix(images, labels)
        logits, losses = self.training_model(images.contiguous(), targets)
        n = int(labels.shape[0])
        loss_sum = losses.float().mean() * n
        correct = (logits.float().argmax(dim=1) == labels).sum()
        if self.after_step is not None:
            self.after_step()
        return StepResult(loss_sum, correct, n)


def executable_cache_default() -> str | None:
    """PopTorch's executable cache folder from ``POPTORCH_CACHE_DIR``, if set."""
    return os.environ.get("POPTORCH_CACHE_DIR")
