"""Reading ``.pt`` files without running their code, and checksums that catch corrupted tensors.

``torch.load(weights_only=False)`` unpickles whatever a file names, so a crafted ``.pt`` runs code when it is loaded.
Every ``.pt`` this package reads (checkpoints, ``--weights`` state dicts) goes through `load_weights_only`, which
allows tensors and plain Python values only and turns a refusal into one line that names what the file would have
called. NumPy arrays of plain dtypes are allowed too: version-1 checkpoints hold NumPy's RNG state as one.

A zip written by ``torch.save`` is not verified on load: a flipped byte inside a tensor's storage loads silently.
`checksum_record` computes, before saving, a CRC32 of every tensor's bytes (named by its path in the state, e.g.
``model.layer1.0.conv1.weight``) and one of the non-tensor structure around them (keys, values, tensor dtypes and
shapes); `verify_checksums` recomputes both after loading and names the first tensor, or the fields, that differ.
CRC32 (zlib's: about 0.35 s per 300 MB ResNet-50 checkpoint with its optimizer state and averaged weights, a third
of ``torch.save``'s time) is a check against corruption, not against tampering: a crafted file is stopped by the
weights-only load, not by the checksums.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import zlib
from collections import OrderedDict
from typing import Any, Mapping

import torch

CHECKSUMS_KEY = "checksums"
_ALGORITHM = "crc32"
_LEAVES = (type(None), bool, int, float, complex, str, torch.dtype, torch.device)


class UnsafeFileError(ValueError):
    """A ``.pt`` file whose unpickling would call something a weights-only load does not allow."""


class CorruptFileError(ValueError):
    """A ``.pt`` file whose contents do not match the checksums saved with them."""


def _numpy_globals() -> list[Any]:
    """What unpickling a NumPy array of a plain dtype needs (version-1 checkpoints hold NumPy's RNG state)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)), type(np.dtype(np.float64))]


def _allow_numpy() -> contextlib.AbstractContextManager[Any]:
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    return safe_globals(_numpy_globals()) if safe_globals is not None else contextlib.nullcontext()


#: Weights-only refusals that mean "this file asks to call or build something" (a crafted or foreign file), as
#: opposed to pickle data that is merely damaged ("Unsupported operand", "String is too long").
_UNSAFE = re.compile(r"GLOBAL|call reduce|Can only build|Can only create new object|must be imported to load", re.I)


def load_weights_only(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` of `path` that cannot run code from the file.

    Raises:
        UnsafeFileError: the file's pickle calls a function or builds a class outside tensors and plain values (a
            crafted file, or one saved with objects such as ``argparse.Namespace``); the message names it.
        pickle.UnpicklingError: damaged pickle data, in one line (torch's own message suggests an unrestricted
            load, which would not help).
        Exception: whatever else ``torch.load`` raises for a missing, truncated or foreign file, unchanged.
    """
    try:
        with _allow_numpy():
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "weights only" not in text.lower():
            raise
        detail = text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0].strip()
        detail = detail.split(" Please use ", 1)[0].strip()
        if _UNSAFE.search(detail):
            raise UnsafeFileError(_refusal(path, detail)) from None
        raise pickle.UnpicklingError(f"damaged pickle data ({detail})") from None


def _refusal(path: str | os.PathLike[str], detail: str) -> str:
    called = re.search(r"GLOBAL (\S+)", detail)
    what = (f"unpickling it would call {called.group(1)}" if called
            else f"unpickling it needs more than tensors and plain values ({detail})")
    return (f"{path}: refused to load: {what}; only tensors and plain Python values are allowed, so that no file "
            "can run code here. ipu_cnn checkpoints and state dicts never need more: the file was made by other code, "
            "or crafted. If you trust its source, re-save just its tensors: torch.save(torch.load(FILE, "
            "weights_only=False)['state_dict'], 'weights.pt')")


def _walk(obj: Any, path: str, parts: list[str], tensors: list[tuple[str, torch.Tensor]]) -> None:
    """Append `obj`'s structure to `parts` (tensors as dtype and shape) and its tensors, by path, to `tensors`."""
    kind = type(obj)
    if isinstance(obj, torch.Tensor):
        parts.append(f"T{obj.dtype}{tuple(obj.shape)}")
        tensors.append((path, obj))
    elif kind in (dict, OrderedDict):
        parts.append("{")
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(f"{path or 'the state'} has a key of type {type(key).__name__} ({key!r}); keys must "
                                "be str or int")
            parts.append(repr(key))
            _walk(value, f"{path}.{key}" if path else str(key), parts, tensors)
        parts.append("}")
    elif kind in (list, tuple, torch.Size):
        parts.append({list: "[", tuple: "(", torch.Size: "S("}[kind])
        for i, value in enumerate(obj):
            _walk(value, f"{path}.{i}" if path else str(i), parts, tensors)
        parts.append("]")
    elif kind in _LEAVES:
        parts.append(repr(obj))
    else:
        raise TypeError(f"{path or 'the state'} holds a {kind.__module__}.{kind.__qualname__}, which a weights-only "
                        "load cannot read back: store tensors and plain Python values (dict, list, tuple, str, int, "
                        "float, bool, None) only")


def _tensor_crc32(path: str, tensor: torch.Tensor) -> int:
    tensor = tensor.detach()
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise TypeError(f"{path}: a {tensor.layout} {tensor.dtype} tensor cannot be checksummed; store a dense one")
    flat = tensor.cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
    return zlib.crc32(flat.view(torch.uint8).numpy())


def _structure(state: Mapping[str, Any]) -> tuple[int, list[tuple[str, torch.Tensor]]]:
    parts: list[str] = []
    tensors: list[tuple[str, torch.Tensor]] = []
    _walk({k: v for k, v in state.items() if k != CHECKSUMS_KEY}, "", parts, tensors)
    return zlib.crc32("\x1f".join(parts).encode("utf-8", "surrogatepass")), tensors


def checksum_record(state: Mapping[str, Any]) -> dict[str, Any]:
    """The checksums of `state` (its entry under ``CHECKSUMS_KEY``, if any, excluded), to be saved under that key.

    Raises:
        TypeError: `state` holds something a weights-only load could not read back (named by its path).
    """
    fields, tensors = _structure(state)
    sums: dict[str, int] = {}
    for path, tensor in tensors:
        if path in sums:
            raise ValueError(f"two tensors of the state have the path {path}; their checksums would collide")
        sums[path] = _tensor_crc32(path, tensor)
    return {"algorithm": _ALGORITHM, "fields": fields, "tensors": sums}


def verify_checksums(state: Mapping[str, Any], source: str | os.PathLike[str]) -> None:
    """Check `state`, loaded from `source`, against the checksums saved in it.

    Raises:
        CorruptFileError: a tensor's bytes, or the fields around the tensors, differ from what was saved (the
            message names the tensor), or the record itself is missing or unreadable.
    """
    record = state.get(CHECKSUMS_KEY)
    if not isinstance(record, Mapping) or record.get("algorithm") != _ALGORITHM \
            or not isinstance(record.get("tensors"), Mapping) or not isinstance(record.get("fields"), int):
        raise CorruptFileError(f"{source}: its checksum record is missing or unreadable; the file is corrupt")
    try:
        fields, tensors = _structure(state)
    except TypeError as error:
        raise CorruptFileError(f"{source}: {error}; the file is corrupt or was not written by ipu_cnn") from None
    expected: Mapping[str, Any] = record["tensors"]
    for path, tensor in tensors:
        if path not in expected:
            raise CorruptFileError(f"{source}: tensor {path} has no checksum; the file is corrupt")
        if _tensor_crc32(path, tensor) != expected[path]:
            raise CorruptFileError(f"{source}: tensor {path} fails its checksum; the file is corrupt")
    missing = sorted(set(expected) - {path for path, _ in tensors})
    if missing:
        raise CorruptFileError(f"{source}: tensor {missing[0]} is missing ({len(missing)} in all); the file is corrupt")
    if fields != record["fields"]:
        raise CorruptFileError(f"{source}: its non-tensor fields (keys, counters, options, tensor shapes) fail their "
                               "checksum; the file is corrupt")

