"""The command-line layer both applications share: option groups declared once, ``--config`` YAML lookup and
conversion, typed frozen option records checked against the parser, and the one error presenter.

Each application (``ipu_cnn.train.config``, ``ipu_cnn.inference.config``) builds its parser from the ``add_*``
groups here plus its own options, and resolves it into a frozen dataclass whose fields are exactly the parser's
option names (`check_fields` makes a drift an error at the first parse, and a test compares them).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import traceback
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "ipu")
HALF_DTYPES: tuple[str, ...] = ("auto", "float16", "bfloat16")
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic")

T = TypeVar("T")


def named_configs(package: str) -> list[str]:
    """Names of the YAML configs shipped in ``package``'s ``configs`` folder (``--config NAME``)."""
    folder = resources.files(package) / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def config_text(package: str, name_or_path: str) -> tuple[str, str]:
    """The YAML text and a label for ``--config``: a config shipped in ``package``, or a file path."""
    names = named_configs(package)
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path or os.path.isfile(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise SystemExit(f"--config {name_or_path}: no such file (named configs: {', '.join(names)})")
        return path.read_text(), str(path)
    resource = resources.files(package) / "configs" / f"{name_or_path}.yaml"
    if not resource.is_file():
        close = difflib.get_close_matches(name_or_path, names, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise SystemExit(f"--config {name_or_path}: unknown config name; use one of {', '.join(names)} or "
                         f"a YAML file path.{hint}")
    return resource.read_text(), name_or_path


def load_config_mapping(package: str, name_or_path: str) -> tuple[dict[str, Any], str]:
    """The YAML mapping of ``--config`` (a config shipped in ``package``, or a file) and its label; a clear error when
    it is not YAML or not a mapping."""
    import yaml

    text, label = config_text(package, name_or_path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise SystemExit(f"--config {label}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"--config {label}: expected a mapping of option names to values, got {type(data).__name__}")
    return data, label


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by dest name, as config files name them (without help and --config itself)."""
    return {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The options `argv` gives explicitly, by dest, converted as `parser` converts them (`parser` is spent: its
    defaults are suppressed, so build a fresh one; build it without -h so that a help request parses too)."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    namespace, _ = parser.parse_known_args(list(argv))
    return vars(namespace)


def convert_config_value(action: argparse.Action, value: Any, where: str) -> Any:
    """Check and convert one YAML value as argparse would the same text on the command line; ``where`` names it in
    errors (e.g. ``--config resnet50: lr``)."""
    if value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise SystemExit(f"{where} must be true or false, got {value!r}")
        return value

    def one(item: Any) -> Any:
        if isinstance(item, (dict, list)):
            raise SystemExit(f"{where}: expected a single value, got {item!r}")
        text = str(item)
        try:
            converted = action.type(text) if callable(action.type) else text
        except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
            raise SystemExit(f"{where}: invalid value {item!r} ({error})") from None
        if action.choices is not None and converted not in action.choices:
            raise SystemExit(f"{where}: {item!r} is not one of {', '.join(map(str, action.choices))}")
        return converted

    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        items = value if isinstance(value, list) else [value]
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise SystemExit(f"{where}: expected {action.nargs} values, got {value!r}")
        return [one(v) for v in items]
    return one(value)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def optional_int(text: str) -> int | None:
    """An int, or None for none / null / auto / empty."""
    return None if str(text).lower() in ("none", "null", "", "auto") else int(text)


def optional_float(text: str) -> float | None:
    """A float, or None for none / null / empty."""
    return None if str(text).lower() in ("none", "null", "") else float(text)


def cpu_threads_per_process() -> int | None:
    """Torch threads per process when several share one machine's CPUs under torchrun (cores / local processes)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local <= 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // local)


def image_size(text: str) -> int | None:
    """``--image-size``: a side of at least 8 pixels, or None (none / auto: the model's)."""
    value = optional_int(text)
    if value is not None and value < 8:
        raise argparse.ArgumentTypeError(f"must be at least 8 pixels, got {value}")
    return value


def crop_pct(text: str) -> float | None:
    """``--eval-crop-pct``: a fraction in (0, 1], or None (the model's)."""
    value = optional_float(text)
    if value is not None and not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


# -- option groups declared once ---------------------------------------------------------------------------------
def add_config_option(parser: argparse.ArgumentParser, package: str, help: str, names_note: str = "") -> None:
    """``--config NAME|FILE``: a YAML config shipped in `package`'s ``configs`` folder, or a file. The help reads
    ``named config (NAMES<names_note>)<help>``."""
    g = parser.add_argument_group("config")
    g.add_argument("--config", default=None,
                   help="named config (" + ", ".join(named_configs(package)) + names_note + ")" + help)


def add_model_option(group: Any, *, default: str | None, help: str) -> None:
    """``--model``: a Graphcore model name or any timm name."""
    group.add_argument("--model", default=default, help=help)


def add_model_shape_options(group: Any) -> None:
    """Graphcore's norm and EfficientNet shape options (`ipu_cnn.models.ModelShape`), the same in both applications;
    a checkpoint records them, so validation and inference rebuild the shape it was trained with."""
    group.add_argument("--norm-type", choices=("batch", "group", "none"), default="batch",
                       help="norm layers: the model's BatchNorm, GroupNorm in its place, or none")
    group.add_argument("--norm-num-groups", type=positive_int, default=32, help="GroupNorm groups (--norm-type group)")
    group.add_argument("--norm-eps", type=optional_float, default=None,
                       help="epsilon of every norm layer (default: the model's; 1e-5 for GroupNorm)")
    group.add_argument("--batchnorm-momentum", type=optional_float, default=None,
                       help="BatchNorm running-statistics momentum, PyTorch's convention (default: the model's, 0.1)")
    group.add_argument("--efficientnet-expand-ratio", type=positive_int, default=6,
                       help="expansion of the EfficientNet inverted-bottleneck blocks (6 as published; Graphcore's "
                       "G16 recipes: 4)")
    group.add_argument("--efficientnet-group-dim", type=positive_int, default=1,
                       help="channels per group of the EfficientNet depthwise convolutions (1: depthwise as "
                       "published; Graphcore's G16 recipes: 16)")
    group.add_argument("--enable-fast-groupnorm", action="store_true",
                       help="accepted for Graphcore's configs: it chose an IPU GroupNorm kernel; PyTorch's GroupNorm "
                       "serves every device here, so it changes nothing")


def add_num_classes_option(group: Any, help: str) -> None:
    group.add_argument("--num-classes", type=optional_int, default=None, help=help)


def add_image_size_option(group: Any, help: str) -> None:
    """``--image-size``: validated the same way in both applications."""
    group.add_argument("--image-size", type=image_size, default=None, help=help)


def add_eval_geometry_options(group: Any, *, interpolation_default: str | None, crop_help: str) -> None:
    """``--interpolation`` and ``--eval-crop-pct``: how the eval transform resizes and crops."""
    group.add_argument("--interpolation", choices=INTERPOLATIONS, default=interpolation_default,
                       help="antialiased resize filter (Pillow semantics)")
    group.add_argument("--eval-crop-pct", type=crop_pct, default=None, help=crop_help)


def add_image_options(group: Any, *, interpolation_default: str | None, size_help: str, crop_help: str) -> None:
    """``--image-size``, ``--eval-crop-pct``, ``--interpolation``: the input geometry, in one group."""
    add_image_size_option(group, size_help)
    group.add_argument("--eval-crop-pct", type=crop_pct, default=None, help=crop_help)
    group.add_argument("--interpolation", choices=INTERPOLATIONS, default=interpolation_default,
                       help="antialiased resize filter (Pillow semantics)")


def add_device_option(group: Any) -> None:
    group.add_argument("--device", choices=DEVICES, default="auto",
                       help="auto: CUDA when available, else CPU; ipu needs PopTorch from the Poplar SDK")


def add_precision_options(group: Any, *, choices: Sequence[str], help: str, half_dtype_help: str) -> None:
    """``--precision`` (Graphcore's activations.weights spelling) and ``--half-dtype`` (CPU/CUDA autocast)."""
    group.add_argument("--precision", choices=tuple(choices), default="32.32", help=help)
    group.add_argument("--half-dtype", choices=HALF_DTYPES, default="auto", help=half_dtype_help)


def add_parallel_options(group: Any, *, replicas_help: str, iterations_help: str) -> None:
    """``--replicas`` and ``--device-iterations``: how many micro-batches one host batch holds."""
    group.add_argument("--replicas", type=positive_int, default=1, help=replicas_help)
    group.add_argument("--device-iterations", type=positive_int, default=1, help=iterations_help)


def add_micro_batch_option(group: Any, help: str) -> None:
    group.add_argument("--micro-batch-size", "--batch-size", dest="micro_batch_size", type=positive_int, default=32,
                       help=help)


def add_worker_options(group: Any, *, threads_help: str, prefetch: bool = True) -> None:
    """``--dataloader-worker`` (alias ``--dataloader-workers``) and ``--dataloader-prefetch``."""
    group.add_argument("--dataloader-worker", "--dataloader-workers", dest="dataloader_worker", type=optional_int,
                       default=None, help=threads_help)
    if prefetch:
        group.add_argument("--dataloader-prefetch", type=positive_int, default=2,
                           help="batches the loader prepares ahead")


def add_half_partial_option(group: Any, help: str = "IPU: half-precision partials in matmuls and convs") -> None:
    group.add_argument("--half-partial", action="store_true", help=help)


def add_ipu_tuning_options(group: Any, *, cache_default: str | None, cache_help: str) -> None:
    """The PopTorch knobs both applications pass on: memory proportion (one value, or one per pipeline stage) and
    executable cache."""
    group.add_argument("--available-memory-proportion", type=float, nargs="+", default=None, metavar="PROPORTION",
                       help="IPU: fraction of tile memory for matmul/conv temporaries; one value for every pipeline "
                       "stage, or one per stage")
    group.add_argument("--executable-cache-dir", default=cache_default, help=cache_help)


def add_ipu_graph_options(group: Any) -> None:
    """Graphcore's IPU options that shape the compiled program in both applications (one spelling and help each):
    pipeline stages, exchange target, I/O tiles, offline compilation and profiling. The training-only ones
    (recomputation, optimizer-state placement, floating-point exceptions) stay in the training parser."""
    from ipu_cnn.backends.ipu import EXCHANGE_MEMORY_TARGETS, IPU_VERSIONS  # lazily: torch is not needed for _cli

    group.add_argument("--pipeline-splits", nargs="*", default=[], metavar="MODULE",
                       help="modules where pipeline stages 2, 3, ... begin, one IPU per stage (the model's module "
                       "names, e.g. blocks.3.0.conv_pw; Graphcore's blocks/3/0/conv_pw spelling works too); "
                       "inference pipelines the forward pass the same way")
    group.add_argument("--exchange-memory-target", choices=EXCHANGE_MEMORY_TARGETS, default=None,
                       help="Poplar's exchange optimisation target: cycles (fastest, most memory), balanced or memory "
                       "(default: Poplar's)")
    group.add_argument("--num-io-tiles", type=non_negative_int, default=0,
                       help="tiles set aside to overlap host I/O with compute (0: none; else even, 32 to 192)")
    group.add_argument("--compile-only", action="store_true",
                       help="compile the executable (training: the training step; inference: the forward pass for "
                       "the host batch) for an offline IPU target and stop, without attaching to IPUs (IPU only; "
                       "keep it with --executable-cache-dir)")
    group.add_argument("--offline-target-ipu-version", type=int, choices=IPU_VERSIONS, default=None,
                       help="IPU version --compile-only targets (1: Mk1, 2: Mk2, 21: Bow; default: this machine's "
                       "IPUs)")
    group.add_argument("--profile", nargs="?", const="", default=None, metavar="DIR",
                       help="write a PopVision Graph Analyser report (compilation and execution) into DIR (default: "
                       "RUN_DIR/profile in training, ./profile in inference); keep the profiled run short (training: "
                       "--max-steps N; inference: a few measured iterations) (IPU only)")


def add_seed_option(group: Any, help: str) -> None:
    group.add_argument("--seed", type=int, default=0, help=help)


# -- typed option records ----------------------------------------------------------------------------------------
def check_fields(cls: type, dests: Iterable[str], extra: Iterable[str] = ()) -> None:
    """Fail when the frozen option record `cls` and the parser's options (`dests`, plus `extra` non-flag fields)
    name different things, so the schema and the record cannot drift apart."""
    fields = {f.name for f in dataclasses.fields(cls)}
    wanted = set(dests) | set(extra)
    if fields != wanted:
        raise TypeError(f"{cls.__name__} and its parser disagree: fields without an option "
                        f"{sorted(fields - wanted)}, options without a field {sorted(wanted - fields)}")


def record_from(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of the frozen record `cls` from `values` (every field must be present; extra keys are errors)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}")
    return cls(**values)


# -- the one error presenter -------------------------------------------------------------------------------------
def raised_by_us(error: BaseException) -> bool:
    """True for errors raised in ipu_cnn's own code, whose messages say what to do: printed as one line. Errors from
    inside torch or other libraries keep their traceback (IPU_CNN_TRACEBACK=1 shows it for ours too)."""
    frames = traceback.extract_tb(error.__traceback__)
    package = os.path.dirname(os.path.abspath(__file__))
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(package + os.sep)


def config_error_status(stop: SystemExit) -> int:
    """A config error (`SystemExit` with our message) as one ``error:`` line and status 2; argparse's own exits
    (which printed their usage already) and help requests are re-raised."""
    if not isinstance(stop.code, str):
        raise stop
    print(f"error: {stop.code}", file=sys.stderr)
    return 2


def present_errors(body: Callable[[], int]) -> int:
    """Run `body`; our `RuntimeError`/`ValueError`/`OSError` become one ``error:`` line and status 2."""
    try:
        return body()
    except (RuntimeError, ValueError, OSError) as error:
        if not raised_by_us(error) or os.environ.get("IPU_CNN_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
