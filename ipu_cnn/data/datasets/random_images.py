"""`RandomImages`: random uint8 images made in memory, no files and no decoding, for device-throughput runs."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import numpy.typing as npt

from ipu_cnn.data.datasets.base import LabelledSamples

__all__ = ["RandomImages"]


class RandomImages(LabelledSamples):
    """Random uint8 images made in memory: the host-side "generated" data of device-throughput runs.

    No file is read and nothing is decoded, so the host never limits the device. Image ``i`` is a pure function of
    ``(seed, i)`` (its own SFC64 stream, seeded from both), so any worker, rank or batch that asks for it gets the
    same pixels. Label ``i`` is ``i % num_classes``, which keeps the classes balanced.

    Args:
        num_classes: number of classes.
        size: image side, or ``(height, width)``.
        length: number of samples.
        seed: selects the images; any int >= 0.
    """

    def __init__(self, num_classes: int, size: int | tuple[int, int], length: int, seed: int = 0) -> None:
        height, width = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if num_classes < 1 or length < 1 or height < 1 or width < 1:
            raise ValueError(f"RandomImages needs num_classes, length and size >= 1, got num_classes={num_classes}, "
                             f"length={length}, size={size}")
        if seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed}")
        self.height, self.width = int(height), int(width)
        self.length = int(length)
        self.seed = int(seed)
        self._classes = [str(i) for i in range(int(num_classes))]  # "0".."num_classes - 1"
        self._class_to_idx = {name: i for i, name in enumerate(self._classes)}

    @cached_property
    def labels(self) -> np.ndarray:  # type: ignore[override]  # made on first use: a long run's length is large
        """All labels as a read-only int64 array (``arange(length) % num_classes``)."""
        labels = np.arange(self.length, dtype=np.int64) % self.num_classes
        labels.flags.writeable = False
        return labels

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image: (height, width, 3)."""
        return self.height, self.width, 3

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        """Validate an index (negative counts from the end), raising IndexError as sequences do."""
        i = int(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} is out of range for RandomImages of length {self.length}")
        return i

    def _fill(self, index: int, out: np.ndarray) -> None:
        """Write image `index` into `out` (H, W, 3 uint8) from its own random stream."""
        nbytes = self.height * self.width * 3
        bits = np.random.SFC64(np.random.SeedSequence([self.seed, index]))  # 2.5x Philox's speed here
        raw = bits.random_raw((nbytes + 7) // 8).view(np.uint8)
        out.reshape(-1)[:] = raw[:nbytes]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """Image `index` as an (H, W, 3) uint8 array, and its label."""
        i = self._index(index)
        image = np.empty(self.shape, dtype=np.uint8)
        self._fill(i, image)
        return image, i % self.num_classes

    def batch(self, indices: npt.ArrayLike, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of `indices`: (N, H, W, 3) uint8 and (N,) int64; ``images[k]`` equals ``self[indices[k]]``.

        Args:
            indices: sample indices (negative ones count from the end).
            out: optional C-contiguous, writable (N, H, W, 3) uint8 array to fill instead of allocating.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + self.length, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.length):
            raise IndexError(f"indices out of range for RandomImages of length {self.length}")
        want = (len(idx), *self.shape)
        if out is None:
            out = np.empty(want, dtype=np.uint8)
        elif out.shape != want or out.dtype != np.uint8 or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"out must be a writable C-contiguous uint8 array of shape {want}, got {out.dtype} "
                             f"{out.shape} (contiguous={out.flags.c_contiguous}, writable={out.flags.writeable})")
        for k, i in enumerate(idx.tolist()):
            self._fill(i, out[k])
        return out, idx % self.num_classes

    def __repr__(self) -> str:
        return (f"RandomImages(num_classes={self.num_classes}, size=({self.height}, {self.width}), "
                f"length={self.length}, seed={self.seed})")
