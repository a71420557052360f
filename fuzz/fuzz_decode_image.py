#!/usr/bin/env python3
"""Fuzz target: ``decode_image`` on arbitrary bytes, full frame or through a random Train/Eval transform.

Oracle: a C-contiguous uint8 (H, W, 3) image (the transform's size when there is one) or a ValueError/DecodeError;
a full-frame decode's size agrees with ``read_header`` on the same bytes (rotated by EXIF when that is applied); a
non-contiguous source (the "strided" and "reversed" forms) is refused, whatever its bytes, with a DecodeError saying
it must be a C-contiguous buffer. Only transforms the constructors accept are fuzzed (an input that draws parameters
they refuse is skipped: refusing is their job). Options (source form, transform, limits, flags, seed) are drawn from
the input's CRC, so a saved input replays.

    python fuzz/fuzz_decode_image.py CORPUS_DIR [SEED_DIR] -max_total_time=60     # see fuzz/README.md
"""
from __future__ import annotations

from _common import (CONTIGUITY_REFUSAL, MAX_PIXELS, SOURCE_FORMS, Knobs, as_source, check_image, fuzz_main,
                     instrumented, noncontiguous)

with instrumented():
    from ipu_cnn.data import DecodeError, EvalTransform, TrainTransform, decode_image, read_header


def random_transform(k: Knobs) -> TrainTransform | EvalTransform | None:
    """None (full frame) half the time, else a small Train or Eval transform with random parameters (Eval with
    crop_pct or resize_size, an int or (height, width)). A ValueError from a constructor means parameters it refuses
    (an Eval crop larger than its resize, a non-square Eval size without resize_size): the caller skips the input."""
    kind = k.int(0, 3)
    if kind < 2:
        return None
    size = (k.int(1, 64), k.int(1, 64)) if k.bit() else k.int(1, 64)
    interpolation = k.choice(("bilinear", "bicubic"))
    if kind == 2:
        lo = k.choice((0.08, 0.01, 0.5, 1.0))
        return TrainTransform(size, scale=(lo, max(lo, k.choice((1.0, 0.3, 0.08)))),
                              ratio=k.choice(((3 / 4, 4 / 3), (0.1, 10.0), (1.0, 1.0))),
                              flip_prob=k.choice((0.5, 0.0, 1.0)), interpolation=interpolation)
    if k.bit() and isinstance(size, int):  # timm's crop_pct: resize_size = floor(size / crop_pct)
        return EvalTransform(size, crop_pct=k.choice((0.875, 1.0, 0.25, 0.01)), interpolation=interpolation)
    h, w = (size, size) if isinstance(size, int) else size
    grow = k.choice((0, 1, 7, 32, 200))  # how much larger than the crop the resized image is
    resize = max(h, w) + grow if k.bit() else (h + k.int(0, grow), w + k.int(0, grow))
    return EvalTransform(size, resize_size=resize, interpolation=interpolation)


def one_input(data: bytes) -> None:
    k = Knobs(data)
    try:
        transform = random_transform(k)
    except ValueError:  # parameters the constructor refuses: nothing to fuzz
        return
    form = k.choice(SOURCE_FORMS)
    orient = k.bit(0.3)
    options = dict(max_pixels=k.choice(MAX_PIXELS), max_scans=k.choice((500, 500, 3)), strict=k.bit(0.2),
                   apply_exif_orientation=orient, dct_scaling=k.bit(0.7))
    what = f"decode_image({form}, {transform}, {options})"
    source = as_source(data, form)
    try:
        img = decode_image(source, transform, seed=k.int(0, 2**32), epoch=k.int(0, 3),
                           index=k.int(0, 10**6), **options)
    except ValueError as e:  # DecodeError is a ValueError
        if noncontiguous(source):
            assert isinstance(e, DecodeError) and CONTIGUITY_REFUSAL in str(e), f"{what}: refused with {e!r}"
        return
    assert not noncontiguous(source), f"{what}: decoded a non-contiguous source instead of refusing it"
    check_image(img, None if transform is None else transform.output_hw, what)
    if transform is None:
        header = read_header(data)
        w, h = (header.height, header.width) if orient and header.orientation >= 5 else (header.width, header.height)
        assert img.shape[:2] == (h, w), f"{what}: decoded {img.shape[1]}x{img.shape[0]} but read_header says {header}"


if __name__ == "__main__":
    fuzz_main(one_input)
