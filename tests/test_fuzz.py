"""Mutated JPEGs (truncated, bytes flipped, markers damaged) give a clean DecodeError or a valid image, never a crash.

A crash (segfault, abort) would end the pytest process itself, so reaching the asserts is the test; a hang is caught by
the bounded scan count and by libjpeg's own checks.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from conftest import VARIANTS, encode_jpeg, photo_like
from ipu_cnn.data import DecodeError, DecodeStats, EvalTransform, TrainTransform, decode_batch, decode_image


def mutants(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    out = []
    for k in range(count):
        b = bytearray(data)
        kind = k % 4
        if kind == 0:  # truncate anywhere
            b = b[: int(rng.integers(1, len(b)))]
        elif kind == 1:  # flip random bytes anywhere
            for pos in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
                b[pos] ^= int(rng.integers(1, 256))
        elif kind == 2:  # damage the headers (first 700 bytes: tables, frame and scan headers)
            for pos in rng.integers(2, min(len(b), 700), size=int(rng.integers(1, 4))):
                b[pos] = int(rng.integers(0, 256))
        else:  # splice: repeat or drop a chunk
            i, j = sorted(int(v) for v in rng.integers(0, len(b), size=2))
            b = b[:i] + b[j:] if k % 8 == 3 else b[:j] + b[i:j] + b[j:]
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("name", ["420", "444", "progressive", "restart", "gray", "cmyk"])
def test_mutated_jpegs_fail_cleanly_or_decode(name: str) -> None:
    w, h, mode, args = VARIANTS[name]
    data = encode_jpeg(photo_like(min(w, 160), min(h, 120), seed=5), mode, **args)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    cases = mutants(data, rng, 120)
    decoded = failed = 0
    for k, m in enumerate(cases):
        try:
            img = decode_image(m, TrainTransform(32) if k % 2 else None, index=k)
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            decoded += 1
        except DecodeError as e:
            assert e.reason
            failed += 1
    assert decoded + failed == len(cases) and failed > 0
    # The same mutants as one multi-threaded batch: reported, never raised past the policy, never crashing.
    out = np.empty((len(cases), 32, 32, 3), np.uint8)
    stats = DecodeStats()
    failures = decode_batch(cases, out, EvalTransform(32), on_error="report", num_threads=2, stats=stats)
    assert stats.images + stats.errors == len(cases)
    assert all(reason for _, _, reason in failures)
