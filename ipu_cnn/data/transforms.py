"""Transforms are parameters only: what box of the image becomes the output, at what size, with what filter.

The native core applies them (sampling the crop from the JPEG header before decoding); the Pillow path for non-JPEG
files applies the same parameters through the same native sampler and resampler, so both give the same geometry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ipu_cnn import _C

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


@dataclass(frozen=True)
class TrainTransform:
    """torchvision RandomResizedCrop(size, scale, ratio, antialias=True) + RandomHorizontalFlip(flip_prob).

    The crop box is sampled exactly as ``RandomResizedCrop.get_params`` does (area fraction uniform in ``scale``,
    log-uniform aspect ``ratio``, 10 tries, centre fallback), from a generator keyed by (seed, epoch, sample index).
    """

    size: int | tuple[int, int] = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    interpolation: str = "bilinear"

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

    @property
    def output_hw(self) -> tuple[int, int]:
        return _size_hw(self.size)

    def native(self) -> "_C.CropParams":
        """The parameters as the native core takes them."""
        p = _C.CropParams()
        p.mode = 1
        p.out_h, p.out_w = self.output_hw
        p.scale_lo, p.scale_hi = float(self.scale[0]), float(self.scale[1])
        p.ratio_lo, p.ratio_hi = float(self.ratio[0]), float(self.ratio[1])
        p.flip_prob = float(self.flip_prob)
        return p

    @property
    def filter(self) -> int:
        return _filter_code(self.interpolation)


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``resize_size`` then centre-crop ``size``, fused into one antialiased resize.

    The box is the square of side ``min(W, H) * size / resize_size`` centred on the image (fractional, not rounded).
    Give ``resize_size`` or ``crop_pct`` (= size / resize_size, timm's name); the default is crop_pct 0.875 (224/256).
    """

    size: int | tuple[int, int] = 224
    resize_size: int | None = None
    crop_pct: float | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        _size_hw(self.size)
        _filter_code(self.interpolation)
        if self.resize_size is not None and self.crop_pct is not None:
            raise ValueError("give resize_size or crop_pct, not both")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(
                f"the centre crop must lie inside the resized image: size / resize_size = {self.crop_fraction:.4f} "
                "must be in (0, 1]"
            )

    @property
    def output_hw(self) -> tuple[int, int]:
        return _size_hw(self.size)

    @property
    def crop_fraction(self) -> float:
        """Side of the crop box as a fraction of the image's shorter side."""
        if self.resize_size is not None:
            return max(self.output_hw) / float(self.resize_size)
        return 0.875 if self.crop_pct is None else float(self.crop_pct)

    def native(self) -> "_C.CropParams":
        p = _C.CropParams()
        p.mode = 2
        p.out_h, p.out_w = self.output_hw
        p.crop_fraction = self.crop_fraction
        return p

    @property
    def filter(self) -> int:
        return _filter_code(self.interpolation)


Transform = TrainTransform | EvalTransform
