"""The producer: fills ring slots with an epoch's batches, in order, a fixed number ahead of the consumer.

The same code runs in a thread of the training process (``workers="thread"``) and in a child process
(``workers="process"``); only the two channels differ: where free slots come from and where finished batches go.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ipu_cnn.data._ring import SharedRing
from ipu_cnn.data.decode import DecodeError, decode_batch, decode_image
from ipu_cnn.data.pixels import RawImages
from ipu_cnn.data.sampling import rank_batches, stream_batches
from ipu_cnn.data.transforms import PadCropTransform, Transform

#: The decoder's guards a Loader may set (keyword arguments of decode_batch and decode_image).
DECODE_LIMITS = ("max_pixels", "max_scans", "max_scan_blocks", "max_file_bytes", "strict")

#: How many other samples "replace" tries before giving up on a bad one.
_MAX_SUBSTITUTES = 16


@dataclass(frozen=True)
class Plan:
    """Everything that decides an epoch's batches (picklable: it travels to the worker process)."""

    num_samples: int
    batch_size: int
    seed: int
    shuffle: bool
    rank: int
    world_size: int
    drop_last: bool
    on_error: str
    #: Stream mode (TarShards(mode="stream")): (samples per shard, shuffle buffer); None: any-order random access.
    stream: tuple[tuple[int, ...], int] | None = None
    #: Keyword arguments for the decoder's guards (see `DECODE_LIMITS`), as sorted (name, value) pairs.
    decode_limits: tuple[tuple[str, Any], ...] = ()

    def batches(self, epoch: int) -> list[np.ndarray]:
        if self.stream is not None:
            sizes, buffer = self.stream
            return stream_batches(sizes, buffer, self.batch_size, self.seed, epoch, self.shuffle, self.rank,
                                  self.world_size, self.drop_last)
        return rank_batches(self.num_samples, self.batch_size, self.seed, epoch, self.shuffle, self.rank,
                            self.world_size, self.drop_last)


@dataclass
class BatchReport:
    """What the consumer learns about one filled slot besides its pixels."""

    epoch: int
    batch: int
    slot: int
    count: int
    bad: list[tuple[int, str, str]]  # (dataset index, path, reason) met while filling it
    error: tuple[str, str] | None = None  # on_error="raise": (source, reason) of the batch's first bad sample


class Producer:
    """Decodes planned batches into ring slots."""

    def __init__(self, paths: Sequence[str] | RawImages, labels: np.ndarray, transform: Transform | PadCropTransform,
                 plan: Plan, ring: SharedRing, num_threads: int | None) -> None:
        self.paths = paths
        self.labels = labels
        self.transform = transform
        self.plan = plan
        self.ring = ring
        self.num_threads = num_threads

    def fill(self, epoch: int, batch: int, indices: np.ndarray, slot: int) -> BatchReport:
        """Decode the batch with these dataset indices into slot; apply the on_error policy."""
        n = len(indices)
        images = self.ring.images[slot][:n]
        out_idx = self.ring.indices[slot]
        out_idx[:n] = indices
        report = BatchReport(epoch, batch, slot, n, [])
        if isinstance(self.paths, RawImages):  # decoded already: nothing can be bad, only the geometry can be refused
            self.paths.transform_batch(indices, images, self.transform, self.plan.seed, epoch, self.num_threads)
            self.ring.labels[slot][:n] = self.labels[indices]
            self.ring.set_count(slot, n)
            return report
        failures = decode_batch([self.paths[i] for i in indices], images, self.transform, seed=self.plan.seed,
                                epoch=epoch, indices=indices, num_threads=self.num_threads, on_error="report",
                                **dict(self.plan.decode_limits))
        if failures and self.plan.on_error == "raise":
            _, source, reason = failures[0]
            report.error = (source, reason)
        else:
            for pos, source, reason in failures:
                report.bad.append((int(indices[pos]), source, reason))
                out_idx[pos] = self._substitute(epoch, int(indices[pos]), images[pos], report)
        self.ring.labels[slot][:n] = self.labels[out_idx[:n]]
        self.ring.set_count(slot, n)
        return report

    def _substitute(self, epoch: int, bad_index: int, out: np.ndarray, report: BatchReport) -> int:
        """Decode a deterministic other sample into out; return its index. Its own failures are reported too."""
        n = self.plan.num_samples
        rng = np.random.default_rng([self.plan.seed, epoch, bad_index, 0x5B5])
        for _ in range(_MAX_SUBSTITUTES):
            j = int((bad_index + 1 + rng.integers(0, max(1, n - 1))) % n)
            try:
                out[...] = decode_image(self.paths[j], self.transform, seed=self.plan.seed, epoch=epoch, index=j,
                                        **dict(self.plan.decode_limits))
                return j
            except DecodeError as e:
                report.bad.append((j, e.source, e.reason))
        raise RuntimeError(f"on_error='replace': {_MAX_SUBSTITUTES} substitutes for sample {bad_index} all failed to "
                           "decode; the dataset looks broken (see the reported bad samples)")

    def run(self, epoch: int, start: int, next_free_slot: Callable[[], int | None],
            emit: Callable[[BatchReport], None]) -> None:
        """Fill batches start.. of epoch in order; stops when next_free_slot returns None (asked to stop)."""
        batches = self.plan.batches(epoch)
        for b in range(start, len(batches)):
            slot = next_free_slot()
            if slot is None:
                return
            emit(self.fill(epoch, b, batches[b], slot))
