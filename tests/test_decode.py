"""Single-image decoding against Pillow: full frames exactly, transforms exactly at full DCT scale and against the
scaled frame, within the stated tolerances against full scale, EXIF, errors."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import VARIANTS, corpora_dir, encode_jpeg, photo_like, pil_rgb, subprocess_env
from ipu_cnn import _C
from ipu_cnn.data import DecodeError, EvalTransform, TrainTransform, decode_image, read_header
from ipu_cnn.data.reference import pil_eval, pil_resize_box, pil_train

def pil_transform(full: np.ndarray, transform, index: int = 0, seed: int = 0, epoch: int = 0) -> np.ndarray:
    """torchvision's result on Pillow for a transform (``ipu_cnn.data.reference``): train crops the box the native
    sampler draws, resizes it and flips; eval is Resize + CenterCrop. Ours equals it exactly at full DCT scale."""
    img = Image.fromarray(full)
    if isinstance(transform, EvalTransform):
        return pil_eval(img, transform.output_hw, transform.resize, transform.interpolation)
    box, flip = _C.sample_crop(transform.native(), img.width, img.height, seed, epoch, index)
    return pil_train(img, box, flip, transform.output_hw, transform.interpolation)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_full_frame_equals_pillow(variant_files: dict[str, Path], name: str) -> None:
    path = variant_files[name]
    ours = decode_image(path)
    ref = pil_rgb(path)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    assert np.array_equal(ours, ref), f"max diff {np.abs(ours.astype(int) - ref).max()}"


def test_bytes_and_path_agree(variant_files: dict[str, Path]) -> None:
    path = variant_files["420"]
    data = path.read_bytes()
    for source in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert np.array_equal(decode_image(source), decode_image(path))
    t = TrainTransform(64)
    assert np.array_equal(decode_image(data, t, index=5), decode_image(str(path), t, index=5))


@pytest.mark.parametrize("name", ["444", "422", "420", "420_odd", "gray", "cmyk", "progressive", "restart_rows",
                                  "large_1024", "tiny_1x1", "tall_2x64"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_transforms_without_dct_scaling_match_pillow(variant_files: dict[str, Path], name: str,
                                                     interpolation: str) -> None:
    """Region decode at full scale + our resampler equal torchvision on Pillow (full decode, crop or resize, crop)."""
    path = variant_files[name]
    full = pil_rgb(path)
    for t in (TrainTransform(64, interpolation=interpolation), EvalTransform(56, resize_size=64,
                                                                             interpolation=interpolation)):
        for index in range(6):
            ours = decode_image(path, t, index=index, dct_scaling=False)
            ref = pil_transform(full, t, index=index)
            assert np.array_equal(ours, ref), (name, t, index, np.abs(ours.astype(int) - ref).max())


def test_eval_with_dct_scaling_close_to_pillow(variant_files: dict[str, Path]) -> None:
    path = variant_files["large_1024"]  # 768 short side -> 1/2 scale for a 224 crop would be 336: scale 1/2 used
    full = pil_rgb(path)
    t = EvalTransform(224)
    ours = decode_image(path, t)
    ref = pil_transform(full, t)
    assert np.abs(ours.astype(int) - ref).mean() <= 1.5
    assert psnr(ours, ref) >= 30


def _scaled_frame_reference(data: bytes, transform: TrainTransform, index: int, m: int) -> np.ndarray:
    """Pillow's decode of the whole frame at DCT scale m/8 (``draft`` asks libjpeg for that scale), then the crop's
    frame there resized as ours resizes it: the frame widened to whole scaled pixels, the box keeping the crop's
    fractional edges (transform.cpp, ``scale_frame``)."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        if m < 8:
            im.draft("RGB", (w * m // 8, h * m // 8))
        img = im.convert("RGB")
    assert img.size == (-(-w * m // 8), -(-h * m // 8)), "Pillow decoded at another scale"
    (left, top, right, bottom), flip = _C.sample_crop(transform.native(), w, h, 0, 0, index)
    f = m / 8
    x1, y1 = min(img.width, int(np.ceil(right * f))), min(img.height, int(np.ceil(bottom * f)))
    x0, y0 = min(int(np.floor(left * f)), x1 - 1), min(int(np.floor(top * f)), y1 - 1)
    box = (left * f - x0, top * f - y0, min(right * f - x0, x1 - x0), min(bottom * f - y0, y1 - y0))
    return pil_resize_box(img.crop((x0, y0, x1, y1)), box, flip, transform.output_hw, transform.interpolation)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_dct_scaled_region_equals_the_scaled_frame(variant_files: dict[str, Path], interpolation: str) -> None:
    """With DCT scaling, the region ours decodes holds exactly the whole frame's pixels at that scale, wherever the
    crop starts and ends: columns need the margin past the filter's support (libjpeg replicates chroma at the column
    window's edges), rows need none (libjpeg skips to and stops at any row with the whole decode's rows). So ours
    equals Pillow's frame decoded at the same scale and resized, bit for bit, on every layout and scale met."""
    t = TrainTransform(24, interpolation=interpolation)
    sources = {name: variant_files[name].read_bytes()
               for name in ("420", "420_odd", "422", "444", "gray", "progressive", "restart", "restart_rows")}
    sources["420 restart-indexed"] = _C.add_restart_index(sources["420"], tile_width=48)
    scales = set()
    for name, data in sources.items():
        for index in range(24):
            out = np.empty((24, 24, 3), np.uint8)
            report = _C.decode_transform(data, out, t.native(), t.filter, 0, 0, index, _C.DecodeOptions())
            assert report.status == _C.Status.OK, (name, index, report.reason)
            ref = _scaled_frame_reference(data, t, index, report.scale_num)
            assert np.array_equal(out, ref), (name, index, report.scale_num, np.abs(out.astype(int) - ref).max())
            scales.add(report.scale_num)
    assert scales == {1, 2, 4, 8}, scales  # every DCT scale was met


@pytest.mark.corpora
def test_imagenet_sample_fidelity() -> None:
    """Every real photo: full frame equals Pillow; eval with DCT scaling: mean abs diff <= 1.5 on average, the
    1st-percentile PSNR >= 30 dB from torchvision's; eval and train at full scale equal to torchvision's."""
    files = sorted(corpora_dir("imagenet_sample").iterdir())
    t_eval = EvalTransform(224)
    t_train = TrainTransform(224)
    mean_diffs, psnrs = [], []
    for i, path in enumerate(files):
        full = pil_rgb(path)
        assert np.array_equal(decode_image(path), full), path.name
        ours = decode_image(path, t_eval)
        ref = pil_transform(full, t_eval)
        mean_diffs.append(np.abs(ours.astype(int) - ref).mean())
        psnrs.append(psnr(ours, ref))
        if i % 10 == 0:  # full-scale exactness on a tenth of the files keeps the test short
            assert np.array_equal(decode_image(path, t_eval, dct_scaling=False), ref), path.name
            train = decode_image(path, t_train, index=i, dct_scaling=False)
            assert np.array_equal(train, pil_transform(full, t_train, index=i)), path.name
    assert np.mean(mean_diffs) <= 1.5, np.mean(mean_diffs)
    assert np.percentile(psnrs, 1) >= 30, np.percentile(psnrs, 1)


@pytest.mark.corpora
def test_exif_orientation_matches_pillow_exif_transpose() -> None:
    files = sorted(corpora_dir("edge_cases").glob("exiforient_*.jpg"))
    assert len(files) >= 16
    t = TrainTransform(96)
    for i, path in enumerate(files):
        with Image.open(path) as im:
            ref_full = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            plain = np.asarray(im.convert("RGB"))
        assert np.array_equal(decode_image(path), plain), "orientation must be ignored by default"
        oriented = decode_image(path, apply_exif_orientation=True)
        assert np.array_equal(oriented, ref_full), path.name
        ours = decode_image(path, t, index=i, apply_exif_orientation=True, dct_scaling=False)
        assert np.array_equal(ours, pil_transform(ref_full, t, index=i)), path.name
        assert read_header(path).orientation == (int(path.stem.split("_")[-1]) or 1)


def test_read_header_without_decoding(variant_files: dict[str, Path]) -> None:
    for name, (w, h, mode, args) in VARIANTS.items():
        hdr = read_header(variant_files[name])
        assert (hdr.width, hdr.height, hdr.format) == (w, h, "JPEG")
        assert hdr.components == {"RGB": 3, "L": 1, "CMYK": 4}[mode]
        assert hdr.progressive == bool(args.get("progressive", False))
    png = io.BytesIO()
    Image.fromarray(photo_like(40, 30)).save(png, "PNG")
    assert read_header(png.getvalue())[:4] == (40, 30, 3, "PNG")


def test_png_named_jpeg_goes_through_pillow(tmp_path: Path) -> None:
    """ImageNet contains a PNG named .JPEG: same crop semantics through the Pillow path."""
    pixels = photo_like(180, 120, seed=3)
    path = tmp_path / "n02105855_2933.JPEG"
    Image.fromarray(pixels).save(path, "PNG")
    assert np.array_equal(decode_image(path), pixels)
    for t in (TrainTransform(48), EvalTransform(48, resize_size=56, interpolation="bicubic")):
        for index in range(4):
            assert np.array_equal(decode_image(path, t, index=index), pil_transform(pixels, t, index))


# --- errors: every one a DecodeError (a ValueError) naming the file and the reason ---------------------------------

def _error_of(source, **kwargs) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_image(source, **kwargs)
    assert isinstance(info.value, ValueError)
    return info.value


def test_errors_name_file_and_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    missing = tmp_path / "missing.jpg"
    cases = {
        empty: "empty file",
        text: "not a JPEG file.*not an image format Pillow can read",
        missing: "cannot open file: No such file",
        tmp_path: "is a directory",
    }
    for path, reason in cases.items():
        for kwargs in ({}, {"transform": TrainTransform(32)}, {"transform": EvalTransform(32)}):
            err = _error_of(path, **kwargs)
            assert str(path) in str(err)
            assert re.search(reason, err.reason), err.reason
    assert "in-memory image" in str(_error_of(b""))


def test_truncated_is_an_error_wherever_the_crop_lies(variant_files: dict[str, Path]) -> None:
    for name in ("420", "progressive", "444"):
        data = variant_files[name].read_bytes()
        for cut in (0.3, 0.7, 0.98):
            part = data[: int(len(data) * cut)]
            assert "Premature end of JPEG file" in _error_of(part).reason
            for index in range(8):  # crops anywhere in the frame, including above the damage
                with pytest.raises(DecodeError, match="Premature end"):
                    decode_image(part, TrainTransform(32), index=index)


def test_pixel_limit_refuses_bombs_before_allocating(variant_files: dict[str, Path]) -> None:
    data = variant_files["420"].read_bytes()
    assert "above the limit of 1000" in _error_of(data, max_pixels=1000).reason
    # Forge the frame header to 60000 x 60000 (3.6 G pixels): refused from the header alone.
    sof = data.index(b"\xff\xc0")
    forged = data[: sof + 5] + (60000).to_bytes(2, "big") * 2 + data[sof + 9:]
    for kwargs in ({}, {"transform": TrainTransform(224)}):
        assert "60000x60000 = 3600000000 pixels, above the limit of 178956970" in _error_of(forged, **kwargs).reason
    decode_image(data, max_pixels=None)  # None lifts the limit


def test_progressive_scan_cap(variant_files: dict[str, Path]) -> None:
    data = variant_files["progressive"].read_bytes()
    assert "more than 2 scans" in _error_of(data, max_scans=2).reason
    decode_image(data, max_scans=50)


def _with_junk_before_second_marker(data: bytes) -> bytes:
    """Insert garbage between two header segments: libjpeg warns "extraneous bytes before marker"."""
    dqt = data.index(b"\xff\xdb")
    seg_len = int.from_bytes(data[dqt + 2: dqt + 4], "big")
    end = dqt + 2 + seg_len
    return data[:end] + b"\x12\x34\x56\x78\x9a" + data[end:]


def test_corrupt_data_warning_decodes_unless_strict(variant_files: dict[str, Path]) -> None:
    data = _with_junk_before_second_marker(variant_files["420"].read_bytes())
    ref = pil_rgb(data)
    assert np.array_equal(decode_image(data), ref)
    err = _error_of(data, strict=True)
    assert "extraneous bytes before marker" in err.reason and "strict" in err.reason


def test_cli_version_names_the_jpeg_library(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "ipu_cnn", "--version"], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=subprocess_env())
    assert "libjpeg-turbo" in out.stdout and "resampler_simd" in out.stdout and "torch" in out.stdout


def test_grayscale_and_cmyk_conversions_match_pillow_convert() -> None:
    pixels = photo_like(64, 48, seed=9)
    for mode, args in (("L", {}), ("CMYK", {}), ("CMYK", {"progressive": True})):
        data = encode_jpeg(pixels, mode, quality=95, **args)
        assert np.array_equal(decode_image(data), pil_rgb(data))
