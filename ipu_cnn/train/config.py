"""The training application's configuration: one declared schema, YAML configs as defaults, flags on top.

Two passes, as in timm's ``train.py``: ``--config NAME|FILE`` is read first; its YAML keys (the option names with
underscores, e.g. ``micro_batch_size``) become the parser's defaults, checked and converted exactly like flags, and
unknown keys are errors; then the command line overrides them. Named configs live in ``ipu_cnn/train/configs``.
Without ``--config``, the ``demo`` config applies when training on the demo data (the default), the plain defaults
otherwise. The option names follow the Graphcore CNN application's where it had one; the options both applications
share are declared once in `ipu_cnn._cli`.

The result is a frozen `RunOptions` (what the user asked); what follows from it (device, batch sizes, run folder)
is `ipu_cnn.train.plan.RunPlan`, resolved once by the trainer. Neither is written to after it is made.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ipu_cnn import _cli
from ipu_cnn.backends.ipu import IpuSettings, check_ipu_settings
from ipu_cnn.backends.precision import PRECISIONS

DATA_MODES = ("demo", "generated", "synthetic", "imagenet", "folder", "filelist", "shards", "cifar10")
OPTIMIZERS = ("sgd", "sgd_combined", "adamw", "rmsprop", "rmsprop_tf")
LR_SCHEDULES = ("step", "cosine", "exponential")
WEIGHT_AVG = ("none", "mean", "exponential")
VALIDATION_MODES = ("none", "during", "after")
NORMALIZATION_LOCATIONS = ("device", "host", "none")
#: Options of one invocation, never carried over from a checkpoint by --resume: where to resume from, when to stop
#: this time, and initial weights (the checkpoint holds the weights).
_PER_INVOCATION = ("resume", "max_steps", "weights", "pretrained")
#: Keys a config file may carry that are not options: what the run derived (saved for the record, ignored on load).
_RECORD_KEYS = ("derived",)


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for one training run: every option of `build_parser` by its dest name (its fields are
    checked against the parser, see `_cli.check_fields`), plus ``config``, the label of the config file applied.
    Resolved from defaults <- config YAML (or a checkpoint's options with --resume) <- flags, then checked."""

    config: str
    # data
    data: str
    data_path: str | None
    val_data_path: str | None
    shard_mode: str
    shard_shuffle_buffer: int
    shard_cache: str
    num_classes: int | None
    demo_classes: int
    demo_images_per_class: int
    generated_samples: int
    dataloader_worker: int | None
    dataloader_prefetch: int
    on_bad_sample: str
    eight_bit_io: bool
    normalization_location: str
    train_crop_scale: list[float]
    flip_prob: float
    use_bbox_info: bool
    interpolation: str
    eval_crop_pct: float | None
    # model
    model: str
    image_size: int | None
    pretrained: bool
    weights: str | None
    dropout: float | None
    drop_path: float | None
    zero_init_residual: bool | None
    norm_type: str
    norm_num_groups: int
    norm_eps: float | None
    batchnorm_momentum: float | None
    efficientnet_expand_ratio: int
    efficientnet_group_dim: int
    enable_fast_groupnorm: bool
    disable_stable_batchnorm: bool
    # batching and schedule
    micro_batch_size: int
    gradient_accumulation: int
    replicas: int
    device_iterations: int
    epoch: int
    max_steps: int | None
    seed: int
    # optimizer
    optimizer: str
    lr: float
    lr_reference_batch: int | None
    momentum: float
    weight_decay: float
    optimizer_eps: float
    rmsprop_decay: float
    label_smoothing: float
    # learning-rate schedule
    lr_schedule: str
    warmup_epoch: float
    lr_decay: float
    lr_epoch_decay: list[float]
    lr_decay_period: float
    lr_min_ratio: float
    lr_scheduler_freq: float
    # precision
    precision: str
    half_dtype: str
    loss_scaling: float | None
    auto_loss_scaling: bool
    half_partial: bool
    enable_stochastic_rounding: bool
    initial_loss_scaling: float | None
    enable_fp_exceptions: bool
    # regularisation
    mixup_alpha: float
    cutmix_lambda_low: float
    cutmix_lambda_high: float
    cutmix_disable_prob: float
    weight_avg_strategy: str
    weight_avg_exp_decay: float
    weight_avg_start_epoch: float
    weight_avg_N: int | None
    # half-resolution training and fine-tuning
    half_res_training: bool
    fine_tune_epoch: int
    fine_tune_lr: float
    fine_tune_micro_batch_size: int
    fine_tune_gradient_accumulation: int
    fine_tune_first_trainable_layer: str
    # validation
    validation_mode: str
    validation_freq: int
    validation_batch_size: int | None
    # checkpoints
    checkpoint_output_dir: str | None
    checkpoint_save_freq: int
    resume: str | None
    # device
    device: str
    compile: bool
    sync_bn: bool
    dist_backend: str
    recompute_mode: str
    available_memory_proportion: list[float] | None
    executable_cache_dir: str | None
    # IPU
    pipeline_splits: list[str]
    recompute_checkpoints: list[str]
    exchange_memory_target: str | None
    num_io_tiles: int
    compile_only: bool
    offline_target_ipu_version: int | None
    profile: str | None
    offload_optimizer: bool
    enable_optimizer_rts: bool
    # logging
    output_dir: str
    run_name: str | None
    logs_per_epoch: int
    progress: str
    plot: bool
    tensorboard: bool
    wandb: bool
    wandb_project: str

    def as_dict(self) -> dict[str, Any]:
        """The options as plain values by dest name (what checkpoints store under ``options``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with `changes` (for tools that override a saved run's options; checked again)."""
        options = dataclasses.replace(self, **changes)
        check_options(options)
        return options


