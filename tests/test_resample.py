"""The native antialiased box resize (csrc/resample.cpp) against Pillow's ``Image.resize(size, filter, box=box)``.

Pillow resamples in two separable passes with a uint8 intermediate between them, with weights computed from the box
rounded to C floats; ipu_cnn does the same, and all its paths (scalar, SSE4.1, AVX2, NEON) are bit-exact.

The order of the passes matters (the intermediate is clamped to uint8, so BICUBIC's overshoot is cut differently:
tens of levels apart on noise, 26 seen; BILINEAR by 1). Pillow >= 13 (python-pillow/Pillow#9549) runs the vertical
pass first iff ``H > out_h and H - out_h > 2 * (W - out_w)`` with the FULL image's ``W x H`` whatever the box, a
strict inequality, and an upscale's negative difference taken as it is (established by comparing Pillow 13.0.0's
single call with both explicit orders over ~26,000 random sizes and boxes, RGB and L, both filters: no exception,
the boundary cases included; test_pass_order_rule_of_the_installed_pillow re-checks it). Older Pillow always runs
the horizontal pass first (12.3.0 checked the same way). ipu_cnn follows the 13 rule whatever Pillow is installed
(csrc/resample.h: resample_vertical_first).

So the references are:
 - ``two_step_reference``: Pillow's own single-axis resizes in the order ipu_cnn uses (a horizontal-only resize then a
   vertical-only one, or the reverse), which is the same arithmetic as Pillow 13's single call for every Pillow
   version;
 - Pillow's single call, compared directly and exactly wherever the installed Pillow runs the same order: everywhere
   when it has the vertical-first rule, else only where the rule picks horizontal first. Which behaviour the
   installed Pillow has is detected at test time by probing a shape where the two orders differ
   (``pillow_has_vertical_first``), not from its version number.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import subprocess_env

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


def pillow_vertical_first(rgb: np.ndarray, box: Box, out_w: int, out_h: int, filt: int) -> np.ndarray:
    """Pillow's vertical-first result for any shape: a vertical-only resize, then a horizontal-only one."""
    w = rgb.shape[1]
    tall = Image.fromarray(rgb).resize((w, out_h), PIL_FILTER[filt], box=(0, box[1], w, box[3]))
    return np.asarray(tall.resize((out_w, out_h), PIL_FILTER[filt], box=(box[0], 0, box[2], out_h)))


def vertical_first(w: int, h: int, out_w: int, out_h: int) -> bool:
    """Pillow 13's pass order (and ipu_cnn's): the full image's size, not the box's."""
    return h > out_h and h - out_h > 2 * (w - out_w)


