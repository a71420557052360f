"""The native antialiased box resize (csrc/resample.cpp) against Pillow's ``Image.resize(size, filter, box=box)``.

Pillow resamples horizontally into a uint8 intermediate, then vertically, with weights computed from the box rounded
to C floats; ipu_cnn does the same, so its scalar path must be bit-exact and its SIMD path within 1 (it is exact
today). One caveat: recent Pillow (13.0, python-pillow/Pillow#9549) runs the vertical pass first when the image's
height shrinks much more than its width, ``H - out_h > 2 * (W - out_w)``, which can move a pixel by 1. ipu_cnn keeps
the horizontal-first order for every shape (see csrc/resample.h), so the reference here is Pillow's own
horizontal-only resize followed by its vertical-only resize (the same arithmetic as a horizontal-first single call),
and the single call is compared directly wherever every Pillow version runs it horizontal-first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

_C = pytest.importorskip("ipu_cnn._C")

BILINEAR, BICUBIC = 0, 1
PIL_FILTER = {BILINEAR: Image.Resampling.BILINEAR, BICUBIC: Image.Resampling.BICUBIC}
Box = tuple[float, float, float, float]


def pillow_single_call(rgb: np.ndarray, box: Box, out_w: int, out_h: int, filt: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((out_w, out_h), PIL_FILTER[filt], box=box))


def pillow_horizontal_first(rgb: np.ndarray, box: Box, out_w: int, out_h: int, filt: int) -> np.ndarray:
    """Pillow's horizontal-first result for any shape: a horizontal-only resize, then a vertical-only one."""
    h = rgb.shape[0]
    wide = Image.fromarray(rgb).resize((out_w, h), PIL_FILTER[filt], box=(box[0], 0, box[2], h))
    return np.asarray(wide.resize((out_w, out_h), PIL_FILTER[filt], box=(0, box[1], out_w, box[3])))


def single_call_is_horizontal_first(w: int, h: int, out_w: int, out_h: int) -> bool:
    return h - out_h <= 2 * (w - out_w)


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    fx, fy = rng.uniform(0.02, 0.6, 2)
    chans = [
        127.5 + 127.5 * np.sin(fx * x + fy * y + rng.uniform(0, 6)),
        255.0 * x / max(w - 1, 1),
        127.5 + 127.5 * np.cos(2 * fy * y) * np.sin(fx * x),
    ]
    return np.clip(np.rint(np.stack(chans, -1)), 0, 255).astype(np.uint8)


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    if rng.random() < 0.5:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return smooth_image(rng, h, w)


def random_box(rng: np.random.Generator, w: int, h: int) -> Box:
    kind = rng.integers(0, 6)
    if kind == 0:  # the whole image
        return (0.0, 0.0, float(w), float(h))
    if kind == 1:  # integer box
        left, top = int(rng.integers(0, w)), int(rng.integers(0, h))
        return (float(left), float(top), float(rng.integers(left + 1, w + 1)), float(rng.integers(top + 1, h + 1)))
    if kind == 2:  # tiny fractional box: strong upscaling
        bw, bh = rng.uniform(0.05, 2.0, 2)
        left, top = rng.uniform(0, w - min(bw, w)), rng.uniform(0, h - min(bh, h))
        return (left, top, min(left + bw, float(w)), min(top + bh, float(h)))
    # fractional box, edges sometimes pinned to the image border
    left, right = np.sort(rng.uniform(0, w, 2))
    top, bottom = np.sort(rng.uniform(0, h, 2))
    if rng.random() < 0.3:
        left = 0.0
    if rng.random() < 0.3:
        right = float(w)
    if rng.random() < 0.3:
        top = 0.0
    if rng.random() < 0.3:
        bottom = float(h)
    if right - left < 0.01:
        left, right = 0.0, float(w)
    if bottom - top < 0.01:
        top, bottom = 0.0, float(h)
    return (float(left), float(top), float(right), float(bottom))


def random_cases(seed: int, n: int) -> Iterator[tuple[np.ndarray, Box, int, int, int, bool]]:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(1, 73, 2))
        rgb = random_image(rng, h, w)
        box = random_box(rng, w, h)
        r = rng.random()
        if r < 0.1:
            out_w = out_h = 1
        elif r < 0.3:
            out_w, out_h = (int(v) for v in rng.integers(1, 9, 2))
        else:
            out_w, out_h = (int(v) for v in rng.integers(1, 97, 2))
        yield rgb, box, out_w, out_h, int(rng.integers(0, 2)), bool(rng.integers(0, 2))


