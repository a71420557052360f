"""The demo images: one class-coded shape per image, drawn and JPEG-encoded as a pure function of its parameters.

The images exercise the decoder the way photos do: sizes from 96 to 640 px in both orientations, JPEG qualities 70 to
95, 4:4:4, 4:2:2 and 4:2:0 chroma subsampling, some grayscale and some progressive files. Their content makes a task
that a small CNN learns well above chance within a minute on a CPU, but not a trivial one: class ``c`` draws one shape
type (disc, triangle, star, ...) in one hue range, at a random position, scale, rotation and aspect, over a random
colour field with a random texture, line clutter and noise; grayscale images keep only the shape.

Every byte is a function of the `GeneratedSpec`, the split, the label and the index (and of the Pillow and libjpeg
versions that encode them); nothing here touches the disk.
"""

from __future__ import annotations

import colorsys
import io
import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageChops, ImageDraw

if TYPE_CHECKING:
    from ipu_cnn.data.generated.spec import GeneratedSpec

__all__ = ["GENERATOR_VERSION", "SHAPES", "SPLITS", "generate_image"]

#: Bumped whenever the images this module makes for given parameters change, so old cached sets are not reused.
GENERATOR_VERSION = 1
#: The splits, in order: a split's position here is part of the seed of each of its images.
SPLITS: tuple[str, ...] = ("train", "validation")

#: Shape drawn by class ``c`` is ``SHAPES[c % len(SHAPES)]``.
SHAPES: tuple[str, ...] = ("disc", "triangle", "square", "star", "cross", "ring", "crescent", "rhombus",
                           "semicircle", "arrow")


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
    if split not in SPLITS or not 0 <= label < spec.num_classes or not 0 <= index < spec.count(split):
        raise ValueError(f"no image ({split!r}, label {label}, index {index}) in {spec}: splits are {SPLITS}, labels "
                         f"0..{spec.num_classes - 1}, indices below the split's images per class")
    split_id = SPLITS.index(split)
    rng = np.random.default_rng([GENERATOR_VERSION, spec.seed, split_id, label, index])
    width, height = _image_size(rng, spec)
    image = _render(rng, label, spec.num_classes, width, height)
    ordinal = label * spec.count(split) + index + split_id * 5
    return _encode(rng, image, ordinal)

