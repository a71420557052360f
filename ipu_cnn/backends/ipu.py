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
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ipu_cnn.backends.base import Criterion, MixFn, StepResult
from ipu_cnn.backends.distributed import DistContext, under_poprun
from ipu_cnn.backends.ipu_model import annotate_for_ipu
from ipu_cnn.backends.optim import OptimizerSettings, parameter_groups

POPTORCH_MISSING = ("poptorch is not installed; IPU support needs the Poplar SDK's PopTorch wheel — use --device cpu "
                    "or cuda")

#: PopART's ``autoRecomputation`` values for ``--recompute-mode`` (Standard, RecomputeAll), as the Graphcore app set.
_RECOMPUTATION = {"auto": 1, "manual": 3}
#: ``--exchange-memory-target``: Poplar's ``opt.internalExchangeOptimisationTarget`` values.
EXCHANGE_MEMORY_TARGETS: tuple[str, ...] = ("cycles", "balanced", "memory")
#: ``--offline-target-ipu-version``: what ``Options.useOfflineIpuTarget`` takes (1: Mk1, 2: Mk2, 21: Bow / Mk2 with
#: FP8 support).
IPU_VERSIONS: tuple[int, ...] = (1, 2, 21)


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
    #: data made on the IPU itself (``--data synthetic``, training and the benchmark): no host I/O at all
    synthetic_data: bool = False
    #: module names where pipeline stages 1, 2, ... begin (one IPU per stage); empty: the model on one IPU
    pipeline_splits: tuple[str, ...] = ()
    #: module names (or regular expressions) whose outputs are kept for the backward pass; the rest is recomputed
    recompute_checkpoints: tuple[str, ...] = ()
    exchange_memory_target: str | None = None
    num_io_tiles: int = 0
    #: compile for an offline target of this IPU version, without attaching to IPUs (None: run on hardware)
    offline_target_ipu_version: int | None = None
    compile_only: bool = False
    #: folder for PopVision reports (None: no profile)
    profile_dir: str | None = None
    offload_optimizer: bool = False
    enable_optimizer_rts: bool = False
    enable_fp_exceptions: bool = False

    @property
    def stages(self) -> int:
        """Pipeline stages, one IPU each: IPUs per replica."""
        return len(self.pipeline_splits) + 1

    def memory_proportions(self) -> dict[str, float]:
        """``setAvailableMemoryProportion``'s mapping: one value for every stage's IPU, or one value per stage."""
        props = memory_proportions(self.available_memory_proportion)
        if not props:
            return {}
        if len(props) == 1:
            return {f"IPU{i}": props[0] for i in range(self.stages)}
        return {f"IPU{i}": p for i, p in enumerate(props)}


def memory_proportions(value: float | Sequence[float] | None) -> tuple[float, ...]:
    """``--available-memory-proportion`` as a tuple (a config file or older caller may give one number)."""
    if value is None:
        return ()
    if isinstance(value, (int, float)):
        return (float(value),)
    return tuple(float(v) for v in value)


def check_ipu_settings(settings: IpuSettings) -> None:
    """The checks PopTorch would make only at compile time (or not at all), made before anything is built; each
    `ValueError` names the flag and the fix."""
    s = settings
    props = memory_proportions(s.available_memory_proportion)
    for p in props:
        if not 0.0 < p <= 1.0:
            raise ValueError(f"--available-memory-proportion must be in (0, 1], got {p}")
    if len(props) > 1 and len(props) != s.stages:
        raise ValueError(f"--available-memory-proportion: give one value, or one per pipeline stage ({s.stages} "
                         f"stages from {len(s.pipeline_splits)} --pipeline-splits), got {len(props)}")
    if s.exchange_memory_target is not None and s.exchange_memory_target not in EXCHANGE_MEMORY_TARGETS:
        raise ValueError(f"--exchange-memory-target must be one of {', '.join(EXCHANGE_MEMORY_TARGETS)}, got "
                         f"{s.exchange_memory_target!r}")
    if s.num_io_tiles and not (32 <= s.num_io_tiles <= 192 and s.num_io_tiles % 2 == 0):
        raise ValueError(f"--num-io-tiles must be 0 (no I/O overlap) or an even number from 32 to 192, got "
                         f"{s.num_io_tiles}")
    if s.offline_target_ipu_version is not None and s.offline_target_ipu_version not in IPU_VERSIONS:
        raise ValueError(f"--offline-target-ipu-version must be one of {', '.join(map(str, IPU_VERSIONS))} (1: Mk1, "
                         f"2: Mk2, 21: Bow), got {s.offline_target_ipu_version}")
    if len(set(s.pipeline_splits)) != len(s.pipeline_splits):
        raise ValueError(f"--pipeline-splits names a module twice: {' '.join(s.pipeline_splits)}")


