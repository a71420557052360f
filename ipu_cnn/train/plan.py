"""What follows from a run's options: the device, the process group's size, batch sizes, the learning rate actually
used, the eval preprocessing, and the run and checkpoint folders: resolved once, frozen, never written back.

`plan_batches` is the batch arithmetic; `RunPlan` is the whole, built by the trainer once the data has said how many
classes and steps per epoch there are. `RunPlan.record` is the flat resolved record the run saves in checkpoints
(``config``) and, with `RunPlan.derived`, as its ``config.yaml``: the option values with the resolved ones in place
(``device``, ``image_size``, ``eval_crop_pct``) plus the derived values, exactly as earlier versions wrote them.

A run trains in one or two `Stage`s (`plan_stages`): the training stage, and with ``--half-res-training`` a
fine-tuning stage at full size. A stage is the options its loop runs with (Graphcore's fine-tuning rewrites the same
options: SGD without momentum, cosine, the fine-tuning rate, batch and accumulation), its epochs' place in the run,
the side of its training images and how they are made (random crops, or the eval transform), and which layers it
freezes; the trainer builds the loop's objects from a stage with the same factories for both.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipu_cnn import _cli
from ipu_cnn.backends import IpuSettings, OptimizerSettings
from ipu_cnn.models import EvalPreprocessing
from ipu_cnn.train.config import RunOptions


@dataclass(frozen=True)
class BatchPlan:
    """Samples per batch at each level.

    Attributes:
        micro_batch_size: samples per forward/backward pass on one replica.
        gradient_accumulation: micro-batches per optimizer step.
        device_replicas: replicas one host batch feeds (the IPU replication factor; 1 on CPU/CUDA, where each
            replica is a process).
        device_iterations: optimizer steps per host call (IPU; 1 on CPU/CUDA).
        loader_batch_size: samples of one training loader batch on this process: one optimizer step on CPU/CUDA,
            one host call on IPUs.
        validation_loader_batch_size: samples of one validation loader batch on this process.
        global_batch_size: samples per optimizer step over all replicas and processes.
    """

    micro_batch_size: int
    gradient_accumulation: int
    device_replicas: int
    device_iterations: int
    loader_batch_size: int
    validation_loader_batch_size: int
    global_batch_size: int


def plan_batches(options: RunOptions, device_type: str, world_size: int, *, check_processes: bool = True,
                 local_replicas: int | None = None) -> BatchPlan:
    """The batch sizes of `options` on `device_type` with `world_size` processes; ``--replicas`` that does not match
    the process count on CPU/CUDA is an error that says how to launch (unless not `check_processes`: a single
    process that validates a multi-process run's checkpoint). Under poprun, `local_replicas` (popdist's count for
    this instance) replaces ``--replicas``: poprun decides how many replicas each instance drives."""
    ipu = device_type == "ipu"  # IPUs replicate and iterate inside one process; CPU/CUDA replicas are processes
    if check_processes and not ipu and options.replicas not in (1, world_size):
        raise SystemExit(f"--replicas {options.replicas}: on CPU/CUDA each replica is a process; launch with "
                         f"`torchrun --nproc-per-node {options.replicas} -m ipu_cnn.train ...` (this job has "
                         f"{world_size} process{'es' if world_size > 1 else ''})")
    micro, accumulation = options.micro_batch_size, options.gradient_accumulation
    replicas = (local_replicas or options.replicas) if ipu else 1
    iterations = options.device_iterations if ipu else 1
    val_micro = options.validation_batch_size or micro
    return BatchPlan(micro, accumulation, replicas, iterations,
                     loader_batch_size=micro * accumulation * replicas * iterations,
                     validation_loader_batch_size=val_micro * replicas * iterations,
                     global_batch_size=micro * accumulation * replicas * world_size)


def _config_sets(label: str, key: str, value: Any) -> bool:
    """True when config `label` (a named config or a file) sets `key` to `value`."""
    if label == "none":
        return False
    try:
        data, _ = _cli.load_config_mapping("ipu_cnn.train", label)
    except SystemExit:  # the file went away since the run started: nothing to attribute
        return False
    return data.get(key) == value


def fold_config_replicas(options: RunOptions, device_type: str, world_size: int) -> tuple[RunOptions, str | None]:
    """A config's IPU replication factor on CPU/CUDA, where replicas are processes: each of the `world_size`
    processes runs ``replicas / world_size`` replicas' micro-batches one after another (gradient accumulation), so
    the recipe keeps its published global batch, learning rate and schedule. Returns the options to run and the log
    line that says so (None when nothing changes). ``--replicas`` given on the command line is taken literally
    (`plan_batches` then says how to launch that many processes), as is a count the processes do not divide."""
    r = options.replicas
    if device_type == "ipu" or r in (1, world_size) or r % world_size:
        return options, None
    if not _config_sets(options.config, "replicas", r):
        return options, None
    per_process = r // world_size
    accumulation = options.gradient_accumulation * per_process
    global_batch = options.micro_batch_size * options.gradient_accumulation * r
    folded = options.replace(replicas=world_size, gradient_accumulation=accumulation)
    processes = f"{world_size} process{'es' if world_size > 1 else ''}"
    return folded, (f"--config {options.config}: --replicas {r} is an IPU replication factor; on {device_type} with "
                    f"{processes} each process runs {per_process} replicas' micro-batches in turn (gradient "
                    f"accumulation {options.gradient_accumulation} x {per_process} = {accumulation}), keeping the "
                    f"global batch of {global_batch}")


def ipu_only_notes(options: RunOptions, device_type: str) -> list[str]:
    """One log line for each option set to a value that acts on IPUs only, saying what the run does instead."""
    if device_type == "ipu":
        notes = []
    else:
        notes = [f"--device-iterations {options.device_iterations} sets the steps an IPU runs per host call; on "
                 f"{device_type} the host feeds every step"] if options.device_iterations > 1 else []
    if options.enable_fast_groupnorm:
        notes.append("--enable-fast-groupnorm chose an IPU GroupNorm kernel; PyTorch's GroupNorm runs here")
    if options.disable_stable_batchnorm:
        notes.append("--disable-stable-batchnorm chose an IPU BatchNorm kernel; PyTorch's BatchNorm runs here")
    return notes


def effective_lr(lr: float, reference_batch: int | None, global_batch_size: int) -> float:
    """``--lr``, scaled linearly from ``--lr-reference-batch`` to the global batch when that is given."""
    return lr * global_batch_size / reference_batch if reference_batch else lr


@dataclass(frozen=True)
class RunPlan:
    """Everything a run derives from its options (see the module docstring)."""

    device: str
    world_size: int
    timm_model: str
    batches: BatchPlan
    eval: EvalPreprocessing
    lr_effective: float
    num_classes: int
    steps_per_epoch: int
    run_dir: Path
    checkpoint_dir: Path
    stage: Stage | None = None

    @property
    def train_image_size(self) -> int:
        """Side of the training images of the stage in progress (the eval side unless training at half size)."""
        return self.stage.train_image_size if self.stage is not None else self.eval.image_size

    def derived(self) -> dict[str, Any]:
        """The derived values by the names earlier versions saved them under (``config.yaml``'s ``derived``)."""
        return {
            "timm_model": self.timm_model, "image_size": self.eval.image_size, "eval_crop_pct": self.eval.crop_pct,
            "mean": list(self.eval.mean), "std": list(self.eval.std), "world_size": self.world_size,
            "loader_batch_size": self.batches.loader_batch_size,
            "validation_loader_batch_size": self.batches.validation_loader_batch_size,
            "global_batch_size": self.batches.global_batch_size, "lr_effective": self.lr_effective,
            "num_classes_resolved": self.num_classes, "run_dir": str(self.run_dir),
            "checkpoint_dir": str(self.checkpoint_dir), "device": self.device,
            **({"stage": self.stage.name, "train_image_size": self.train_image_size} if self.stage else {}),
        }

    def record(self, options: RunOptions) -> dict[str, Any]:
        """The run's flat resolved record: `options` with the resolved values in place, plus `derived`."""
        return {**options.as_dict(), **self.derived()}


def optimizer_settings(options: RunOptions, lr: float) -> OptimizerSettings:
    """The optimizer options, at peak learning rate `lr` (`effective_lr`), as the backends take them; the static
    loss scale starts at ``--initial-loss-scaling`` when a ramp is asked for."""
    return OptimizerSettings(options.optimizer, lr, weight_decay=options.weight_decay, momentum=options.momentum,
                             eps=options.optimizer_eps, rmsprop_decay=options.rmsprop_decay,
                             loss_scaling=options.loss_scaling if options.initial_loss_scaling is None
                             else options.initial_loss_scaling)


def ipu_settings(options: RunOptions, *, replicas: int | None = None, profile_dir: str | None = None) -> IpuSettings:
    """The options PopTorch's ``Options`` and the model's annotations are built from; `replicas` replaces
    ``--replicas`` (poprun's local count), `profile_dir` is where ``--profile`` without a folder writes."""
    profile = None
    if options.profile is not None:
        profile = options.profile or profile_dir or "profile"
    return IpuSettings(replicas=replicas or options.replicas, device_iterations=options.device_iterations,
                       seed=options.seed, precision=options.precision,
                       gradient_accumulation=options.gradient_accumulation,
                       auto_loss_scaling=options.auto_loss_scaling, half_partial=options.half_partial,
                       enable_stochastic_rounding=options.enable_stochastic_rounding,
                       recompute_mode=options.recompute_mode,
                       available_memory_proportion=tuple(options.available_memory_proportion or ()),
                       executable_cache_dir=options.executable_cache_dir,
                       synthetic_data=options.data == "synthetic",
                       pipeline_splits=tuple(options.pipeline_splits or ()),
                       recompute_checkpoints=tuple(options.recompute_checkpoints or ()),
                       exchange_memory_target=options.exchange_memory_target, num_io_tiles=options.num_io_tiles,
                       offline_target_ipu_version=options.offline_target_ipu_version,
                       compile_only=options.compile_only, profile_dir=profile,
                       offload_optimizer=options.offload_optimizer, enable_optimizer_rts=options.enable_optimizer_rts,
                       enable_fp_exceptions=options.enable_fp_exceptions)


#: Graphcore's half-resolution sides (FixRes, arXiv 2106.03640, their models.model_input_shape); other sides are
#: scaled by 5/7, the ratio of the 224-pixel models.
HALF_RESOLUTION = {224: 160, 380: 252}

TRAIN_STAGE = "train"
FINE_TUNE_STAGE = "fine-tune"


def half_resolution(size: int) -> int:
    """The training side for `size` under ``--half-res-training``: Graphcore's table, else ``round(size * 5 / 7)``."""
    return HALF_RESOLUTION.get(size, max(8, round(size * 5 / 7)))


@dataclass(frozen=True)
class Stage:
    """One training stage of a run (see the module docstring).

    Attributes:
        name: ``train`` or ``fine-tune`` (recorded in checkpoints, so --resume continues the right stage).
        index: the stage's position in the run.
        options: what this stage's loop runs with (the run's own options for the training stage).
        first_epoch: the run's epoch (0-based) at which the stage starts; its epochs are numbered on from there.
        epochs: epochs of this stage.
        train_image_size: side of the training images.
        eval_preprocessing_for_training: train on the eval transform (resize + centre crop, no flip) rather than
            random crops: the fine-tuning stage, which adapts the network to test-time statistics.
        first_trainable_layer: module path (dots) before which everything is frozen, or None.
        average: whether this stage keeps or makes averaged weights (the training stage, when averaging is on).
    """

    name: str
    index: int
    options: RunOptions
    first_epoch: int
    epochs: int
    train_image_size: int
    eval_preprocessing_for_training: bool = False
    first_trainable_layer: str | None = None
    average: bool = True

    @property
    def end_epoch(self) -> int:
        """The run's epoch at which this stage is done."""
        return self.first_epoch + self.epochs


def layer_path(name: str) -> str:
    """``--fine-tune-first-trainable-layer`` as a module path: Graphcore's slashes become dots."""
    return name.strip().strip("/").replace("/", ".")


def plan_stages(options: RunOptions, image_size: int) -> tuple[Stage, ...]:
    """The run's stages for a model evaluated at `image_size` pixels: one, or with ``--half-res-training`` the
    half-size training stage and the full-size fine-tuning stage (whose options follow Graphcore's ``fine_tune``)."""
    if not options.half_res_training:
        return (Stage(TRAIN_STAGE, 0, options, 0, options.epoch, image_size),)
    train = Stage(TRAIN_STAGE, 0, options, 0, options.epoch, half_resolution(image_size))
    tune_options = dataclasses.replace(
        options, epoch=options.fine_tune_epoch, lr=options.fine_tune_lr, lr_reference_batch=None,
        micro_batch_size=options.fine_tune_micro_batch_size,
        gradient_accumulation=options.fine_tune_gradient_accumulation, optimizer="sgd", momentum=0.0,
        lr_schedule="cosine", warmup_epoch=0.0, lr_min_ratio=0.0, mixup_alpha=0.0, cutmix_lambda_low=0.0,
        cutmix_lambda_high=0.0, weight_avg_strategy="none", weight_avg_N=None, half_res_training=False)
    tune = Stage(FINE_TUNE_STAGE, 1, tune_options, options.epoch, options.fine_tune_epoch, image_size,
                 eval_preprocessing_for_training=True,
                 first_trainable_layer=layer_path(options.fine_tune_first_trainable_layer), average=False)
    return train, tune
