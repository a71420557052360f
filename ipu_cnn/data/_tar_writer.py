"""Writing one WebDataset-layout tar shard: members in order, a temporary name, an atomic rename, a SHA-256 on the way.

A shard is written to a hidden temporary file in its folder (``.NAME.tmp-PID``, which no ``*.tar`` glob matches),
flushed and fsynced, then renamed over its final name, so a reader never sees half a shard and an interrupted packer
leaves only a temporary file behind. Headers are plain ustar wherever the member name allows (pax only for names
that need it) with fixed owner, group and a whole-second mtime, so the same input gives the same bytes on every run.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from types import TracebackType

__all__ = ["ShardWriter", "temp_name"]


def temp_name(path: str) -> str:
    """The temporary file a shard is written to before its rename (hidden, process-specific)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}")


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it to the real file."""

    def __init__(self, raw: io.BufferedWriter) -> None:
        super().__init__()
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sha256.update(data)
        n = self._raw.write(data)
        self.size += len(data)
        return n if n is not None else len(data)

    def tell(self) -> int:
        return self.size


class ShardWriter:
    """One tar shard being written: `add` members in order, then `commit` (rename into place) or `abort`.

    Used as a context manager, leaving the block by an exception aborts (the temporary file is removed).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = temp_name(path)
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit/abort
        self._hashing = _HashingFile(self._file)
        self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.PAX_FORMAT)  # type: ignore[arg-type]
        self.members = 0
        self.sha256 = ""
        self.size = 0

    def add(self, name: str, data: bytes, mtime: int = 0) -> None:
        """Append member `name` holding `data` (bytes as given, never re-encoded)."""
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(mtime)  # a fractional mtime would need a pax header
        info.mode = 0o444
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))
        self.members += 1

    def commit(self) -> None:
        """Finish the archive, make it durable and rename it to its final name (atomic on POSIX)."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.sha256 = self._hashing.sha256.hexdigest()
        self.size = self._hashing.size
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the shard: close and remove the temporary file."""
        try:
            self._file.close()
        finally:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()


def count_members(path: str) -> int:
    """Number of regular-file members in a tar (headers only: each member's data is skipped, not read)."""
    with tarfile.open(path, mode="r:") as tar:
        return sum(1 for m in tar if m.isfile())
