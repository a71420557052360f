"""The inference application's options: one parser per mode over a shared set of model options, YAML configs below.

Modes: ``benchmark`` (the default, as the Graphcore application's ``run_benchmark.py``), ``predict`` and ``export``.
The model options (`--model`, `--weights`, `--random-weights`, `--pretrained`, `--device`, `--image-size`,
`--precision`, ...) are declared once, in `add_model_options`, so they mean the same in every mode; the options the
training application shares are declared once in `ipu_cnn._cli`. The result is a frozen `InferenceOptions`.

``--config NAME|FILE`` is read first (timm's two-pass parsing): its YAML keys are option names with underscores
(``micro_batch_size``); they become the parser's defaults, converted and checked exactly as the same text on the
command line would be, and flags override them. A key that no mode knows is an error; a key of another mode (e.g.
``data`` when predicting) is ignored, so one file can serve every mode. Named configs live in
``ipu_cnn/inference/configs``.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any, Sequence

from ipu_cnn import _cli
from ipu_cnn.backends.precision import PRECISIONS as _ALL_PRECISIONS

MODES: tuple[str, ...] = ("benchmark", "predict", "export")
DATA_MODES: tuple[str, ...] = ("real", "generated", "synthetic", "shards", "cifar10")
#: Inference runs weights and activations in one precision: the training precisions with equal halves.
PRECISIONS: tuple[str, ...] = tuple(p for p in _ALL_PRECISIONS if len(set(p.split("."))) == 1)
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")


@dataclass(frozen=True)
class InferenceOptions:
    """The resolved options of one invocation: every mode's options by dest name (its fields are checked against
    the parsers, see `_cli.check_fields`), plus ``mode`` and ``config`` (the config file's label). Options of
    another mode than ``mode`` are None."""

    mode: str
    config: str
    # model and weights, preprocessing, device and precision, IPU: every mode
    model: str | None
    weights: str | None
    random_weights: bool
    pretrained: bool
    averaged_weights: bool
    num_classes: int | None
    norm_type: str
    norm_num_groups: int
    norm_eps: float | None
    batchnorm_momentum: float | None
    efficientnet_expand_ratio: int
    efficientnet_group_dim: int
    enable_fast_groupnorm: bool
    image_size: int | None
    eval_crop_pct: float | None
    interpolation: str | None
    device: str
    precision: str
    half_dtype: str
    replicas: int
    device_iterations: int
    half_partial: bool
    available_memory_proportion: list[float] | None
    executable_cache_dir: str | None
    pipeline_splits: list[str]
    exchange_memory_target: str | None
    num_io_tiles: int
    compile_only: bool
    offline_target_ipu_version: int | None
    profile: str | None
    seed: int
    # benchmark and predict
    micro_batch_size: int | None = None
    dataloader_worker: int | None = None
    json: str | None = None
    # benchmark
    data: str | None = None
    data_path: str | None = None
    iterations: int | None = None
    warmup_iterations: int | None = None
    dataloader_prefetch: int | None = None
    # predict
    paths: list[str] | None = None
    topk: int | None = None
    exif_orientation: bool | None = None
    progress: str | None = None
    # export
    output: str | None = None
    format: str | None = None
    input_layout: str | None = None
    softmax: bool | None = None
    opset: int | None = None
    check: bool | None = None
    triton: bool | None = None
    triton_name: str | None = None
    max_batch_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field by name (options of other modes are None)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def mode_dict(self) -> dict[str, Any]:
        """``mode``, ``config`` and the options of this mode by name (what reports record)."""
        mine = set(_cli.option_actions(build_parser(self.mode)))
        return {k: v for k, v in self.as_dict().items() if k in mine or k in ("mode", "config")}


def named_configs() -> list[str]:
    """Names of the configs shipped with the package (``--config NAME``)."""
    return _cli.named_configs("ipu_cnn.inference")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options every mode shares: config, model and weights, preprocessing, device, precision, IPU."""
    _cli.add_config_option(parser, "ipu_cnn.inference", " or a YAML file whose keys are these options' names with "
                           "underscores; flags override it", names_note=": the Graphcore application's inference "
                           "defaults")

    g = parser.add_argument_group("model and weights")
    _cli.add_model_option(g, default=None, help="resnet50, efficientnet-b0, efficientnet-b4, mobilenet-v3-small, "
                          "mobilenet-v3-large, mobilenet, resnet18 or any timm model name (default: the checkpoint's "
                          "with --weights, else resnet50); the shape options below apply without a checkpoint (a "
                          "checkpoint records its own)")
    source = g.add_mutually_exclusive_group()
    source.add_argument("--weights", default=None, metavar="FILE|RUN_DIR",
                        help="a training checkpoint (restores the model name, classes, image size and eval "
                        "preprocessing), a run folder (its newest checkpoint), or a plain state dict file")
    source.add_argument("--random-weights", action="store_true",
                        help="randomly initialised weights (the benchmark's default; predict and export ask for a "
                        "choice)")
    source.add_argument("--pretrained", action="store_true",
                        help="timm's pretrained ImageNet weights (needs the network or the Hugging Face cache)")
    g.add_argument("--averaged-weights", action="store_true",
                   help="with a checkpoint: use its averaged weights (--weight-avg-strategy in training)")
    _cli.add_num_classes_option(g, "classes of a model without a checkpoint (default: 1000, or what a plain state "
                                "dict holds)")
    _cli.add_model_shape_options(g)

    g = parser.add_argument_group("preprocessing (default: the checkpoint's, else the model's timm config)")
    _cli.add_image_options(g, interpolation_default=None,
                           size_help="input image side (default: the checkpoint's, else the model's: 224, "
                           "EfficientNet-B4 380)",
                           crop_help="centre crop as a fraction of the resized shorter side (0.875 = resize 256, "
                           "crop 224)")

    g = parser.add_argument_group("device and precision")
    _cli.add_device_option(g)
    _cli.add_precision_options(g, choices=PRECISIONS,
                               help="16.16: half precision (CPU: bfloat16 autocast, CUDA: float16 autocast, IPU: half "
                               "weights and activations); 32.32: float32",
                               half_dtype_help="autocast dtype of 16.16 on CPU/CUDA (auto: bfloat16 on CPU, float16 on "
                               "CUDA)")

    g = parser.add_argument_group("IPU (PopTorch inferenceModel; ignored on CPU/CUDA with one line each, except "
                                  "--compile-only and --profile, which need --device ipu)")
    _cli.add_parallel_options(g, replicas_help="IPU replication factor",
                              iterations_help="micro-batches the IPU runs per host call (IPU only)")
    _cli.add_half_partial_option(g, "half-precision partials in matmuls and convolutions")
    _cli.add_ipu_tuning_options(g, cache_default=os.environ.get("POPTORCH_CACHE_DIR"),
                                cache_help="folder caching compiled IPU executables (default: $POPTORCH_CACHE_DIR)")
    _cli.add_ipu_graph_options(g)
    _cli.add_seed_option(g, "seed of random weights and generated data")


def _add_benchmark_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("benchmark")
    g.add_argument("--data", choices=DATA_MODES, default="real",
                   help="real: JPEG files through the eval transform and ipu_cnn's loader (the generated demo set "
                   "unless --data-path); generated: one random uint8 host batch, repeated (no decoding); synthetic: "
                   "random data made once on the device (no host I/O); shards: WebDataset tar shards named by "
                   "--data-path, read as real is; cifar10: CIFAR-10's test batch (raw pixels, resized to the model's "
                   "side when that is not 32) from --data-path, else from ~/.cache/ipu_cnn, downloaded there when "
                   "missing")
    g.add_argument("--data-path", default=None,
                   help="folder of images for --data real (class subfolders or a flat folder, searched recursively), "
                   "the shard pattern for --data shards ('DIR/val-{000000..000015}.tar', a glob), or CIFAR-10's "
                   "python batches (or their parent folder) for --data cifar10")
    _cli.add_micro_batch_option(g, "samples per forward pass on one replica")
    g.add_argument("--iterations", type=_cli.positive_int, default=20, help="measured iterations, after the warm-up")
    g.add_argument("--warmup-iterations", type=_cli.non_negative_int, default=2,
                   help="iterations run first and left out of the figures (graph compilation, caches, allocator)")
    _cli.add_worker_options(g, threads_help="loader threads for --data real (default: the CPUs available to this "
                            "process, per rank)")
    g.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON to FILE ('-': stdout)")


def _add_predict_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("predict")
    g.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively for images")
    g.add_argument("--topk", type=_cli.positive_int, default=5, help="classes listed per image")
    _cli.add_micro_batch_option(g, "images per forward pass")
    _cli.add_worker_options(g, threads_help="decoding threads (default: the CPUs available to this process)",
                            prefetch=False)
    g.add_argument("--exif-orientation", action=argparse.BooleanOptionalAction, default=True,
                   help="rotate images as their EXIF orientation tag says (photos from phones)")
    g.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the results as JSON to FILE, or to stdout when no FILE is given (then nothing else "
                   "goes to stdout)")
    g.add_argument("--progress", choices=("auto", "bar", "none"), default="auto",
                   help="progress bar on stderr while predicting folders: on a terminal (auto), always, or never")


def _add_export_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("export")
    g.add_argument("output", metavar="OUT",
                   help="file to write (model.onnx, model.pt), or with --triton the model repository folder")
    g.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                   help="onnx or torchscript (default: from OUT's extension, .onnx -> onnx, else torchscript)")
    g.add_argument("--input-layout", choices=("nchw", "nhwc"), default="nchw",
                   help="layout of the uint8 input: [batch, 3, H, W] (as ipu_cnn's loader yields) or [batch, H, W, 3] "
                   "(as decoded images come)")
    g.add_argument("--softmax", action="store_true", help="output probabilities instead of logits")
    g.add_argument("--opset", type=_cli.optional_int, default=None, help="ONNX opset (default: the exporter's)")
    g.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run the exported model (onnxruntime when installed, torch.jit.load) on a batch and compare "
                   "with PyTorch")
    g.add_argument("--triton", action="store_true",
                   help="write a Triton Inference Server model repository at OUT: OUT/NAME/config.pbtxt, "
                   "OUT/NAME/labels.txt, OUT/NAME/1/model.onnx or model.pt")
    g.add_argument("--triton-name", default=None, help="model name in the Triton repository (default: the model's)")
    g.add_argument("--max-batch-size", type=_cli.positive_int, default=64,
                   help="Triton's max_batch_size (the graph itself takes any batch size)")


