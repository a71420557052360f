"""Eval and train preprocessing against torchvision itself on Pillow images: bit for bit at full DCT scale.

EvalTransform is torchvision's ``Resize(resize_size, antialias=True)`` + ``CenterCrop(size)``; TrainTransform, given the
box and flip our sampler draws, is ``RandomResizedCrop(antialias=True)`` + ``RandomHorizontalFlip``. torchvision's PIL
path is Pillow's resize, whose pass order Pillow >= 13 picks by the sizes it is given (tests/test_resample.py); with an
older Pillow, the cases where the rule picks vertical-first are left out (ours follows Pillow 13).
"""
from __future__ import annotations

import functools
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import corpora_dir, encode_jpeg, photo_like, subprocess_env
from ipu_cnn import _C
from ipu_cnn.data import EvalTransform, TrainTransform, decode_batch, decode_image
from ipu_cnn.data.reference import eval_box, eval_geometry, pil_eval, pil_train

T = pytest.importorskip("torchvision.transforms")
F = pytest.importorskip("torchvision.transforms.functional")
v2 = pytest.importorskip("torchvision.transforms.v2")

MODES = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}

# (width, height): odd sizes, both orientations, an exact 256 side (one pass is the identity), upscales (smaller than
# the resize), extreme aspects, and tall images whose resize Pillow 13 runs vertical-first (H - H' > 2 (W - W')).
ODD_SIZES = [(97, 61), (61, 97), (257, 191), (191, 257), (256, 341), (341, 256), (256, 256), (300, 600), (333, 1001),
             (120, 90), (37, 1000), (1000, 37), (500, 375), (375, 500), (231, 299), (640, 427), (1, 1), (2, 64)]

# (size, resize_size): square, non-square crops under Resize(int), Resize((h, w)), a crop equal to the resize.
EVAL_CASES = [(224, 256), (56, 64), ((160, 96), 200), ((96, 160), 170), ((224, 160), (250, 180)), ((40, 60), (40, 70)),
              (64, 64), (33, 47)]


def resample_vertical_first(w: int, h: int, out_w: int, out_h: int) -> bool:
    """Pillow 13's pass order (csrc/resample.h): vertical first iff H > out_h and H - out_h > 2 (W - out_w)."""
    return h > out_h and h - out_h > 2 * (w - out_w)