#: IPU options that CPU/CUDA runs ignore, and what the run does instead (``--compile-only`` and ``--profile`` are
#: refused there instead, by the config checks).
_IGNORED_OFF_IPU: tuple[tuple[str, str, str], ...] = (
    ("pipeline_splits", "--pipeline-splits", "pipeline stages spread the model over several IPUs; here the whole "
     "model runs on one device"),
    ("recompute_checkpoints", "--recompute-checkpoints", "recomputation saves IPU memory; here every activation is "
     "kept for the backward pass"),
    ("recompute_mode", "--recompute-mode", "recomputation saves IPU memory; here every activation is kept"),
    ("available_memory_proportion", "--available-memory-proportion", "it sizes IPU tile memory for convolutions"),
    ("exchange_memory_target", "--exchange-memory-target", "it tunes the IPU's on-chip exchange"),
    ("num_io_tiles", "--num-io-tiles", "I/O tiles are an IPU's; here the host copy overlaps compute through pinned "
     "memory already"),
    ("offload_optimizer", "--offload-optimizer", "it moves IPU optimizer state to streaming memory; here it stays in "
     "device memory"),
    ("enable_optimizer_rts", "--enable-optimizer-rts", "it shards IPU optimizer state over replicas; here each "
     "process keeps its own copy"),
    ("offline_target_ipu_version", "--offline-target-ipu-version", "it is the target of an IPU compilation"),
)


def ignored_ipu_options(options: Any, device_type: str) -> list[str]:
    """One line per IPU-only option set on a CPU/CUDA run, saying what the run does instead (none on IPUs).
    `options` is the training application's `RunOptions` or the inference application's options (which lack the
    training-only ones)."""
    if device_type == "ipu":
        return []
    defaults = {"recompute_mode": "none", "num_io_tiles": 0}
    lines = []
    for key, flag, why in _IGNORED_OFF_IPU:
        value = getattr(options, key, None)
        if value in (None, False, [], ()) or value == defaults.get(key):
            continue
        lines.append(f"{flag} ignored on {device_type}: {why}")
    return lines


def profile_engine_options(directory: str) -> dict[str, str]:
    """Poplar engine options that write a PopVision Graph Analyser report (compilation and execution) into
    `directory`, letting a graph that does not fit compile anyway so its report shows where memory went."""
    return {"autoReport.directory": str(directory), "autoReport.all": "true", "debug.allowOutOfMemory": "true"}


def offline_ipu_version(settings: IpuSettings, poptorch: ModuleType) -> int:
    """The IPU version `--compile-only` targets: ``--offline-target-ipu-version``, else the version of the IPUs in
    this machine (PopTorch's ``ipuHardwareVersion``), else an error saying to give the version."""
    if settings.offline_target_ipu_version is not None:
        return int(settings.offline_target_ipu_version)
    found = int(poptorch.ipuHardwareVersion())
    if found not in IPU_VERSIONS:
        raise ValueError("--compile-only: no IPU here to read the target version from; add "
                         "--offline-target-ipu-version 2 (Mk2) or 21 (Bow)")
    return found


