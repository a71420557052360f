"""Every corpus file through every public decoding call: the sanitizer job's (.ci/sanitize) sweep of real data.

    python fuzz/corpora_sweep.py [--corpora DIR] [--threads N]

Per file: read_header (path and bytes); decode_image full frame (path; ndarray with EXIF orientation applied), with a
TrainTransform (bytes; bytearray, bicubic, strict) and an EvalTransform (memoryview, without DCT scaling); then the
whole corpus through decode_batch in batches, as paths with a TrainTransform and as bytes with an EvalTransform. A
call must return a valid result or raise ValueError/DecodeError; anything else is listed and the exit status is 1. A
memory error ends the process through the sanitizer. Prints the counts; exits 0 with a message when the corpora are
absent.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from _common import CORPORA, check_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", type=Path, default=CORPORA, help=f"corpora folder (default {CORPORA})")
    ap.add_argument("--threads", type=int, default=2, help="decode_batch threads (default 2)")
    ap.add_argument("--batch", type=int, default=16, help="decode_batch batch size (default 16)")
    args = ap.parse_args()
    folders = [args.corpora / name for name in ("edge_cases", "imagenet_sample")]
    files = sorted(p for d in folders if d.is_dir() for p in d.iterdir()
                   if p.is_file() and p.suffix.lower() not in (".tsv", ".md"))
    if not files:
        print(f"corpora sweep: SKIPPED, no corpora at {args.corpora} (set IPU_CNN_CORPORA or place ../shared/corpora)")
        return

    from ipu_cnn import _C
    from ipu_cnn.data import (DecodeStats, EvalTransform, ImageHeader, TrainTransform, decode_batch, decode_image,
                              read_header)

    print(f"corpora sweep: {len(files)} files from {args.corpora}, native core {_C.__file__}", flush=True)
    train, train_bicubic = TrainTransform(96), TrainTransform(48, interpolation="bicubic")
    evaluate = EvalTransform(64)
    calls: dict[str, Callable[[Path, bytes, int], object]] = {
        "read_header(path)": lambda p, d, i: read_header(p),
        "read_header(bytes)": lambda p, d, i: read_header(d),
        "decode_image(path)": lambda p, d, i: decode_image(p),
        "decode_image(ndarray, exif)": lambda p, d, i: decode_image(np.frombuffer(d, np.uint8).copy(),
                                                                    apply_exif_orientation=True),
        "decode_image(bytes, train)": lambda p, d, i: decode_image(d, train, index=i),
        "decode_image(bytearray, train bicubic, strict)": lambda p, d, i: decode_image(bytearray(d), train_bicubic,
                                                                                       index=i, strict=True),
        "decode_image(memoryview, eval, no dct scaling)": lambda p, d, i: decode_image(memoryview(d), evaluate,
                                                                                       dct_scaling=False),
    }
    shapes = {"decode_image(bytes, train)": train.output_hw, "decode_image(bytearray, train bicubic, strict)":
              train_bicubic.output_hw, "decode_image(memoryview, eval, no dct scaling)": evaluate.output_hw}
    counts = {name: [0, 0] for name in calls}  # ok, clean error
    unexpected: list[str] = []
    start = time.monotonic()
    for i, path in enumerate(files):
        data = path.read_bytes()
        for name, call in calls.items():
            try:
                result = call(path, data, i)
            except ValueError:
                counts[name][1] += 1
                continue
            except Exception as e:  # the finding this sweep exists for: report it, keep sweeping
                unexpected.append(f"{path.name}: {name}: {type(e).__module__}.{type(e).__name__}: {e}")
                continue
            try:
                if name.startswith("read_header"):
                    assert isinstance(result, ImageHeader) and result.width >= 1 and result.height >= 1, result
                else:
                    check_image(result, shapes.get(name), name)
            except AssertionError as e:
                unexpected.append(f"{path.name}: {name}: invalid result: {e}")
                continue
            counts[name][0] += 1

    for name, transform, as_bytes in (("decode_batch(paths, train)", train, False),
                                      ("decode_batch(bytes, eval)", evaluate, True)):
        stats = DecodeStats()
        h, w = transform.output_hw
        for lo in range(0, len(files), args.batch):
            chunk = files[lo:lo + args.batch]
            sources = [p.read_bytes() for p in chunk] if as_bytes else [str(p) for p in chunk]
            out = np.empty((len(chunk), h, w, 3), np.uint8)
            try:
                decode_batch(sources, out, transform, indices=range(lo, lo + len(chunk)), num_threads=args.threads,
                             on_error="report", stats=stats)
            except Exception as e:
                unexpected.append(f"{name} batch at {lo}: {type(e).__module__}.{type(e).__name__}: {e}")
        counts[name] = [stats.images, stats.errors]

    width = max(len(n) for n in counts)
    print(f"{'call':<{width}}  {'decoded':>7}  {'clean errors':>12}")
    for name, (ok, err) in counts.items():
        print(f"{name:<{width}}  {ok:>7}  {err:>12}")
    print(f"corpora sweep: {len(files)} files x {len(counts)} calls in {time.monotonic() - start:.0f} s, "
          f"{len(unexpected)} unexpected")
    for line in unexpected:
        print(f"UNEXPECTED {line}")
    sys.exit(1 if unexpected else 0)


if __name__ == "__main__":
    main()