def resize(src: np.ndarray, box: Box, out_w: int, out_h: int, filt: int, flip: bool, scalar: bool) -> np.ndarray:
    out = _C.resize(src, box, out_w, out_h, filt, flip, scalar=scalar)
    assert out.shape == (out_h, out_w, 3) and out.dtype == np.uint8
    return out


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.mark.parametrize("seed", range(4))
def test_scalar_is_bit_exact_with_pillow(seed: int) -> None:
    for rgb, box, out_w, out_h, filt, flip in random_cases(seed, 100):
        ref = pillow_horizontal_first(rgb, box, out_w, out_h, filt)
        if flip:
            ref = ref[:, ::-1]
        got = resize(rgb, box, out_w, out_h, filt, flip, scalar=True)
        assert np.array_equal(got, ref), (rgb.shape, box, out_w, out_h, filt, flip, int(abs_diff(got, ref).max()))


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_within_one_of_pillow(seed: int) -> None:
    total, count = 0, 0
    for rgb, box, out_w, out_h, filt, flip in random_cases(seed, 100):
        ref = pillow_horizontal_first(rgb, box, out_w, out_h, filt)
        if flip:
            ref = ref[:, ::-1]
        d = abs_diff(resize(rgb, box, out_w, out_h, filt, flip, scalar=False), ref)
        assert d.max() <= 1, (rgb.shape, box, out_w, out_h, filt, flip, _C.simd_path())
        total, count = total + int(d.sum()), count + d.size
    assert total / count < 0.01


def test_single_pillow_call_matches_where_it_is_horizontal_first() -> None:
    checked = 0
    for rgb, box, out_w, out_h, filt, flip in random_cases(100, 120):
        h, w = rgb.shape[:2]
        if not single_call_is_horizontal_first(w, h, out_w, out_h):
            continue
        ref = pillow_single_call(rgb, box, out_w, out_h, filt)
        assert np.array_equal(ref, pillow_horizontal_first(rgb, box, out_w, out_h, filt))  # the reference itself
        got = resize(rgb, box, out_w, out_h, filt, flip, scalar=True)
        assert np.array_equal(got, ref[:, ::-1] if flip else ref), (rgb.shape, box, out_w, out_h, filt, flip)
        assert abs_diff(resize(rgb, box, out_w, out_h, filt, flip, scalar=False), got).max() <= 1
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("filt", [BILINEAR, BICUBIC])
def test_training_sized_crops(filt: int) -> None:
    """RandomResizedCrop-like integer boxes and a fractional centre crop of a 500x375 photo-sized image to 224x224."""
    rng = np.random.default_rng(7 + filt)
    rgb = smooth_image(rng, 375, 500)
    rgb[::7] = rng.integers(0, 256, rgb[::7].shape, dtype=np.uint8)  # some high frequencies too
    side = 375 * 0.875  # eval centre crop
    boxes: list[Box] = [
        (80.0, 17.0, 420.0, 357.0),
        (0.0, 0.0, 448.0, 375.0),
        (300.0, 200.0, 390.0, 275.0),
        ((500 - side) / 2, (375 - side) / 2, (500 + side) / 2, (375 + side) / 2),
    ]
    for box in boxes:
        ref = pillow_single_call(rgb, box, 224, 224, filt)  # 375 - 224 <= 2 * (500 - 224): horizontal first
        assert np.array_equal(resize(rgb, box, 224, 224, filt, False, scalar=True), ref), box
        assert abs_diff(resize(rgb, box, 224, 224, filt, False, scalar=False), ref).max() <= 1, box


@pytest.mark.parametrize("scalar", [True, False])
def test_flip_mirrors_the_output(scalar: bool) -> None:
    for rgb, box, out_w, out_h, filt, _ in random_cases(200, 40):
        plain = resize(rgb, box, out_w, out_h, filt, False, scalar)
        flipped = resize(rgb, box, out_w, out_h, filt, True, scalar)
        assert np.array_equal(flipped, np.flip(plain, axis=1)), (rgb.shape, box, out_w, out_h, filt)


@pytest.mark.parametrize("scalar", [True, False])
def test_rgbx_input_matches_rgb(scalar: bool) -> None:
    rng = np.random.default_rng(300)
    for rgb, box, out_w, out_h, filt, flip in random_cases(301, 40):
        x = rng.integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)
        rgbx = np.ascontiguousarray(np.concatenate([rgb, x], axis=2))
        assert np.array_equal(
            resize(rgbx, box, out_w, out_h, filt, flip, scalar), resize(rgb, box, out_w, out_h, filt, flip, scalar)
        ), (rgb.shape, box, out_w, out_h, filt, flip)


