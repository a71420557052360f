"""``python -m ipu_cnn.train.average``: average the weights of a run's saved checkpoints into one checkpoint.

Graphcore's ``weight_avg.py`` as a step of its own (the in-training, per-step average is `ipu_cnn.train.averaging`):
the run folder's checkpoints are taken in epoch/step order, the last ``--weight-avg-N`` of them (-1: all) are folded
oldest first, and the result is written beside them as ``checkpoint-epochE-stepS_averaged.pt`` (E, S: the newest
one's), a checkpoint in the project's format (v2, with checksums) that ``validate``, ``--weights``, inference and
export read like any other. It holds no training state (its optimizer and scheduler are empty), so ``--resume``
refuses it and does not pick it from a folder; start a run from it with ``--weights``.

Strategies, over checkpoints w_1 (oldest) .. w_N (newest), as ``torch.optim.swa_utils.AveragedModel`` folds them:
``mean``: (w_1 + ... + w_N) / N; ``exponential`` with decay d: a = w_1, then a = d * a + (1 - d) * w_i for i = 2..N.
Floating-point buffers (BatchNorm running means and variances) are averaged like the weights, in float64, then cast
back; Graphcore's AveragedModel kept the first checkpoint's buffers instead, which pairs averaged weights with
statistics of other weights. Integer buffers (``num_batches_tracked``) are counts, not averaged: they are the newest
checkpoint's. Only epoch-boundary checkpoints count: ``-interrupted`` ones, taken mid-epoch by a stop, are skipped,
and so is the other stage's of a ``--half-res-training`` run.
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ipu_cnn import _cli
from ipu_cnn.train.checkpoint import checkpoint_name, list_checkpoints, load_checkpoint, save_checkpoint

STRATEGIES = ("mean", "exponential")
_STEP = re.compile(r"^checkpoint-epoch\d+-step(\d+)")
AVERAGED_SUFFIX = "_averaged.pt"


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]], strategy: str,
                        decay: float = 0.99) -> dict[str, torch.Tensor]:
    """The average of `states` (oldest first) by `strategy` (see the module docstring); integer tensors are the
    newest state's. All states must have the same keys, shapes and dtypes."""
    if strategy not in STRATEGIES:
        raise ValueError(f"--weight-avg-strategy must be mean or exponential, got {strategy!r}")
    if not states:
        raise ValueError("no checkpoints to average")
    if strategy == "exponential" and not 0.0 < decay < 1.0:
        raise ValueError(f"--weight-avg-exp-decay must be in (0, 1), got {decay}")
    first, newest = states[0], states[-1]
    for index, state in enumerate(states[1:], 1):
        if state.keys() != first.keys():
            extra = sorted(set(state) ^ set(first))[:3]
            raise ValueError(f"checkpoint {index + 1} of {len(states)} holds other tensors than the first ({extra}): "
                             "they are not of the same model")
    averaged: dict[str, torch.Tensor] = {}
    for key, tensor in first.items():
        if not tensor.is_floating_point():
            averaged[key] = newest[key].clone()
            continue
        total = tensor.to(torch.float64, copy=True)
        for count, state in enumerate(states[1:], 2):
            value = state[key]
            if value.shape != tensor.shape:
                raise ValueError(f"{key}: shape {tuple(value.shape)} in one checkpoint, {tuple(tensor.shape)} in the "
                                 "first: they are not of the same model")
            if strategy == "mean":
                total += (value.to(torch.float64) - total) / count
            else:
                total.mul_(decay).add_(value.to(torch.float64), alpha=1.0 - decay)
        averaged[key] = total.to(tensor.dtype)
    return averaged


def select_checkpoints(folder: str | Path, last: int = -1, stage: str | None = None,
                       max_step: int | None = None,
                       load: Callable[[Path], dict[str, Any]] = load_checkpoint) -> list[Path]:
    """The checkpoints of `folder` (or its ``checkpoints/``) to average, oldest first: epoch-boundary ones (not
    ``-interrupted``), taken at or before `max_step` when given (by name), of `stage` when given (read from the
    files with `load`, newest first, only until `last` are found), the `last` newest (-1: all)."""
    if last == 0 or last < -1:
        raise ValueError(f"--weight-avg-N must be a positive number of checkpoints or -1 for all, got {last}")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"--checkpoint-input-dir {folder}: no such folder")
    found = list_checkpoints(folder) or list_checkpoints(folder / "checkpoints")
    found = [p for p in found if not p.stem.endswith("-interrupted")]
    if max_step is not None:
        found = [p for p in found if int(_STEP.match(p.name).group(1)) <= max_step]  # type: ignore[union-attr]
    chosen: list[Path] = []
    for path in reversed(found):
        if last != -1 and len(chosen) == last:
            break
        if stage is None or load(path).get("stage", "train") == stage:
            chosen.append(path)
    if not chosen:
        raise FileNotFoundError(f"--checkpoint-input-dir {folder}: no epoch checkpoints (checkpoint-*.pt, not "
                                f"-interrupted{f', of the {stage} stage' if stage else ''}) to average")
    return chosen[::-1]