_MODE_OPTIONS = {"benchmark": _add_benchmark_options, "predict": _add_predict_options, "export": _add_export_options}

_DESCRIPTIONS = {
    "benchmark": "Throughput and latency of a CNN on real, generated or synthetic data (CPU, CUDA or IPU). "
                 "Other modes: `python -m ipu_cnn.inference predict --help`, `... export --help`.",
    "predict": "Classify image files or folders: top-k classes with names and probabilities per image.",
    "export": "Export the model to ONNX or TorchScript with a uint8 input, the normaliser inside the graph and a "
              "dynamic batch dimension, checked against PyTorch.",
}


def build_parser(mode: str) -> argparse.ArgumentParser:
    """The parser of `mode`: the shared model options plus the mode's own."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    prog = "python -m ipu_cnn.inference" + ("" if mode == "benchmark" else f" {mode}")
    parser = argparse.ArgumentParser(prog=prog, description=_DESCRIPTIONS[mode],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _MODE_OPTIONS[mode](parser)
    add_model_options(parser)
    return parser


def load_config_defaults(name_or_path: str, mode: str) -> tuple[dict[str, Any], str]:
    """The parser defaults that config `name_or_path` sets for `mode`, checked against every mode's options."""
    data, label = _cli.load_config_mapping("ipu_cnn.inference", name_or_path)
    mine = _cli.option_actions(build_parser(mode))
    known = {dest for m in MODES for dest in _cli.option_actions(build_parser(m))} - {"paths", "output"}
    defaults: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise SystemExit(f"--config {label}: unknown key {raw_key!r}{hint}; keys are the options of "
                             "`python -m ipu_cnn.inference [predict|export] --help` with underscores")
        if key in mine:
            defaults[key] = _cli.convert_config_value(mine[key], value, f"--config {label}: {key}")
    return defaults, label


