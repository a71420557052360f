"""Shared fixtures: generated JPEGs of every layout, and the real corpora when ../shared/corpora is present."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


def corpora_dir(name: str) -> Path:
    """A corpora folder, or skip the test with the reason (a user's fresh clone has no ../shared)."""
    path = CORPORA / name
    if not path.is_dir():
        pytest.skip(f"needs the test corpora at {path} (present on the project's machines, absent in a fresh clone)")
    return path


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth image with edges and noise: exercises both the DCT and the resampler like a photo does."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.005, 0.06), rng.uniform(0.005, 0.06), rng.uniform(0, 6.3)
        img[..., c] = 128 + 90 * np.sin(x * fx + ph) * np.cos(y * fy - ph)
    cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1, max(2, width, height) / 2)
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] += rng.uniform(-80, 80, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_jpeg(pixels: np.ndarray, mode: str = "RGB", **save_args: object) -> bytes:
    """Encode with Pillow (libjpeg-turbo): mode "RGB", "L" or "CMYK"; save_args go to Image.save."""
    im = Image.fromarray(pixels)
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, "JPEG", **save_args)
    return buf.getvalue()


# name -> (width, height, mode, save args): every layout the issue lists.
VARIANTS: dict[str, tuple[int, int, str, dict]] = {
    "444": (257, 191, "RGB", {"quality": 92, "subsampling": 0}),
    "422": (300, 200, "RGB", {"quality": 90, "subsampling": 1}),
    "420": (333, 250, "RGB", {"quality": 85, "subsampling": 2}),
    "420_odd": (97, 61, "RGB", {"quality": 90, "subsampling": 2}),
    "gray": (211, 157, "L", {"quality": 90}),
    "cmyk": (160, 120, "CMYK", {"quality": 90}),
    "progressive": (320, 240, "RGB", {"quality": 88, "progressive": True}),
    "restart": (256, 256, "RGB", {"quality": 90, "restart_marker_blocks": 3}),
    "restart_rows": (200, 300, "RGB", {"quality": 90, "restart_marker_rows": 1, "subsampling": 2}),
    "tiny_1x1": (1, 1, "RGB", {"quality": 95}),
    "tall_2x64": (2, 64, "RGB", {"quality": 95}),
    "large_1024": (1024, 768, "RGB", {"quality": 90, "subsampling": 2}),
}


@pytest.fixture(scope="session")
def variant_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One JPEG file per layout in VARIANTS."""
    root = tmp_path_factory.mktemp("variants")
    files = {}
    for i, (name, (w, h, mode, args)) in enumerate(VARIANTS.items()):
        path = root / f"{name}.jpg"
        path.write_bytes(encode_jpeg(photo_like(w, h, seed=i), mode, **args))
        files[name] = path
    return files


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A small set of photo-sized JPEGs (both orientations) for batch tests."""
    root = tmp_path_factory.mktemp("photos")
    files = []
    for i in range(12):
        w, h = (500, 375) if i % 3 else (375, 500)
        path = root / f"photo_{i:02d}.jpg"
        path.write_bytes(encode_jpeg(photo_like(w, h, seed=100 + i), quality=90, subsampling=i % 3))
        files.append(path)
    return files


def pil_rgb(source: Path | bytes) -> np.ndarray:
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(fp) as im:
        return np.asarray(im.convert("RGB"))


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python that must import the same ipu_cnn as this process (the installed package in CI,
    or a source tree with the extension built in place). Run such children with a cwd outside the source tree: a
    checkout without the built extension would otherwise shadow the installed package."""
    import os

    import ipu_cnn

    where = os.path.dirname(os.path.dirname(os.path.abspath(ipu_cnn.__file__)))
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    return env
