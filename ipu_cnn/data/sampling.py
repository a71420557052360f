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