def split_mode(argv: Sequence[str]) -> tuple[str, list[str]]:
    """The mode named by the first argument (``benchmark`` when there is none) and the remaining arguments."""
    args = list(argv)
    if args and args[0] in MODES:
        return args[0], args[1:]
    return "benchmark", args


def parse_options(argv: Sequence[str]) -> InferenceOptions:
    """Parse one invocation: mode, ``--config`` defaults, flags, then the checks argparse cannot express."""
    mode, rest = split_mode(argv)
    parser = build_parser(mode)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(rest)
    label = "none"
    defaults: dict[str, Any] = {}
    if known.config is not None:
        defaults, label = load_config_defaults(known.config, mode)
        parser.set_defaults(**defaults)
    values = vars(parser.parse_args(rest))
    if defaults.get("random_weights") and (values["weights"] or values["pretrained"]):
        values["random_weights"] = False  # a config's random weights (Graphcore's G16 configs) yield to given ones
    return _resolve({**values, "mode": mode, "config": label})


def _resolve(values: dict[str, Any]) -> InferenceOptions:
    every = {dest for m in MODES for dest in _cli.option_actions(build_parser(m))}
    _cli.check_fields(InferenceOptions, every, extra=("mode", "config"))
    options = _cli.record_from(InferenceOptions, values)
    check_options(options)
    return options