def named_configs() -> list[str]:
    """Names of the configs shipped in the package (``--config NAME``)."""
    return _cli.named_configs("ipu_cnn.train")


def build_parser(add_help: bool = True, epilog: str | None = None) -> argparse.ArgumentParser:
    """The full option schema, in argument groups, with types, defaults and help."""
    p = argparse.ArgumentParser(
        prog="python -m ipu_cnn.train",
        description="Train an image classifier (ResNet, EfficientNet or any timm model) on CPU, CUDA or Graphcore "
        "IPUs, fed by ipu_cnn's compiled JPEG loader. With no arguments: a short demo run on generated JPEGs "
        "(the demo config, see the end). The defaults shown are the schema's, or a --config file's when one is given "
        "with --help.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help, epilog=epilog,
    )
    _cli.add_config_option(p, "ipu_cnn.train", " or a YAML file whose keys are these options' names with underscores; "
                           "flags override it. Default: demo for --data demo, else none (the plain defaults below)")

    g = p.add_argument_group("data")
    g.add_argument("--data", choices=DATA_MODES, default="demo",
                   help="demo: generated JPEG files (made once under ~/.cache/ipu_cnn); generated: random uint8 "
                   "batches made on the host, no decoding; synthetic: random data made on the device, no host I/O; "
                   "imagenet: DATA_PATH/train + DATA_PATH/validation; folder: an ImageFolder at DATA_PATH "
                   "(+ --val-data-path); filelist: a path,label list at DATA_PATH (+ --val-data-path); shards: "
                   "WebDataset tar shards (KEY.jpg + KEY.cls) named by DATA_PATH (+ --val-data-path); cifar10: "
                   "CIFAR-10's python batches in DATA_PATH (default: under ~/.cache/ipu_cnn; downloaded there when "
                   "missing), 32 px unless --image-size says otherwise")
    g.add_argument("--data-path", "--imagenet-data-path", dest="data_path", default=None,
                   help="dataset root (imagenet, folder, cifar10), list file (filelist), or shard pattern (shards: "
                   "'DIR/train-{000000..000127}.tar', a glob, or comma-free paths); --imagenet-data-path is "
                   "Graphcore's spelling")
    g.add_argument("--val-data-path", default=None, help="validation ImageFolder (folder), list file (filelist) or "
                   "shard pattern (shards)")
    g.add_argument("--shard-mode", choices=("random", "stream"), default="random",
                   help="shards: random access by sample (any order, any rank), or stream: each rank reads whole shards, "
                   "their order shuffled per epoch, samples mixed in a bounded shuffle buffer (single-pass reading, "
                   "e.g. from an object store mount)")
    g.add_argument("--shard-shuffle-buffer", type=_cli.positive_int, default=10_000,
                   help="shards in stream mode: samples held in the shuffle buffer")
    g.add_argument("--shard-cache", choices=("none", "memory"), default="none",
                   help="shards: memory copies them once into /dev/shm, one copy per machine shared by its ranks, "
                   "served from RAM for every later epoch")
    _cli.add_num_classes_option(g, "classes (default: the dataset's; 1000 for generated and synthetic)")
    g.add_argument("--demo-classes", type=_cli.positive_int, default=10, help="classes of the demo dataset")
    g.add_argument("--demo-images-per-class", type=_cli.positive_int, default=100,
                   help="training images per class of the demo dataset (validation: a fifth of that)")
    g.add_argument("--generated-samples", type=_cli.positive_int, default=4096,
                   help="samples per epoch for --data generated and synthetic")
    _cli.add_worker_options(g, threads_help="loader threads (default: the CPUs available to this process, per rank)")
    g.add_argument("--on-bad-sample", choices=("raise", "replace"), default="raise",
                   help="an undecodable image stops the run (raise) or is replaced by another sample, reported once")
    g.add_argument("--eight-bit-io", action=argparse.BooleanOptionalAction, default=None,
                   help="ship uint8 images to the device and normalise there (default: on, off with "
                   "--normalization-location host)")
    g.add_argument("--normalization-location", type=normalization_location, choices=NORMALIZATION_LOCATIONS,
                   default="device", metavar="{device,ipu,host,none}",
                   help="where uint8 pixels become normalised floats: the model's first op on the device (device; "
                   "ipu is Graphcore's name for it, and means the same on CPU and CUDA: the model's first op on that "
                   "device), on the host before the batch moves (host), or nowhere: pixels scaled to [0, 1] without "
                   "the mean/std step (none)")
    g.add_argument("--train-crop-scale", type=float, nargs=2, default=[0.08, 1.0], metavar=("LO", "HI"),
                   help="RandomResizedCrop area fraction range")
    g.add_argument("--flip-prob", type=float, default=0.5, help="horizontal flip probability in training")
    g.add_argument("--use-bbox-info", action=argparse.BooleanOptionalAction, default=False,
                   help="imagenet: guide the training crop by the object boxes of DATA_PATH/"
                   "imagenet_2012_bounding_boxes.csv (rows file name,xmin,ymin,xmax,ymax, normalised): an image with "
                   "boxes redraws its crop, up to 10 times, until the boxes cover at least 10%% of it")
    _cli.add_eval_geometry_options(g, interpolation_default="bilinear",
                                   crop_help="evaluation centre crop as a fraction of the resized shorter side "
                                   "(default: the model's, 0.875 for ResNet and EfficientNet)")

    g = p.add_argument_group("model")
    _cli.add_model_option(g, default="resnet50",
                          help="resnet50, efficientnet-b0, efficientnet-b4, mobilenet-v3-small, mobilenet-v3-large, "
                          "mobilenet, resnet18 or any timm model name")
    _cli.add_image_size_option(g, "training and evaluation image side (default: the model's: 224, EfficientNet-B4 "
                               "380)")
    g.add_argument("--pretrained", action="store_true", help="start from timm's pretrained weights (needs network)")
    g.add_argument("--weights", default=None, help="start from a local state dict or ipu_cnn checkpoint file")
    g.add_argument("--dropout", type=_cli.optional_float, default=None, help="classifier dropout (default: timm's)")
    g.add_argument("--drop-path", type=_cli.optional_float, default=None,
                   help="stochastic depth rate (default: timm's)")
    g.add_argument("--zero-init-residual", action=argparse.BooleanOptionalAction, default=None,
                   help="zero-initialise the last BatchNorm gamma of each residual block (ResNets; default: timm's)")
    _cli.add_model_shape_options(g)
    g.add_argument("--disable-stable-batchnorm", action="store_true",
                   help="accepted for Graphcore's configs: it chose a faster, less stable IPU BatchNorm kernel; "
                   "PyTorch's BatchNorm serves every device here, so it changes nothing")

    g = p.add_argument_group("batching and schedule")
    _cli.add_micro_batch_option(g, "samples per forward/backward pass on one replica")
    g.add_argument("--gradient-accumulation", type=_cli.positive_int, default=1,
                   help="micro-batches accumulated per optimizer step")
    _cli.add_parallel_options(g, replicas_help="data-parallel replicas: IPU replication factor; on CPU/CUDA the "
                              "torchrun process count (launch with torchrun --nproc-per-node N)",
                              iterations_help="optimizer steps the IPU runs per host call (IPU only; CPU/CUDA feed "
                              "every step)")
    g.add_argument("--epoch", "--epochs", dest="epoch", type=_cli.positive_int, default=10, help="training epochs")
    g.add_argument("--max-steps", type=_cli.optional_int, default=None,
                   help="stop after this many optimizer steps, writing a checkpoint as on SIGTERM (the schedule "
                   "still spans --epoch, so --resume continues the same run)")
    _cli.add_seed_option(g, "seed of weights, data order, augmentation and mixing")

    g = p.add_argument_group("optimizer")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="sgd / sgd_combined: momentum SGD (on IPUs: separate or combined velocity and accumulator "
                   "tensors; identical maths on CPU/CUDA); adamw; rmsprop; rmsprop_tf: TensorFlow-style RMSprop "
                   "(epsilon inside the root, as EfficientNet was trained)")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate (see --lr-reference-batch)")
    g.add_argument("--lr-reference-batch", type=_cli.optional_int, default=None,
                   help="if set, --lr is for a global batch of this size and is scaled linearly to the actual one")
    g.add_argument("--momentum", type=float, default=0.9, help="momentum (sgd, rmsprop)")
    g.add_argument("--weight-decay", type=_cli.non_negative_float, default=1e-4,
                   help="weight decay, never applied to 1-D parameters (biases, norm scales)")
    g.add_argument("--optimizer-eps", type=float, default=1e-8, help="epsilon of adamw / rmsprop")
    g.add_argument("--rmsprop-decay", type=float, default=0.9, help="RMSprop squared-gradient decay (alpha)")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing factor")

    g = p.add_argument_group("learning-rate schedule (per iteration)")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine",
                   help="step: x lr-decay at each --lr-epoch-decay epoch; cosine: to --lr-min-ratio at the end; "
                   "exponential: x lr-decay every --lr-decay-period epochs (continuously)")
    g.add_argument("--warmup-epoch", type=_cli.non_negative_float, default=0.0,
                   help="epochs of linear warm-up from 0 to the peak learning rate")
    g.add_argument("--lr-decay", type=float, default=0.1, help="decay factor of the step and exponential schedules")
    g.add_argument("--lr-epoch-decay", type=float, nargs="*", default=[30.0, 60.0, 80.0],
                   help="epochs at which the step schedule decays")
    g.add_argument("--lr-decay-period", type=float, default=1.0, help="epochs per decay of the exponential schedule")
    g.add_argument("--lr-min-ratio", type=_cli.non_negative_float, default=0.0,
                   help="final learning rate of the cosine schedule, as a fraction of the peak")
    g.add_argument("--lr-scheduler-freq", type=_cli.non_negative_float, default=0.0,
                   help="learning-rate updates per epoch (may be fractional, e.g. 0.424); the rate holds in between. "
                   "0: every step. On IPUs the optimizer is sent to the device only when its values change, so this "
                   "bounds those transfers")

    g = p.add_argument_group("precision")
    _cli.add_precision_options(g, choices=PRECISIONS,
                               help="activations.weights: 16.16 / 16.32 = half compute (CPU/CUDA: autocast, float32 "
                               "master weights; IPU: half weights for 16.16), 32.32 = float32",
                               half_dtype_help="autocast dtype for 16.x on CPU/CUDA (auto: float16 on CUDA, bfloat16 "
                               "on CPU)")
    g.add_argument("--loss-scaling", type=_cli.optional_float, default=None,
                   help="static loss scale (default: dynamic scaling for float16, none otherwise)")
    g.add_argument("--auto-loss-scaling", action="store_true",
                   help="dynamic loss scaling (GradScaler / PopTorch automatic), starting at --loss-scaling")
    _cli.add_half_partial_option(g)
    g.add_argument("--enable-stochastic-rounding", action="store_true", help="IPU: stochastic rounding of half values")
    g.add_argument("--initial-loss-scaling", type=_cli.optional_float, default=None,
                   help="start the static loss scale here and double it in equal spans of epochs until it reaches "
                   "--loss-scaling (e.g. 100 epochs, 16 -> 128: 16, 32, 64, 128 from epochs 1, 26, 51, 76)")
    g.add_argument("--enable-fp-exceptions", action="store_true",
                   help="stop at the first floating-point overflow, invalid operation or division by zero (IPU: "
                   "hardware exceptions); on CPU/CUDA: autograd anomaly detection, which stops at the first "
                   "operation whose gradient holds NaN and names it (slow: for debugging)")

    g = p.add_argument_group("regularisation")
    g.add_argument("--mixup-alpha", type=_cli.non_negative_float, default=0.0,
                   help="mixup: blend pairs with weight ~ Beta(alpha, alpha); 0 disables")
    g.add_argument("--cutmix-lambda-low", type=float, default=0.0,
                   help="cutmix: kept-area fraction ~ U(low, high); low == high == 0 disables")
    g.add_argument("--cutmix-lambda-high", type=float, default=0.0, help="cutmix: upper bound of the kept fraction")
    g.add_argument("--cutmix-disable-prob", type=float, default=0.0, help="cutmix: probability of skipping a batch")
    g.add_argument("--weight-avg-strategy", choices=WEIGHT_AVG, default="none",
                   help="keep averaged weights: exponential moving average or arithmetic mean over steps; validated "
                   "and saved beside the trained weights")
    g.add_argument("--weight-avg-exp-decay", type=float, default=0.9999,
                   help="decay per step of the exponential average")
    g.add_argument("--weight-avg-start-epoch", type=_cli.non_negative_float, default=0.0,
                   help="epoch from which the mean average collects weights")
    g.add_argument("--weight-avg-N", dest="weight_avg_N", type=_cli.optional_int, default=None,
                   help="average saved checkpoints instead of steps, as Graphcore's train.py does: at the end of "
                   "training, the last N epoch checkpoints (-1: all) are averaged with --weight-avg-strategy (mean, or "
                   "exponential with --weight-avg-exp-decay per checkpoint) into CHECKPOINT_averaged.pt; also "
                   "`python -m ipu_cnn.train.average`. Default: not set, the average is kept per step")

    g = p.add_argument_group("half-resolution training and fine-tuning (FixRes, arXiv 2106.03640)")
    g.add_argument("--half-res-training", action="store_true",
                   help="train on smaller random crops (224 -> 160 px, 380 -> 252, other sizes x 5/7), then "
                   "fine-tune at full size on test-time preprocessing (resize + centre crop) for --fine-tune-epoch "
                   "epochs, starting from the averaged weights when averaging is on; one command runs both stages")
    g.add_argument("--fine-tune-epoch", type=_cli.non_negative_int, default=0,
                   help="epochs of the fine-tuning stage (needed with --half-res-training)")
    g.add_argument("--fine-tune-lr", type=float, default=0.25,
                   help="fine-tuning learning rate: SGD without momentum, cosine to zero, no warm-up, not scaled by "
                   "--lr-reference-batch")
    g.add_argument("--fine-tune-micro-batch-size", "--fine-tune-batch-size", dest="fine_tune_micro_batch_size",
                   type=_cli.positive_int, default=1, help="micro-batch of the fine-tuning stage")
    g.add_argument("--fine-tune-gradient-accumulation", type=_cli.positive_int, default=1,
                   help="gradient accumulation of the fine-tuning stage")
    g.add_argument("--fine-tune-first-trainable-layer", default="",
                   help="the first layer that fine-tuning trains, by its module path in the timm model (Graphcore's "
                   "slashes or dots: blocks/5/3 = blocks.5.3); every parameter before it is frozen and every module "
                   "before it runs in eval mode (BatchNorm statistics and dropout fixed)")

    g = p.add_argument_group("validation")
    g.add_argument("--validation-mode", choices=VALIDATION_MODES, default="during",
                   help="validate after every --validation-freq epochs (during), once at the end (after), or never")
    g.add_argument("--validation-freq", "--validation-frequency", dest="validation_freq", type=_cli.positive_int,
                   default=1, help="epochs between validations (during); --validation-frequency: Graphcore's spelling")
    g.add_argument("--validation-batch-size", type=_cli.optional_int, default=None,
                   help="validation micro-batch (default: --micro-batch-size)")

    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-output-dir", default=None, help="where checkpoints go (default: RUN_DIR/checkpoints)")
    g.add_argument("--checkpoint-save-freq", type=_cli.positive_int, default=1, help="epochs between checkpoints")
    g.add_argument("--resume", "--checkpoint-input-dir", dest="resume", default=None,
                   help="continue from a checkpoint file, or from the newest one in a folder")

    g = p.add_argument_group("device")
    _cli.add_device_option(g)
    g.add_argument("--compile", action="store_true", help="torch.compile the model (CPU/CUDA)")
    g.add_argument("--sync-bn", action="store_true", help="synchronise BatchNorm statistics across torchrun ranks")
    g.add_argument("--dist-backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="torch.distributed backend under torchrun (auto: NCCL on CUDA, gloo on CPU)")
    g.add_argument("--recompute-mode", choices=("none", "auto", "manual"), default="none",
                   help="IPU: recomputation of activations in the backward pass")
    _cli.add_ipu_tuning_options(g, cache_default=None, cache_help="IPU: folder caching compiled executables")

    g = p.add_argument_group("IPU (ignored on CPU/CUDA with one log line each, except where said)")
    _cli.add_ipu_graph_options(g)
    g.add_argument("--recompute-checkpoints", nargs="*", default=[], metavar="MODULE",
                   help="module names or regular expressions whose outputs are kept for the backward pass (the rest "
                   "is recomputed); Graphcore's add_N names the N-th residual block's output")
    g.add_argument("--offload-optimizer", action="store_true",
                   help="keep the optimizer state in streaming memory instead of on chip")
    g.add_argument("--enable-optimizer-rts", action="store_true",
                   help="shard the optimizer state across replicas (replicated tensor sharding)")

    g = p.add_argument_group("logging")
    g.add_argument("--output-dir", default="runs", help="parent folder of run folders")
    g.add_argument("--run-name", default=None, help="run folder name (default: time stamp, config and model)")
    g.add_argument("--logs-per-epoch", type=_cli.positive_int, default=10,
                   help="log lines (loss, accuracy, lr, throughput) per epoch")
    g.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto",
                   help="tqdm bar on a terminal (auto), always, or plain lines only")
    g.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                   help="write metrics.png (loss, accuracy, lr, throughput vs step) at the end")
    g.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard in RUN_DIR/tensorboard")
    g.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (offline when not logged in)")
    g.add_argument("--wandb-project", default="ipu_cnn", help="wandb project name")
    return p


