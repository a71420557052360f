"""Dataset indexes: which files (or generated images) make a dataset, and their labels.

A dataset here is only an index. The loader hands `paths` to the native decoder in bulk and `labels` to the training
loop, so both are computed once, when the dataset is built, and every accessor after that is free. Nothing in this
module opens an image.

- `ImageFolder`: torchvision's ``root/<class>/<image>`` layout, with torchvision's class and sample order.
- `ImageNet`: an `ImageFolder` over ``root/train`` or ``root/validation`` (``root/val``).
- `FileList`: a CSV, TSV or space-separated list of ``path,label`` rows (ImageNet's flat validation folder and its
  labels file, or any custom split).
- `RandomImages`: random uint8 images made in memory, no files and no decoding, for device-throughput runs.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Protocol, TypeVar, Union, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "IMG_EXTENSIONS",
    "find_class_folders",
    "Dataset",
    "FileDataset",
    "ImageFolder",
    "ImageNet",
    "FileList",
    "RandomImages",
]

PathLike = Union[str, "os.PathLike[str]"]  # noqa: UP007 (a runtime alias)

#: Extensions `ImageFolder` accepts by default (torchvision's list), compared case-insensitively.
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_LAYOUT = "expected root/<class>/<image> (torchvision ImageFolder layout)"

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


class FileDataset:
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


def _normalise_extensions(extensions: str | Iterable[str]) -> tuple[str, ...]:
    """Lower-case the extensions and give each a leading dot, so ``"JPG"`` and ``".jpg"`` mean the same."""
    items = [extensions] if isinstance(extensions, str) else list(extensions)
    if not items:
        raise ValueError("extensions is empty: give at least one, e.g. ('.jpg', '.jpeg')")
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in items)


def _dir_identity(path: str) -> tuple[int, int]:
    """(device, inode) of a directory, following symlinks: what tells a symlink loop from a new folder."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _scan_class_folder(top: str, extensions: tuple[str, ...]) -> list[str]:
    """All image paths under `top`, recursively, following symlinks, in torchvision's order.

    torchvision lists ``sorted(os.walk(top, followlinks=True))`` (folders ordered by their full path string, files by
    name within a folder); this does the same with one `os.scandir` per folder and no stat per file (`DirEntry.is_dir`
    uses the type the directory listing already gave, except for symlinks). A folder that is one of its own ancestors
    (a symlink loop) is skipped with a warning instead of being walked until the path is too long.
    """
    folders: list[tuple[str, list[str]]] = []
    # Depth-first walk; each stack item carries the identities of the folders above it (the ones that make a loop).
    stack: list[tuple[str, frozenset[tuple[int, int]]]] = [(top, frozenset({_dir_identity(top)}))]
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
                        identity = _dir_identity(entry.path)
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
        raise FileNotFoundError(f"dataset folder {root} does not exist: {_LAYOUT}")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"dataset root {root} is not a folder: {_LAYOUT}")
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
        raise FileNotFoundError(f"no class folders in {root}: {_LAYOUT}{hint}")
    return sorted(classes)


