"""`FileList`: images listed in a CSV, TSV or space-separated file of ``path,label`` rows.

For ImageNet's flat validation folder and its labels file, Caffe's ``train.txt``/``val.txt``, or any custom split.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from ipu_cnn.data.datasets.base import FileDataset, PathLike

__all__ = ["FileList"]

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