def two_step_reference(rgb: np.ndarray, box: Box, out_w: int, out_h: int, filt: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    order = pillow_vertical_first if vertical_first(w, h, out_w, out_h) else pillow_horizontal_first
    return order(rgb, box, out_w, out_h, filt)


@functools.cache
def pillow_has_vertical_first() -> bool:
    """Whether the installed Pillow's single call runs the vertical pass first where the rule says so (13+)."""
    rgb = np.random.default_rng(0).integers(0, 256, (90, 30, 3), dtype=np.uint8)
    args = (rgb, (0.0, 0.0, 30.0, 90.0), 20, 20, BICUBIC)  # 90 - 20 > 2 * (30 - 20)
    single, hf, vf = pillow_single_call(*args), pillow_horizontal_first(*args), pillow_vertical_first(*args)
    assert not np.array_equal(hf, vf), "the probe must tell the orders apart"
    assert np.array_equal(single, hf) or np.array_equal(single, vf), "Pillow's single call is neither order"
    return bool(np.array_equal(single, vf))


def pillow_call_comparable(w: int, h: int, out_w: int, out_h: int) -> bool:
    """The installed Pillow's single call runs the passes in ipu_cnn's order."""
    return pillow_has_vertical_first() or not vertical_first(w, h, out_w, out_h)


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
    """Random images, boxes and sizes; a quarter of the images tall (portrait reductions), and a quarter of the
    output sizes on either side of the pass-order boundary (upscales included)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(1, 73, 2))
        if rng.random() < 0.25:
            h = int(rng.integers(60, 160))
        rgb = random_image(rng, h, w)
        box = random_box(rng, w, h)
        r = rng.random()
        if r < 0.1:
            out_w = out_h = 1
        elif r < 0.25:
            out_w, out_h = (int(v) for v in rng.integers(1, 9, 2))
        elif r < 0.5:  # around h - out_h == 2 * (w - out_w), with w - out_w of either sign
            out_w = int(rng.integers(1, 97))
            out_h = h - 2 * (w - out_w) + int(rng.integers(-3, 4))
            if not 1 <= out_h <= 200:
                out_h = int(rng.integers(1, 97))
        else:
            out_w, out_h = (int(v) for v in rng.integers(1, 97, 2))
        yield rgb, box, out_w, out_h, int(rng.integers(0, 2)), bool(rng.integers(0, 2))


def resize(src: np.ndarray, box: Box, out_w: int, out_h: int, filt: int, flip: bool, scalar: bool) -> np.ndarray:
    out = _C.resize(src, box, out_w, out_h, filt, flip, scalar=scalar)
    assert out.shape == (out_h, out_w, 3) and out.dtype == np.uint8
    return out


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.mark.parametrize("scalar", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_bit_exact_with_pillow_two_step(seed: int, scalar: bool) -> None:
    """Scalar and SIMD paths both equal Pillow's two single-axis resizes in the rule's order (any Pillow version)."""
    orders = set()
    for rgb, box, out_w, out_h, filt, flip in random_cases(seed, 100):
        ref = two_step_reference(rgb, box, out_w, out_h, filt)
        if flip:
            ref = ref[:, ::-1]
        got = resize(rgb, box, out_w, out_h, filt, flip, scalar=scalar)
        assert np.array_equal(got, ref), (rgb.shape, box, out_w, out_h, filt, flip, int(abs_diff(got, ref).max()),
                                          _C.simd_path())
        orders.add(vertical_first(rgb.shape[1], rgb.shape[0], out_w, out_h))
    assert orders == {False, True}


@pytest.mark.parametrize("filt", [BILINEAR, BICUBIC])
def test_single_pillow_call_is_matched_exactly(filt: int) -> None:
    """Pillow's own ``Image.resize(size, filter, box=box)``, max diff 0, wherever it runs ipu_cnn's order (with
    Pillow >= 13: every case, tall reductions that run vertically first included)."""
    checked, checked_vertical_first = 0, 0
    for i, (rgb, box, out_w, out_h, _, flip) in enumerate(random_cases(100 + filt, 250)):
        h, w = rgb.shape[:2]
        if not pillow_call_comparable(w, h, out_w, out_h):
            continue
        ref = pillow_single_call(rgb, box, out_w, out_h, filt)
        if flip:
            ref = ref[:, ::-1]
        for scalar in (True, False) if i % 2 else (False,):
            got = resize(rgb, box, out_w, out_h, filt, flip, scalar=scalar)
            assert np.array_equal(got, ref), (rgb.shape, box, out_w, out_h, filt, flip, scalar,
                                              int(abs_diff(got, ref).max()))
        checked += 1
        checked_vertical_first += vertical_first(w, h, out_w, out_h)
    assert checked > 150
    if pillow_has_vertical_first():
        assert checked_vertical_first > 30


# (W, H, box, out_w, out_h, vertical first?): each side of every edge of the rule.
RULE_CASES = [
    (40, 120, (0.0, 0.0, 40.0, 120.0), 30, 100, False),  # H - out_h == 2 * (W - out_w): not strictly more
    (40, 120, (0.0, 0.0, 40.0, 120.0), 30, 99, True),  # one more row lost
    (40, 120, (3.5, 10.0, 31.0, 101.5), 30, 99, True),  # the box does not enter the rule...
    (100, 100, (0.0, 0.0, 20.0, 90.0), 18, 30, False),  # ...by the box, 60 > 2 * 2; by the image, 70 < 2 * 82
    (40, 200, (0.0, 0.0, 40.0, 40.0), 38, 38, True),  # by the box 2 == 2 * 2; by the image 162 > 2 * 2
    (20, 30, (0.0, 2.0, 20.0, 29.0), 40, 30, False),  # H == out_h: 0 > 2 * (20 - 40), but the height does not shrink
    (20, 30, (0.0, 2.0, 20.0, 29.0), 40, 29, True),  # the height shrinks by 1, the width grows
    (20, 30, (1.0, 2.0, 19.0, 29.0), 40, 45, False),  # both grow: -15 > -40, no
    (333, 500, (101.0, 189.0, 307.0, 357.0), 224, 224, True),  # a portrait photo's crop, both axes upscaled in the box
    (500, 333, (189.0, 101.0, 357.0, 307.0), 224, 224, False),  # the landscape one
]


RULE_IDS = [f"{i}-{c[0]}x{c[1]}->{c[3]}x{c[4]}" for i, c in enumerate(RULE_CASES)]


@pytest.mark.parametrize("case", RULE_CASES, ids=RULE_IDS)
def test_pass_order_rule_of_the_installed_pillow(case: tuple) -> None:
    """The installed Pillow's single call picks the order the rule says (skipped before Pillow 13: always
    horizontal first, which the probe has checked on a shape the rule sends vertically first)."""
    w, h, box, out_w, out_h, expect_vertical_first = case
    assert vertical_first(w, h, out_w, out_h) == expect_vertical_first
    rgb = np.random.default_rng(w * 1000 + h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    args = (rgb, box, out_w, out_h, BICUBIC)
    hf, vf = pillow_horizontal_first(*args), pillow_vertical_first(*args)
    assert not np.array_equal(hf, vf)  # noise and BICUBIC: the case tells the orders apart
    expected = vf if expect_vertical_first else hf
    assert np.array_equal(resize(rgb, box, out_w, out_h, BICUBIC, False, scalar=True), expected)
    if not pillow_has_vertical_first():
        pytest.skip("the installed Pillow always resamples horizontally first (before 13)")
    assert np.array_equal(pillow_single_call(*args), expected)


@pytest.mark.parametrize("filt", [BILINEAR, BICUBIC])
def test_training_sized_crops(filt: int) -> None:
    """RandomResizedCrop-like integer boxes and a fractional centre crop of 500x375 and 333x500 photo-sized images to
    224x224: the landscape one is resampled horizontally first, the portrait one vertically first."""
    rng = np.random.default_rng(7 + filt)
    side = 375 * 0.875  # eval centre crop
    shapes: dict[tuple[int, int], list[Box]] = {
        (375, 500): [
            (80.0, 17.0, 420.0, 357.0),
            (0.0, 0.0, 448.0, 375.0),
            (300.0, 200.0, 390.0, 275.0),
            ((500 - side) / 2, (375 - side) / 2, (500 + side) / 2, (375 + side) / 2),
        ],
        (500, 333): [
            (101.0, 189.0, 307.0, 357.0),  # upscaled in the box, yet vertical first (the image loses 276 rows)
            (0.0, 50.0, 333.0, 480.0),
            (20.5, 100.25, 300.75, 440.0),
        ],
    }
    for (h, w), boxes in shapes.items():
        rgb = smooth_image(rng, h, w)
        rgb[::7] = rng.integers(0, 256, rgb[::7].shape, dtype=np.uint8)  # some high frequencies too
        for box in boxes:
            ref = two_step_reference(rgb, box, 224, 224, filt)
            if pillow_call_comparable(w, h, 224, 224):
                assert np.array_equal(ref, pillow_single_call(rgb, box, 224, 224, filt)), box
            assert np.array_equal(resize(rgb, box, 224, 224, filt, False, scalar=True), ref), box
            assert np.array_equal(resize(rgb, box, 224, 224, filt, True, scalar=False), ref[:, ::-1]), box


@pytest.mark.parametrize("scalar", [True, False])
def test_flip_mirrors_the_output(scalar: bool) -> None:
    for rgb, box, out_w, out_h, filt, _ in random_cases(200, 40):
        plain = resize(rgb, box, out_w, out_h, filt, False, scalar)
        flipped = resize(rgb, box, out_w, out_h, filt, True, scalar)
        assert np.array_equal(flipped, np.flip(plain, axis=1)), (rgb.shape, box, out_w, out_h, filt)


@pytest.mark.parametrize("scalar", [True, False])
def test_repeated_geometries_reuse_coefficients_exactly(scalar: bool) -> None:
    """The per-thread coefficient cache (csrc/resample.cpp, cached_axis) is keyed by everything the coefficients
    depend on: geometries that share one axis but differ in filter, flip, box, size or image size, met in turn and
    more times than the cache holds, each still equal Pillow's result (and a repeat equals its first result)."""
    rng = np.random.default_rng(500)
    a = random_image(rng, 90, 120)
    b = random_image(rng, 90, 121)  # one column wider: a different x axis with the same box
    cases = [(a, (3.5, 2.25, 110.75, 88.0), 50, 40)] * 2 + [
        (a, (3.5, 2.25, 110.75, 88.0), 51, 40), (b, (3.5, 2.25, 110.75, 88.0), 50, 40),
        (a, (3.5, 2.0, 110.75, 88.0), 50, 40), (a, (3.5, 2.25, 110.5, 88.0), 50, 40),
    ] + [(a, (1.0 + i, 2.0, 100.0 + i, 80.0), 30, 25) for i in range(10)]
    first: dict[tuple, np.ndarray] = {}
    for _ in range(2):
        for img, box, out_w, out_h in cases:
            for filt in (BILINEAR, BICUBIC):
                for flip in (False, True):
                    got = resize(img, box, out_w, out_h, filt, flip, scalar)
                    want = two_step_reference(img, box, out_w, out_h, filt)
                    assert np.array_equal(got, want[:, ::-1] if flip else want), (img.shape, box, out_w, filt, flip)
                    key = (img.shape, box, out_w, out_h, filt, flip)
                    assert np.array_equal(first.setdefault(key, got), got)


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
    paths = _C.simd_paths()
    assert set(paths) <= {"avx512vbmi", "avx512vnni", "avxvnni", "avx2", "sse4.1", "neon", "scalar"}
    assert paths[-1] == "scalar" and len(set(paths)) == len(paths)
    assert _C.simd_path() in paths


