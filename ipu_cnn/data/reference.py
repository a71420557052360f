"""The Pillow reference path: pure-Pillow implementations of the train and eval transforms' exact semantics.

The native core resizes a box of the source image (fractional for eval) to the output size in one antialiased pass,
reading the pixels around the box that the filter needs, then mirrors it. Pillow's ``Image.resize(size, filter,
box=...)`` is exactly that operation, so these functions are what the native output is compared against in tests (exact
or within a stated tolerance), and the "Pillow, same box" peer in the benchmark. They take the box and the flip as
arguments rather than sampling them, so a caller can hand them the box the native sampler drew
(``ipu_cnn._C.sample_crop``) or any other.
"""
from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
from PIL import Image, ImageOps

__all__ = ["PIL_FILTERS", "ImageSource", "eval_box", "open_rgb", "pil_eval", "pil_resize_box", "pil_train"]

#: An opened Pillow image, a path, or the encoded bytes of an image.
ImageSource = Union[Image.Image, str, "os.PathLike[str]", bytes, bytearray, memoryview]
Box = tuple[float, float, float, float]
Size = int | tuple[int, int]

#: The interpolation names the transforms accept, as Pillow filters (both antialiased when downscaling).
PIL_FILTERS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def _filter(interpolation: str) -> Image.Resampling:
    try:
        return PIL_FILTERS[interpolation]
    except KeyError:
        raise ValueError(f"interpolation must be one of {sorted(PIL_FILTERS)}, got {interpolation!r}") from None


def _size_wh(size: Size) -> tuple[int, int]:
    """Pillow's (width, height) from the transforms' ``size`` (an int, or (height, width) as torchvision orders it)."""
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return w, h


def open_rgb(source: ImageSource, apply_exif_orientation: bool = False) -> Image.Image:
    """Decode ``source`` with Pillow and convert it to RGB as the native core does (grayscale expanded, CMYK and YCCK
    converted by ``convert("RGB")``, palette transparency via RGBA); EXIF orientation is applied only when asked."""
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(source)))
    else:
        img = Image.open(os.fspath(source))
    if apply_exif_orientation:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def pil_resize_box(img: Image.Image, box: Box, flip: bool, size: Size, interpolation: str = "bilinear") -> np.ndarray:
    """Resize ``box`` (left, top, right, bottom in source pixels, fractional allowed) of an RGB image to ``size`` in
    one antialiased pass, mirror it when ``flip``, and return it as a (H, W, 3) uint8 array."""
    left, top, right, bottom = (float(v) for v in box)
    out = img.resize(_size_wh(size), _filter(interpolation), box=(left, top, right, bottom))
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)


def pil_train(
    img_or_path: ImageSource,
    box: Box,
    flip: bool,
    size: Size = 224,
    interpolation: str = "bilinear",
    *,
    apply_exif_orientation: bool = False,
) -> np.ndarray:
    """TrainTransform's semantics in Pillow: the RandomResizedCrop ``box`` resized to ``size`` in one antialiased pass
    (pixels outside the box that the filter reaches are read, as the native core does), then mirrored when ``flip``."""
    return pil_resize_box(open_rgb(img_or_path, apply_exif_orientation), box, flip, size, interpolation)


def eval_box(width: int, height: int, crop_fraction: float = 0.875) -> Box:
    """The eval crop: the square of side ``min(width, height) * crop_fraction`` centred on the image, fractional (the
    fused form of "resize the shorter side to size / crop_fraction, then centre-crop size")."""
    side = min(width, height) * crop_fraction
    left, top = (width - side) / 2.0, (height - side) / 2.0
    return left, top, left + side, top + side


def pil_eval(
    img_or_path: ImageSource,
    size: Size = 224,
    crop_fraction: float = 0.875,
    interpolation: str = "bilinear",
    *,
    box: Box | None = None,
    apply_exif_orientation: bool = False,
) -> np.ndarray:
    """EvalTransform's semantics in Pillow: the centred square ``eval_box`` (or the ``box`` given) resized to ``size``
    in one antialiased pass. ``crop_fraction`` is ``size / resize_size`` (EvalTransform.crop_fraction)."""
    img = open_rgb(img_or_path, apply_exif_orientation)
    if box is None:
        box = eval_box(img.width, img.height, crop_fraction)
    return pil_resize_box(img, box, False, size, interpolation)