def _progress_bar(total: int, desc: str, progress: bool | None) -> tqdm | None:
    """A tqdm bar, or None. Auto (None): on a terminal, or in logs for large trees; shown only after a second."""
    if progress is False:
        return None
    from tqdm.auto import tqdm  # noqa: F811 (the runtime import of the name annotated above)

    tty = sys.stderr is not None and sys.stderr.isatty()
    if progress is None and not tty and total < 100:
        return None
    return tqdm(total=total, desc=desc, unit="class", delay=1.0, leave=False, mininterval=0.1 if tty else 10.0)


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
        self.extensions: tuple[str, ...] = _normalise_extensions(extensions)
        class_names = find_class_folders(self.root, self.extensions) if classes is None else [str(c) for c in classes]
        if not class_names:
            raise ValueError("classes is empty: give at least one class folder name, or None to use every folder")
        paths, labels, empty = self._scan(class_names, allow_empty, progress)
        if empty and not allow_empty:
            shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            raise FileNotFoundError(f"no images in class folder(s) {shown} of {self.root}: {_LAYOUT}, with files "
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
        bar = _progress_bar(len(classes), f"scanning {self.root}", progress)
        try:
            for name in sorted(classes):  # torchvision walks classes in name order, whatever their indices
                top = os.path.join(self.root, name)
                if not os.path.isdir(top):
                    if allow_empty:
                        empty.append(name)
                        continue
                    raise FileNotFoundError(f"class folder {top} does not exist (or is not a folder): {_LAYOUT}")
                found = _scan_class_folder(top, self.extensions)
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


_SPLITS = {"train": "train", "validation": "validation", "val": "validation"}
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
        if split not in _SPLITS:
            raise ValueError(f"unknown ImageNet split {split!r}: use 'train' or 'validation' (alias 'val')")
        self.split: str = _SPLITS[split]
        base = os.path.expanduser(os.fspath(root))
        if not os.path.isdir(base):
            raise FileNotFoundError(f"ImageNet root {base} does not exist or is not a folder: expected root/train and "
                                    f"root/validation (or root/val), each holding root/<split>/<class>/<image>")
        folder = self.split_folder(base, self.split)
        exts = _normalise_extensions(extensions)
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
        candidates = [os.path.join(root, name) for name in _SPLIT_FOLDERS[_SPLITS[split]]]
        for candidate in candidates:
            if os.path.isdir(candidate):
                return candidate
        raise FileNotFoundError(f"no {_SPLITS[split]} split in {root}: expected the folder "
                                f"{' or '.join(candidates)}, holding <class>/<image> folders; a flat validation folder "
                                f"with a labels file is read by FileList")


_INT_LABEL = re.compile(r"[+-]?\d+")
_HEADER_PATH = {"path", "paths", "file", "filename", "file_name", "filepath", "file_path", "image", "image_path",
                "img", "name", "image_id", "id"}
_HEADER_LABEL = {"label", "labels", "class", "class_name", "classname", "target", "category", "y", "class_id",
                 "label_id"}


class FileList(FileDataset):
    """Images listed in a text file of ``path,label`` rows.

    The delimiter is sniffed from the first row: tab (TSV), else comma (CSV, with csv quoting, for paths that hold
    commas), else whitespace (Caffe's ``train.txt``/``val.txt``: the label is the last field). A first row such as
    ``path,label`` is recognised as a header and skipped. Blank lines and lines starting with ``#`` are ignored.
    Relative paths are resolved against `root`, or by default the list file's folder. Files are not checked for
    existence (that would cost a stat per file); the loader reports a missing file by path.

    Labels are integers or class names, as the first row's label says: integer labels must all be integers >= 0, and
    `classes` is then ``["0", "1", ..., str(max_label)]``; otherwise every label is a class name and the sorted
    distinct names get indices 0..C-1. Passing `classes` fixes the mapping instead (e.g. the training list's), which
    keeps labels consistent between splits.

    Args:
        path: the list file (UTF-8, BOM allowed).
        root: folder that relative paths are relative to (default: the list file's folder).
        classes: class names in label order; integer labels must then be below ``len(classes)``, named labels must be
            among them.
        header: True or False to say whether the first row is a header; None to detect it.
    """

    def __init__(self, path: PathLike, root: PathLike | None = None, *, classes: Sequence[str] | None = None,
                 header: bool | None = None) -> None:
        self.path: str = os.path.expanduser(os.fspath(path))
        if root is None:
            base = os.path.dirname(os.path.abspath(self.path))
        else:
            base = os.path.expanduser(os.fspath(root))
        self.root: str = base
        try:
            with open(self.path, encoding="utf-8-sig", newline="") as f:
                text = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"file list {self.path} does not exist: expected a CSV/TSV of path,label "
                                    f"rows") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"file list {self.path} is not UTF-8 text ({e}): expected a CSV/TSV of path,label "
                             f"rows") from None
        rows = self._parse(text, header)
        if not rows:
            raise ValueError(f"file list {self.path} has no rows: expected 'path,label' lines (CSV), "
                             f"'path<TAB>label' (TSV) or 'path label'")
        label_array, class_names = self._labels_from(rows, classes)
        paths = [os.path.join(base, p) for _, p, _ in rows]
        self._set_index(paths, label_array, class_names)

    def _parse(self, text: str, header: bool | None) -> list[tuple[int, str, str]]:
        """(line number, path, label text) of each data row; an error naming the line for a malformed one."""
        lines = text.splitlines()
        first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), None)
        if first is None:
            return []
        if "\t" in first:
            records = self._csv_records(lines, "\t")
        elif "," in first:
            records = self._csv_records(lines, ",")
        else:
            records = self._whitespace_records(lines)
        rows: list[tuple[int, str, str]] = []
        for i, (lineno, fields, raw) in enumerate(records):
            if len(fields) != 2:
                quote = " (quote paths that contain the delimiter)" if len(fields) > 2 else ""
                raise ValueError(f"{self.path}:{lineno}: expected 2 fields (path, label), got {len(fields)} in "
                                 f"{raw!r}{quote}")
            p, label = fields[0].strip(), fields[1].strip()
            if i == 0 and (header or (header is None and self._is_header(p, label))):
                continue
            if not p or not label:
                raise ValueError(f"{self.path}:{lineno}: empty {'path' if not p else 'label'} in {raw!r}: expected "
                                 f"path,label")
            rows.append((lineno, p, label))
        return rows

    @staticmethod
    def _csv_records(lines: list[str], delimiter: str) -> Iterable[tuple[int, list[str], str]]:
        """Rows parsed by the csv module, with the line each starts on. Comma lists honour CSV quotes (paths with
        commas); tab lists take every character literally, as TSV has no quoting."""
        # Comments become blank lines rather than vanishing, so that line numbers stay those of the file.
        kept = ["" if ln.lstrip().startswith("#") else ln for ln in lines]
        reader = csv.reader(io.StringIO("\n".join(kept)), delimiter=delimiter,
                            quoting=csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE)
        start = 1
        for fields in reader:
            lineno, start = start, reader.line_num + 1
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            yield lineno, fields, lines[lineno - 1]

    @staticmethod
    def _whitespace_records(lines: list[str]) -> Iterable[tuple[int, list[str], str]]:
        """Rows split at the last run of whitespace, so paths may hold spaces (Caffe's list format)."""
        for lineno, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            yield lineno, line.strip().rsplit(maxsplit=1), line

    @staticmethod
    def _is_header(path: str, label: str) -> bool:
        """Whether a first row reads like column names (``path,label``, ``filename<TAB>class``, ...)."""
        return path.lower() in _HEADER_PATH and label.lower() in _HEADER_LABEL

    def _labels_from(self, rows: list[tuple[int, str, str]],
                     classes: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        """Label indices and class names, ints or names as the first row decides, each bad row named by line."""
        class_to_idx = None if classes is None else {str(c): i for i, c in enumerate(classes)}
        labels = np.empty(len(rows), dtype=np.int64)
        # Integer labels if the first row's is one, unless the given classes name it (a class may be called "7").
        integer = _INT_LABEL.fullmatch(rows[0][2]) is not None and not (class_to_idx and rows[0][2] in class_to_idx)
        if integer:
            for i, (lineno, _, text) in enumerate(rows):
                if _INT_LABEL.fullmatch(text) is None:
                    raise ValueError(f"{self.path}:{lineno}: label {text!r} is not an integer; the first row's label "
                                     f"is, so all must be (use class names on every row, or integers on every row)")
                value = int(text)
                if value < 0:
                    raise ValueError(f"{self.path}:{lineno}: label {value} is negative: labels are class indices >= 0")
                if classes is not None and value >= len(classes):
                    raise ValueError(f"{self.path}:{lineno}: label {value} is out of range for the {len(classes)} "
                                     f"classes given")
                labels[i] = value
            class_names = list(classes) if classes is not None else [str(i) for i in range(int(labels.max()) + 1)]
            return labels, class_names
        if class_to_idx is None:
            class_names = sorted({text for _, _, text in rows})
            class_to_idx = {name: i for i, name in enumerate(class_names)}
        else:
            class_names = [str(c) for c in classes]  # type: ignore[union-attr]
        for i, (lineno, _, text) in enumerate(rows):
            index = class_to_idx.get(text)
            if index is None:
                raise ValueError(f"{self.path}:{lineno}: label {text!r} is not one of the {len(class_names)} classes "
                                 f"given")
            labels[i] = index
        return labels, class_names

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {len(self)} samples, {len(self.classes)} classes)"


