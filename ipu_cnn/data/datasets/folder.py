"""`ImageFolder`: torchvision's ``root/<class>/<image>`` layout, with torchvision's class and sample order."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from ipu_cnn.data.datasets._scan import (
    IMG_EXTENSIONS,
    LAYOUT,
    find_class_folders,
    normalise_extensions,
    progress_bar,
    scan_class_folder,
)
from ipu_cnn.data.datasets.base import FileDataset, PathLike

__all__ = ["ImageFolder"]


class ImageFolder(FileDataset):
    """Images in ``root/<class>/<image>`` folders, labelled by class folder, in torchvision's order.

    Classes are the sorted names of the folders in `root` (symlinks to folders count), labelled 0..C-1; samples are
    listed class by class and, within a class, in ``sorted(os.walk(..., followlinks=True))`` order, exactly as
    ``torchvision.datasets.ImageFolder`` does, so indices and checkpoints carry over. Symlinked files and folders are
    followed (symlink trees are common for datasets) and symlink loops are skipped. Files are kept by extension only,
    compared case-insensitively; nothing is opened. Scanning ImageNet's 1.28M files takes seconds.

    Args:
        root: the folder holding one folder per class.
        extensions: file name endings to keep, any case (default: `IMG_EXTENSIONS`).
        classes: class folder names in label order, to impose another split's classes (e.g. the training set's on a
            validation folder, so labels agree even when the validation folder lacks a class). Default: every folder.
        allow_empty: accept class folders without images instead of raising.
        progress: show a progress bar: True, False or None (auto: on a terminal when the scan takes over a second).
    """

    def __init__(self, root: PathLike, extensions: str | Iterable[str] = IMG_EXTENSIONS, *,
                 classes: Sequence[str] | None = None, allow_empty: bool = False,
                 progress: bool | None = None) -> None:
        self.root: str = os.path.expanduser(os.fspath(root))
        self.extensions: tuple[str, ...] = normalise_extensions(extensions)
        class_names = find_class_folders(self.root, self.extensions) if classes is None else [str(c) for c in classes]
        if not class_names:
            raise ValueError("classes is empty: give at least one class folder name, or None to use every folder")
        paths, labels, empty = self._scan(class_names, allow_empty, progress)
        if empty and not allow_empty:
            shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            raise FileNotFoundError(f"no images in class folder(s) {shown} of {self.root}: {LAYOUT}, with files "
                                    f"ending in {', '.join(self.extensions)} (any case); pass allow_empty=True to "
                                    f"accept empty classes")
        self._set_index(paths, labels, class_names)

    def _scan(self, classes: list[str], allow_empty: bool,
              progress: bool | None) -> tuple[list[str], list[int], list[str]]:
        """Paths and labels of every class folder, and the names of classes that have no image."""
        class_to_idx = {name: i for i, name in enumerate(classes)}
        paths: list[str] = []
        labels: list[int] = []
        empty: list[str] = []
        bar = progress_bar(len(classes), f"scanning {self.root}", progress)
        try:
            for name in sorted(classes):  # torchvision walks classes in name order, whatever their indices
                top = os.path.join(self.root, name)
                if not os.path.isdir(top):
                    if allow_empty:
                        empty.append(name)
                        continue
                    raise FileNotFoundError(f"class folder {top} does not exist (or is not a folder): {LAYOUT}")
                found = scan_class_folder(top, self.extensions)
                if not found:
                    empty.append(name)
                paths.extend(found)
                labels.extend([class_to_idx[name]] * len(found))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(images=len(paths), refresh=False)
        finally:
            if bar is not None:
                bar.close()
        return paths, labels, empty

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r}, {len(self)} samples, {len(self.classes)} classes)"