def load_config_defaults(name_or_path: str, parser: argparse.ArgumentParser) -> tuple[dict[str, Any], str]:
    """The parser defaults that config `name_or_path` sets, checked against the schema, and its label."""
    if name_or_path == "none":
        return {}, "none"
    data, label = _cli.load_config_mapping("ipu_cnn.train", name_or_path)
    actions = _cli.option_actions(parser)
    defaults: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key in _RECORD_KEYS:
            continue
        if key not in actions:
            close = difflib.get_close_matches(key, list(actions), n=3)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise SystemExit(f"--config {label}: unknown key {raw_key!r}{hint}; keys are the options of "
                             f"`python -m ipu_cnn.train --help` with underscores")
        defaults[key] = _cli.convert_config_value(actions[key], value, f"--config {label}: {key}")
    return defaults, label


def normalization_location(text: str) -> str:
    """``--normalization-location``: Graphcore's ``ipu`` is our ``device`` (the model's first op, on any device)."""
    return "device" if text == "ipu" else text


def _asks_for_help(argv: Sequence[str]) -> bool:
    return any(a == "-h" or (len(a) > 3 and "--help".startswith(a)) for a in argv)


def _demo_epilog() -> str:
    demo, _ = _cli.load_config_mapping("ipu_cnn.train", "demo")
    values = ", ".join(f"{k}={v}" for k, v in demo.items())
    return ("Which values apply: the defaults above, then a --config file's values, then the flags given. Without "
            f"--config, --data demo (the default) applies the demo config: {values}; any other --data applies no "
            "config. --resume PATH takes every option from the checkpoint (except --max-steps and --weights); flags "
            "given with it override them.")