_NARROW_PATH_SCRIPT = """
import hashlib
import numpy as np
from ipu_cnn import _C
rng = np.random.default_rng(600)
digest = hashlib.sha256()
for i in range(120):
    h, w = (int(v) for v in rng.integers(1, 90, 2))
    if i % 3 == 0:
        h = int(rng.integers(60, 160))  # tall: vertical first for most output sizes below
    src = rng.integers(0, 256, (h, w, 3 + i % 2), dtype=np.uint8)
    left, right = np.sort(rng.uniform(0, w, 2)); top, bottom = np.sort(rng.uniform(0, h, 2))
    box = (float(left), float(top), float(max(right, left + 0.05)), float(max(bottom, top + 0.05)))
    box = (box[0], box[1], min(box[2], float(w)), min(box[3], float(h)))
    out_w, out_h = (int(v) for v in rng.integers(1, 70, 2))
    for filt in (0, 1):
        a = _C.resize(src, box, out_w, out_h, filt, bool(i % 3), scalar=False)
        b = _C.resize(src, box, out_w, out_h, filt, bool(i % 3), scalar=True)
        assert np.array_equal(a, b), (src.shape, box, out_w, out_h, filt)
        digest.update(a.tobytes())
print(_C.simd_path(), digest.hexdigest())
"""


