"""Datasets held as raw pixels (CIFAR-10's uint8 arrays): the native transform applied to decoded images.

The same crops as for JPEG files (`TrainTransform`, `EvalTransform`, keyed by (seed, epoch, sample index)) and the
pad + crop + flip of `PadCropTransform`, run by the native core over the whole batch without the GIL. The `Loader`
takes a dataset with a ``pixels`` array exactly as one with ``paths``: same order, sharding, resume and worker modes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ipu_cnn import _C
from ipu_cnn.data.transforms import EvalTransform, PadCropTransform, RawTransform, TrainTransform

__all__ = ["RawImages", "transform_raw_batch"]


def _checked_pixels(pixels: np.ndarray) -> np.ndarray:
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
        shape = getattr(pixels, "shape", None)
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        raise ValueError(f"raw images must be a uint8 array of shape (N, H, W, 3), got {dtype} of shape {shape}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1 or pixels.shape[2] < 1:
        raise ValueError(f"raw images must hold at least one image of at least 1x1, got shape {pixels.shape}")
    return np.ascontiguousarray(pixels)


def transform_raw_batch(
    pixels: np.ndarray,
    indices: Sequence[int] | np.ndarray,
    out: np.ndarray,
    transform: RawTransform,
    *,
    seed: int = 0,
    epoch: int = 0,
    num_threads: int | None = None,
) -> None:
    """Transform ``pixels[indices[i]]`` into ``out[i]`` (B, H, W, 3 uint8, C-contiguous, writable).

    ``indices`` are dataset indices: they pick the images and key each sample's random draws, so a sample gets the
    same crop and flip whatever the batch, thread count or worker it lands in. Raises ValueError when a sample cannot
    be made (a transform whose geometry does not fit the images).
    """
    if not isinstance(transform, (PadCropTransform, TrainTransform, EvalTransform)):
        raise TypeError(f"transform must be a PadCropTransform, TrainTransform or EvalTransform, got "
                        f"{type(transform).__name__}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None (all available CPUs), got {num_threads}")
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= len(pixels))):
        raise ValueError(f"indices must be integers in [0, {len(pixels)}), got {idx[:8]!r}...")
    failures = _C.transform_raw_batch(pixels, out, transform.native(), transform.filter, int(seed), int(epoch),
                                      np.ascontiguousarray(idx, dtype=np.uint64), 0 if num_threads is None else
                                      int(num_threads))
    if failures:
        pos, reason = failures[0]
        h, w = pixels.shape[1:3]
        raise ValueError(f"raw image {int(idx[pos])} ({w}x{h}) cannot be transformed by {transform}: {reason}")


class RawImages:
    """The images of a raw-pixel dataset, (N, H, W, 3) uint8, as the loader's producer reads them. Picklable (the
    array travels to the loader's worker process)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = _checked_pixels(pixels)

    def transform_batch(self, indices: np.ndarray, out: np.ndarray, transform: RawTransform, seed: int, epoch: int,
                        num_threads: int | None) -> None:
        transform_raw_batch(self.pixels, indices, out, transform, seed=seed, epoch=epoch, num_threads=num_threads)

    def __len__(self) -> int:
        return len(self.pixels)

    def __repr__(self) -> str:
        n, h, w, _ = self.pixels.shape
        return f"RawImages({n} images of {w}x{h})"