def _checkpoint_options(state: Mapping[str, Any], actions: Mapping[str, argparse.Action]) -> tuple[dict[str, Any], str]:
    """The options a checkpoint's run was started with (older checkpoints: their resolved config), minus the
    per-invocation ones, and its config label."""
    saved = state.get("options") or state.get("config") or {}
    if not isinstance(saved, Mapping):
        raise SystemExit("--resume: the checkpoint holds no option record; start a new run from it with --weights")
    options = {k: v for k, v in saved.items() if k in actions and k not in _PER_INVOCATION}
    label = (state.get("config") or {}).get("config", "none") if isinstance(state.get("config"), Mapping) else "none"
    return options, str(label)


def parse_config(argv: Sequence[str] | None = None) -> RunOptions:
    """Parse `argv` (default ``sys.argv[1:]``) into `RunOptions`: defaults, then a config file (or with ``--resume``,
    the checkpoint's options), then the flags given, then cross-option checks."""
    argv = list(sys.argv[1:] if argv is None else argv)
    explicit = _cli.explicit_options(build_parser(add_help=False), argv)
    asks_help = _asks_for_help(argv)
    parser = build_parser(epilog=_demo_epilog() if asks_help else None)  # the demo YAML is read only for --help
    actions = _cli.option_actions(parser)
    resumed_from: Path | None = None
    restored: dict[str, Any] = {}
    file_values: dict[str, Any] = {}
    if explicit.get("resume") and not asks_help:
        from ipu_cnn.train.checkpoint import resolve_checkpoint

        try:
            resumed_from, state = resolve_checkpoint(explicit["resume"], hand_over=True)
        except (OSError, ValueError) as error:
            raise SystemExit(str(error)) from None
        restored, label = _checkpoint_options(state, actions)
        parser.set_defaults(**restored)
    if explicit.get("config") is not None:
        file_values, label = load_config_defaults(explicit["config"], parser)
    elif resumed_from is None:
        implicit = "demo" if explicit.get("data", "demo") == "demo" and not asks_help else "none"
        file_values, label = load_config_defaults(implicit, parser)
    parser.set_defaults(**file_values)
    values = vars(parser.parse_args(argv))
    values["config"] = label
    if resumed_from is not None:
        values["resume"] = str(resumed_from)
    options = _resolve(values)
    if resumed_from is not None:
        _report_resume(resumed_from, restored, options, {*explicit, *file_values})
    return options


