"""Checkpoint files: atomic, verified writes; safe, verified reads; discovery of the newest one; RNG state capture.

A checkpoint is one ``torch.save`` dict (see `ipu_cnn.train.run` for its keys; `_FIELDS` here checks them). It is
written to a temporary file in the target folder, flushed and fsync'ed, then renamed over its final name and the
folder fsync'ed: a kill at any moment leaves either the old set of files or the new one, never a torn file under a
checkpoint's name. A full disk is reported as such, naming the previous checkpoint, which the rename keeps intact.

Format version 2 holds tensors and plain Python values only, so it is read with a weights-only load (a crafted file
cannot run code: `ipu_cnn._serialization`), and carries a CRC32 of every tensor and of the fields around them, so a
corrupted file is refused naming the tensor instead of training on damaged weights. Version-1 files (NumPy's RNG
state as an array, no checksums) still load, with a warning that they cannot be verified; the checkpoints a resumed
run writes are version 2.
"""
from __future__ import annotations

import errno
import os
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ipu_cnn._serialization import (
    CHECKSUMS_KEY,
    CorruptFileError,
    UnsafeFileError,
    checksum_record,
    load_weights_only,
    verify_checksums,
)

CHECKPOINT_FORMAT = "ipu_cnn.checkpoint"
CHECKPOINT_VERSION = 2
_NAME = re.compile(r"^checkpoint-epoch(\d+)-step(\d+)(?:-(\w+))?\.pt$")
_PARTIAL_PREFIX = ".tmp-"

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "CheckpointWriteError", "CorruptFileError",
           "NotACheckpointError", "UnsafeFileError", "capture_rng_state", "checkpoint_name", "list_checkpoints",
           "load_checkpoint", "prepare_checkpoint_dir", "remove_partials", "resolve_checkpoint", "restore_rng_state",
           "save_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, from a newer ipu_cnn, or missing fields.
    (`UnsafeFileError` and `CorruptFileError`, also `ValueError`s, say why more precisely.)"""


class NotACheckpointError(ValueError):
    """A readable ``.pt`` file that is not an ipu_cnn checkpoint (a plain state dict, say)."""


class CheckpointWriteError(OSError):
    """A checkpoint (or the start-up probe of its folder) could not be written; ``errno`` is the cause's."""


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


def _no_space(error: BaseException) -> int | None:
    """ENOSPC or EDQUOT when `error`, or an error it was raised from or during (torch.save wraps a failed write in
    a RuntimeError whose context is the OSError), is a full disk or quota; else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def _filesystem(folder: Path) -> str:
    """The device holding `folder` and where it is mounted, e.g. ``/dev/nvme0n1p2 (mounted at /data)``."""
    mount = folder.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    source = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 2 and fields[1].replace("\\040", " ") == str(mount):
                    source = fields[0]  # the last mount at a point is the visible one
    except OSError:  # not Linux
        pass
    return f"{source} (mounted at {mount})" if source else f"the file system mounted at {mount}"


def _disk_full_error(code: int, path: Path) -> CheckpointWriteError:
    previous = path if path.is_file() else next(reversed(list_checkpoints(path.parent)), None)
    what = "no space left" if code == errno.ENOSPC else "disk quota exceeded"
    kept = (f"the previous checkpoint {previous} is intact" if previous is not None
            else f"no earlier checkpoint exists in {path.parent}")
    then = f", then continue with --resume {path.parent}" if previous is not None else ""
    error = CheckpointWriteError(f"{what} on {_filesystem(path.parent)} writing {path}; {kept}. Free some space "
                                 f"there or give --checkpoint-output-dir a folder on another disk{then}")
    error.errno = code
    return error


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write `state` to `path` atomically (temporary file + flush + fsync + rename + folder fsync), stamped with this
    format's name and version and the checksums of its tensors and fields.

    Raises:
        TypeError: `state` holds something other than tensors and plain values (a weights-only load could not read
            it back), named by its path in the state.
        CheckpointWriteError: the disk or the quota is full (the message names the device and the previous
            checkpoint, which is left intact; no partial file remains).
    """
    path = Path(path)
    record = {**state, "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
    record[CHECKSUMS_KEY] = checksum_record(record)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, suffix=".partial", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        code = _no_space(error)
        if code is not None:
            raise _disk_full_error(code, path) from error
        raise
    _fsync_dir(path.parent)
    return path


def prepare_checkpoint_dir(folder: str | os.PathLike[str]) -> Path:
    """Create `folder` and check that a file can be written in it, so that a run finds out at start-up, not at its
    first checkpoint an epoch later. (Permissions alone do not tell: root ignores them, a read-only mount does not.)

    Raises:
        CheckpointWriteError: the folder cannot be created or written, with why and what to do.
    """
    folder = Path(folder)
    fix = "give --checkpoint-output-dir a writable folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else error.strerror or str(error)
        raise _write_error(f"cannot create the checkpoint folder {folder}: {why}; {fix}", error) from error
    try:
        fd, probe = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, suffix=".partial", dir=folder)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        raise _write_error(f"the checkpoint folder {folder} is not writable ({error.strerror or error}): no checkpoint "
                           f"could be saved; make it writable or {fix}", error) from error
    return folder


