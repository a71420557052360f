"""The Pillow reference path: the train and eval transforms as torchvision computes them on Pillow images.

Train is torchvision's ``RandomResizedCrop(antialias=True)`` + ``RandomHorizontalFlip`` for a given box and flip: crop
the integer box out of the image, resize the crop (the filter stops at the crop's edges), mirror. Eval is ``Resize``
+ ``CenterCrop`` with torchvision's integer arithmetic (``eval_geometry``): resize the whole image, crop the window.
The native core computes the same pixels in one fused pass, equal to these bit for bit at full DCT scale, so tests
compare against them (and against torchvision itself), and the benchmark's Pillow peers run them. They take the box
and flip as arguments rather than sampling them, so a caller can hand them what the native sampler drew
(``ipu_cnn._C.sample_crop``) or any other.
"""
from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
from PIL import Image, ImageOps

__all__ = ["PIL_FILTERS", "ImageSource", "eval_box", "eval_geometry", "open_rgb", "pil_eval", "pil_resize_box",
           "pil_train"]

#: An opened Pillow image, a path, or the encoded bytes of an image.
ImageSource = Union[Image.Image, str, "os.PathLike[str]", bytes, bytearray, memoryview]
Box = tuple[float, float, float, float]
Size = int | tuple[int, int]
#: torchvision ``Resize``'s size argument: the shorter side's target, or (height, width).
ResizeSize = int | tuple[int, int]

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
    one antialiased pass, reading the pixels around the box that the filter reaches, mirror it when ``flip``, and
    return it as a (H, W, 3) uint8 array (Pillow's ``resize(box=...)``: what DCT-scaled peers approximate with)."""
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
    """TrainTransform's semantics in Pillow, torchvision's ``resized_crop`` + ``hflip``: crop the integer ``box`` out,
    resize the crop to ``size`` (antialiased; the filter stops at the crop's edges), mirror it when ``flip``."""
    left, top, right, bottom = (int(v) for v in box)
    if (left, top, right, bottom) != tuple(box):
        raise ValueError(f"pil_train takes the integer box RandomResizedCrop draws, got {tuple(box)!r}")
    img = open_rgb(img_or_path, apply_exif_orientation).crop((left, top, right, bottom))
    out = img.resize(_size_wh(size), _filter(interpolation))
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)


def eval_geometry(
    width: int, height: int, size: Size = 224, resize_size: ResizeSize = 256
) -> tuple[int, int, int, int]:
    """torchvision ``Resize(resize_size)`` + ``CenterCrop(size)`` on a ``width`` x ``height`` image, as
    (resized width, resized height, crop left, crop top), with torchvision's arithmetic (transforms/functional.py):
    ``Resize(int)`` gives the shorter side ``resize_size`` and the longer ``int(resize_size * long / short)``;
    ``CenterCrop`` starts at ``int(round((resized - crop) / 2.0))`` (Python's round, half to even)."""
    out_w, out_h = _size_wh(size)
    if isinstance(resize_size, int):
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(resize_size * long / short)
        new_w, new_h = (resize_size, new_long) if width <= height else (new_long, resize_size)
    else:
        new_h, new_w = (int(v) for v in resize_size)
    return new_w, new_h, int(round((new_w - out_w) / 2.0)), int(round((new_h - out_h) / 2.0))


def eval_box(width: int, height: int, size: Size = 224, resize_size: ResizeSize = 256) -> Box:
    """The region of the source the eval output covers (fractional): the crop window mapped back through the resize,
    per axis. The native sampler reports the same box (``ipu_cnn._C.sample_crop``); peers that resize a box of the
    source in one call (OpenCV, Pillow with draft) use it."""
    out_w, out_h = _size_wh(size)
    new_w, new_h, left, top = eval_geometry(width, height, size, resize_size)
    return left * width / new_w, top * height / new_h, (left + out_w) * width / new_w, (top + out_h) * height / new_h


def pil_eval(
    img_or_path: ImageSource,
    size: Size = 224,
    resize_size: ResizeSize = 256,
    interpolation: str = "bilinear",
    *,
    apply_exif_orientation: bool = False,
) -> np.ndarray:
    """EvalTransform's semantics in Pillow, torchvision's ``Resize(resize_size)`` + ``CenterCrop(size)``: resize the
    whole image to the size ``eval_geometry`` computes (antialiased), then crop the centre window.
    ``EvalTransform.resize`` is the ``resize_size`` a transform stands for."""
    img = open_rgb(img_or_path, apply_exif_orientation)
    out_w, out_h = _size_wh(size)
    new_w, new_h, left, top = eval_geometry(img.width, img.height, size, resize_size)
    if (new_w, new_h) != img.size:  # torchvision leaves an image already at that size alone
        img = img.resize((new_w, new_h), _filter(interpolation))
    if left < 0 or top < 0 or left + out_w > new_w or top + out_h > new_h:
        raise ValueError(f"the centre crop {out_h}x{out_w} does not fit in the resized {new_h}x{new_w} image "
                         "(torchvision's CenterCrop would pad it with zeros; EvalTransform refuses such parameters)")
    return np.asarray(img.crop((left, top, left + out_w, top + out_h)), dtype=np.uint8)