def _resolve(values: dict[str, Any]) -> RunOptions:
    """The frozen options from parsed `values`, after the one default that depends on another option, checked."""
    _cli.check_fields(RunOptions, _cli.option_actions(build_parser()), extra=("config",))
    if values["normalization_location"] == "ipu":
        values["normalization_location"] = "device"
    if isinstance(values.get("available_memory_proportion"), (int, float)):  # one number: a mapping, an older record
        values["available_memory_proportion"] = [float(values["available_memory_proportion"])]
    if values["eight_bit_io"] is None:  # not asked for: uint8 to the device unless the host normalises
        values["eight_bit_io"] = values["normalization_location"] != "host"
    options = _cli.record_from(RunOptions, values)
    check_options(options)
    return options


def _report_resume(path: Path, restored: Mapping[str, Any], options: RunOptions, given: set[str]) -> None:
    """Say what --resume restored and which options the command line changed (once, on the first rank)."""
    if os.environ.get("RANK", "0") != "0":
        return
    now = options.as_dict()
    changed = [f"{k} {restored[k]!r} -> {now[k]!r}" for k in sorted(given)
               if k in restored and k not in _PER_INVOCATION and restored[k] != now[k]]
    added = [f"{k} {now[k]!r}" for k in sorted(given) if k not in restored and k not in _PER_INVOCATION
             and k != "config"]
    note = f"; changed on the command line: {', '.join(changed + added)}" if changed or added else ""
    print(f"resuming {path} with the options it was started with{note}", flush=True)


