#!/usr/bin/env python3
"""Fuzz target: the crop sampler and the resampler (no JPEG): random image sizes, crop boxes, output sizes,
Train/Eval parameters, seeds, filters, flips and RGB/RGBX pixels.

The input is a fixed little-endian record (_common.RECORD; short inputs are zero-padded) followed by pixel bytes; the
seed builder (fuzz/seeds.py) writes records from the corpora's real image sizes and pixels.

Oracle: a TrainTransform/EvalTransform that its constructor accepts samples a box inside the image (integral for
Train, a centred square for Eval) with the flip its probability forces; ``transform_pixels`` equals ``resize`` of that
box, and both accept it unless it is empty once rounded to C floats; the SIMD and scalar resamplers agree bit for bit
on any box (or both refuse it with ValueError); a flipped resize is the mirror image; RGBX input gives the RGB result.

    python fuzz/fuzz_resample.py CORPUS_DIR [SEED_DIR] -max_total_time=60     # see fuzz/README.md
"""
from __future__ import annotations

import math

import numpy as np

from _common import BICUBIC, EVAL, FLIP, INT_SIZE, RGBX, Record, fuzz_main, instrumented, parse_record

with instrumented():
    from ipu_cnn import _C
    from ipu_cnn.data import EvalTransform, TrainTransform

def public_transform(rec: Record) -> TrainTransform | EvalTransform | None:
    """The transform the record's parameters make, or None when the constructor refuses them (that is its job)."""
    size: int | tuple[int, int] = rec.out_w if rec.flags & INT_SIZE else (rec.out_h, rec.out_w)
    interpolation = "bicubic" if rec.flags & BICUBIC else "bilinear"
    scale_lo, scale_hi, ratio_lo, ratio_hi, flip_prob, crop_pct = rec.params
    try:
        if rec.flags & EVAL:
            return EvalTransform(size, crop_pct=crop_pct, interpolation=interpolation)
        return TrainTransform(size, scale=(scale_lo, scale_hi), ratio=(ratio_lo, ratio_hi), flip_prob=flip_prob,
                              interpolation=interpolation)
    except ValueError:
        return None


def check_box(t: TrainTransform | EvalTransform, width: int, height: int, box: tuple, flip: bool, what: str) -> None:
    left, top, right, bottom = box
    assert all(math.isfinite(v) for v in box), f"{what}: box {box}"
    assert 0 <= left <= right <= width and 0 <= top <= bottom <= height, f"{what}: box {box} outside {width}x{height}"
    if isinstance(t, EvalTransform):
        side = min(width, height) * t.crop_fraction
        tol = 1e-9 * max(width, height)
        assert abs((right - left) - side) <= tol and abs((bottom - top) - side) <= tol, f"{what}: box {box}"
        assert abs(left + right - width) <= tol and abs(top + bottom - height) <= tol, f"{what}: not centred {box}"
        assert not flip, f"{what}: Eval flipped"
    else:
        assert all(v == int(v) for v in box), f"{what}: Train box {box} is not integral"
        assert isinstance(flip, bool) and (t.flip_prob > 0 or not flip) and (t.flip_prob < 1 or flip), f"{what}: {flip}"


def resize_or_error(px: np.ndarray, box: tuple, out_w: int, out_h: int, filt: int, flip: bool, scalar: bool
                    ) -> np.ndarray | None:
    try:
        out = _C.resize(px, list(box), out_w, out_h, filt, flip, scalar)
    except ValueError:
        return None
    assert out.shape == (out_h, out_w, 3) and out.dtype == np.uint8, (out.shape, out.dtype)
    return out


def one_input(data: bytes) -> None:
    rec, rest = parse_record(data)
    filt = 1 if rec.flags & BICUBIC else 0
    flip = bool(rec.flags & FLIP)
    channels = 4 if rec.flags & RGBX else 3
    n = rec.pix_h * rec.pix_w * channels
    raw = np.frombuffer(rest[:n], np.uint8) if rest else np.zeros(1, np.uint8)
    px = np.resize(raw, n).reshape(rec.pix_h, rec.pix_w, channels)
    what = repr(rec)

    t = public_transform(rec)
    if t is not None:
        # The sampler on the record's (possibly huge) image size, no pixels involved.
        box, tflip = _C.sample_crop(t.native(), rec.width, rec.height, rec.seed, rec.epoch, rec.index)
        check_box(t, rec.width, rec.height, box, tflip, what)
        # The whole transform on the small image equals a resize of the box the sampler picks for it.
        box, tflip = _C.sample_crop(t.native(), rec.pix_w, rec.pix_h, rec.seed, rec.epoch, rec.index)
        check_box(t, rec.pix_w, rec.pix_h, box, tflip, what)
        h, w = t.output_hw
        expected = resize_or_error(px, box, w, h, t.filter, tflip, scalar=True)
        out = np.empty((h, w, 3), np.uint8)
        try:
            _C.transform_pixels(px, out, t.native(), t.filter, rec.seed, rec.epoch, rec.index)
        except ValueError:
            assert expected is None, f"{what}: transform_pixels refused box {box} that resize takes"
        else:
            assert expected is not None and np.array_equal(out, expected), f"{what}: transform_pixels != resize {box}"
        left, top, right, bottom = np.float32(box)  # the resampler rounds a box to C floats, as Pillow does
        if right > left and bottom > top:
            assert expected is not None, f"{what}: resize refused the non-empty box {box} of {rec.pix_w}x{rec.pix_h}"

    # Any box, valid or not: both resamplers agree, flip mirrors, the fourth channel is ignored.
    fast = resize_or_error(px, rec.box, rec.out_w, rec.out_h, filt, flip, scalar=False)
    scalar = resize_or_error(px, rec.box, rec.out_w, rec.out_h, filt, flip, scalar=True)
    assert (fast is None) == (scalar is None), f"{what}: only one resampler refused the box"
    if fast is None:
        return
    assert np.array_equal(fast, scalar), f"{what}: SIMD ({_C.simd_path()}) and scalar resamplers differ"
    mirror = resize_or_error(px, rec.box, rec.out_w, rec.out_h, filt, not flip, scalar=False)
    assert mirror is not None and np.array_equal(mirror, fast[:, ::-1]), f"{what}: flip is not a mirror"
    if channels == 4:
        rgb = resize_or_error(np.ascontiguousarray(px[..., :3]), rec.box, rec.out_w, rec.out_h, filt, flip, False)
        assert rgb is not None and np.array_equal(rgb, fast), f"{what}: RGBX and RGB inputs differ"


if __name__ == "__main__":
    fuzz_main(one_input)
