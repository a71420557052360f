"""The contract of "something that yields batches" (`BatchSource`), and the sources that need no JPEG loader.

A `BatchSource` iterates ``(images uint8 [B, 3, H, W] channels_last, labels int64 [B])`` host or device batches for
one epoch at a time, and has ``len`` (batches per epoch), ``set_epoch``, ``state_dict`` / ``load_state_dict``
(mid-epoch resume) and ``close``. `ipu_cnn.data.Loader` is one; so are `HostBatches` (batches a dataset makes
itself: ``--data generated`` in training) and `RandomBatches` (one random batch made once and served again: training's
``--data synthetic`` and the inference benchmark's ``generated`` and ``synthetic`` data). A loader's batch may be a
view of a buffer it reuses: `ipu_cnn.backends.feeder.DeviceFeeder` is what moves batches to the device and keeps that
buffer's rule.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np
import torch

from ipu_cnn.data.sampling import num_batches, rank_batches

Batch = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class BatchSource(Protocol):
    """Batches of one epoch per iteration; see the module docstring."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def forever(source: BatchSource) -> Iterator[Batch]:
    """The batches of `source`, epoch after epoch, without end (benchmarks)."""
    for epoch in itertools.count():
        source.set_epoch(epoch)
        yield from source


class BatchDataset(Protocol):
    """A dataset that makes whole batches itself (`ipu_cnn.data.datasets.RandomImages`)."""

    def __len__(self) -> int: ...

    def batch(self, indices: Any, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class _EpochPosition:
    """The epoch bookkeeping of a `BatchSource`: ``set_epoch``, mid-epoch ``state_dict`` / ``load_state_dict``,
    ``close``. ``_position`` counts the batches already delivered in this epoch."""

    epoch = 0
    _position = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self._position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])

    def close(self) -> None:
        return None


class HostBatches(_EpochPosition):
    """Batches from ``dataset.batch(indices)``, planned exactly as the loader plans its epochs
    (`ipu_cnn.data.sampling.rank_batches`: seeded order, rank ``r`` of ``w`` takes positions ``r::w``)."""

    def __init__(self, dataset: BatchDataset, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.pin_memory = pin_memory

    def _batches(self) -> list[np.ndarray]:
        return rank_batches(len(self.dataset), self.batch_size, self.seed, self.epoch, self.shuffle, self.rank,
                            self.world_size, self.drop_last)

    def __len__(self) -> int:
        return num_batches(len(self.dataset), self.batch_size, self.rank, self.world_size, self.drop_last)

    def __iter__(self) -> Iterator[Batch]:
        batches = self._batches()
        while self._position < len(batches):
            images, labels = self.dataset.batch(batches[self._position])
            self._position += 1
            x = torch.from_numpy(images).permute(0, 3, 1, 2)  # NHWC memory = channels_last NCHW view
            y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
            if self.pin_memory:
                x, y = x.pin_memory(), y.pin_memory()
            yield x, y
        self._position = 0


class RandomBatches(_EpochPosition):
    """Random uint8 images and labels made once and served `steps` times per epoch.

    On the device (`device` cuda, or cpu for CPU runs) no host work is left at all: the Graphcore app's
    ``synthetic`` data, for measuring the device alone. On the host with ``pin_memory`` (the inference benchmark's
    ``generated`` data) decoding is left out but the host-to-device copy of every step is not.
    """

    def __init__(self, batch_size: int, image_size: int | tuple[int, int], num_classes: int, steps: int,
                 device: torch.device, seed: int = 0, *, pin_memory: bool = False) -> None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        generator = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (batch_size, height, width, 3), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
        if pin_memory:
            images, labels = images.pin_memory(), labels.pin_memory()
        self.images = images.to(device).permute(0, 3, 1, 2)  # NHWC memory = channels_last NCHW view
        self.labels = labels.to(device)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        while self._position < self.steps:
            self._position += 1
            yield self.images, self.labels
        self._position = 0
