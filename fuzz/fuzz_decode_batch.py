#!/usr/bin/env python3
"""Fuzz target: ``decode_batch`` over a few sources (the input split at SOURCE_SEPARATOR) with a random transform,
seed, epoch, dataset indices, thread count, source forms and error policy.

Oracle, with on_error="report": failures are unique in-range positions with a reason, their slots are zero-filled,
the stats add up (images + errors = sources; DCT-scale counts + non-JPEG = images); every slot equals what
``decode_image`` gives for that source and index (documented as the same), and a failed source makes decode_image
raise DecodeError (check "batch-equals-single"). With on_error="raise": DecodeError exactly when report mode found a
failure. A batch holding a non-contiguous source (the "strided" and "reversed" forms) is refused as a whole, before
anything is decoded: a ValueError naming the first such ``sources[i]`` and saying it must be a C-contiguous buffer,
``out`` and the stats untouched; the oracle above then runs on the batch with those sources made contiguous. Only
transforms the constructors accept are fuzzed (an input drawing parameters they refuse is skipped).

    python fuzz/fuzz_decode_batch.py CORPUS_DIR [SEED_DIR] -dict=DICT -max_total_time=60   # see fuzz/README.md
"""
from __future__ import annotations

import numpy as np

from _common import (CONTIGUITY_REFUSAL, MAX_PIXELS, SKIP_CHECKS, SOURCE_FORMS, SOURCE_SEPARATOR, Knobs, as_source,
                     check_image, fuzz_main, instrumented, noncontiguous)
from fuzz_decode_image import random_transform

with instrumented():
    from ipu_cnn.data import DecodeError, DecodeStats, EvalTransform, decode_batch, decode_image

MAX_SOURCES = 6


def one_input(data: bytes) -> None:
    k = Knobs(data, salt=1)
    parts = data.split(SOURCE_SEPARATOR, MAX_SOURCES - 1)  # the last source keeps any further separators
    try:
        transform = random_transform(k) or EvalTransform(k.int(1, 48))
    except ValueError:  # parameters the constructor refuses: nothing to fuzz
        return
    forms = [k.choice(SOURCE_FORMS) for _ in parts]
    sources = [as_source(p, f, slot) for slot, (p, f) in enumerate(zip(parts, forms))]
    indices = [k.int(0, 10**9) for _ in parts] if k.bit() else None
    options = dict(max_pixels=k.choice(MAX_PIXELS), strict=k.bit(0.2), apply_exif_orientation=k.bit(0.3),
                   dct_scaling=k.bit(0.7))
    seed, epoch, threads = k.int(0, 2**32), k.int(0, 5), k.int(1, 3)
    what = f"decode_batch({forms}, {transform}, indices={indices}, threads={threads}, {options})"
    h, w = transform.output_hw
    out = np.full((len(sources), h, w, 3), 0xAB, np.uint8)
    stats = DecodeStats()

    refused = [pos for pos, source in enumerate(sources) if noncontiguous(source)]
    if refused:
        try:
            decode_batch(sources, out, transform, seed=seed, epoch=epoch, indices=indices, num_threads=threads,
                         on_error=k.choice(("report", "raise")), stats=stats, **options)
        except ValueError as e:
            assert f"sources[{refused[0]}] {CONTIGUITY_REFUSAL}" in str(e), f"{what}: refused with {e!r}"
        else:
            raise AssertionError(f"{what}: decoded non-contiguous sources {refused} instead of refusing the batch")
        assert (out == 0xAB).all() and stats == DecodeStats(), f"{what}: the refused batch wrote out or stats"
        sources = [np.ascontiguousarray(s) if pos in refused else s for pos, s in enumerate(sources)]
        what += f" with sources {refused} made contiguous"

    failures = decode_batch(sources, out, transform, seed=seed, epoch=epoch, indices=indices, num_threads=threads,
                            on_error="report", stats=stats, **options)

    positions = [pos for pos, _, _ in failures]
    assert positions == sorted(set(positions)) and all(0 <= p < len(sources) for p in positions), (what, failures)
    assert all(isinstance(reason, str) and reason for _, _, reason in failures), (what, failures)
    assert stats.images + stats.errors == len(sources) and stats.errors == len(failures), (what, stats)
    assert sum(stats.dct_scales.values()) + stats.non_jpeg == stats.images, (what, stats)
    for pos, source in enumerate(sources if "batch-equals-single" not in SKIP_CHECKS else ()):
        index = pos if indices is None else indices[pos]
        try:
            single = decode_image(source, transform, seed=seed, epoch=epoch, index=index, **options)
        except DecodeError:
            assert pos in positions, f"{what}: decode_image fails on source {pos}, decode_batch decoded it"
            continue
        assert pos not in positions, f"{what}: decode_batch failed source {pos}, decode_image decoded it"
        check_image(single, (h, w), what)
        assert np.array_equal(out[pos], single), f"{what}: slot {pos} differs from decode_image of that source"
    for pos in positions:
        assert not out[pos].any(), f"{what}: failed slot {pos} is not zero-filled"

    if k.bit(0.25):
        try:
            decode_batch(sources, np.empty_like(out), transform, seed=seed, epoch=epoch, indices=indices,
                         num_threads=threads, on_error="raise", **options)
            raised = False
        except DecodeError:
            raised = True
        assert raised == bool(failures), f"{what}: on_error='raise' raised={raised}, report mode found {failures}"
    if k.bit(0.15):  # the benchmark floor: decodes, leaves out alone, never crashes
        decode_batch(sources, out, transform, seed=seed, epoch=epoch, indices=indices, num_threads=threads,
                     on_error="report", decode_only=True, **options)


if __name__ == "__main__":
    fuzz_main(one_input)