def averaged_path(newest: Mapping[str, Any], folder: Path) -> Path:
    """Where the average of checkpoints ending with `newest` goes: not a name --resume or validate's folder scan
    would take for a training checkpoint."""
    return folder / (checkpoint_name(int(newest["epoch"]), int(newest["step"]))[:-3] + AVERAGED_SUFFIX)


def average_checkpoints(paths: Sequence[Path], strategy: str, decay: float = 0.99, output: Path | None = None,
                        load: Callable[[Path], dict[str, Any]] = load_checkpoint) -> tuple[Path, dict[str, Any]]:
    """Average the ``model`` weights of checkpoint files `paths` (oldest first, read with `load`) and write the
    averaged checkpoint (default: `averaged_path` beside the newest); returns its path and contents."""
    states: list[dict[str, torch.Tensor]] = []
    newest: dict[str, Any] = {}
    for path in paths:
        state = load(path)
        if newest and (state["model_name"], state["num_classes"]) != (newest["model_name"], newest["num_classes"]):
            raise ValueError(f"{path}: holds {state['model_name']} with {state['num_classes']} classes, the others "
                             f"{newest['model_name']} with {newest['num_classes']}: average one run's checkpoints")
        states.append(state["model"])
        newest = state
    record = {
        **newest, "model": average_state_dicts(states, strategy, decay), "optimizer": {}, "scheduler": {},
        "scaler": None, "weight_average": None, "mixing": None, "loader": None, "metrics": {},
        "averaged": {"strategy": strategy, "decay": float(decay) if strategy == "exponential" else None,
                     "count": len(paths), "checkpoints": [Path(p).name for p in paths]},
    }
    record.pop("checksums", None)
    target = output or averaged_path(newest, Path(paths[-1]).parent)
    return save_checkpoint(record, target), record


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ipu_cnn.train.average", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint-input-dir", "--checkpoint-path", dest="checkpoint_input_dir", required=True,
                   help="a run's checkpoint folder (or the run folder, whose checkpoints/ is used)")
    p.add_argument("--weight-avg-strategy", choices=STRATEGIES, default="mean",
                   help="mean of the checkpoints, or exponential: a = d * a + (1 - d) * next, oldest first")
    p.add_argument("--weight-avg-exp-decay", type=float, default=0.99, help="d of the exponential strategy")
    p.add_argument("--weight-avg-N", dest="weight_avg_N", type=int, default=-1,
                   help="average the last N checkpoints (-1: all)")
    p.add_argument("--stage", choices=("train", "fine-tune"), default=None,
                   help="only this stage's checkpoints (a --half-res-training run has both; default: the newest's)")
    p.add_argument("--output", default=None, help="file to write (default: beside the newest, *_averaged.pt)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        folder = Path(args.checkpoint_input_dir).expanduser()
        load = functools.cache(load_checkpoint)  # each file read and verified once: for its stage, then its weights
        stage = args.stage
        if stage is None:  # the newest checkpoint's stage: a half-res run's folder holds both
            newest = select_checkpoints(folder, 1)
            stage = load(newest[-1]).get("stage", "train")
        paths = select_checkpoints(folder, args.weight_avg_N, stage, load=load)
        path, _ = average_checkpoints(paths, args.weight_avg_strategy, args.weight_avg_exp_decay,
                                      Path(args.output).expanduser() if args.output else None, load=load)
        how = args.weight_avg_strategy + (f" (decay {args.weight_avg_exp_decay})"
                                          if args.weight_avg_strategy == "exponential" else "")
        print(f"averaged {len(paths)} checkpoint{'s' if len(paths) > 1 else ''} ({how}): "
              f"{', '.join(p.name for p in paths)}")
        print(f"wrote {path}")
        return 0

    return _cli.present_errors(run)


if __name__ == "__main__":
    sys.exit(main())