def config_from_mapping(values: Mapping[str, Any]) -> RunOptions:
    """`RunOptions` from the schema's defaults updated by `values` (for programmatic use and tests)."""
    parser = build_parser()
    actions = _cli.option_actions(parser)
    resolved = vars(parser.parse_args([]))
    resolved["config"] = "none"
    for key, value in values.items():
        if key not in actions and key != "config":
            raise ValueError(f"unknown config key {key!r}")
        resolved[key] = value
    return _resolve(resolved)


def options_from_record(saved: Mapping[str, Any]) -> RunOptions:
    """The options a checkpoint recorded (its ``options``, or an older one's resolved ``config``): keys that are not
    options are dropped, missing ones take the schema's defaults."""
    actions = _cli.option_actions(build_parser())
    return config_from_mapping({k: v for k, v in saved.items() if k in actions or k == "config"})


def run_options(options: RunOptions) -> dict[str, Any]:
    """The options as plain values, without the config file's label (what checkpoints record under ``options`` for
    --resume; the label is in their ``config`` record)."""
    return {k: v for k, v in options.as_dict().items() if k != "config"}


def check_options(options: RunOptions) -> None:
    """Cross-option checks argparse cannot express; each error says what to change."""
    o = options
    if o.data in ("imagenet", "folder", "filelist", "shards") and not o.data_path:
        raise SystemExit(f"--data {o.data} needs --data-path")
    if o.data != "shards" and (o.shard_mode != "random" or o.shard_cache != "none"):
        raise SystemExit(f"--shard-mode and --shard-cache apply to --data shards, got --data {o.data}")
    if o.use_bbox_info and o.data != "imagenet":
        raise SystemExit(f"--use-bbox-info reads ImageNet's bounding boxes from the ImageNet root: it needs --data "
                         f"imagenet, got --data {o.data} (--no-use-bbox-info crops without boxes)")
    if o.eight_bit_io and o.normalization_location == "host":
        raise SystemExit("--eight-bit-io and --normalization-location host contradict each other: eight-bit IO ships "
                         "uint8 images for the device to normalise; drop --eight-bit-io to normalise on the host, or "
                         "use --normalization-location device")
    lo, hi = o.cutmix_lambda_low, o.cutmix_lambda_high
    if not 0.0 <= lo <= hi <= 1.0:
        raise SystemExit(f"cutmix needs 0 <= --cutmix-lambda-low <= --cutmix-lambda-high <= 1, got {lo} and {hi}")
    if not 0.0 <= o.label_smoothing < 1.0:
        raise SystemExit(f"--label-smoothing must be in [0, 1), got {o.label_smoothing}")
    lo, hi = o.train_crop_scale
    if not 0.0 < lo <= hi <= 1.0:
        raise SystemExit(f"--train-crop-scale needs 0 < LO <= HI <= 1, got {lo} {hi}")
    if o.weight_avg_strategy == "exponential" and not 0.0 < o.weight_avg_exp_decay < 1.0:
        raise SystemExit(f"--weight-avg-exp-decay must be in (0, 1), got {o.weight_avg_exp_decay}")
    if o.weight_avg_N is not None and (o.weight_avg_N == 0 or o.weight_avg_N < -1):
        raise SystemExit(f"--weight-avg-N must be a positive number of checkpoints or -1 for all, got {o.weight_avg_N}")
    if o.weight_avg_N is not None and o.weight_avg_strategy == "none":
        raise SystemExit("--weight-avg-N averages the saved checkpoints with --weight-avg-strategy: add "
                         "--weight-avg-strategy mean or exponential")
    if o.half_res_training:
        if o.fine_tune_epoch < 1:
            raise SystemExit("--half-res-training needs a fine-tuning stage at full size: add --fine-tune-epoch N "
                             "(N >= 1)")
        if not o.fine_tune_first_trainable_layer:
            raise SystemExit("--half-res-training needs --fine-tune-first-trainable-layer NAME, the first layer the "
                             "fine-tuning trains (e.g. blocks/5/3 for EfficientNet, layer4 for ResNet-50)")
    if o.max_steps is not None and o.max_steps < 1:
        raise SystemExit(f"--max-steps must be >= 1, got {o.max_steps}")
    if o.lr <= 0:
        raise SystemExit(f"--lr must be positive, got {o.lr}")
    if o.image_size is not None and o.image_size < 8:  # the flag's type checks this too; this is for mappings
        raise SystemExit(f"--image-size must be at least 8 pixels, got {o.image_size}")
    if o.auto_loss_scaling and o.precision == "32.32":
        raise SystemExit("--auto-loss-scaling needs half precision: add --precision 16.16 or 16.32, or drop it")
    from ipu_cnn.models.registry import ModelShape  # lazily: timm is not needed to parse flags

    try:
        ModelShape.from_record(o.as_dict())
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if o.sync_bn and o.device == "ipu":
        raise SystemExit("--sync-bn is for torchrun (CPU/CUDA); on IPUs use replicated BatchNorm options instead")
    check_ipu_options(o)


