"""The generated dataset: real JPEG files made once, on first use, so the applications run with no data to hand.

It is the applications' default data, so that a new user sees the whole path (files, region decoding, training)
work. The files are an `ImageFolder` layout, ``root/train/<class>/*.jpg`` and ``root/validation/<class>/*.jpg``,
written under the user's cache (``$IPU_CNN_CACHE``, else ``$XDG_CACHE_HOME/ipu_cnn``, else ``~/.cache/ipu_cnn``) in
``generated/<parameters>-<hash>``.

The images exercise the decoder the way photos do: sizes from 96 to 640 px in both orientations, JPEG qualities 70 to
95, 4:4:4, 4:2:2 and 4:2:0 chroma subsampling, some grayscale and some progressive files. Their content makes a task
that a small CNN learns well above chance within a minute on a CPU, but not a trivial one: class ``c`` draws one shape
type (disc, triangle, star, ...) in one hue range, at a random position, scale, rotation and aspect, over a random
colour field with a random texture, line clutter and noise; grayscale images keep only the shape.

Every byte is a function of the parameters (and of the Pillow and libjpeg versions that encode them). A set is written
to a temporary folder beside its target, completed by a manifest written last, and published by one atomic rename;
an exclusive `fcntl.flock` lock serialises concurrent makers (torchrun ranks), and where locks do not work the rename
alone decides: the loser discards its copy. A folder whose manifest is missing or disagrees with its files is made
again.
"""

from __future__ import annotations

import colorsys
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ipu_cnn.data.datasets import ImageFolder

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "SHAPES",
    "GeneratedImages",
    "GeneratedSpec",
    "cache_dir",
    "default_generated_root",
    "generate_image",
    "make_generated_dataset",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]  # noqa: UP007 (a runtime alias)

#: Bumped whenever the images this module makes for given parameters change, so old cached sets are not reused.
GENERATOR_VERSION = 1
#: Written last into a complete set; its absence marks an incomplete one.
MANIFEST_NAME = "manifest.json"
#: Written first; marks a folder as made by this module, so an incomplete one may be deleted and made again.
_TAG_NAME = ".ipu_cnn_generated"
_FORMAT = "ipu_cnn.generated"
_SPLITS = ("train", "validation")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation"}

#: Shape drawn by class ``c`` is ``SHAPES[c % len(SHAPES)]``.
SHAPES: tuple[str, ...] = ("disc", "triangle", "square", "star", "cross", "ring", "crescent", "rhombus",
                           "semicircle", "arrow")


