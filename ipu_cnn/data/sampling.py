"""Epoch plans: which dataset indices each batch of each rank holds.

The order is a permutation from (seed, epoch), identical on every rank; rank r takes positions r::world_size of it.
With drop_last every rank gets the same number of full batches (what DDP training needs: no rank waits on another);
without it nothing is dropped or padded, so across ranks every sample is delivered exactly once (what evaluation needs).
"""
from __future__ import annotations

import os

import numpy as np


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's order of dataset indices (identity when not shuffling)."""
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch), 0x1D5A]).permutation(num_samples).astype(np.int64)


def rank_batches(
    num_samples: int, batch_size: int, seed: int, epoch: int, shuffle: bool, rank: int, world_size: int,
    drop_last: bool,
) -> list[np.ndarray]:
    """The index arrays of this rank's batches for one epoch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    mine = epoch_order(num_samples, seed, epoch, shuffle)[rank::world_size]
    if drop_last:
        full = (num_samples // world_size) // batch_size  # the same on every rank
        return [mine[b * batch_size:(b + 1) * batch_size] for b in range(full)]
    return [mine[s:s + batch_size] for s in range(0, len(mine), batch_size)]


def num_batches(num_samples: int, batch_size: int, rank: int, world_size: int, drop_last: bool) -> int:
    """len(rank_batches(...)) without building them."""
    if drop_last:
        return (num_samples // world_size) // batch_size
    mine = len(range(rank, num_samples, world_size))
    return -(-mine // batch_size)


def default_rank_world() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else popdist when set, else RANK / WORLD_SIZE."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    try:
        import popdist  # type: ignore[import-not-found]

        if popdist.isPopdistEnvSet():
            return int(popdist.getInstanceIndex()), int(popdist.getNumInstances())
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# --- stream mode: whole shards per rank, shard order shuffled per epoch, a bounded shuffle buffer --------------------
def assign_shards(shard_sizes: tuple[int, ...], world_size: int) -> list[list[int]]:
    """Which shards each rank reads, fixed for the run: the largest shard first to the rank holding fewest samples
    (ties to the lower rank), so ranks get whole shards and nearly equal sample counts. Each rank's list is sorted.

    The assignment does not change with the epoch, so every rank's epoch length is the same in every epoch (what a
    fixed ``len(loader)`` and DDP need); the epoch shuffles the order of each rank's shards and samples instead. A rank
    that always reads the same shards also gets the most from a local cache of them.
    """
    if len(shard_sizes) < world_size:
        raise ValueError(f"stream mode gives each rank whole shards, but there are {len(shard_sizes)} shards for "
                         f"{world_size} ranks: use at least as many shards as ranks, or mode='random'")
    load = [0] * world_size
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    for s in sorted(range(len(shard_sizes)), key=lambda s: (-shard_sizes[s], s)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        ranks[r].append(s)
        load[r] += shard_sizes[s]
    return [sorted(r) for r in ranks]


def stream_order(shard_sizes: tuple[int, ...], shuffle_buffer: int, seed: int, epoch: int, shuffle: bool, rank: int,
                 world_size: int) -> np.ndarray:
    """The dataset indices rank reads in one epoch of stream mode, in order.

    Its shards (`assign_shards`) are read whole, one after another, in an order shuffled per (seed, epoch, rank); the
    samples pass through a shuffle buffer of ``shuffle_buffer`` samples: once it is full, each new sample takes the
    place of one drawn at random, which is emitted; at the end of the epoch the buffer is emitted in random order.
    That is the order a single-pass reader of an object store produces while holding at most ``shuffle_buffer``
    samples, and a pure function of (shard sizes, buffer, seed, epoch, shuffle, rank, world size), so a resumed epoch
    repeats it. Without shuffle the shards and samples keep their order (evaluation).
    """
    mine = assign_shards(shard_sizes, world_size)[rank]
    starts = np.concatenate([[0], np.cumsum(shard_sizes, dtype=np.int64)])
    if shuffle:
        rng = np.random.default_rng([int(seed), int(epoch), int(rank), 0x5A4D])
        mine = [mine[i] for i in rng.permutation(len(mine))]
    parts = [np.arange(starts[s], starts[s + 1], dtype=np.int64) for s in mine]
    stream = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    if not shuffle or shuffle_buffer <= 1 or len(stream) <= 1:
        return stream
    size = min(int(shuffle_buffer), len(stream))
    buf = stream[:size].tolist()
    incoming = stream[size:].tolist()
    picks = (rng.integers(0, size, size=len(incoming))).tolist()
    out = []
    for j, sample in zip(picks, incoming):
        out.append(buf[j])
        buf[j] = sample
    tail = [buf[i] for i in rng.permutation(size)]
    return np.array(out + tail, dtype=np.int64)


def stream_batches(shard_sizes: tuple[int, ...], shuffle_buffer: int, batch_size: int, seed: int, epoch: int,
                   shuffle: bool, rank: int, world_size: int, drop_last: bool) -> list[np.ndarray]:
    """The index arrays of this rank's batches for one epoch of stream mode (see `stream_order`). With drop_last every
    rank gets as many full batches as the rank with the fewest samples can fill; without it, all of its samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    order = stream_order(shard_sizes, shuffle_buffer, seed, epoch, shuffle, rank, world_size)
    count = num_stream_batches(shard_sizes, batch_size, rank, world_size, drop_last)
    return [order[b * batch_size:(b + 1) * batch_size] for b in range(count)]


def num_stream_batches(shard_sizes: tuple[int, ...], batch_size: int, rank: int, world_size: int,
                       drop_last: bool) -> int:
    """len(stream_batches(...)), the same in every epoch."""
    counts = [sum(shard_sizes[s] for s in r) for r in assign_shards(shard_sizes, world_size)]
    if drop_last:
        return min(counts) // batch_size
    return -(-counts[rank] // batch_size)