@functools.cache
def pillow_has_vertical_first() -> bool:
    """Whether the installed Pillow picks the pass order as Pillow 13 does (probed where the two orders differ)."""
    rgb = np.random.default_rng(0).integers(0, 256, (90, 30, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    single = np.asarray(im.resize((20, 20), Image.Resampling.BICUBIC))
    tall = im.resize((30, 20), Image.Resampling.BICUBIC, box=(0, 0, 30, 90))
    vertical_first = np.asarray(tall.resize((20, 20), Image.Resampling.BICUBIC, box=(0, 0, 30, 20)))
    return bool(np.array_equal(single, vertical_first))


def comparable(w: int, h: int, grid_w: int, grid_h: int) -> bool:
    """torchvision's Pillow resize of w x h to grid_w x grid_h runs the passes in ours' order."""
    return pillow_has_vertical_first() or not resample_vertical_first(w, h, grid_w, grid_h)


def torchvision_eval(img: Image.Image, size, resize_size, interpolation: str) -> np.ndarray:
    mode = MODES[interpolation]
    resize = list(resize_size) if isinstance(resize_size, tuple) else resize_size
    tf = T.Compose([T.Resize(resize, interpolation=mode, antialias=True), T.CenterCrop(size)])
    return np.asarray(tf(img))


def torchvision_train(img: Image.Image, box, flip: bool, size, interpolation: str) -> np.ndarray:
    """torchvision's RandomResizedCrop + RandomHorizontalFlip with their random draws replaced by ours."""
    left, top, right, bottom = (int(v) for v in box)

    class GivenCrop(T.RandomResizedCrop):
        @staticmethod
        def get_params(img, scale, ratio):  # noqa: ANN001, ANN205 - torchvision's signature
            return top, left, bottom - top, right - left

    tf = T.Compose([GivenCrop(size, interpolation=MODES[interpolation], antialias=True),
                    T.RandomHorizontalFlip(p=1.0 if flip else 0.0)])
    return np.asarray(tf(img))


def jpeg_of(w: int, h: int, seed: int) -> bytes:
    return encode_jpeg(photo_like(w, h, seed=seed), quality=90, subsampling=2)


def test_eval_geometry_is_torchvisions() -> None:
    """Resized size and crop offsets as torchvision computes them (read back from torchvision's own output: the
    resized image's size, and the first pixel of CenterCrop over an image whose pixels number their position), and
    the native sampler's box is the crop window mapped back per axis."""
    rng = np.random.default_rng(0)
    sizes = ODD_SIZES + [tuple(int(v) for v in rng.integers(1, 2000, 2)) for _ in range(300)]
    for size, resize_size in EVAL_CASES:
        out_h, out_w = (size, size) if isinstance(size, int) else size
        native = EvalTransform(size, resize_size=resize_size).native()
        resize = list(resize_size) if isinstance(resize_size, tuple) else resize_size
        for w, h in sizes:
            new_w, new_h, left, top = eval_geometry(w, h, size, resize_size)
            assert T.Resize(resize, interpolation=T.InterpolationMode.NEAREST)(Image.new("L", (w, h))).size == (
                new_w, new_h), (w, h, resize_size)
            numbered = Image.fromarray(np.arange(new_w * new_h, dtype=np.int32).reshape(new_h, new_w))
            first = int(np.asarray(T.CenterCrop(size)(numbered))[0, 0])
            assert (first % new_w, first // new_w) == (left, top), (w, h, size, resize_size)
            box, flip = _C.sample_crop(native, w, h, 0, 0, 0)
            assert box == eval_box(w, h, size, resize_size) and not flip
            assert box == (left * w / new_w, top * h / new_h, (left + out_w) * w / new_w, (top + out_h) * h / new_h)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_eval_equals_torchvision_on_generated_sizes(interpolation: str) -> None:
    """JPEGs of odd sizes through the region decoder, and their pixels through the non-JPEG (Pillow) path: equal to
    torchvision v1 Resize + CenterCrop on Pillow's decode, and to v2 on the same PIL image."""
    checked = 0
    for k, (w, h) in enumerate(ODD_SIZES):
        data = jpeg_of(w, h, k)
        img = Image.open(io.BytesIO(data)).convert("RGB")
        pixels = np.asarray(img)
        for size, resize_size in EVAL_CASES:
            new_w, new_h, _, _ = eval_geometry(w, h, size, resize_size)
            if not comparable(w, h, new_w, new_h):
                continue
            t = EvalTransform(size, resize_size=resize_size, interpolation=interpolation)
            ref = torchvision_eval(img, size, resize_size, interpolation)
            assert np.array_equal(decode_image(data, t, dct_scaling=False), ref), ((w, h), size, resize_size)
            out = np.empty((*t.output_hw, 3), np.uint8)
            _C.transform_pixels(pixels, out, t.native(), t.filter, 0, 0, 0)
            assert np.array_equal(out, ref), ((w, h), size, resize_size, "pixels path")
            assert np.array_equal(pil_eval(img, size, t.resize, interpolation), ref)
            checked += 1
        tf2 = v2.Compose([v2.Resize(256, interpolation=MODES[interpolation], antialias=True), v2.CenterCrop(224)])
        if comparable(w, h, *eval_geometry(w, h)[:2]):
            ours = decode_image(data, EvalTransform(224, interpolation=interpolation), dct_scaling=False)
            assert np.array_equal(np.asarray(tf2(img)), ours), ((w, h), "v2")
    assert checked >= len(ODD_SIZES) * len(EVAL_CASES) // 2


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_train_equals_torchvision_random_resized_crop(interpolation: str) -> None:
    """TrainTransform at full DCT scale is torchvision's RandomResizedCrop + RandomHorizontalFlip given our crop
    parameters: the crop is cut out before resizing (the filter stops at its edges) and the output is mirrored. Small
    scales (upscaled crops), non-square outputs, odd image sizes; JPEG and decoded-pixels paths."""
    transforms = [TrainTransform(64, interpolation=interpolation),
                  TrainTransform((48, 80), scale=(0.01, 0.3), interpolation=interpolation),
                  TrainTransform(224, scale=(0.5, 1.0), ratio=(0.5, 2.0), interpolation=interpolation)]
    flips = set()
    for k, (w, h) in enumerate(ODD_SIZES):
        data = jpeg_of(w, h, 100 + k)
        img = Image.open(io.BytesIO(data)).convert("RGB")
        pixels = np.asarray(img)
        for t in transforms:
            for index in range(3):
                box, flip = _C.sample_crop(t.native(), w, h, 7, 1, index)
                bw, bh = int(box[2] - box[0]), int(box[3] - box[1])
                if not comparable(bw, bh, t.output_hw[1], t.output_hw[0]):
                    continue
                ref = torchvision_train(img, box, flip, t.output_hw, interpolation)
                ours = decode_image(data, t, seed=7, epoch=1, index=index, dct_scaling=False)
                assert np.array_equal(ours, ref), ((w, h), t, index, box, flip)
                out = np.empty((*t.output_hw, 3), np.uint8)
                _C.transform_pixels(pixels, out, t.native(), t.filter, 7, 1, index)
                assert np.array_equal(out, ref), ((w, h), t, index, "pixels path")
                assert np.array_equal(pil_train(img, box, flip, t.output_hw, interpolation), ref)
                flips.add(flip)
    assert flips == {False, True}


def test_png_in_a_batch_equals_torchvision(tmp_path: Path) -> None:
    """The non-JPEG fallback inside decode_batch uses the same geometry: a PNG beside a JPEG, both exact."""
    png = tmp_path / "odd.png"
    Image.fromarray(photo_like(211, 157, seed=5)).save(png)
    jpg = tmp_path / "odd.jpg"
    jpg.write_bytes(jpeg_of(157, 211, 6))
    t = EvalTransform(96, resize_size=110, interpolation="bicubic")
    out = np.empty((2, 96, 96, 3), np.uint8)
    decode_batch([png, jpg], out, t, dct_scaling=False)
    for path, got in zip((png, jpg), out):
        with Image.open(path) as im:
            assert np.array_equal(got, torchvision_eval(im.convert("RGB"), 96, 110, "bicubic")), path.name


def test_crop_larger_than_the_resized_image_is_refused_natively() -> None:
    """EvalTransform refuses parameters where CenterCrop would pad; the native core, given such CropParams directly,
    refuses the sample with the reason instead of padding or reading outside the image."""
    params = EvalTransform(32, resize_size=40).native()
    params.resize_short = 20  # 50x40 -> 25x20, smaller than the 32x32 crop
    out = np.empty((32, 32, 3), np.uint8)
    report = _C.decode_transform(jpeg_of(50, 40, 0), out, params, 0, 0, 0, 0, _C.DecodeOptions())
    assert report.status == _C.Status.ERROR
    assert "32x32 centre crop does not fit in the image resized to 25x20" in report.reason
    with pytest.raises(ValueError, match="cannot resize"):
        _C.transform_pixels(np.zeros((40, 50, 3), np.uint8), out, params, 0, 0, 0, 0)


_ISA_SCRIPT = """
import io, sys
import numpy as np
from PIL import Image
sys.path.insert(0, {tests!r})
from conftest import encode_jpeg, photo_like
from ipu_cnn import _C
from ipu_cnn.data import EvalTransform, decode_image
from ipu_cnn.data.reference import pil_eval
for k, (w, h) in enumerate([(257, 191), (191, 257), (300, 600), (97, 61), (500, 375)]):
    data = encode_jpeg(photo_like(w, h, seed=k), quality=90)
    for interp in ("bilinear", "bicubic"):
        t = EvalTransform(56, resize_size=64, interpolation=interp)
        ref = pil_eval(Image.open(io.BytesIO(data)), 56, 64, interp)
        assert np.array_equal(decode_image(data, t, dct_scaling=False), ref), (w, h, interp)
print(_C.simd_path())
"""


@pytest.mark.parametrize("isa", ["avx512vnni", "avxvnni", "avx2", "sse4.1", "scalar"])
def test_eval_window_on_narrower_dispatch_paths(isa: str, tmp_path: Path) -> None:
    """The windowed resize is exact on the AVX-512 VNNI (no VBMI), AVX-VNNI, AVX2, SSE4.1 and scalar paths too
    (IPU_CNN_RESAMPLE_ISA picks another path the CPU runs; one it lacks falls back to its widest)."""
    if not pillow_has_vertical_first():
        pytest.skip("the cases include vertical-first resizes; the installed Pillow predates that pass order")
    script = _ISA_SCRIPT.format(tests=str(Path(__file__).parent))
    res = subprocess.run([sys.executable, "-c", script], env=subprocess_env(IPU_CNN_RESAMPLE_ISA=isa),
                         capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    runs = _C.simd_paths()
    assert res.stdout.strip() == (isa if isa in runs else runs[0])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.corpora
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_imagenet_sample_eval_equals_torchvision(interpolation: str) -> None:
    """All 500 real photos: EvalTransform(224, resize_size=256) at full DCT scale equals torchvision's Resize(256) +
    CenterCrop(224) on Pillow bit for bit; with DCT scaling it stays within today's tolerances (mean abs difference
    <= 1.5 on average, 1st-percentile PSNR >= 30 dB)."""
    files = sorted(corpora_dir("imagenet_sample").iterdir())
    t = EvalTransform(224, resize_size=256, interpolation=interpolation)
    mismatched, skipped, mean_diffs, psnrs = [], 0, [], []
    for path in files:
        with Image.open(path) as im:
            img = im.convert("RGB")
        new_w, new_h, _, _ = eval_geometry(img.width, img.height)
        ref = torchvision_eval(img, 224, 256, interpolation)
        if comparable(img.width, img.height, new_w, new_h):
            if not np.array_equal(decode_image(path, t, dct_scaling=False), ref):
                mismatched.append(path.name)
        else:
            skipped += 1
        scaled = decode_image(path, t)
        mean_diffs.append(np.abs(scaled.astype(int) - ref).mean())
        psnrs.append(psnr(scaled, ref))
    assert len(files) == 500 and skipped < 100
    assert not mismatched, f"{len(mismatched)} photos differ from torchvision: {mismatched[:5]}"
    assert np.mean(mean_diffs) <= 1.5, np.mean(mean_diffs)
    assert np.percentile(psnrs, 1) >= 30, np.percentile(psnrs, 1)


@pytest.mark.corpora
def test_imagenet_sample_train_equals_torchvision() -> None:
    """Every 5th real photo, both filters: TrainTransform(224) at full DCT scale equals torchvision's
    RandomResizedCrop + RandomHorizontalFlip given the same crop and flip."""
    files = sorted(corpora_dir("imagenet_sample").iterdir())[::5]
    for interpolation in ("bilinear", "bicubic"):
        t = TrainTransform(224, interpolation=interpolation)
        for i, path in enumerate(files):
            with Image.open(path) as im:
                img = im.convert("RGB")
            box, flip = _C.sample_crop(t.native(), img.width, img.height, 0, 0, i)
            if not comparable(int(box[2] - box[0]), int(box[3] - box[1]), 224, 224):
                continue
            ref = torchvision_train(img, box, flip, 224, interpolation)
            assert np.array_equal(decode_image(path, t, index=i, dct_scaling=False), ref), (path.name, interpolation)
