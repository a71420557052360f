"""`DeviceFeeder`: a `BatchSource`'s batches moved to a backend's device, with the buffer rule kept in one place.

The rule: a loader's batch is a view of a ring slot that the loader reuses once the next batch is asked for, so the
next batch may be asked for only after the host-to-device copy of the current one has read it. The feeder owns that
copy: it starts it (`Backend.to_device`, asynchronous from pinned memory on CUDA), and before it asks the source for
the next batch it waits for the copy's completion (`Backend.release_host_batch`, the copy's CUDA event; nothing on
CPU and IPU, where the step reads the host tensor itself before returning). This is timm's ``PrefetchLoader`` and
FFCV's ``ToDevice`` in spirit; neither the loops nor the steps need to know about slots.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import torch

from ipu_cnn.backends.base import Backend

Batch = tuple[torch.Tensor, torch.Tensor]


class DeviceFeeder:
    """Iterate `source`'s batches on `backend`'s device (one epoch per iteration, like the source).

    Args:
        source: a `ipu_cnn.batch_sources.BatchSource` (or any iterable of host or device batches with ``len``).
        backend: the backend whose ``to_device`` moves a batch and whose ``release_host_batch`` waits for the move.
        host_transform: applied to the images on the host before the move (``--normalization-location host``).

    ``wait_seconds`` accumulates the time spent waiting for the source (the data-stall figure), not the copy.
    """

    def __init__(self, source: object, backend: Backend,
                 host_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.source = source
        self.backend = backend
        self.host_transform = host_transform
        self.wait_seconds = 0.0

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def take_wait(self) -> float:
        """Seconds spent waiting for the source since the last call."""
        seconds, self.wait_seconds = self.wait_seconds, 0.0
        return seconds

    def __iter__(self) -> Iterator[Batch]:
        host = iter(self.source)  # type: ignore[call-overload]
        while True:
            self.backend.release_host_batch()  # the last batch's copy has read its slot: the source may reuse it
            start = time.perf_counter()
            try:
                images, labels = next(host)
            except StopIteration:
                return
            self.wait_seconds += time.perf_counter() - start
            if self.host_transform is not None:
                with torch.no_grad():
                    images = self.host_transform(images)
            yield self.backend.to_device(images, labels)