@dataclass(frozen=True)
class GeneratedSpec:
    """The parameters that determine a generated set; equal specs give byte-identical files.

    Attributes:
        num_classes: number of classes (folders ``000_disc``, ``001_triangle``, ...).
        images_per_class: training images per class.
        val_images_per_class: validation images per class.
        seed: selects the images.
        min_size: smallest image side in pixels.
        max_size: largest image side in pixels.
    """

    num_classes: int = 10
    images_per_class: int = 100
    val_images_per_class: int = 20
    seed: int = 0
    min_size: int = 96
    max_size: int = 640

    def __post_init__(self) -> None:
        """Refuse parameters that cannot make a usable set, saying which and why."""
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 to make a classification task, got {self.num_classes}")
        if self.images_per_class < 1 or self.val_images_per_class < 0:
            raise ValueError(f"need images_per_class >= 1 and val_images_per_class >= 0, got {self.images_per_class} "
                             f"and {self.val_images_per_class}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 16 <= self.min_size <= self.max_size <= 4096:
            raise ValueError(f"need 16 <= min_size <= max_size <= 4096, got min_size={self.min_size}, "
                             f"max_size={self.max_size}")

    @property
    def class_names(self) -> list[str]:
        """Folder names in label order; zero-padded so that sorted order (ImageFolder's) is label order."""
        width = max(3, len(str(self.num_classes - 1)))
        return [f"{c:0{width}d}_{SHAPES[c % len(SHAPES)]}" for c in range(self.num_classes)]

    def count(self, split: str) -> int:
        """Images per class in a split."""
        return self.images_per_class if split == "train" else self.val_images_per_class

    def digest(self) -> str:
        """A short hash of the parameters and the generator version: the cache folder's identity."""
        blob = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def folder_name(self) -> str:
        """Readable and unique cache folder name, e.g. ``c10-n100-v20-s0-96to640-1a2b3c4d5e6f``."""
        return (f"c{self.num_classes}-n{self.images_per_class}-v{self.val_images_per_class}-s{self.seed}-"
                f"{self.min_size}to{self.max_size}-{self.digest()}")


def cache_dir() -> Path:
    """The package's cache folder: ``$IPU_CNN_CACHE``, else ``$XDG_CACHE_HOME/ipu_cnn``, else ``~/.cache/ipu_cnn``."""
    explicit = os.environ.get("IPU_CNN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ipu_cnn"


def default_generated_root(spec: GeneratedSpec) -> Path:
    """Where the set of `spec` lives in the cache: ``cache_dir()/generated/<parameters>-<hash>``."""
    return cache_dir() / "generated" / spec.folder_name()


# ----------------------------------------------------------------------------------------------------------------------
# Drawing


def _shape_layers(shape: str) -> list[tuple[np.ndarray, int]]:
    """The shape as polygons in unit coordinates (radius about 1), each with the mask value it paints (255 or 0)."""

    def regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
        t = phase + np.arange(n) * (2 * math.pi / n)
        return radius * np.stack([np.cos(t), np.sin(t)], axis=1)

    if shape == "disc":
        return [(regular(48), 255)]
    if shape == "triangle":
        return [(regular(3, 1.15), 255)]
    if shape == "square":
        return [(regular(4, 1.05, math.pi / 4), 255)]
    if shape == "star":
        outer, inner = regular(5, 1.15), regular(5, 0.45, -math.pi / 2 + math.pi / 5)
        return [(np.stack([outer, inner], axis=1).reshape(-1, 2), 255)]
    if shape == "cross":
        a, b = 0.32, 1.0
        pts = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b), (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a),
               (-a, b)]
        return [(np.array(pts, dtype=np.float64), 255)]
    if shape == "ring":
        return [(regular(48), 255), (regular(48, 0.55), 0)]
    if shape == "crescent":
        return [(regular(48), 255), (regular(48, 0.85) + np.array([0.45, -0.1]), 0)]
    if shape == "rhombus":
        return [(np.array([(1.2, 0.0), (0.0, 0.5), (-1.2, 0.0), (0.0, -0.5)]), 255)]
    if shape == "semicircle":
        t = np.linspace(0, math.pi, 25)
        return [(np.stack([np.cos(t), np.sin(t) - 0.4], axis=1), 255)]
    if shape == "arrow":
        pts = [(1.1, 0.0), (0.2, 0.75), (0.2, 0.3), (-1.0, 0.3), (-1.0, -0.3), (0.2, -0.3), (0.2, -0.75)]
        return [(np.array(pts, dtype=np.float64), 255)]
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


