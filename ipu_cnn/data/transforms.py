"""Transforms are parameters only: what box of the image becomes the output, at what size, with what filter.

The native core applies them (sampling the crop from the JPEG header before decoding); the Pillow path for non-JPEG
files applies the same parameters through the same native sampler and resampler, so both give the same geometry.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ipu_cnn import _C

if TYPE_CHECKING:
    from ipu_cnn.data.bboxes import BoundingBoxes

#: The largest side the resampler produces (csrc/resample.cpp refuses larger grids).
MAX_RESIZE_SIDE = 1 << 24

INTERPOLATIONS = {"bilinear": 0, "bicubic": 1}


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def _filter_code(interpolation: str) -> int:
    try:
        return INTERPOLATIONS[interpolation]
    except KeyError:
        raise ValueError(
            f"interpolation must be one of {sorted(INTERPOLATIONS)} (antialiased, Pillow semantics), "
            f"got {interpolation!r}"
        ) from None


class _OutputGeometry:
    """What every transform derives from its ``size`` and ``interpolation`` fields: the output (height, width) and the
    native filter code."""

    size: int | tuple[int, int]
    interpolation: str

    @property
    def output_hw(self) -> tuple[int, int]:
        return _size_hw(self.size)

    @property
    def filter(self) -> int:
        return _filter_code(self.interpolation)


@dataclass(frozen=True)
class TrainTransform(_OutputGeometry):
    """torchvision RandomResizedCrop(size, scale, ratio, antialias=True) + RandomHorizontalFlip(flip_prob).

    The crop box is sampled exactly as ``RandomResizedCrop.get_params`` does (area fraction uniform in ``scale``,
    log-uniform aspect ``ratio``, 10 tries, centre fallback), from a generator keyed by (seed, epoch, sample index).
    As torchvision does, the crop is cut out before it is resized, so the filter reads nothing outside it: at full DCT
    scale the output equals torchvision's on Pillow for the same box and flip, bit for bit.
    """

    size: int | tuple[int, int] = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    interpolation: str = "bilinear"
    #: Object boxes by dataset index (``--use-bbox-info``): a sample with boxes redraws its crop, up to 10 draws, until
    #: the union of its boxes covers at least 10% of the crop (Graphcore's RandomResizedBoxCrop); others crop as usual.
    boxes: BoundingBoxes | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _size_hw(self.size)
        _filter_code(self.interpolation)
        lo, hi = self.scale
        if not (0 < lo <= hi <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale!r}")
        rlo, rhi = self.ratio
        if not (0 < rlo <= rhi) or not math.isfinite(rhi):
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio!r}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob!r}")
        if self.boxes is not None and not callable(getattr(self.boxes, "native", None)):
            raise TypeError(f"boxes must be an ipu_cnn.data.BoundingBoxes, got {type(self.boxes).__name__}")

    def native(self) -> "_C.CropParams":
        """The parameters as the native core takes them."""
        p = _C.CropParams()
        p.mode = 1
        p.out_h, p.out_w = self.output_hw
        p.scale_lo, p.scale_hi = float(self.scale[0]), float(self.scale[1])
        p.ratio_lo, p.ratio_hi = float(self.ratio[0]), float(self.ratio[1])
        p.flip_prob = float(self.flip_prob)
        if self.boxes is not None:
            p.boxes = self.boxes.native()
        return p


@dataclass(frozen=True)
class EvalTransform(_OutputGeometry):
    """torchvision ``Resize(resize_size, antialias=True)`` then ``CenterCrop(size)``, fused into one antialiased resize.

    The geometry is torchvision's, integer for integer: ``Resize(int)`` takes the shorter side to ``resize_size`` and
    the longer one to ``int(resize_size * long / short)`` (``Resize((h, w))`` to exactly that), and ``CenterCrop``
    starts at ``int(round((resized - size) / 2))``. The native resampler computes only the cropped window of that
    resize, each pixel as the whole resize would, so at full DCT scale the output equals torchvision's on Pillow
    (Pillow >= 13, whose pass order it follows) bit for bit, bilinear and bicubic.

    Give ``resize_size`` (an int for the shorter side, or (height, width)) or ``crop_pct``, timm's name:
    ``resize_size = floor(size / crop_pct)``, for a square ``size``; neither means crop_pct 0.875 (224 -> 256). A
    non-square ``size`` needs ``resize_size``.
    The crop must lie inside the resized image (torchvision's CenterCrop would pad it with zeros; that is refused).
    """

    size: int | tuple[int, int] = 224
    resize_size: int | tuple[int, int] | None = None
    crop_pct: float | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        h, w = _size_hw(self.size)
        _filter_code(self.interpolation)
        if self.resize_size is not None and self.crop_pct is not None:
            raise ValueError("EvalTransform: give resize_size or crop_pct, not both")
        if self.crop_pct is not None and not (isinstance(self.crop_pct, (int, float)) and 0 < self.crop_pct <= 1):
            raise ValueError(f"EvalTransform: crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.resize_size is None and h != w:
            raise ValueError(
                f"EvalTransform: crop_pct (default 0.875) needs a square size, got {self.size!r} (timm centre-crops "
                "non-square sizes after a ratio-keeping resize that this transform does not implement); give "
                "resize_size, an int for the shorter side or (height, width)"
            )
        try:
            resize = self.resize
        except OverflowError:  # floor(size / crop_pct) of a vanishing crop_pct
            raise ValueError(f"EvalTransform: crop_pct {self.crop_pct!r} resizes the image beyond any size") from None
        if max((resize,) if isinstance(resize, int) else resize) > MAX_RESIZE_SIDE:
            raise ValueError(f"EvalTransform: a resize to {resize!r} is above the resampler's limit of "
                             f"{MAX_RESIZE_SIDE} pixels a side")
        if isinstance(resize, int):
            if max(h, w) > resize:
                raise ValueError(
                    f"EvalTransform: the centre crop {h}x{w} must fit inside the image resized to a shorter side of "
                    f"{resize} (torchvision's CenterCrop would pad it with zeros, which is not supported): use "
                    f"resize_size >= {max(h, w)} or a crop_pct <= 1"
                )
        elif h > resize[0] or w > resize[1]:
            raise ValueError(
                f"EvalTransform: the centre crop {h}x{w} must fit inside the resized {resize[0]}x{resize[1]} image "
                "(torchvision's CenterCrop would pad it with zeros, which is not supported)"
            )

    @property
    def resize(self) -> int | tuple[int, int]:
        """torchvision ``Resize``'s argument: the shorter side's target (an int), or (height, width)."""
        if self.resize_size is None:
            crop_pct = 0.875 if self.crop_pct is None else float(self.crop_pct)
            return math.floor(self.output_hw[0] / crop_pct)
        if isinstance(self.resize_size, numbers.Integral):
            if self.resize_size < 1:
                raise ValueError(f"EvalTransform: resize_size must be positive, got {self.resize_size!r}")
            return int(self.resize_size)
        return _size_hw(self.resize_size)

    def native(self) -> "_C.CropParams":
        """The parameters as the native core takes them."""
        p = _C.CropParams()
        p.mode = 2
        p.out_h, p.out_w = self.output_hw
        resize = self.resize
        if isinstance(resize, int):
            p.resize_short = resize
        else:
            p.resize_h, p.resize_w = resize
        return p


@dataclass(frozen=True)
class PadCropTransform(_OutputGeometry):
    """torchvision ``RandomCrop(image size, padding=padding)`` + ``RandomHorizontalFlip(flip_prob)`` on raw pixels, the
    usual CIFAR training augmentation, then a resize to ``size`` when that is not the image's own size.

    The image is padded with ``padding`` zero pixels on every side (torchvision's default ``fill=0``) and cut back to
    its own size at a row offset, then a column offset, each uniform in ``0..2 * padding`` as ``RandomCrop.get_params``
    draws them; the flip is drawn after, from the same (seed, epoch, sample index) generator as every crop. Only for
    datasets held as raw pixels (`ipu_cnn.data.pixels`); JPEG files have no fixed size to pad to.
    """

    size: int | tuple[int, int] = 32
    padding: int = 4
    flip_prob: float = 0.5
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        _size_hw(self.size)
        _filter_code(self.interpolation)
        if not isinstance(self.padding, numbers.Integral) or self.padding < 0:
            raise ValueError(f"padding must be a non-negative integer, got {self.padding!r}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob!r}")

    def native(self) -> "_C.CropParams":
        """The parameters as the native core takes them."""
        p = _C.CropParams()
        p.mode = 3
        p.out_h, p.out_w = self.output_hw
        p.pad = int(self.padding)
        p.flip_prob = float(self.flip_prob)
        return p


Transform = TrainTransform | EvalTransform
#: What a dataset held as raw pixels can be transformed with.
RawTransform = PadCropTransform | TrainTransform | EvalTransform
