"""Seed corpora for the fuzz targets, built at run time from ../shared/corpora (never copied into the repository) plus
a few JPEGs Pillow encodes here, so fuzzing still starts from valid images where the corpora are absent.

    python fuzz/seeds.py OUT_DIR [--imagenet N]     # OUT_DIR/<target>/ for every target; prints the counts

Byte targets (decode_image, read_header, restart_index) get symbolic links to the corpus files; decode_batch gets 1-4 small files
joined by the source separator; resample gets records (_common.RECORD) made from the corpus images' real sizes
and downscaled pixels. Only Pillow reads the corpora here: the runner's own process may not be able to load a
sanitizer build of ipu_cnn.
"""
from __future__ import annotations

import argparse
import io
import random
import sys
from pathlib import Path

from _common import BICUBIC, CORPORA, EVAL, FLIP, INT_SIZE, RGBX, SOURCE_SEPARATOR, Record, pack_record

TARGETS = ("decode_image", "read_header", "decode_batch", "resample", "restart_index")


def corpus_files(imagenet: int, corpora: Path = CORPORA) -> list[Path]:
    """Every edge-case file and an evenly spaced ``imagenet`` of the ImageNet sample ([] when the corpora are
    absent)."""
    edge = corpora / "edge_cases"
    files = sorted(p for p in edge.iterdir() if p.is_file() and p.suffix.lower() not in (".tsv", ".md")) \
        if edge.is_dir() else []
    photos = sorted((corpora / "imagenet_sample").glob("*")) if (corpora / "imagenet_sample").is_dir() else []
    if photos and imagenet > 0:
        step = max(1, len(photos) // imagenet)
        files += photos[::step][:imagenet]
    return files


def generated_jpegs() -> dict[str, bytes]:
    """A few layouts encoded by Pillow, with EXIF orientation on one: seeds that need no corpora."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:48, 0:64]
    pixels = np.stack([(x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256], -1).astype(np.uint8)
    pixels = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = {}
    for name, mode, args in (("baseline_420", "RGB", {"quality": 85}),
                             ("baseline_444", "RGB", {"quality": 92, "subsampling": 0}),
                             ("progressive", "RGB", {"quality": 80, "progressive": True}),
                             ("restart", "RGB", {"quality": 90, "restart_marker_blocks": 2}),
                             ("gray", "L", {"quality": 90}),
                             ("cmyk", "CMYK", {"quality": 90}),
                             ("exif_orientation_6", "RGB", {"quality": 85, "exif": exif})):
        buf = io.BytesIO()
        im.convert(mode).save(buf, "JPEG", **args)
        out[name] = buf.getvalue()
    return out


def _link_or_write(folder: Path, name: str, target: Path | None = None, data: bytes | None = None) -> None:
    path = folder / name
    if target is not None:
        path.symlink_to(target.resolve())
    else:
        path.write_bytes(data)


def build(out_dir: Path, imagenet: int = 40, corpora: Path = CORPORA) -> dict[str, int]:
    """Fill out_dir/<target>/ for every target (replacing what was there); returns the seed count per target."""
    import shutil

    files = corpus_files(imagenet, corpora)
    generated = generated_jpegs()
    counts = {}
    for target in TARGETS:
        folder = out_dir / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if target in ("decode_image", "read_header", "restart_index"):
            for i, f in enumerate(files):
                _link_or_write(folder, f"{i:04d}_{f.name}", target=f)
            for name, data in generated.items():
                _link_or_write(folder, f"gen_{name}.jpg", data=data)
        elif target == "decode_batch":
            _batch_seeds(folder, files, generated)
        else:
            _resample_seeds(folder, files)
        counts[target] = sum(1 for _ in folder.iterdir())
    return counts


def _batch_seeds(folder: Path, files: list[Path], generated: dict[str, bytes], count: int = 160) -> None:
    """Batches of 1-4 small images (at most 16 KB each, so a seed fits libFuzzer's -max_len)."""
    small = [f.read_bytes() for f in files if f.stat().st_size <= 16384] + list(generated.values())
    rng = random.Random(12)
    for i in range(count):
        parts = [small[rng.randrange(len(small))] for _ in range(rng.randint(1, 4))]
        _link_or_write(folder, f"batch_{i:03d}", data=SOURCE_SEPARATOR.join(parts))


def _resample_seeds(folder: Path, files: list[Path], count: int = 120) -> None:
    """Records from real image sizes: default and edge Train/Eval parameters, in-range and edge boxes, and the
    image's own pixels downscaled to the small resize image."""
    import numpy as np
    from PIL import Image

    rng = random.Random(34)
    images = []
    for f in rng.sample(files, len(files)):  # sizes from both corpora, not only the first folder's
        try:
            with Image.open(f) as im:
                im.draft("RGB", (64, 64))  # DCT-scaled: fast even for the large files
                images.append((im.size, im.convert("RGB").resize((64, 64)).tobytes()))
        except Exception:  # the corpora hold files Pillow cannot read, on purpose; they are no use here
            continue
        if len(images) >= count:
            break
    if not images:
        images = [((500, 375), bytes(range(256)) * 48)]
    params = [(0.08, 1.0, 3 / 4, 4 / 3, 0.5, 0.875), (0.08, 1.0, 3 / 4, 4 / 3, 0.0, 1.0),
              (1.0, 1.0, 1.0, 1.0, 1.0, 0.25), (0.01, 0.3, 0.1, 10.0, 0.5, 0.5)]
    for i, ((w, h), pixels) in enumerate(images):
        pw, ph = rng.choice((1, 2, 7, 16, 33, 64)), rng.choice((1, 3, 8, 31, 64))
        flags = rng.choice((0, BICUBIC, FLIP, BICUBIC | FLIP, EVAL, EVAL | INT_SIZE, RGBX, RGBX | FLIP))
        px = np.frombuffer(pixels, np.uint8).reshape(64, 64, 3)[:ph, :pw]
        if flags & RGBX:
            px = np.concatenate([px, np.full((ph, pw, 1), 255, np.uint8)], axis=2)
        boxes = [(0.0, 0.0, float(pw), float(ph)), (0.5, 0.25, pw * 0.75, ph - 0.125), (-1e-7, 0.0, pw + 1e-7, ph),
                 (pw / 3, ph / 3, pw / 3, ph)]
        out = rng.choice(((224, 224), (1, 1), (17, 9), (64, 48), (256, 3)))
        # EvalTransform's resize_size: crop_pct instead (square sizes only), the shorter side, or (height, width).
        resize = rng.choice(((0, 0), (max(out) + rng.choice((0, 1, 32)), 0), (out[1] + rng.randrange(9), out[0] + 1)))
        if flags & EVAL and not flags & INT_SIZE and resize == (0, 0):
            resize = (max(out), 0)  # a non-square size needs resize_size
        rec = Record(w, h, out[0], out[1], flags, pw, ph, rng.getrandbits(32), rng.randrange(4), rng.randrange(10**6),
                     boxes[i % len(boxes)], params[i % len(params)], resize)
        _link_or_write(folder, f"geom_{i:03d}", data=pack_record(rec, px.tobytes()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--imagenet", type=int, default=40, help="how many ImageNet-sample photos to include (default 40)")
    args = ap.parse_args()
    if not CORPORA.is_dir():
        print(f"seeds: no corpora at {CORPORA}; seeding from generated JPEGs only", file=sys.stderr)
    for target, n in build(args.out_dir, args.imagenet).items():
        print(f"{target}: {n} seeds")


if __name__ == "__main__":
    main()