@pytest.mark.parametrize("scalar", [True, False])
@pytest.mark.parametrize("filt", [BILINEAR, BICUBIC])
def test_identity_and_pixel_aligned_crop_copy_pixels(filt: int, scalar: bool) -> None:
    rgb = np.random.default_rng(400).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert np.array_equal(resize(rgb, (0, 0, 53, 37), 53, 37, filt, False, scalar), rgb)
    assert np.array_equal(resize(rgb, (5, 9, 45, 30), 40, 21, filt, False, scalar), rgb[9:30, 5:45])
    assert np.array_equal(resize(rgb, (0, 0, 53, 37), 53, 37, filt, True, scalar), rgb[:, ::-1])


@pytest.mark.parametrize(
    "box",
    [
        (-0.5, 0.0, 10.0, 10.0),  # left of the image
        (0.0, 0.0, 20.5, 10.0),  # past the right edge
        (0.0, 0.0, 10.0, 16.01),  # past the bottom edge
        (4.0, 0.0, 4.0, 10.0),  # empty
        (6.0, 0.0, 4.0, 10.0),  # reversed
        (float("nan"), 0.0, 10.0, 10.0),
        (0.0, 0.0, float("inf"), 10.0),
    ],
)
@pytest.mark.parametrize("scalar", [True, False])
def test_invalid_boxes_are_refused(box: Box, scalar: bool) -> None:
    rgb = np.zeros((16, 20, 3), np.uint8)
    with pytest.raises(ValueError):
        _C.resize(rgb, box, 8, 8, BILINEAR, False, scalar=scalar)


@pytest.mark.parametrize("scalar", [True, False])
def test_invalid_sizes_are_refused(scalar: bool) -> None:
    rgb = np.zeros((16, 20, 3), np.uint8)
    for out_w, out_h in [(0, 8), (8, 0), (-1, 8)]:
        with pytest.raises(ValueError):
            _C.resize(rgb, (0, 0, 20, 16), out_w, out_h, BILINEAR, False, scalar=scalar)


def test_box_edges_a_rounding_error_past_the_image_are_clamped() -> None:
    rgb = np.random.default_rng(500).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    exact = resize(rgb, (0.0, 0.0, 20.0, 16.0), 7, 9, BICUBIC, False, scalar=True)
    for scalar in (True, False):
        got = resize(rgb, (-1e-9, -1e-12, 20.0 + 1e-9, 16.0 + 1e-12), 7, 9, BICUBIC, False, scalar)
        assert np.array_equal(got, exact)


def test_simd_path_is_named() -> None:
    assert _C.simd_path() in {"avx2", "sse4.1", "neon", "scalar"}


_NARROW_PATH_SCRIPT = """
import numpy as np
from ipu_cnn import _C
rng = np.random.default_rng(600)
for i in range(40):
    h, w = (int(v) for v in rng.integers(1, 90, 2))
    src = rng.integers(0, 256, (h, w, 3 + i % 2), dtype=np.uint8)
    left, right = np.sort(rng.uniform(0, w, 2)); top, bottom = np.sort(rng.uniform(0, h, 2))
    box = (float(left), float(top), float(max(right, left + 0.05)), float(max(bottom, top + 0.05)))
    box = (box[0], box[1], min(box[2], float(w)), min(box[3], float(h)))
    out_w, out_h = (int(v) for v in rng.integers(1, 70, 2))
    for filt in (0, 1):
        a = _C.resize(src, box, out_w, out_h, filt, bool(i % 3), scalar=False)
        b = _C.resize(src, box, out_w, out_h, filt, bool(i % 3), scalar=True)
        assert np.abs(a.astype(int) - b).max() <= 1, (src.shape, box, out_w, out_h, filt)
print(_C.simd_path())
"""


@pytest.mark.parametrize("isa", ["sse4.1", "scalar"])
def test_narrower_dispatch_paths(isa: str) -> None:
    """IPU_CNN_RESAMPLE_ISA caps the run-time choice, so the SSE4.1 and scalar fallbacks run on an AVX2 machine too."""
    env = dict(os.environ, IPU_CNN_RESAMPLE_ISA=isa, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    script = [sys.executable, "-c", _NARROW_PATH_SCRIPT]
    res = subprocess.run(script, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 0, res.stderr
    path = res.stdout.strip()
    if isa == "scalar":
        assert path == "scalar"
    else:
        assert path in {"sse4.1", "neon", "scalar"}  # an x86 CPU without SSE4.1 or another architecture
