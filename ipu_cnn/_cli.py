"""Plumbing shared by the applications' command lines: YAML config lookup, argparse value types, thread budgets."""
from __future__ import annotations

import argparse
import difflib
import os
from importlib import resources
from pathlib import Path
from typing import Any, Sequence


class AttrDict(dict):
    """A resolved set of options by dest name, also readable as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


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
