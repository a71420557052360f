#!/usr/bin/env python3
"""Fuzz target: the crop sampler and the resampler (no JPEG): random image sizes, crop boxes, output sizes,
Train/Eval parameters, seeds, filters, flips and RGB/RGBX pixels.

The input is a fixed little-endian record (_common.RECORD; short inputs are zero-padded) followed by pixel bytes; the
seed builder (fuzz/seeds.py) writes records from the corpora's real image sizes and pixels.

Oracle: a TrainTransform/EvalTransform that its constructor accepts (other parameters are skipped) samples, on any
image size, a box inside the image: integral for Train, with the flip its probability forces; for Eval exactly the
source region of torchvision's Resize + CenterCrop window (``reference.eval_box``), never flipped. On the record's
small image, ``transform_pixels`` equals the Pillow reference of the new geometry bit for bit
(``ipu_cnn.data.reference``): Train crops the sampled box out, resizes the crop and mirrors it (``pil_train``);
Eval resizes the whole image to torchvision's integer Resize size and crops the centre window (``pil_eval``; compared
when that resize is at most REFERENCE_PIXELS, else only run). It refuses only an empty Train box (the centre
fallback's, in fuzz/known_findings) or an Eval resize larger than the resampler's side limit (2**24). Then, on the
record's own box, valid or not: the SIMD and scalar resamplers agree bit for bit (or both refuse it with
ValueError); a flipped resize is the mirror image; RGBX input gives the RGB result. Check "eval-resize-range": an Eval
resize too large for the native parameters (2**31 and up, or a crop_pct whose size / crop_pct overflows a float)
must be refused by the constructor with ValueError or work, not raise TypeError or OverflowError (a known finding).

    python fuzz/fuzz_resample.py CORPUS_DIR [SEED_DIR] -max_total_time=60     # see fuzz/README.md
"""
from __future__ import annotations

import math

import numpy as np

from _common import BICUBIC, EVAL, FLIP, INT_SIZE, RGBX, SKIP_CHECKS, Record, fuzz_main, instrumented, parse_record

with instrumented():
    from PIL import Image

    from ipu_cnn import _C
    from ipu_cnn.data import EvalTransform, TrainTransform
    from ipu_cnn.data.reference import eval_box, eval_geometry, pil_eval, pil_train

#: The largest whole-image resize (pixels) the Eval reference runs in Pillow: larger ones (an upscale of the small
#: image to a huge grid) would take seconds; the native window is still computed, without a comparison.
REFERENCE_PIXELS = 1 << 22
#: The resampler's limit on a grid side (csrc/resample.cpp, kMaxInSide): an Eval resize beyond it is refused.
MAX_GRID_SIDE = 1 << 24
#: The native parameters are C ints.
INT_MAX = 2**31 - 1


def public_transform(rec: Record) -> TrainTransform | EvalTransform | None:
    """The transform the record's parameters make, or None when the constructor refuses them (that is its job)."""
    size: int | tuple[int, int] = rec.out_w if rec.flags & INT_SIZE else (rec.out_h, rec.out_w)
    interpolation = "bicubic" if rec.flags & BICUBIC else "bilinear"
    scale_lo, scale_hi, ratio_lo, ratio_hi, flip_prob, crop_pct = rec.params
    try:
        if rec.flags & EVAL:
            a, b = rec.resize
            if (a, b) == (0, 0):
                t = EvalTransform(size, crop_pct=crop_pct, interpolation=interpolation)
            else:
                t = EvalTransform(size, resize_size=a if b == 0 else (a, b), interpolation=interpolation)
            resize = t.resize if isinstance(t.resize, tuple) else (t.resize,)
            if max(resize) > INT_MAX and "eval-resize-range" in SKIP_CHECKS:
                return None
            return t
        return TrainTransform(size, scale=(scale_lo, scale_hi), ratio=(ratio_lo, ratio_hi), flip_prob=flip_prob,
                              interpolation=interpolation)
    except ValueError:
        return None
    except OverflowError:  # floor(size / crop_pct) of a subnormal crop_pct: the same known finding
        if "eval-resize-range" in SKIP_CHECKS:
            return None
        raise


def check_box(t: TrainTransform | EvalTransform, width: int, height: int, box: tuple, flip: bool, what: str) -> None:
    left, top, right, bottom = box
    assert all(math.isfinite(v) for v in box), f"{what}: box {box}"
    assert 0 <= left <= right <= width and 0 <= top <= bottom <= height, f"{what}: box {box} outside {width}x{height}"
    if isinstance(t, EvalTransform):
        assert not flip, f"{what}: Eval flipped"
        new_w, new_h, _, _ = eval_geometry(width, height, t.output_hw, t.resize)
        if max(new_w, new_h) <= INT_MAX:  # the native grid is a C int (clamped beyond; the resampler refuses it)
            expected = eval_box(width, height, t.output_hw, t.resize)
            assert box == expected, f"{what}: Eval box {box} of {width}x{height}, torchvision's window is {expected}"
    else:
        assert all(v == int(v) for v in box), f"{what}: Train box {box} is not integral"
        assert isinstance(flip, bool) and (t.flip_prob > 0 or not flip) and (t.flip_prob < 1 or flip), f"{what}: {flip}"


def reference_pixels(t: TrainTransform | EvalTransform, px: np.ndarray, box: tuple, flip: bool
                     ) -> np.ndarray | None | str:
    """What ``transform_pixels`` must give for ``px``: the Pillow reference's pixels, None when it must refuse, or
    "unchecked" for an Eval resize too large to run in Pillow (the window must still be computed)."""
    h, w = px.shape[:2]
    img = Image.fromarray(np.ascontiguousarray(px[..., :3]))
    if isinstance(t, TrainTransform):
        left, top, right, bottom = box
        if right <= left or bottom <= top:  # the centre fallback's empty crop (fuzz/known_findings): nothing to resize
            return None
        return pil_train(img, box, flip, t.output_hw, t.interpolation)
    new_w, new_h, _, _ = eval_geometry(w, h, t.output_hw, t.resize)
    if max(new_w, new_h) > MAX_GRID_SIDE:
        return None
    if new_w * new_h > REFERENCE_PIXELS:
        return "unchecked"
    return pil_eval(img, t.output_hw, t.resize, t.interpolation)


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
        # The whole transform on the small image equals the Pillow reference of the geometry.
        box, tflip = _C.sample_crop(t.native(), rec.pix_w, rec.pix_h, rec.seed, rec.epoch, rec.index)
        check_box(t, rec.pix_w, rec.pix_h, box, tflip, what)
        h, w = t.output_hw
        expected = reference_pixels(t, px, box, tflip)
        out = np.empty((h, w, 3), np.uint8)
        try:
            _C.transform_pixels(px, out, t.native(), t.filter, rec.seed, rec.epoch, rec.index)
        except ValueError:
            assert expected is None, f"{what}: transform_pixels refused {t} on {rec.pix_w}x{rec.pix_h} (box {box})"
        else:
            assert expected is not None, f"{what}: transform_pixels took {t} on {rec.pix_w}x{rec.pix_h} (box {box})"
            if not isinstance(expected, str):
                assert np.array_equal(out, expected), (
                    f"{what}: transform_pixels != the Pillow reference of {t} on {rec.pix_w}x{rec.pix_h} (box {box}, "
                    f"flip {tflip}), {np.count_nonzero(out != expected)} values differ")

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
