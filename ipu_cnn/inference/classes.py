"""Class names for a model's outputs: the checkpoint's, else ImageNet's for 1000 classes (timm ships them), else
the indices as text."""
from __future__ import annotations

from typing import Sequence

#: ImageNet-1k's class count: a model with this many outputs is taken to use ImageNet's class order.
IMAGENET_CLASSES = 1000


def imagenet_class_names() -> list[str]:
    """ImageNet-1k's 1000 class descriptions in label order ("tench, Tinca tinca", ...), from timm's package data."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return [info.index_to_description(i) for i in range(info.num_classes())]


def class_names_for(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """Names of `num_classes` outputs: `names` when given (a checkpoint's), ImageNet's for 1000 classes, else
    ``"0"``, ``"1"``, ...; a `ValueError` when given names do not match the class count."""
    if names:
        if len(names) != num_classes:
            raise ValueError(f"the checkpoint names {len(names)} classes but its model has {num_classes} outputs: "
                             "it was not written by ipu_cnn's training application, or was edited")
        return [str(n) for n in names]
    if num_classes == IMAGENET_CLASSES:
        try:
            return imagenet_class_names()
        except (ImportError, OSError, KeyError):  # an old timm without ImageNetInfo: fall back to indices
            pass
    return [str(i) for i in range(num_classes)]