def check_ipu_options(o: RunOptions) -> None:
    """The IPU and loss-scaling options' checks: values PopTorch would reject at compile time, combinations that
    contradict each other, and the two IPU-only actions asked of another device."""
    if o.initial_loss_scaling is not None:
        if o.auto_loss_scaling:
            raise SystemExit("--initial-loss-scaling ramps a static loss scale, --auto-loss-scaling adapts one itself: "
                             "drop one of them")
        if o.loss_scaling is None:
            raise SystemExit("--initial-loss-scaling ramps up to --loss-scaling: give the final scale with "
                             "--loss-scaling")
        if not 0 < o.initial_loss_scaling <= o.loss_scaling:
            raise SystemExit(f"--initial-loss-scaling must be positive and at most --loss-scaling ({o.loss_scaling}), "
                             f"got {o.initial_loss_scaling}")
    if o.recompute_checkpoints and o.recompute_mode == "none" and not o.pipeline_splits:
        raise SystemExit("--recompute-checkpoints needs recomputation: add --recompute-mode auto or manual (pipelined "
                         "models, with --pipeline-splits, always recompute)")
    if o.offline_target_ipu_version is not None and not o.compile_only:
        raise SystemExit("--offline-target-ipu-version is the target of --compile-only: add --compile-only, or drop it")
    if o.device != "ipu":
        for flag, asked, why in (("--compile-only", o.compile_only, "it builds a PopTorch executable without IPUs"),
                                 ("--profile", o.profile is not None, "it writes a PopVision report of the IPU "
                                  "program; on CPU/CUDA use torch.profiler or Nsight")):
            if asked:
                raise SystemExit(f"{flag} needs --device ipu ({o.device} here): {why}")
    try:
        check_ipu_settings(IpuSettings(pipeline_splits=tuple(o.pipeline_splits or ()),
                                       available_memory_proportion=o.available_memory_proportion,
                                       exchange_memory_target=o.exchange_memory_target, num_io_tiles=o.num_io_tiles,
                                       offline_target_ipu_version=o.offline_target_ipu_version))
    except ValueError as error:
        raise SystemExit(str(error)) from None


def config_to_yaml(config: RunOptions | Mapping[str, Any], derived: Mapping[str, Any] | None = None) -> str:
    """The options as YAML that ``--config FILE`` reads back (derived values under ``derived``, ignored on load).

    `config` is the options, or a flat record of them in which some values were resolved (the run's record: the
    model's image size in place of none, the device found for auto)."""
    values = config.as_dict() if isinstance(config, RunOptions) else dict(config)
    keys = list(_cli.option_actions(build_parser()))
    data: dict[str, Any] = {k: values[k] for k in keys if k in values}
    if derived:
        data["derived"] = dict(derived)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
