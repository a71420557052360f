"""ImageNet's object bounding boxes, for box-guided training crops (``--use-bbox-info``).

The file is the one Graphcore's application reads from the ImageNet root, ``imagenet_2012_bounding_boxes.csv``, as
TensorFlow's ``process_bounding_boxes.py`` writes it from ImageNet's XML annotations: no header, one row per box,

    n00007846_64193.JPEG,0.0060,0.2620,0.7545,0.9940

that is ``<file name>,<xmin>,<ymin>,<xmax>,<ymax>`` with coordinates normalised to [0, 1] by the image's width and
height (Graphcore multiplies them by the image size). An image may have several rows. Rows are matched to a dataset's
samples by file name (the path's last component); images without rows have no boxes and crop as usual.

`BoundingBoxes` is the table by dataset index that `TrainTransform(boxes=...)` hands the native sampler; it pickles
as its two arrays (the loader's worker process rebuilds the native table).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ipu_cnn import _C

__all__ = ["BBOX_FILE_NAME", "BoundingBoxes", "read_bounding_boxes"]

#: The file's name in the ImageNet root, as Graphcore's application looks for it.
BBOX_FILE_NAME = "imagenet_2012_bounding_boxes.csv"
#: Coordinates a little outside [0, 1] (rounding in the annotation tools) are clamped; beyond this they are refused.
_SLACK = 0.01


def _parse_row(fields: list[str], path: str, line_no: int) -> tuple[str, tuple[float, float, float, float]]:
    """One row's file name and (xmin, ymin, xmax, ymax), or a ValueError naming the file, the line and the fix."""
    where = f"{path}, line {line_no}"
    if len(fields) != 5:
        raise ValueError(f"{where}: expected 5 comma-separated fields <file name>,<xmin>,<ymin>,<xmax>,<ymax>, got "
                         f"{len(fields)}: {','.join(fields)[:120]!r}")
    name = fields[0].strip()
    if not name:
        raise ValueError(f"{where}: the file name (first field) is empty")
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise ValueError(f"{where}: coordinates must be numbers, got {','.join(fields[1:])!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: coordinates must be finite, got {','.join(fields[1:])!r}")
    if any(v < -_SLACK or v > 1 + _SLACK for v in values):
        raise ValueError(f"{where}: coordinates must be normalised to [0, 1] by the image's width and height (the "
                         f"layout TensorFlow's process_bounding_boxes.py writes), got {','.join(fields[1:])!r}; "
                         "pixel coordinates must be divided by the image size")
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in values)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"{where}: expected xmin <= xmax and ymin <= ymax (the columns are xmin, ymin, xmax, ymax), "
                         f"got {','.join(fields[1:])!r}")
    return name, (x0, y0, x1, y1)


def read_bounding_boxes(path: str | os.PathLike[str]) -> dict[str, list[tuple[float, float, float, float]]]:
    """The boxes of each file name in a bounding-box CSV (layout in the module docstring). Blank lines are skipped;
    any other malformed line raises ValueError naming the file and the line."""
    path = os.fspath(path)
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    try:
        f = open(path, encoding="utf-8-sig", newline="")  # a BOM, as some editors write, is not part of the name
    except OSError as e:
        raise FileNotFoundError(f"cannot read the bounding-box file {path}: {e.strerror or e}; --use-bbox-info needs "
                                f"{BBOX_FILE_NAME} in the ImageNet root (made by TensorFlow's "
                                "process_bounding_boxes.py from ImageNet's XML boxes), or --no-use-bbox-info to crop without them") from None
    with f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            name, box = _parse_row(line.rstrip("\r\n").split(","), path, line_no)
            boxes.setdefault(name, []).append(box)
    return boxes


class BoundingBoxes:
    """Boxes by dataset index: ``boxes[offsets[i]:offsets[i + 1]]`` (normalised xmin, ymin, xmax, ymax) belong to
    sample i. Immutable; the native table is built once per process, on first use."""

    def __init__(self, offsets: np.ndarray, boxes: np.ndarray) -> None:
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.boxes = np.ascontiguousarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.offsets.flags.writeable = False
        self.boxes.flags.writeable = False
        self._native: Any = None
        self.native()  # checks the arrays now, not in the middle of an epoch

    @classmethod
    def for_paths(cls, paths: Sequence[str], by_name: dict[str, list[tuple[float, float, float, float]]]
                  ) -> BoundingBoxes:
        """The table for a dataset whose sample i is the file ``paths[i]``, matching file names."""
        counts = np.zeros(len(paths) + 1, dtype=np.int64)
        rows: list[tuple[float, float, float, float]] = []
        for i, p in enumerate(paths):
            mine = by_name.get(os.path.basename(p), ())
            counts[i + 1] = len(mine)
            rows.extend(mine)
        return cls(np.cumsum(counts), np.asarray(rows, dtype=np.float64).reshape(-1, 4))

    @classmethod
    def from_csv(cls, csv_path: str | os.PathLike[str], paths: Sequence[str]) -> BoundingBoxes:
        """Read a bounding-box CSV and index it for the files ``paths`` (sample order)."""
        return cls.for_paths(paths, read_bounding_boxes(csv_path))

    def native(self) -> "_C.BoxTable":
        """The native core's table (built on first use in each process)."""
        if self._native is None:
            self._native = _C.BoxTable(self.offsets, self.boxes)
        return self._native

    def of(self, index: int) -> np.ndarray:
        """The boxes of sample ``index`` ((k, 4), possibly empty)."""
        if not 0 <= index < len(self):
            return np.empty((0, 4), dtype=np.float64)
        return self.boxes[self.offsets[index]:self.offsets[index + 1]]

    @property
    def images_with_boxes(self) -> int:
        return int(np.count_nonzero(np.diff(self.offsets)))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getstate__(self) -> dict[str, Any]:
        return {"offsets": self.offsets, "boxes": self.boxes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["offsets"], state["boxes"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"BoundingBoxes({len(self)} samples, {self.images_with_boxes} with boxes, {len(self.boxes)} boxes)"