def ipu_options(settings: IpuSettings, poptorch: ModuleType, *, training: bool = True,
                popdist: ModuleType | None = None) -> Any:
    """Build ``poptorch.Options`` for a run: replication, device iterations, gradient accumulation with mean
    reduction, partials type, stochastic rounding, floating-point exceptions, automatic loss scaling, recomputation,
    memory proportion per stage, exchange target and profiling (engine options), I/O tiles, optimizer-state location
    and sharding, offline compilation, synthetic data, seed, executable cache and output mode.

    Args:
        settings: the run's IPU settings (checked by `check_ipu_settings` here).
        poptorch: the PopTorch module (or a stand-in exposing the same names).
        training: options for ``trainingModel`` (accumulation, loss scaling) or for ``inferenceModel``.
        popdist: the popdist module when running under poprun; its ``poptorch.Options`` sets the instance's
            replicas and the distributed environment.
    """
    s = settings
    check_ipu_settings(s)
    if popdist is not None:
        opts = popdist.poptorch.Options(ipus_per_replica=s.stages)
    else:
        opts = poptorch.Options()
        opts.replicationFactor(int(s.replicas))
    opts.deviceIterations(int(s.device_iterations))
    opts.randomSeed(int(s.seed))
    if training:
        opts.Training.gradientAccumulation(int(s.gradient_accumulation))
        opts.Training.accumulationAndReplicationReductionType(poptorch.ReductionType.Mean)
        if s.auto_loss_scaling:
            opts.Training.setAutomaticLossScaling(True)
        if s.enable_fp_exceptions:
            opts.Precision.enableFloatingPointExceptions(True)
    if s.precision.startswith("16"):
        if s.half_partial:
            opts.Precision.setPartialsType(torch.float16)
        else:
            opts.Precision.setPartialsType(torch.float32)
    if s.enable_stochastic_rounding:
        opts.Precision.enableStochasticRounding(True)
    # a pipelined model always recomputes (PopART's pipelining); one stage needs explicit recomputation switched on
    if training and s.recompute_mode in _RECOMPUTATION and s.stages == 1:
        opts._Popart.set("explicitRecomputation", True)
        opts._Popart.set("autoRecomputation", _RECOMPUTATION[s.recompute_mode])
    proportions = s.memory_proportions()
    if proportions:
        opts.setAvailableMemoryProportion(proportions)
    engine: dict[str, str] = {}
    if s.exchange_memory_target is not None:
        engine["opt.internalExchangeOptimisationTarget"] = s.exchange_memory_target
    if s.profile_dir is not None:
        engine.update(profile_engine_options(s.profile_dir))
    if engine:
        opts._Popart.set("engineOptions", engine)
    if s.num_io_tiles:
        if s.stages == 1:  # I/O overlap on one IPU as Graphcore ran it; a pipeline keeps its pipelined execution
            opts.setExecutionStrategy(poptorch.ShardedExecution())
        opts._Popart.set("defaultPrefetchBufferingDepth", 3)
        opts.TensorLocations.numIOTiles(int(s.num_io_tiles))
    if training and (s.offload_optimizer or s.enable_optimizer_rts):
        location = poptorch.TensorLocationSettings()
        location.useOnChipStorage(not s.offload_optimizer)
        location.useReplicatedTensorSharding(bool(s.enable_optimizer_rts))
        opts.TensorLocations.setOptimizerLocation(location)
    if s.compile_only:
        opts.useOfflineIpuTarget(offline_ipu_version(s, poptorch))
    cache = s.executable_cache_dir
    if cache:
        opts.enableExecutableCaching(str(cache))
    if s.synthetic_data:
        opts.enableSyntheticData(True)
    opts.outputMode(poptorch.OutputMode.All)
    return opts