class RandomImages:
    """Random uint8 images made in memory: the host-side "generated" data of device-throughput runs.

    No file is read and nothing is decoded, so the host never limits the device. Image ``i`` is a pure function of
    ``(seed, i)`` (its own SFC64 stream, seeded from both), so any worker, rank or batch that asks for it gets the
    same pixels. Label ``i`` is ``i % num_classes``, which keeps the classes balanced.

    Args:
        num_classes: number of classes.
        size: image side, or ``(height, width)``.
        length: number of samples.
        seed: selects the images; any int >= 0.
    """

    def __init__(self, num_classes: int, size: int | tuple[int, int], length: int, seed: int = 0) -> None:
        height, width = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if num_classes < 1 or length < 1 or height < 1 or width < 1:
            raise ValueError(f"RandomImages needs num_classes, length and size >= 1, got num_classes={num_classes}, "
                             f"length={length}, size={size}")
        if seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed}")
        self.num_classes = int(num_classes)
        self.height, self.width = int(height), int(width)
        self.length = int(length)
        self.seed = int(seed)
        self._classes = [str(i) for i in range(self.num_classes)]
        self._class_to_idx = {name: i for i, name in enumerate(self._classes)}

    @property
    def classes(self) -> list[str]:
        """Class names ``"0"``..``str(num_classes - 1)``."""
        return self._classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> label."""
        return self._class_to_idx

    @cached_property
    def labels(self) -> np.ndarray:
        """All labels as a read-only int64 array (``arange(length) % num_classes``)."""
        labels = np.arange(self.length, dtype=np.int64) % self.num_classes
        labels.flags.writeable = False
        return labels

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image: (height, width, 3)."""
        return self.height, self.width, 3

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        """Validate an index (negative counts from the end), raising IndexError as sequences do."""
        i = int(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} is out of range for RandomImages of length {self.length}")
        return i

    def _fill(self, index: int, out: np.ndarray) -> None:
        """Write image `index` into `out` (H, W, 3 uint8) from its own random stream."""
        nbytes = self.height * self.width * 3
        bits = np.random.SFC64(np.random.SeedSequence([self.seed, index]))  # 2.5x Philox's speed here
        raw = bits.random_raw((nbytes + 7) // 8).view(np.uint8)
        out.reshape(-1)[:] = raw[:nbytes]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """Image `index` as an (H, W, 3) uint8 array, and its label."""
        i = self._index(index)
        image = np.empty(self.shape, dtype=np.uint8)
        self._fill(i, image)
        return image, i % self.num_classes

    def batch(self, indices: npt.ArrayLike, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of `indices`: (N, H, W, 3) uint8 and (N,) int64; ``images[k]`` equals ``self[indices[k]]``.

        Args:
            indices: sample indices (negative ones count from the end).
            out: optional C-contiguous, writable (N, H, W, 3) uint8 array to fill instead of allocating.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + self.length, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.length):
            raise IndexError(f"indices out of range for RandomImages of length {self.length}")
        want = (len(idx), *self.shape)
        if out is None:
            out = np.empty(want, dtype=np.uint8)
        elif out.shape != want or out.dtype != np.uint8 or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"out must be a writable C-contiguous uint8 array of shape {want}, got {out.dtype} "
                             f"{out.shape} (contiguous={out.flags.c_contiguous}, writable={out.flags.writeable})")
        for k, i in enumerate(idx.tolist()):
            self._fill(i, out[k])
        return out, idx % self.num_classes

    def __repr__(self) -> str:
        return (f"RandomImages(num_classes={self.num_classes}, size=({self.height}, {self.width}), "
                f"length={self.length}, seed={self.seed})")
