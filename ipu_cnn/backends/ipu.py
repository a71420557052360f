"""Graphcore IPU execution through PopTorch (and popdist under poprun).

PopTorch comes with the Poplar SDK, not from PyPI, so it is imported only when ``--device ipu`` is asked for, and a
missing PopTorch is an error that says what to install. The mapping from the run's config to ``poptorch.Options``
calls and to a ``poptorch.optim`` optimizer are pure functions of the config and the module handed in, so they are
unit-tested with a recording stand-in for PopTorch; the hardware path itself is not exercised in CI.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from ipu_cnn.backends.base import MixFn, StepResult
from ipu_cnn.backends.distributed import DistContext, under_poprun

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


def ipu_options(config: Mapping[str, Any], poptorch: ModuleType, *, training: bool = True,
                popdist: ModuleType | None = None) -> Any:
    """Build ``poptorch.Options`` for a run: replication, device iterations, gradient accumulation with mean
    reduction, partials type, stochastic rounding, automatic loss scaling, recomputation, memory proportion, seed,
    executable cache and output mode.

    Args:
        config: the resolved run config (keys as the command-line dests).
        poptorch: the PopTorch module (or a stand-in exposing the same names).
        training: options for ``trainingModel`` (accumulation, loss scaling) or for ``inferenceModel``.
        popdist: the popdist module when running under poprun; its ``poptorch.Options`` sets the instance's
            replicas and the distributed environment.
    """
    opts = popdist.poptorch.Options() if popdist is not None else poptorch.Options()
    if popdist is None:
        opts.replicationFactor(int(config["replicas"]))
    opts.deviceIterations(int(config["device_iterations"]))
    opts.randomSeed(int(config["seed"]))
    if training:
        opts.Training.gradientAccumulation(int(config["gradient_accumulation"]))
        opts.Training.accumulationAndReplicationReductionType(poptorch.ReductionType.Mean)
        if config.get("auto_loss_scaling"):
            opts.Training.setAutomaticLossScaling(True)
    if str(config["precision"]).startswith("16"):
        if config.get("half_partial"):
            opts.Precision.setPartialsType(torch.float16)
        else:
            opts.Precision.setPartialsType(torch.float32)
    if config.get("enable_stochastic_rounding"):
        opts.Precision.enableStochasticRounding(True)
    mode = config.get("recompute_mode", "none")
    if training and mode in _RECOMPUTATION:
        opts._Popart.set("autoRecomputation", _RECOMPUTATION[mode])
    proportion = config.get("available_memory_proportion")
    if proportion:
        opts.setAvailableMemoryProportion({"IPU0": float(proportion)})
    cache = config.get("executable_cache_dir")
    if cache:
        opts.enableExecutableCaching(str(cache))
    opts.outputMode(poptorch.OutputMode.All)
    return opts


def ipu_optimizer(config: Mapping[str, Any], param_groups: Iterable[dict[str, Any]], poptorch: ModuleType) -> Any:
    """The ``poptorch.optim`` optimizer for ``--optimizer`` with the precision's state types and static loss scale.

    ``sgd`` keeps separate accumulation and velocity tensors (``use_combined_accum=False``: PyTorch's SGD maths);
    ``sgd_combined`` merges them to save memory, as in the Graphcore app. ``rmsprop_tf`` is PopTorch's TensorFlow
    variant (epsilon inside the square root, learning rate in the momentum).
    """
    name = config["optimizer"]
    groups = list(param_groups)
    lr = float(config["lr_effective"])
    wd = float(config["weight_decay"])
    state_type = torch.float16 if config["precision"] == "16.16" else torch.float32
    scale = float(config["loss_scaling"]) if config.get("loss_scaling") else 1.0
    common: dict[str, Any] = {"lr": lr, "weight_decay": wd, "loss_scaling": scale}
    if name in ("sgd", "sgd_combined"):
        return poptorch.optim.SGD(groups, momentum=float(config["momentum"]), use_combined_accum=name == "sgd_combined",
                                  velocity_accum_type=state_type, **common)
    if name == "adamw":
        return poptorch.optim.AdamW(groups, eps=float(config["optimizer_eps"]), accum_type=state_type,
                                    first_order_momentum_accum_type=state_type,
                                    second_order_momentum_accum_type=torch.float32, **common)
    if name in ("rmsprop", "rmsprop_tf"):
        return poptorch.optim.RMSprop(groups, alpha=float(config["rmsprop_decay"]), eps=float(config["optimizer_eps"]),
                                      momentum=float(config["momentum"]), use_tf_variant=name == "rmsprop_tf",
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

    def __init__(self, config: Mapping[str, Any], dist: DistContext | None = None) -> None:
        self.poptorch = import_poptorch()
        self.config = config
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

    def prepare_model(self, model: nn.Module) -> nn.Module:
        model = model.to(memory_format=torch.contiguous_format)
        if self.config["precision"] == "16.16":
            model = model.half()
        return model

    def create_train_step(self, model: nn.Module, optimizer: Any,
                          criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          mix: MixFn | None = None, after_step: Callable[[], None] | None = None) -> IpuTrainStep:
        wrapped = _ModelWithLoss(model, criterion, self.poptorch)
        options = ipu_options(self.config, self.poptorch, training=True, popdist=self.popdist)
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

    def eval_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> StepResult:
        """Evaluate one batch; a short last batch is padded to the compiled batch size and the padding ignored."""
        if self._inference is None or self._inference_source is not model:
            options = ipu_options(self.config, self.poptorch, training=False, popdist=self.popdist)
            self._inference = self.poptorch.inferenceModel(model.eval(), options=options)
            self._inference_source = model
        full = int(self.config["validation_loader_batch_size"])
        n = int(labels.shape[0])
        if n < full:
            pad = images.new_zeros((full - n, *images.shape[1:]))
            images = torch.cat([images, pad])
        logits = self._inference(images.contiguous())[:n].float()
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        return StepResult(loss, (logits.argmax(1) == labels).sum(), n)

    def detach(self) -> None:
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
