"""The benchmark's input: the files of a folder, or photo-like JPEGs generated once into the user's cache.

Decode speed depends on what the files hold, so the generated images are made to cost what photos cost: ImageNet's
typical 500x375 (some portrait, some 500x333 and square), quality 90, 4:2:0, about 85 KB each — a 1/f ("pink")
luminance texture as natural images have, smooth colour fields, a few soft-edged objects with their own texture, and
sensor-like grain. Every byte is a function of the image's index (and of the Pillow and libjpeg versions that encode
it), so files written by concurrent runs are identical, and each is published by an atomic rename.

Files are read into memory before timing, so no pipeline is measured reading the disk.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ipu_cnn.data._cache import cache_dir, publish_file

__all__ = ["IMAGE_SUFFIXES", "generated_folder", "load_images", "photo_jpeg"]

PathLike = Union[str, "os.PathLike[str]"]

#: Bumped whenever photo_jpeg makes different images, so stale cached files are not reused.
PHOTO_VERSION = 1
#: (width, height) drawn per image, in ImageNet-like proportions.
_SIZES: tuple[tuple[int, int], ...] = ((500, 375),) * 6 + ((375, 500),) * 2 + ((500, 333), (500, 500))
#: What load_images takes from a folder (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp")


def _luminance(rng: np.random.Generator, log_f: np.ndarray, h: int, w: int, contrast: float) -> Image.Image:
    """A 1/f^a luminance texture around 128, as an 8-bit image."""
    amp = np.exp(-rng.uniform(1.0, 1.35) * log_f).astype(np.float32)
    amp[0, 0] = 0.0
    shape = log_f.shape
    spectrum = (rng.standard_normal(shape, dtype=np.float32) + 1j * rng.standard_normal(shape, dtype=np.float32)) * amp
    lum = np.fft.irfft2(spectrum, s=(h, w))
    lum = lum * (contrast / (lum.std() + 1e-9)) + 128.0
    return Image.fromarray(np.clip(lum, 0, 255).astype(np.uint8), "L")


def _colour(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A smooth colour field: a tint varying along one colour axis, interpolated from a coarse grid."""
    tint = rng.uniform(40, 215, 3)
    axis = rng.standard_normal(3)
    axis *= 25.0 / np.linalg.norm(axis)
    grid = tint + rng.standard_normal((4, 5, 1)) * axis
    return Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB").resize((w, h), Image.Resampling.BICUBIC)


def photo_jpeg(index: int, seed: int = 0, quality: int = 90) -> bytes:
    """The JPEG bytes (4:2:0, baseline) of photo-like image ``index``; a pure function of its arguments."""
    rng = np.random.default_rng([PHOTO_VERSION, seed, index])
    w, h = _SIZES[int(rng.integers(len(_SIZES)))]
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    log_f = np.log(f).astype(np.float32)
    lum = _luminance(rng, log_f, h, w, rng.uniform(30, 50))
    col = _colour(rng, h, w)
    for _ in range(int(rng.integers(2, 5))):  # objects: soft-edged shapes with their own texture and colour
        mask = Image.new("L", (w, h))
        draw = ImageDraw.Draw(mask)
        x0, y0 = rng.uniform(-0.2, 0.9) * w, rng.uniform(-0.2, 0.9) * h
        x1, y1 = x0 + rng.uniform(0.15, 0.7) * w, y0 + rng.uniform(0.15, 0.7) * h
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=255)
        else:
            corners = rng.uniform((x0, y0), (x1, y1), (int(rng.integers(3, 7)), 2))
            draw.polygon([(float(x), float(y)) for x, y in corners], fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
        lum = Image.composite(_luminance(rng, log_f, h, w, rng.uniform(20, 45)), lum, mask)
        col = Image.composite(_colour(rng, h, w), col, mask)
    grain = (rng.standard_normal((h, w), dtype=np.float32) * rng.uniform(2, 4)).astype(np.int16)
    pixels = np.asarray(col, np.int16) + (np.asarray(lum, np.int16) - 128 + grain)[..., None]
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality, subsampling=2)
    return buf.getvalue()


def generated_folder(count: int, root: PathLike | None = None) -> Path:
    """A folder holding at least ``count`` photo-like JPEGs (``photo_00000.jpg``, ...), made where missing.

    The default ``root`` is ``<ipu_cnn cache>/benchmark-photos-v<PHOTO_VERSION>``. Each file is published whole by the
    cache (`publish_file`: a temporary name, then an atomic rename), so an interrupted or concurrent run never leaves a
    partial file behind.
    """
    folder = Path(root) if root is not None else cache_dir() / f"benchmark-photos-v{PHOTO_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        target = folder / f"photo_{i:05d}.jpg"
        if not target.exists():
            publish_file(target, photo_jpeg(i))
    return folder


def load_images(folder: PathLike, limit: int | None = None) -> tuple[list[str], list[bytes]]:
    """Read the image files under ``folder`` (recursively, sorted by path) into memory.

    With ``limit``, take that many files spread evenly over the sorted list, so an ImageFolder tree contributes from
    every class rather than from the first few. Returns the paths and their bytes.
    """
    root = Path(folder)
    if not root.is_dir():
        raise SystemExit(f"{root}: not a folder; give a folder of images, or no folder to use generated JPEGs")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise SystemExit(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found under it")
    if limit is not None and limit < len(paths):
        picks = np.linspace(0, len(paths) - 1, num=limit).round().astype(int)
        paths = [paths[i] for i in picks]
    return [os.fspath(p) for p in paths], [p.read_bytes() for p in paths]
