"""Scanning ``root/<class>/<image>`` folders: which files count as images, the class folders, the files of each.

Shared by `ImageFolder` and `ImageNet`. Only directory listings are read (no stat per file, no file opened), so the
scan of ImageNet's 1.28M files takes seconds.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["IMG_EXTENSIONS", "LAYOUT", "find_class_folders", "normalise_extensions", "progress_bar",
           "scan_class_folder"]

#: Extensions `ImageFolder` accepts by default (torchvision's list), compared case-insensitively.
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#: The layout, as error messages name it.
LAYOUT = "expected root/<class>/<image> (torchvision ImageFolder layout)"


def normalise_extensions(extensions: str | Iterable[str]) -> tuple[str, ...]:
    """Lower-case the extensions and give each a leading dot, so ``"JPG"`` and ``".jpg"`` mean the same."""
    items = [extensions] if isinstance(extensions, str) else list(extensions)
    if not items:
        raise ValueError("extensions is empty: give at least one, e.g. ('.jpg', '.jpeg')")
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in items)


def dir_identity(path: str) -> tuple[int, int]:
    """(device, inode) of a directory, following symlinks: what tells a symlink loop from a new folder."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def scan_class_folder(top: str, extensions: tuple[str, ...]) -> list[str]:
    """All image paths under `top`, recursively, following symlinks, in torchvision's order.

    torchvision lists ``sorted(os.walk(top, followlinks=True))`` (folders ordered by their full path string, files by
    name within a folder); this does the same with one `os.scandir` per folder and no stat per file (`DirEntry.is_dir`
    uses the type the directory listing already gave, except for symlinks). A folder that is one of its own ancestors
    (a symlink loop) is skipped with a warning instead of being walked until the path is too long.
    """
    folders: list[tuple[str, list[str]]] = []
    # Depth-first walk; each stack item carries the identities of the folders above it (the ones that make a loop).
    stack: list[tuple[str, frozenset[tuple[int, int]]]] = [(top, frozenset({dir_identity(top)}))]
    while stack:
        folder, ancestors = stack.pop()
        names: list[str] = []
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir()
                except OSError:  # vanished or unreadable entry: it is no image we could read either
                    continue
                if is_dir:
                    try:
                        identity = dir_identity(entry.path)
                    except OSError:
                        continue
                    if identity in ancestors:
                        warnings.warn(f"skipping {entry.path}: it is a symlink loop back to one of its parent folders",
                                      stacklevel=4)
                        continue
                    stack.append((entry.path, ancestors | {identity}))
                elif entry.name.lower().endswith(extensions):
                    names.append(entry.name)
        names.sort()
        folders.append((folder, names))
    folders.sort(key=lambda item: item[0])
    paths: list[str] = []
    for folder, names in folders:
        prefix = folder if folder.endswith(os.sep) else folder + os.sep  # os.path.join's result, at a third the cost
        paths.extend([prefix + name for name in names])
    return paths


def find_class_folders(root: str, extensions: tuple[str, ...] = IMG_EXTENSIONS) -> list[str]:
    """Sorted names of the folders in `root` (symlinks to folders count), or an error that says what was expected.

    `extensions` only serves the error message: a root with images but no folders is named as a flat folder.
    """
    if not os.path.exists(root):
        raise FileNotFoundError(f"dataset folder {root} does not exist: {LAYOUT}")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"dataset root {root} is not a folder: {LAYOUT}")
    classes: list[str] = []
    loose_images = 0
    with os.scandir(root) as it:
        for entry in it:
            try:
                if entry.is_dir():
                    classes.append(entry.name)
                elif entry.name.lower().endswith(extensions):
                    loose_images += 1
            except OSError:
                continue
    if not classes:
        hint = (f"; it holds {loose_images} images directly: for a flat folder of images with a labels file use "
                f"FileList(labels_file, root=...)" if loose_images else "")
        raise FileNotFoundError(f"no class folders in {root}: {LAYOUT}{hint}")
    return sorted(classes)


def progress_bar(total: int, desc: str, progress: bool | None) -> tqdm | None:
    """A tqdm bar, or None. Auto (None): on a terminal, or in logs for large trees; shown only after a second."""
    if progress is False:
        return None
    from tqdm.auto import tqdm  # noqa: F811 (the runtime import of the name annotated above)

    tty = sys.stderr is not None and sys.stderr.isatty()
    if progress is None and not tty and total < 100:
        return None
    return tqdm(total=total, desc=desc, unit="class", delay=1.0, leave=False, mininterval=0.1 if tty else 10.0)
