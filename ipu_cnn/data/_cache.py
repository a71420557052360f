"""The package's on-disk cache: where it is, and how content made once is published whole into it.

Whatever is made here may be made by several processes at once (torchrun ranks, parallel benchmark runs), and no
reader may ever see it half written. Two ways to publish, for two kinds of content:

- `make_folder`, for a folder that is only usable whole (the generated dataset). It is written into a staging folder
  beside its target, marked as ours by a tag file written first and completed by a manifest written last, then
  published by one atomic rename. An exclusive `fcntl.flock` lock serialises concurrent makers; where locks do not
  work the rename alone decides, and the loser discards its copy. A folder that fails the caller's completeness check
  is made again if it carries the tag; one without the tag is someone else's and is never touched.
- `publish_file`, for files that are each usable alone (the benchmark's photos): written to a temporary name beside
  the target and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_NAME", "FolderKind", "cache_dir", "discard", "exclusive_lock", "make_folder", "publish_file"]

logger = logging.getLogger(__name__)

#: Written last into a folder made by `make_folder`; its absence marks an incomplete one.
MANIFEST_NAME = "manifest.json"


def cache_dir() -> Path:
    """The package's cache folder: ``$IPU_CNN_CACHE``, else ``$XDG_CACHE_HOME/ipu_cnn``, else ``~/.cache/ipu_cnn``."""
    explicit = os.environ.get("IPU_CNN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ipu_cnn"


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder that `make_folder` makes: what tells its folders from other kinds' and from foreign ones.

    Attributes:
        format: the ``"format"`` value of the kind's manifests; a manifest without it is not one of this kind.
        tag_name: file written first into each folder of the kind: it marks the folder as made here, so an incomplete
            one may be deleted and made again.
        maker: the module that makes the kind, named in the tag file.
        what: what the folders hold, as messages name it (e.g. ``"generated dataset"``).
    """

    format: str
    tag_name: str
    maker: str
    what: str

    def read_manifest(self, root: Path) -> dict[str, Any] | None:
        """The manifest of `root`, or None when missing, unreadable or of another kind."""
        try:
            with open(root / MANIFEST_NAME, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("format") == self.format else None

    def write_tag(self, folder: Path) -> None:
        """Mark `folder` as one of this kind (done first, so even a crashed maker's folder is known to be ours)."""
        (folder / self.tag_name).write_text(f"made by {self.maker}; safe to delete\n", encoding="utf-8")

    def write_manifest(self, folder: Path, fields: dict[str, Any]) -> None:
        """Complete `folder` with a manifest of `fields` and the kind's format; flushed to disk before it returns.

        The file's bytes are a function of `fields` (sorted keys), so equal content gives byte-identical folders.
        """
        with open(folder / MANIFEST_NAME, "w", encoding="utf-8") as f:
            json.dump({"format": self.format, **fields}, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    def publish(self, staging: Path, target: Path) -> bool:
        """Rename the finished `staging` folder to `target`; False (and `staging` deleted) if another maker won."""
        try:
            os.rename(staging, target)  # atomic; replaces only an empty folder
            return True
        except OSError:
            lost = target.is_dir() and self.read_manifest(target) is not None
            shutil.rmtree(staging, ignore_errors=True)
            if lost:
                return False
            raise


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on `lock_path` (created if needed); yields False where the filesystem has no locks.

    The lock file is left in place: unlinking it would let a third process lock a new file while a second still holds
    the old one.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps folders whole
        yield False
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. ENOLCK on some network filesystems
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def discard(folder: Path) -> None:
    """Delete a folder we made: renamed aside first, so no reader ever sees it half deleted."""
    if not folder.exists():
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.trash-", dir=folder.parent))
    os.rename(folder, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)


def make_folder(target: Path, kind: FolderKind, *, is_complete: Callable[[Path], bool],
                write: Callable[[Path], None], manifest: dict[str, Any], description: str = "") -> Path:
    """Make sure `target` is a complete folder of `kind`, making it (once, whatever the number of makers) if not.

    `target` must be new, empty, or a folder of `kind`: a complete one is kept as it is (no file is touched); an
    incomplete one is deleted and made again; a non-empty folder without the kind's tag is an error rather than being
    overwritten. Making it means: a staging folder beside `target`, the kind's tag, ``write(staging)``, the
    `manifest`, then one atomic rename, all under an exclusive lock on ``.<target name>.lock`` beside `target`.

    Args:
        target: the folder to make.
        kind: the kind of folder.
        is_complete: whether a folder holds the whole content (False when it has no manifest of the kind; it may raise
            to refuse a folder of the kind made with other parameters).
        write: writes the content into the staging folder it is given.
        manifest: the manifest's fields (deterministic, so that equal content gives identical bytes).
        description: details for the log line that says a folder is being made, e.g. ``"(10 classes)"``.

    Returns:
        `target` as an absolute Path.
    """
    target = Path(os.path.abspath(target))
    if is_complete(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create {target.parent} for the {kind.what} ({e}): set IPU_CNN_CACHE or pass root= to "
                      f"a writable folder") from e
    with exclusive_lock(target.parent / f".{target.name}.lock") as locked:
        if is_complete(target):  # another process made it while we waited
            return target
        if locked:  # every maker holds the lock while it writes, so staging folders seen now are a crash's leftovers
            for leftover in target.parent.iterdir():
                if leftover.name.startswith((f".{target.name}.tmp-", f".{target.name}.trash-")) and leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
        if target.exists():
            if not target.is_dir():
                raise NotADirectoryError(f"{target} exists and is not a folder: pass another root for the {kind.what}")
            if (target / kind.tag_name).exists():
                logger.warning("%s at %s is incomplete; making it again", kind.what, target)
                discard(target)
            elif any(target.iterdir()):
                raise FileExistsError(f"{target} is not empty and holds no {kind.what} (no {MANIFEST_NAME}): pass a "
                                      f"new or empty folder as root, so nothing of yours is overwritten")
        logger.info("making the %s%s at %s", kind.what, f" {description}" if description else "", target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the published folder should read like any other
        try:
            kind.write_tag(staging)
            write(staging)
            kind.write_manifest(staging, manifest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        kind.publish(staging, target)
    return target


def publish_file(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a temporary file beside it and one atomic rename.

    A reader never sees a partial file, an interrupted writer leaves none behind, and concurrent writers of the same
    bytes are harmless (the last rename wins).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
