"""`ImageNet`: an `ImageFolder` over ``root/train`` or ``root/validation`` (``root/val``), the splits sharing classes.

`SPLITS` and `ImageNet.split_folder` are the split handling that other datasets in this layout reuse (the generated
demo set is one).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ipu_cnn.data.datasets._scan import IMG_EXTENSIONS, find_class_folders, normalise_extensions
from ipu_cnn.data.datasets.base import PathLike
from ipu_cnn.data.datasets.folder import ImageFolder

__all__ = ["SPLITS", "ImageNet"]

#: The split names accepted, each mapped to the split it names: ``"train"``, or ``"validation"`` (alias ``"val"``).
SPLITS: dict[str, str] = {"train": "train", "validation": "validation", "val": "validation"}
#: The folders that may hold each split, in the order they are looked for.
_SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val")}


class ImageNet(ImageFolder):
    """ImageNet (or any dataset laid out like it) as ``root/train/<class>/*`` and ``root/validation/<class>/*``.

    The validation split is read from ``root/validation`` or, failing that, ``root/val``. When the training folder is
    there too, the validation split takes its class list from it, so labels agree between the splits even if a class
    is missing from validation. ImageNet's validation set as distributed is one flat folder plus a labels file: read
    that with `FileList`, or sort it into class folders.

    Args:
        root: the folder holding ``train`` and ``validation`` (or ``val``).
        split: ``"train"`` or ``"validation"`` (alias ``"val"``).
        extensions, progress: as for `ImageFolder`.
    """

    def __init__(self, root: PathLike, split: str = "train", extensions: str | Iterable[str] = IMG_EXTENSIONS,
                 *, progress: bool | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown ImageNet split {split!r}: use 'train' or 'validation' (alias 'val')")
        self.split: str = SPLITS[split]
        base = os.path.expanduser(os.fspath(root))
        if not os.path.isdir(base):
            raise FileNotFoundError(f"ImageNet root {base} does not exist or is not a folder: expected root/train and "
                                    f"root/validation (or root/val), each holding root/<split>/<class>/<image>")
        folder = self.split_folder(base, self.split)
        exts = normalise_extensions(extensions)
        classes = None
        train = os.path.join(base, "train")
        if self.split != "train" and os.path.isdir(train):
            classes = find_class_folders(train, exts)
            extra = sorted(set(find_class_folders(folder, exts)) - set(classes))
            if extra:
                raise ValueError(f"{folder} has class folders that {train} lacks: {', '.join(extra[:10])}: the splits "
                                 f"must share one class list (the training set's), or labels would not agree")
        super().__init__(folder, exts, classes=classes, allow_empty=classes is not None, progress=progress)

    @staticmethod
    def split_folder(root: str, split: str) -> str:
        """The folder of a split (``"train"`` or ``"validation"``) under root, or an error naming what was sought."""
        candidates = [os.path.join(root, name) for name in _SPLIT_FOLDERS[SPLITS[split]]]
        for candidate in candidates:
            if os.path.isdir(candidate):
                return candidate
        raise FileNotFoundError(f"no {SPLITS[split]} split in {root}: expected the folder "
                                f"{' or '.join(candidates)}, holding <class>/<image> folders; a flat validation folder "
                                f"with a labels file is read by FileList")