_LAYERS = {name: _shape_layers(name) for name in SHAPES}


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] to an 8-bit RGB triple."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _render(rng: np.random.Generator, label: int, num_classes: int, width: int, height: int) -> Image.Image:
    """One RGB image of class `label`: the class's shape in the class's hue over a random textured, noisy field."""
    # Pixel work stays in uint8 and in Pillow's C loops (ImageChops.add saturates); float numpy passes over every
    # pixel would double the render time.
    # Background: a smooth random colour field (a few random colours, bilinearly enlarged), with muted saturation.
    gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    grid = rng.uniform(30, 225, size=(gh, gw, 3))
    grey = grid.mean(axis=2, keepdims=True)
    grid = grey + (grid - grey) * rng.uniform(0.3, 1.0)
    image = Image.fromarray(grid.astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    # Texture: stripes at a random angle and period, a checkerboard, or none.
    kind = int(rng.integers(0, 3))
    if kind < 2:
        yy = np.arange(height, dtype=np.float32)[:, None]
        xx = np.arange(width, dtype=np.float32)[None, :]
        period = float(rng.uniform(6, 40))
        amplitude = float(rng.uniform(8, 30))
        angle = float(rng.uniform(0, math.pi))
        if kind == 0:  # sin(a x + b y), computed from 1-D sines as sin(a x) cos(b y) + cos(a x) sin(b y)
            ax = xx * (2 * math.pi / period * math.cos(angle))
            by = yy * (2 * math.pi / period * math.sin(angle))
            texture = np.sin(ax) * np.cos(by) + np.cos(ax) * np.sin(by)
        else:
            texture = np.sign(np.sin(xx * (math.pi / period))) * np.sign(np.sin(yy * (math.pi / period)))
        layer = Image.fromarray((texture * amplitude + 128.0).astype(np.uint8), "L").convert("RGB")
        image = ImageChops.add(image, layer, 1.0, -128)
    draw = ImageDraw.Draw(image)
    # Clutter: a few thin lines in random colours.
    for _ in range(int(rng.integers(0, 4))):
        x0, x1 = rng.uniform(0, width, 2)
        y0, y1 = rng.uniform(0, height, 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line([(float(x0), float(y0)), (float(x1), float(y1))], fill=colour, width=int(rng.integers(1, 5)))
    # The object: class shape, class hue (the class's own slice of the colour wheel), random pose.
    hue = (label + rng.uniform(-0.35, 0.35)) / num_classes
    colour = _hsv_to_rgb(float(hue), float(rng.uniform(0.55, 1.0)), float(rng.uniform(0.45, 1.0)))
    side = min(width, height)
    radius = float(rng.uniform(0.18, 0.40)) * side
    cx = float(rng.uniform(radius * 0.7, width - radius * 0.7))
    cy = float(rng.uniform(radius * 0.7, height - radius * 0.7))
    angle = float(rng.uniform(0, 2 * math.pi))
    aspect = float(np.exp(rng.uniform(-0.2, 0.2)))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    x0, y0 = max(int(cx - 1.5 * radius), 0), max(int(cy - 1.5 * radius), 0)
    x1, y1 = min(int(cx + 1.5 * radius) + 1, width), min(int(cy + 1.5 * radius) + 1, height)
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    mask_draw = ImageDraw.Draw(mask)
    for points, value in _LAYERS[SHAPES[label % len(SHAPES)]]:
        xy = (points * np.array([aspect, 1.0 / aspect])) @ rotation.T * radius + np.array([cx - x0, cy - y0])
        mask_draw.polygon([(float(x), float(y)) for x, y in xy], fill=value)
    # Light the object with a gentle gradient so it is not a flat colour.
    shade = np.linspace(float(rng.uniform(0.75, 1.0)), float(rng.uniform(1.0, 1.2)), y1 - y0, dtype=np.float32)
    fill = np.clip(np.array(colour, dtype=np.float32)[None, None, :] * shade[:, None, None], 0, 255)
    fill = np.broadcast_to(fill, (y1 - y0, x1 - x0, 3)).astype(np.uint8)
    image.paste(Image.fromarray(fill), (x0, y0), mask)
    # Sensor-like noise over everything: uniform, from random bytes (drawing normals would triple the render time),
    # of amplitude +-16, +-8 or +-4 (standard deviation about 9, 4.6 or 2.3).
    shift = int(rng.integers(3, 6))
    noise = np.frombuffer(rng.bytes(width * height * 3), dtype=np.uint8).reshape(height, width, 3) >> shift
    return ImageChops.add(image, Image.fromarray(noise), 1.0, -(128 >> shift))


def _encode(rng: np.random.Generator, image: Image.Image, ordinal: int) -> bytes:
    """JPEG bytes with varied settings. Subsampling, grayscale and progressive cycle with the image's ordinal, so even
    a tiny set has every variant; quality is random in 70..95."""
    subsampling = ordinal % 3  # Pillow: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0
    grayscale = ordinal % 10 == 7
    progressive = ordinal % 4 == 1
    quality = int(rng.integers(70, 96))
    if grayscale:
        image = image.convert("L")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=subsampling, progressive=progressive,
               optimize=False)
    return buffer.getvalue()


def _image_size(rng: np.random.Generator, spec: GeneratedSpec) -> tuple[int, int]:
    """(width, height): long side uniform in the size range, aspect up to 2:1, either orientation."""
    long_side = int(rng.integers(spec.min_size, spec.max_size + 1))
    short_side = max(spec.min_size, int(round(long_side / float(rng.uniform(1.0, 2.0)))))
    return (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)


def generate_image(spec: GeneratedSpec, split: str, label: int, index: int) -> bytes:
    """The JPEG bytes of image `index` of class `label` in `split`; a pure function of its arguments."""
    if split not in _SPLITS or not 0 <= label < spec.num_classes or not 0 <= index < spec.count(split):
        raise ValueError(f"no image ({split!r}, label {label}, index {index}) in {spec}: splits are {_SPLITS}, labels "
                         f"0..{spec.num_classes - 1}, indices below the split's images per class")
    split_id = _SPLITS.index(split)
    rng = np.random.default_rng([GENERATOR_VERSION, spec.seed, split_id, label, index])
    width, height = _image_size(rng, spec)
    image = _render(rng, label, spec.num_classes, width, height)
    ordinal = label * spec.count(split) + index + split_id * 5
    return _encode(rng, image, ordinal)


def _file_name(split: str, index: int) -> str:
    """File name of an image within its class folder."""
    return f"{split}_{index:05d}.jpg"


# ----------------------------------------------------------------------------------------------------------------------
# Publishing: temp folder, manifest last, atomic rename, lock


def _manifest(spec: GeneratedSpec) -> dict:
    """What a complete set records about itself (deterministic: no timestamps)."""
    import PIL

    return {
        "format": _FORMAT,
        "generator_version": GENERATOR_VERSION,
        "spec": asdict(spec),
        "classes": spec.class_names,
        "counts": {split: spec.count(split) for split in _SPLITS},
        "pillow": PIL.__version__,
    }


def _read_manifest(root: Path) -> dict | None:
    """The manifest of `root`, or None when missing or unreadable."""
    try:
        with open(root / MANIFEST_NAME, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == _FORMAT else None


def _is_complete(root: Path, spec: GeneratedSpec) -> bool:
    """Whether `root` holds the whole set of `spec`: a matching manifest and every class folder's file count.

    Counting costs one directory listing per class folder, no stat per file. A manifest for other parameters is an
    error: the folder is someone else's set, and silently replacing it could destroy it.
    """
    manifest = _read_manifest(root)
    if manifest is None:
        return False
    if manifest.get("spec") != asdict(spec) or manifest.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(f"{root} holds a generated dataset with other parameters ({manifest.get('spec')}, generator "
                         f"version {manifest.get('generator_version')}), not {asdict(spec)} (version "
                         f"{GENERATOR_VERSION}): pass another root, or delete that folder to make it again")
    for split in _SPLITS:
        want = spec.count(split)
        for name in spec.class_names:
            folder = root / split / name
            try:
                with os.scandir(folder) as it:
                    have = sum(1 for entry in it if entry.name.endswith(".jpg"))
            except OSError:
                return False
            if have != want:
                return False
    return True


def _write_set(spec: GeneratedSpec, folder: Path, progress: bool | None) -> None:
    """Write every image of `spec` into `folder`, the tag file first and the manifest last."""
    (folder / _TAG_NAME).write_text("made by ipu_cnn.data.generated; safe to delete\n", encoding="utf-8")
    total = spec.num_classes * (spec.images_per_class + spec.val_images_per_class)
    bar = None
    if progress is not False:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="generating demo JPEGs", unit="img", delay=1.0, leave=False,
                   disable=None if progress is None else False)
    try:
        for split in _SPLITS:
            for label, name in enumerate(spec.class_names):
                class_dir = folder / split / name
                class_dir.mkdir(parents=True)
                for index in range(spec.count(split)):
                    (class_dir / _file_name(split, index)).write_bytes(generate_image(spec, split, label, index))
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    with open(folder / MANIFEST_NAME, "w", encoding="utf-8") as f:
        json.dump(_manifest(spec), f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on `lock_path` (created if needed); yields False where the filesystem has no locks.

    The lock file is left in place: unlinking it would let a third process lock a new file while a second still holds
    the old one.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps sets whole
        yield False
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. ENOLCK on some network filesystems
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _discard(folder: Path) -> None:
    """Delete a folder we made: renamed aside first, so no reader ever sees it half deleted."""
    if not folder.exists():
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.trash-", dir=folder.parent))
    os.rename(folder, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)


def _publish(staging: Path, target: Path) -> bool:
    """Rename the finished `staging` folder to `target`; False (and `staging` deleted) if another maker won."""
    try:
        os.rename(staging, target)  # atomic; replaces only an empty folder
        return True
    except OSError:
        if target.is_dir() and _read_manifest(target) is not None:
            shutil.rmtree(staging, ignore_errors=True)
            return False
        shutil.rmtree(staging, ignore_errors=True)
        raise


def make_generated_dataset(root: PathLike, num_classes: int = 10, images_per_class: int = 100, seed: int = 0, *,
                           val_images_per_class: int = 20, min_size: int = 96, max_size: int = 640,
                           progress: bool | None = None) -> Path:
    """Make the generated set of these parameters in exactly `root`, unless it is already there and complete.

    `root` must be new, empty, or a set this function made: a complete set with these parameters is kept as it is (no
    file is touched); an incomplete one (manifest missing, files missing) is deleted and made again; a set with other
    parameters, or a non-empty folder that is not a generated set, is an error rather than being overwritten. Safe to
    call from several processes at once: one makes the set, the others wait for it and use it.

    Returns:
        `root` as a Path, holding ``train/<class>/*.jpg``, ``validation/<class>/*.jpg`` and the manifest.
    """
    spec = GeneratedSpec(num_classes=num_classes, images_per_class=images_per_class,
                         val_images_per_class=val_images_per_class, seed=seed, min_size=min_size, max_size=max_size)
    return _ensure(spec, Path(root).expanduser(), progress)


def _ensure(spec: GeneratedSpec, target: Path, progress: bool | None) -> Path:
    """Make sure `target` holds the complete set of `spec` (see `make_generated_dataset`)."""
    target = Path(os.path.abspath(target))
    if _is_complete(target, spec):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create {target.parent} for the generated dataset ({e}): set IPU_CNN_CACHE or pass "
                      f"root= to a writable folder") from e
    with _exclusive_lock(target.parent / f".{target.name}.lock") as locked:
        if _is_complete(target, spec):  # another process made it while we waited
            return target
        if locked:  # every maker holds the lock while it writes, so staging folders seen now are a crash's leftovers
            for leftover in target.parent.iterdir():
                if leftover.name.startswith((f".{target.name}.tmp-", f".{target.name}.trash-")) and leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
        if target.exists():
            if not target.is_dir():
                raise NotADirectoryError(f"{target} exists and is not a folder: pass another root for the generated "
                                         f"dataset")
            if (target / _TAG_NAME).exists():
                logger.warning("generated dataset at %s is incomplete; making it again", target)
                _discard(target)
            elif any(target.iterdir()):
                raise FileExistsError(f"{target} is not empty and holds no generated dataset (no {MANIFEST_NAME}): "
                                      f"pass a new or empty folder as root, so nothing of yours is overwritten")
        logger.info("making the generated dataset (%d classes, %d + %d images per class) at %s", spec.num_classes,
                    spec.images_per_class, spec.val_images_per_class, target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the published set should read like any other folder
        try:
            _write_set(spec, staging, progress)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _publish(staging, target)
    return target


class GeneratedImages:
    """The generated dataset: made on first use (once, cached), then read as `ImageFolder` splits.

    Args:
        root: folder for the set (see `make_generated_dataset` for what it may hold). Default:
            `default_generated_root`, a folder per parameter set in the user's cache (``$IPU_CNN_CACHE`` overrides).
        num_classes, images_per_class, seed: as for `make_generated_dataset`.
        val_images_per_class: validation images per class.
        min_size, max_size: range of image sides in pixels.
        progress: progress bar while generating: True, False or None (auto: on a terminal, after a second).
    """

    def __init__(self, root: PathLike | None = None, num_classes: int = 10, images_per_class: int = 100,
                 seed: int = 0, *, val_images_per_class: int = 20, min_size: int = 96, max_size: int = 640,
                 progress: bool | None = None) -> None:
        self.spec = GeneratedSpec(num_classes=num_classes, images_per_class=images_per_class,
                                  val_images_per_class=val_images_per_class, seed=seed, min_size=min_size,
                                  max_size=max_size)
        target = default_generated_root(self.spec) if root is None else Path(root).expanduser()
        self.root: Path = _ensure(self.spec, target, progress)

    @property
    def classes(self) -> list[str]:
        """Class folder names in label order."""
        return self.spec.class_names

    @cached_property
    def train(self) -> ImageFolder:
        """The training split."""
        return self.split("train")

    @cached_property
    def validation(self) -> ImageFolder:
        """The validation split."""
        return self.split("validation")

    def split(self, name: str) -> ImageFolder:
        """A split by name: ``"train"`` or ``"validation"`` (alias ``"val"``)."""
        if name not in _SPLIT_ALIASES:
            raise ValueError(f"unknown split {name!r} of the generated dataset: use 'train' or 'validation' "
                             f"(alias 'val')")
        split = _SPLIT_ALIASES[name]
        if split == "validation" and self.spec.val_images_per_class == 0:
            raise ValueError("this generated dataset has no validation images (val_images_per_class=0)")
        return ImageFolder(self.root / split, extensions=(".jpg",), classes=self.spec.class_names)

    def __repr__(self) -> str:
        return f"GeneratedImages({str(self.root)!r}, {self.spec})"