def _write_error(message: str, cause: OSError) -> CheckpointWriteError:
    error = CheckpointWriteError(message)
    error.errno = cause.errno
    return error


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


_INT = (int,)
_NUMBER = (int, float)
_SEQUENCE = (list, tuple)
#: Fields of a checkpoint: name -> (accepted types, required). Optional ones may also be None.
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), True), "version": (_INT, True), "model": ((Mapping,), True), "optimizer": ((Mapping,), True),
    "scheduler": ((Mapping,), True), "epoch": (_INT, True), "step": (_INT, True), "epoch_step": (_INT, True),
    "rng": ((list,), True), "config": ((Mapping,), True), "model_name": ((str,), True), "num_classes": (_INT, True),
    "image_size": (_INT, True), "eval": ((Mapping,), True),
    "samples": (_INT, False), "scaler": ((Mapping,), False), "weight_average": ((Mapping,), False),
    "mixing": ((list,), False), "loader": ((list,), False), "metrics": ((Mapping,), False),
    "class_names": ((list,), False), "stage": ((str,), False), "averaged": ((Mapping,), False),
}
_EVAL_FIELDS: dict[str, tuple[type, ...]] = {"crop_pct": _NUMBER, "interpolation": (str,), "mean": _SEQUENCE,
                                              "std": _SEQUENCE}


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _is(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _check_fields(state: Mapping[str, Any], source: str) -> None:
    """Refuse a checkpoint without every field the applications read, or with one of the wrong type, naming them."""
    missing = [name for name, (_, required) in _FIELDS.items() if required and name not in state]
    if missing:
        fields = f"field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        raise CheckpointError(f"{source} lacks the {fields}, which every checkpoint ipu_cnn writes has: the file is "
                              "incomplete or was written by other code")
    problems = []
    for name, (types, required) in _FIELDS.items():
        value = state.get(name)
        if name in state and (required or value is not None) and not _is(value, types):
            problems.append(f"{name} is {_type_name(value)}, not {' or '.join(t.__name__ for t in types)}")
    if isinstance(state["model"], Mapping):
        wrong = [key for key, value in state["model"].items() if not isinstance(value, torch.Tensor)]
        if wrong:
            problems.append(f"model.{wrong[0]} is {_type_name(state['model'][wrong[0]])}, not a tensor")
    if isinstance(state["eval"], Mapping):
        for key, types in _EVAL_FIELDS.items():
            if not _is(state["eval"].get(key), types):
                got = _type_name(state["eval"][key]) if key in state["eval"] else "missing"
                problems.append(f"eval.{key} is {got}, not {' or '.join(t.__name__ for t in types)}")
    rng = state["rng"]
    if isinstance(rng, list) and not (rng and all(isinstance(r, Mapping) and {"python", "numpy", "torch"} <= set(r)
                                                  for r in rng)):
        problems.append("rng is not a list of per-rank generator states (python, numpy, torch)")
    average = state.get("weight_average")
    if isinstance(average, Mapping) and not (isinstance(average.get("model"), Mapping) and "updates" in average):
        problems.append("weight_average lacks its model or its update count")
    if problems:
        raise CheckpointError(f"{source} has malformed fields: {'; '.join(problems)}; the file is damaged or was "
                              "written by other code")


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint file (weights-only: it cannot run code), check that it is one of ours, verify its
    checksums (version 2; version 1 has none and loads with a warning) and check its fields.

    Raises:
        UnsafeFileError: unpickling the file would call code; nothing of it was run.
        NotACheckpointError: a readable file that is not an ipu_cnn checkpoint (e.g. a plain state dict).
        CorruptFileError: a tensor (named) or the fields around them fail their checksum.
        CheckpointError: unreadable (truncated, not a torch file), from a newer ipu_cnn, or with missing or
            malformed fields (named).
    """
    source = f"checkpoint {path}"
    try:
        state = load_weights_only(path, map_location=map_location)
    except UnsafeFileError:
        raise
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise NotACheckpointError(f"{path}: not an ipu_cnn checkpoint (no format={CHECKPOINT_FORMAT!r} key); for "
                                  "plain state dicts use --weights")
    version = state.get("version")
    if not _is(version, _INT) or not 1 <= version <= CHECKPOINT_VERSION:
        newer = _is(version, _INT) and version > CHECKPOINT_VERSION
        raise CheckpointError(f"{source}: format version {version!r} " + (
            f"is newer than this ipu_cnn reads ({CHECKPOINT_VERSION}); update ipu_cnn to load it" if newer
            else "is not one ipu_cnn ever wrote; the file is damaged"))
    if version >= 2:
        verify_checksums(state, source)
    else:
        warnings.warn(f"{source} is format version 1, which carries no checksums: its tensors cannot be verified. "
                      "It loads as is; checkpoints written from now on are version 2 and verified", stacklevel=2)
    _check_fields(state, source)
    return state


#: A checkpoint `resolve_checkpoint(..., hand_over=True)` loaded, kept for the next call that asks for the same
#: unchanged file: --resume reads the options at parse time and the trainer's state right after, from one load and one
#: checksum pass. (file, (mtime_ns, size), state); taken by that next call.
_handed_over: tuple[Path, tuple[int, int], dict[str, Any]] | None = None


def _file_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def resolve_checkpoint(path: str | os.PathLike[str], *, hand_over: bool = False) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from: `path` itself, or the newest usable one in folder `path` (an unreadable,
    corrupt or incomplete newest file is reported and the one before it used; a file that would run code stops the
    search: someone put it there, and the folder needs a look before anything in it is trusted).

    With `hand_over`, the loaded state is also kept for the next call naming the same file while it is unchanged
    (that call gets it without reading the file again)."""
    global _handed_over
    path = Path(path).expanduser()
    kept, _handed_over = _handed_over, None
    if kept is not None and path.is_file() and kept[0] == path.resolve() and kept[1] == _file_key(path):
        return path, kept[2]
    resolved, state = _resolve_checkpoint(path)
    if hand_over:
        _handed_over = (resolved.resolve(), _file_key(resolved), state)
    return resolved, state


def _resolve_checkpoint(path: Path) -> tuple[Path, dict[str, Any]]:
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
        except UnsafeFileError:
            raise
        except ValueError as error:
            warnings.warn(f"skipping unreadable checkpoint: {error}", stacklevel=2)
    raise CheckpointError(f"--resume {path}: none of its {len(candidates)} checkpoints is readable")


def capture_rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch CPU and CUDA generator states, as tensors and plain values (NumPy's key
    as a list of ints) so that a weights-only load reads them back."""
    name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {"python": random.getstate(),
                             "numpy": (str(name), key.tolist(), int(pos), int(has_gauss), float(gauss)),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `capture_rng_state` captured (CUDA states only where the same devices exist); also takes
    version-1 checkpoints' NumPy state, whose key is an array."""
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