def run_resize_script(isa: str | None, cwd: Path) -> tuple[str, str]:
    """The script's (SIMD path, digest of every output) with the dispatch capped at `isa` (None: the CPU's best)."""
    env = subprocess_env() if isa is None else subprocess_env(IPU_CNN_RESAMPLE_ISA=isa)
    res = subprocess.run([sys.executable, "-c", _NARROW_PATH_SCRIPT], env=env, capture_output=True, text=True,
                         check=False, timeout=120, cwd=cwd)
    assert res.returncode == 0, res.stderr
    path, digest = res.stdout.split()
    return path, digest


@pytest.fixture(scope="module")
def best_path_digest(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The script's result on the CPU's best path, run once for every capped path."""
    return run_resize_script(None, tmp_path_factory.mktemp("best"))


@pytest.mark.parametrize("isa", ["avx512vnni", "avxvnni", "avx2", "sse4.1", "scalar"])
def test_narrower_dispatch_paths(isa: str, tmp_path: Path, best_path_digest: tuple[str, str]) -> None:
    """IPU_CNN_RESAMPLE_ISA picks another path the CPU runs, so the narrower ones run on a wider CPU too (AVX-512 VNNI
    without the VBMI horizontal pass, AVX-VNNI, AVX2 and SSE4.1 on a VBMI machine, SSE4.1 on an AVX2 one; a path the
    CPU lacks falls back to its widest): each is bit-exact with the scalar reference in both pass orders, and gives the
    same bytes as the CPU's best path. That also checks the weights' other forms (the AVX2 path's split 16-bit halves,
    the VNNI paths' three signed byte digits, in pixel or in byte lanes) and the AVX2 coefficient code (four output
    positions a lane at a time) against the scalar code."""
    path, digest = run_resize_script(isa, tmp_path)
    runs = _C.simd_paths()
    assert path == (isa if isa in runs else runs[0])
    best_path, best_digest = best_path_digest
    assert digest == best_digest, (path, best_path)


@pytest.mark.corpora
def test_imagenet_sample_bicubic_train_crops_equal_pillow() -> None:
    """The whole pipeline on real photos: decode_image with a bicubic TrainTransform(224) at full scale against
    Pillow's full decode, crop(the same box), resize(BICUBIC) (+ flip) -- torchvision's RandomResizedCrop on Pillow --
    exactly. About 125 files: every one whose crop resamples vertically first (crops narrower than (h + 224) / 2, 85
    of them; up to 13 levels off while the order was horizontal-first) and every 9th other one."""
    from conftest import corpora_dir, pil_rgb

    from ipu_cnn.data import TrainTransform, decode_image

    files = sorted(corpora_dir("imagenet_sample").iterdir())
    t = TrainTransform(224, interpolation="bicubic")
    checked, checked_vertical_first = 0, 0
    for i, path in enumerate(files):
        with Image.open(path) as im:
            w, h = im.size
        box, flip = _C.sample_crop(t.native(), w, h, 0, 0, i)
        left, top, right, bottom = (int(v) for v in box)
        vf = vertical_first(right - left, bottom - top, 224, 224)
        if not vf and i % 9:
            continue
        crop = np.ascontiguousarray(pil_rgb(path)[top:bottom, left:right])
        whole = (0.0, 0.0, float(right - left), float(bottom - top))
        if pillow_call_comparable(right - left, bottom - top, 224, 224):
            ref = pillow_single_call(crop, whole, 224, 224, BICUBIC)
        else:
            ref = two_step_reference(crop, whole, 224, 224, BICUBIC)
        if flip:
            ref = ref[:, ::-1]
        ours = decode_image(path, t, index=i, dct_scaling=False)
        assert np.array_equal(ours, ref), (path.name, (w, h), box, flip, abs_diff(ours, ref).max())
        checked += 1
        checked_vertical_first += vf
    assert checked >= 80 and checked_vertical_first >= 20, (checked, checked_vertical_first)
