"""Checkpoint files: atomic writes, discovery of the newest one, and RNG state capture.

A checkpoint is one ``torch.save`` dict (see `ipu_cnn.train.run` for its keys). It is written to a temporary file in
the target folder, flushed and fsync'ed, then renamed over its final name and the folder fsync'ed: a kill at any
moment leaves either the old set of files or the new one, never a torn file under a checkpoint's name.
"""
from __future__ import annotations

import os
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

CHECKPOINT_FORMAT = "ipu_cnn.checkpoint"
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^checkpoint-epoch(\d+)-step(\d+)(?:-(\w+))?\.pt$")
_PARTIAL_PREFIX = ".tmp-"


def checkpoint_name(epoch: int, step: int, tag: str | None = None) -> str:
    """File name of the checkpoint taken after `step` optimizer steps, in (0-based) `epoch`; `tag` marks
    interrupted or final ones (``checkpoint-epoch0003-step00001200-interrupted.pt``)."""
    suffix = f"-{tag}" if tag else ""
    return f"checkpoint-epoch{epoch:04d}-step{step:09d}{suffix}.pt"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write `state` to `path` atomically (temporary file + flush + fsync + rename + folder fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def remove_partials(folder: str | os.PathLike[str]) -> int:
    """Delete temporary files left by writes that were killed; returns how many."""
    removed = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(f"{_PARTIAL_PREFIX}*.partial"):
            try:
                p.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def list_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files in `folder`, oldest first (by step, then modification time); partial writes are not listed."""
    folder = Path(folder)
    found = []
    for p in folder.iterdir() if folder.is_dir() else []:
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(2)), p.stat().st_mtime, p))
    return [p for _, _, p in sorted(found)]


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint file and check that it is one of ours."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an ipu_cnn checkpoint (no format={CHECKPOINT_FORMAT!r} key); for plain state "
                         "dicts use --weights")
    return state


def resolve_checkpoint(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from: `path` itself, or the newest readable one in folder `path` (an unreadable
    newest file is reported and the one before it used)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path, load_checkpoint(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {path}: no such file or folder")
    candidates = list_checkpoints(path)
    if not candidates:
        raise FileNotFoundError(f"--resume {path}: the folder holds no checkpoint-*.pt files")
    for candidate in reversed(candidates):
        try:
            return candidate, load_checkpoint(candidate)
        except ValueError as error:
            warnings.warn(f"skipping unreadable checkpoint: {error}", stacklevel=2)
    raise ValueError(f"--resume {path}: none of its {len(candidates)} checkpoints is readable")


def capture_rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch CPU and CUDA generator states."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `capture_rng_state` captured (CUDA states only where the same devices exist)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
