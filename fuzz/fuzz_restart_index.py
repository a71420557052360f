#!/usr/bin/env python3
"""Fuzz target: restart-indexed JPEGs (``_C.add_restart_index``, ``_C.restart_index_info`` and the decoder's fast
path that starts a region decode at a restart interval).

Input bytes that carry no index are transcoded first (a DecodeError is an accepted answer) and then damaged in place
at a few positions drawn from the input's CRC: in the index segment, at a restart marker, or in the scan data, so plain
JPEG seeds reach the index parser with stale and damaged indexes. Oracles: a transcode is lossless (its full-frame
decode equals the original's) and carries a valid index; ``restart_index_info`` answers (dict, "") or (None, reason);
and on the (possibly damaged) bytes a region decode with the fast path gives the pixels of the normal path whenever
the normal path decodes them without a warning (a fast path that trusted a bad index would differ or crash).

    python fuzz/fuzz_restart_index.py CORPUS_DIR [SEED_DIR] -max_total_time=60     # see fuzz/README.md
"""
from __future__ import annotations

import numpy as np
from _common import Knobs, fuzz_main, instrumented

with instrumented():
    from ipu_cnn import _C
    from ipu_cnn.data import DecodeError, EvalTransform, TrainTransform

LIMIT = 1 << 22  # pixels: keeps each input fast


def _options(fast: bool) -> "_C.DecodeOptions":
    o = _C.DecodeOptions()
    o.max_pixels = LIMIT
    o.restart_index = fast
    return o


def _damage(data: bytes, k: Knobs) -> bytes:
    """A few bytes changed where they matter to the index: its segment, a restart marker, the scan data."""
    info, _ = _C.restart_index_info(data)
    if info is None or not k.bit(0.7):
        return data
    out = bytearray(data)
    for _ in range(k.int(1, 3)):
        where = k.int(0, 2)
        if where == 0:
            pos = info["segment_offset"] + k.int(0, info["segment_bytes"] - 1)
        elif where == 1 and info["intervals"] > 1:
            pos = info["scan_start"] + info["offsets"][k.int(1, info["intervals"] - 1)] - 1 - k.int(0, 1)
        else:
            pos = info["scan_start"] + k.int(0, max(0, info["scan_bytes"] - 1))
        out[min(pos, len(out) - 1)] = k.int(0, 255)
    if k.bit(0.1):
        del out[k.int(0, len(out) - 1):]
    return bytes(out)


def one_input(data: bytes) -> None:
    k = Knobs(data, salt=11)
    info, why = _C.restart_index_info(data)
    assert (info is None) == bool(why) and isinstance(why, str), (info, why)
    if info is None:
        try:
            indexed = _C.add_restart_index(data, options=_options(True))
        except DecodeError as e:
            assert e.reason.startswith("cannot add a restart index: "), e.reason
            return
        fresh, why = _C.restart_index_info(indexed)
        assert fresh is not None, f"a fresh transcode carries no valid index: {why}"
        before, a = _C.decode_full(data, _options(True))
        after, b = _C.decode_full(indexed, _options(True))
        if before.status == _C.Status.OK and before.warnings == 0:
            assert after.status == _C.Status.OK and np.array_equal(a, b), "transcode changed the pixels"
        data = _damage(indexed, k)
    size = k.choice((224, 64, 24, 8))
    transform = TrainTransform(size) if k.bit() else EvalTransform(size, resize_size=size + k.int(0, 3 * size))
    index = k.int(0, 1000)
    out = {}
    reports = {}
    for fast in (False, True):
        out[fast] = np.zeros((size, size, 3), np.uint8)
        reports[fast] = _C.decode_transform(data, out[fast], transform.native(), transform.filter, 3, 0, index,
                                            _options(fast))
    slow = reports[False]
    if slow.status == _C.Status.OK and slow.warnings == 0 and reports[True].status == _C.Status.OK:
        assert np.array_equal(out[False], out[True]), f"fast path differs from the normal path ({transform}, {index})"


if __name__ == "__main__":
    fuzz_main(one_input)
