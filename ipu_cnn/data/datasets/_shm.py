"""``TarShards(cache="memory")``: one copy of the shards in shared memory per machine, read by every process on it.

The shards are copied once into a folder of ``/dev/shm`` (a tmpfs: its files are pages of RAM) named by the shards'
identity (real path, size, modification time), and the dataset's samples then point into those copies, which the
native core reads with ``pread`` as it reads any shard: the later epochs never touch the original storage. Every
process that asks for the same shards on the machine (the ranks of a run, the loader's worker processes, a rerun)
finds the same folder and shares its pages: one copy per machine, not one per process.

Who may delete the copy is decided with ``flock`` on a lock file beside the folder: each user holds a shared lock
on it for as long as it uses the copy (the kernel drops it when the process ends, however it ends); a user that closes
takes the exclusive lock without waiting, which it gets only when no one else holds the copy, and then deletes it.
Copying is serialised by a second lock file, held exclusively by the one copier at work (a user takes its shared hold
first, so the copy cannot be deleted under a copier). A copy left by processes that all died is deleted by the next process
that builds any memory cache (no one holds its lock). Copies are written under a temporary name and renamed, so a
file present under its shard name is complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import weakref
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SHM_ROOT", "SharedShardCopy"]

#: Where the copies live (a tmpfs on Linux); tests point it elsewhere.
SHM_ROOT = Path("/dev/shm")
_PREFIX = "ipu_cnn-shards-"


def _identity_key(shards: Sequence[str]) -> str:
    """A name for the copy of these shards as they are now: a hash of each one's real path, size and mtime."""
    h = hashlib.sha1()
    for s in shards:
        st = os.stat(s)
        h.update(f"{os.path.realpath(s)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:24]


def _lock(path: Path, mode: int) -> int | None:
    """An open descriptor of the lock file at path holding a flock in mode (LOCK_SH or LOCK_EX, maybe | LOCK_NB), or
    None when LOCK_NB was asked and the lock is held. Retries when the file was deleted and replaced while we waited
    (the lock would then guard nothing), so the lock returned is on the file the path names."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _delete(folder: Path, lock_path: Path) -> None:
    """Delete a copy and its lock files (the caller holds the exclusive lock: no one else holds the copy)."""
    shutil.rmtree(folder, ignore_errors=True)
    for path in (folder.with_name(folder.name + ".copying"), lock_path):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _sweep_stale(root: Path, keep: str) -> None:
    """Delete the copies no process holds (left by processes that died), except the one named keep."""
    for lock_path in root.glob(f"{_PREFIX}*.lock"):
        name = lock_path.name[:-len(".lock")]
        if name == keep:
            continue
        fd = _lock(lock_path, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is None:
            continue  # in use
        try:
            _delete(root / name, lock_path)
        finally:
            os.close(fd)


def _release(fd: int, folder: Path, lock_path: Path) -> None:
    """Give up our shared hold of a copy; delete it when we were its last user. The native core's cached descriptors
    are closed first: an open descriptor would keep a deleted copy's pages alive."""
    from ipu_cnn import _C

    _C.drop_cached_files()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # converts our shared lock; fails while others hold theirs
    except BlockingIOError:
        pass
    else:
        _delete(folder, lock_path)
    finally:
        os.close(fd)


class SharedShardCopy:
    """The shared-memory copy of a list of shards (made now unless another process made it), held until `close`.

    ``paths`` are the copies, in the order of the shards given. Raises ValueError when the shards do not fit in the
    free space of the shared-memory filesystem, saying how much they need and how much there is.
    """

    def __init__(self, shards: Sequence[str], root: Path | None = None) -> None:
        root = SHM_ROOT if root is None else root
        if not root.is_dir():
            raise ValueError(f"cache='memory' copies the shards to {root}, which does not exist here; use cache=None")
        self.name = _PREFIX + _identity_key(shards)
        self.folder = root / self.name
        self.lock_path = root / f"{self.name}.lock"
        self.paths = [str(self.folder / f"{i:06d}-{os.path.basename(s)}") for i, s in enumerate(shards)]
        _sweep_stale(root, self.name)
        fd = _lock(self.lock_path, fcntl.LOCK_SH)  # our hold: no one deletes the copy while we have it
        assert fd is not None
        try:
            copier = _lock(root / f"{self.name}.copying", fcntl.LOCK_EX)
            assert copier is not None
            try:
                self._copy_missing(shards, root)
            finally:
                os.close(copier)
        except BaseException:
            _release(fd, self.folder, self.lock_path)
            raise
        self._finalizer = weakref.finalize(self, _release, fd, self.folder, self.lock_path)

    def _copy_missing(self, shards: Sequence[str], root: Path) -> None:
        """Copy the shards whose copy is not there yet (under the exclusive lock)."""
        self.folder.mkdir(exist_ok=True)
        todo = [(s, d) for s, d in zip(shards, self.paths) if not os.path.exists(d)]
        need = sum(os.stat(s).st_size for s, _ in todo)
        st = os.statvfs(root)
        free = st.f_bavail * st.f_frsize
        if need > free:
            gib = 1 << 30
            raise ValueError(f"cache='memory': the shards need {need / gib:.2f} GiB more in {root} but only "
                             f"{free / gib:.2f} GiB is free; use cache=None (the page cache still helps), or free "
                             "shared memory")
        for src, dst in todo:
            tmp = f"{dst}.part"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
            _drop_from_page_cache(src)  # the copy is what is read from now on: do not hold the pages twice

    @property
    def held(self) -> bool:
        """Whether this object still holds the copy."""
        return self._finalizer.alive

    def close(self) -> None:
        """Stop holding the copy; the last process holding it deletes it."""
        self._finalizer()


def _drop_from_page_cache(path: str) -> None:
    """Ask the kernel to drop a file's cached pages (advice only; clean pages of a file we only read)."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)