def ipu_optimizer(settings: OptimizerSettings, precision: str, param_groups: Iterable[dict[str, Any]],
                  poptorch: ModuleType) -> Any:
    """The ``poptorch.optim`` optimizer for ``--optimizer`` with the precision's state types and static loss scale.

    ``sgd`` keeps separate accumulation and velocity tensors (``use_combined_accum=False``: PyTorch's SGD maths);
    ``sgd_combined`` merges them to save memory, as in the Graphcore app, with the velocity scaled by the loss scale.
    ``rmsprop_tf`` is PopTorch's TensorFlow variant (epsilon inside the square root, learning rate in the momentum).
    """
    name = settings.name
    groups = list(param_groups)
    state_type = torch.float16 if precision == "16.16" else torch.float32
    scale = float(settings.loss_scaling) if settings.loss_scaling else 1.0
    common: dict[str, Any] = {"lr": float(settings.lr), "weight_decay": float(settings.weight_decay),
                              "loss_scaling": scale}
    if name == "sgd":
        return poptorch.optim.SGD(groups, momentum=float(settings.momentum), use_combined_accum=False,
                                  velocity_accum_type=state_type, **common)
    if name == "sgd_combined":  # the combined tensor holds the velocity scaled as the loss is
        return poptorch.optim.SGD(groups, momentum=float(settings.momentum), use_combined_accum=True,
                                  velocity_accum_type=state_type, velocity_scaling=scale, **common)
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
    """PopTorch needs the loss computed inside the model: ``forward(images, targets) -> (logits, loss)``. With I/O
    tiles (`overlap_io`), inputs and outputs are marked to overlap their transfers with the accumulation loop."""

    def __init__(self, model: nn.Module, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 poptorch: ModuleType, overlap_io: bool = False) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self._poptorch = poptorch
        self._overlap = overlap_io

    def _io(self, tensor: torch.Tensor, output: bool) -> torch.Tensor:
        if not self._overlap:
            return tensor
        mode = self._poptorch.OverlapMode.OverlapAccumulationLoop
        mark = self._poptorch.set_overlap_for_output if output else self._poptorch.set_overlap_for_input
        return mark(tensor, mode)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> Any:
        logits = self.model(self._io(images, False))
        if targets is None:
            return self._io(logits, True)
        loss = self.criterion(logits, self._io(targets, False))
        return self._io(logits, True), self._io(self._poptorch.identity_loss(loss, reduction="none"), True)


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
                 poptorch: ModuleType | None = None, popdist: ModuleType | None = None) -> None:
        """`eval_batch_size` is the host batch evaluation compiles for (shorter last batches are padded to it);
        `poptorch` and `popdist` replace the real modules (tests). The settings are checked here, before any
        data is prepared."""
        check_ipu_settings(settings)
        self.poptorch = poptorch if poptorch is not None else import_poptorch()
        self.settings = settings
        self.eval_batch_size = int(eval_batch_size)
        self.dist = dist or DistContext()
        self.device = torch.device("cpu")  # host tensors: PopTorch moves them
        self.popdist: ModuleType | None = popdist
        if popdist is None and under_poprun():
            import popdist as popdist_module  # type: ignore[import-not-found]
            import popdist.poptorch  # type: ignore[import-not-found]  # noqa: F401

            self.popdist = popdist_module
        self._inference: Any = None
        self._inference_source: nn.Module | None = None
        self._training_model: Any = None
        self._optimizer_name = ""

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
        self._optimizer_name = settings.name
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
        options = ipu_options(self.settings, self.poptorch, training=True, popdist=self.popdist)
        self.annotate(model)
        wrapped = _ModelWithLoss(model, criterion, self.poptorch, overlap_io=self.settings.num_io_tiles > 0)
        training_model = self.poptorch.trainingModel(wrapped, options=options, optimizer=optimizer)
        self._training_model = training_model
        return IpuTrainStep(training_model, optimizer, mix, after_step,
                            combined_velocity=self._optimizer_name == "sgd_combined")

    def annotate(self, model: nn.Module) -> None:
        """Pipeline stages and recomputation checkpoints at the settings' module names of the plain network inside
        `model` (once per network; names are checked against it, an unknown one is an error listing the valid
        ones)."""
        from ipu_cnn.models import unwrap_model

        network = unwrap_model(model)
        if getattr(network, "_ipu_cnn_annotated", False):
            return
        annotate_for_ipu(network, self.poptorch, pipeline_splits=self.settings.pipeline_splits,
                         recompute_checkpoints=self.settings.recompute_checkpoints)
        network._ipu_cnn_annotated = True

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
        compiled = self._inference_model(model)
        full = self.eval_batch_size
        n = int(images.shape[0])
        if n < full:
            images = torch.cat([images, images.new_zeros((full - n, *images.shape[1:]))])
        return compiled(images.contiguous())[:n].float()

    def _inference_model(self, model: nn.Module) -> Any:
        """`model` wrapped in ``poptorch.inferenceModel`` (once per model), annotated with the settings' stages."""
        if self._inference is None or self._inference_source is not model:
            options = ipu_options(self.settings, self.poptorch, training=False, popdist=self.popdist)
            self.annotate(model)  # the same stages as training: the options ask for one IPU per stage
            self._inference = self.poptorch.inferenceModel(model.eval(), options=options)
            self._inference_source = model
        return self._inference

    def compile_inference(self, model: nn.Module, images: torch.Tensor) -> None:
        """Compile `model`'s inference executable for host batches shaped like `images`, without running it
        (inference's ``--compile-only``; offline when the settings say so)."""
        self._inference_model(model).compile(images.contiguous())

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


