"""What every dataset offers (`Dataset`) and the index that file-based datasets share (`FileDataset`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from typing import Protocol, TypeVar, Union, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Dataset", "FileDataset", "LabelledSamples", "PathLike"]

PathLike = Union[str, "os.PathLike[str]"]  # noqa: UP007 (a runtime alias)

T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class Dataset(Protocol[T_co]):
    """What the loader and the applications need from any dataset: a length, samples with labels, class names."""

    @property
    def classes(self) -> list[str]:
        """Class names; label ``i`` is ``classes[i]``."""
        ...

    @property
    def class_to_idx(self) -> dict[str, int]:
        """The inverse of `classes`."""
        ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[T_co, int]: ...


class LabelledSamples:
    """The label and class properties every concrete dataset shares, over ``_labels`` (a read-only int64 array),
    ``_classes`` (names) and ``_class_to_idx`` (their inverse), which the dataset sets when it is built."""

    _labels: np.ndarray
    _classes: list[str]
    _class_to_idx: dict[str, int]

    @property
    def labels(self) -> np.ndarray:
        """Labels in sample order as a read-only int64 array."""
        return self._labels

    @property
    def classes(self) -> list[str]:
        """Class names; label ``i`` is ``classes[i]``."""
        return self._classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> label."""
        return self._class_to_idx

    @property
    def num_classes(self) -> int:
        """Number of classes (the model's output width)."""
        return len(self._classes)


class FileDataset(LabelledSamples):
    """A dataset of image files: paths, int64 labels and class names, all fixed when it is built.

    Subclasses only decide which files belong and with which label; this class holds the result in the form the loader
    wants: `paths` is a plain list of str (handed to the native decoder in one call) and `labels` a read-only int64
    array. Both are the stored objects, not copies, so treat them as read-only.
    """

    def __init__(self, paths: Sequence[str], labels: npt.ArrayLike, classes: Sequence[str]) -> None:
        """Index `paths` with `labels` (indices into `classes`); checks that they agree, raising `ValueError`."""
        self._set_index(paths, labels, classes)

    def _set_index(self, paths: Sequence[str], labels: npt.ArrayLike, classes: Sequence[str]) -> None:
        """Store and validate the index; shared by the constructors of the subclasses."""
        label_array = np.array(labels, dtype=np.int64).reshape(-1)
        if len(label_array) != len(paths):
            raise ValueError(f"got {len(paths)} paths but {len(label_array)} labels: they must pair up one to one")
        class_list = [str(c) for c in classes]
        if len(set(class_list)) != len(class_list):
            raise ValueError(f"class names must be unique, got duplicates in {class_list[:20]}")
        if len(label_array) and (label_array.min() < 0 or label_array.max() >= len(class_list)):
            bad = label_array[(label_array < 0) | (label_array >= len(class_list))][0]
            raise ValueError(f"label {bad} is out of range for {len(class_list)} classes: labels must be in "
                             f"0..{len(class_list) - 1}")
        label_array.flags.writeable = False
        self._paths: list[str] = paths if isinstance(paths, list) else list(paths)
        self._labels: np.ndarray = label_array
        self._classes: list[str] = class_list
        self._class_to_idx: dict[str, int] = {name: i for i, name in enumerate(class_list)}

    @property
    def paths(self) -> list[str]:
        """File paths in sample order (the stored list: do not modify it)."""
        return self._paths

    @cached_property
    def samples(self) -> list[tuple[str, int]]:
        """``(path, label)`` pairs in sample order, as torchvision's ``DatasetFolder.samples``; built on first use."""
        return list(zip(self._paths, self._labels.tolist(), strict=True))

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> tuple[str, int]:
        """The ``(path, label)`` of sample `index` (negative indices count from the end)."""
        return self._paths[index], int(self._labels[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, {len(self._classes)} classes)"