def options_for(mode: str, **values: Any) -> InferenceOptions:
    """`InferenceOptions` of `mode` from the parser's defaults updated by `values` (for programmatic use and tests)."""
    parser = build_parser(mode)
    actions = _cli.option_actions(parser)
    required = {"predict": ["x"], "export": ["x"]}.get(mode, [])
    resolved = {**vars(parser.parse_args(required)), "mode": mode, "config": "none"}
    for key, value in values.items():
        if key not in actions:
            raise ValueError(f"unknown {mode} option {key!r}")
        resolved[key] = value
    return _resolve(resolved)


def check_options(options: InferenceOptions) -> None:
    """Cross-option checks; each error says what to change."""
    chosen = [name for name in ("weights", "random_weights", "pretrained") if getattr(options, name)]
    if len(chosen) > 1:
        flags = " and ".join("--" + name.replace("_", "-") for name in chosen)
        raise SystemExit(f"{flags} choose different weights: give one of them")
    if options.averaged_weights and not options.weights:
        raise SystemExit("--averaged-weights reads a training checkpoint's averaged weights: add --weights CHECKPOINT")
    if options.mode == "benchmark" and options.data_path and options.data not in ("real", "shards", "cifar10"):
        raise SystemExit(f"--data-path is read by --data real, shards and cifar10 only (got --data {options.data}): "
                         "drop one of them")
    if options.mode == "benchmark" and options.data == "shards" and not options.data_path:
        raise SystemExit("--data shards needs --data-path, the shard pattern (e.g. 'DIR/val-{000000..000015}.tar')")
    if options.mode == "export" and options.device == "ipu":
        raise SystemExit("export writes a device-independent graph (ONNX or TorchScript): use --device cpu or cuda; "
                         "PopTorch compiles for IPUs from the PyTorch model itself")
    from ipu_cnn.models.registry import ModelShape  # lazily: timm is not needed to parse flags

    try:
        ModelShape.from_record(options.as_dict())
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if options.offline_target_ipu_version is not None and not options.compile_only:
        raise SystemExit("--offline-target-ipu-version is the target of --compile-only: add --compile-only, or drop it")
    if options.device != "ipu":
        for flag, asked, why in (("--compile-only", options.compile_only, "it builds a PopTorch executable without "
                                  "IPUs"),
                                 ("--profile", options.profile is not None, "it writes a PopVision report of the IPU "
                                  "program; on CPU/CUDA use torch.profiler or Nsight")):
            if asked:
                raise SystemExit(f"{flag} needs --device ipu ({options.device} here): {why}")
    if options.mode == "predict" and options.compile_only:
        raise SystemExit("--compile-only compiles the benchmark's executable: run it without the predict mode (the "
                         "same model options and --micro-batch-size compile the same program)")
    from ipu_cnn.backends.ipu import IpuSettings, check_ipu_settings

    try:
        check_ipu_settings(IpuSettings(pipeline_splits=tuple(options.pipeline_splits or ()),
                                       available_memory_proportion=options.available_memory_proportion,
                                       exchange_memory_target=options.exchange_memory_target,
                                       num_io_tiles=options.num_io_tiles,
                                       offline_target_ipu_version=options.offline_target_ipu_version))
    except ValueError as error:
        raise SystemExit(str(error)) from None
