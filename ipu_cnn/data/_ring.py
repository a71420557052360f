"""The batch ring: a fixed number of batch slots in one shared-memory segment.

The segment is anonymous from birth where the OS allows it (Linux ``memfd_create``): it has no name in /dev/shm, so
nothing can outlive the processes that map it, even after SIGKILL. Elsewhere a POSIX segment is created and unlinked
at once, keeping only its descriptor. Another process (the loader's worker) gets the descriptor, never a name.

Each slot holds ``images`` (B, H, W, 3) uint8, ``labels`` (B,) int64, ``indices`` (B,) int64 and a count.
"""
from __future__ import annotations

import mmap
import os
import secrets

import numpy as np

_ALIGN = 4096


def _round_up(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _anonymous_shared_fd(size: int) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("ipu_cnn_ring", os.MFD_CLOEXEC)
    else:  # pragma: no cover - macOS / BSD
        import _posixshmem  # type: ignore[import-not-found]

        name = "/ipu_cnn_" + secrets.token_hex(8)
        fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        _posixshmem.shm_unlink(name)
    try:
        os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return fd


class SharedRing:
    """``slots`` batch slots of ``batch_size`` images of ``height`` x ``width`` x 3 in one shared mapping."""

    def __init__(self, slots: int, batch_size: int, height: int, width: int, fd: int | None = None) -> None:
        self.slots, self.batch_size, self.height, self.width = slots, batch_size, height, width
        self.image_bytes = batch_size * height * width * 3
        meta_bytes = 8 + 16 * batch_size  # count, labels, indices
        self.slot_bytes = _round_up(self.image_bytes + meta_bytes)
        self.size = self.slot_bytes * slots
        self.owner = fd is None
        self.fd = _anonymous_shared_fd(self.size) if fd is None else fd
        self._map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        buf = np.frombuffer(self._map, dtype=np.uint8)
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.indices: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        for s in range(slots):
            base = s * self.slot_bytes
            self.images.append(buf[base:base + self.image_bytes].reshape(batch_size, height, width, 3))
            meta = buf[base + self.image_bytes:base + self.image_bytes + meta_bytes].view(np.int64)
            self._counts.append(meta[0:1])
            self.labels.append(meta[1:1 + batch_size])
            self.indices.append(meta[1 + batch_size:1 + 2 * batch_size])

    @property
    def address(self) -> int:
        """Start address of the mapping (for page-locking it)."""
        return int(np.frombuffer(self._map, dtype=np.uint8, count=1).ctypes.data)

    def count(self, slot: int) -> int:
        return int(self._counts[slot][0])

    def set_count(self, slot: int, n: int) -> None:
        self._counts[slot][0] = n

    def close(self) -> None:
        """Drop the views and unmap; closes the descriptor. Views handed out earlier must not be used afterwards."""
        self.images.clear()
        self.labels.clear()
        self.indices.clear()
        self._counts.clear()
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                # A tensor or array still exports the buffer: leave the mapping to the garbage collector.
                pass
            self._map = None  # type: ignore[assignment]
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