def optimizer_values(optimizer: Any) -> tuple[Any, ...]:
    """What ``setOptimizer`` would send: every number in every parameter group (learning rate, weight decay,
    momentum, velocity scaling, ...) and the optimizer's loss scale. Two equal tuples need no transfer."""
    groups = tuple(tuple(sorted((k, v) for k, v in group.items() if isinstance(v, (int, float))))
                   for group in optimizer.param_groups)
    return groups, getattr(optimizer, "loss_scaling", None)


class IpuTrainStep:
    """One host call of the PopTorch training model. The optimizer's values are pushed to the device only when
    they have changed since the last push (``setOptimizer`` is a host-to-device transfer and stalls the pipeline):
    with ``--lr-scheduler-freq F`` the learning rate changes F times per epoch, so that is how often it happens."""

    def __init__(self, training_model: Any, optimizer: Any, mix: MixFn | None,
                 after_step: Callable[[], None] | None, *, combined_velocity: bool = False) -> None:
        """`combined_velocity`: the optimizer is ``sgd_combined``, whose velocity scaling follows the loss scale."""
        self.training_model = training_model
        self.optimizer = optimizer
        self.combined_velocity = combined_velocity
        self.mix = mix
        self.after_step = after_step
        self._sent = optimizer_values(optimizer)
        #: ``setOptimizer`` calls made so far (for the log and the tests)
        self.pushes = 0

    def set_loss_scale(self, scale: float) -> None:
        """A new static loss scale (``--initial-loss-scaling``'s ramp), sent with the next step. ``sgd_combined``
        keeps its velocity scaled by the same factor, as the Graphcore app did."""
        self.optimizer.loss_scaling = float(scale)
        if self.combined_velocity:
            for group in self.optimizer.param_groups:
                group["velocity_scaling"] = float(scale)

    def _push_if_changed(self) -> None:
        values = optimizer_values(self.optimizer)
        if values != self._sent:
            self.training_model.setOptimizer(self.optimizer)
            self._sent = values
            self.pushes += 1

    def compile(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Compile the training executable for batches shaped like these, without running it (``--compile-only``)."""
        targets = labels
        if self.mix is not None:
            images, targets = self.mix(images, labels)
        self.training_model.compile(images.contiguous(), targets)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        self._push_if_changed()
        targets: torch.Tensor = labels
        if self.mix is not None:
            images, targets = self.mix(images, labels)
        logits, losses = self.training_model(images.contiguous(), targets)
        # the device stepped the optimizer; tell torch's LR scheduler so (it warns about a step order otherwise, as
        # the Graphcore app's scheduler decorator also worked around)
        self.optimizer._opt_called = True
        n = int(labels.shape[0])
        loss_sum = losses.float().mean() * n
        correct = (logits.float().argmax(dim=1) == labels).sum()
        if self.after_step is not None:
            self.after_step()
        return StepResult(loss_sum, correct, n)


def executable_cache_default() -> str | None:
    """PopTorch's executable cache folder from ``POPTORCH_CACHE_DIR``, if set."""
    return os.environ.get("POPTORCH_CACHE_DIR")
