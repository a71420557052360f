"""Types of the native core (csrc/module.cpp): region JPEG decode + antialiased resize + flip into caller-owned buffers.

tests/test_native_stub.py checks that this file names exactly what the module exposes, with the same parameters.
Filters are ints: 0 bilinear, 1 bicubic (Pillow's antialiased filters). CropParams.mode: 0 none, 1 train, 2 eval,
3 pad (RandomCrop(image size, padding=pad) + flip on raw pixels).
"""
from typing import Any, ClassVar, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

# A path (read in the worker thread), a (path, offset, length) member of a tar shard (read with pread from a descriptor
# the worker thread keeps open; a named tuple may carry more fields after those), or a C-contiguous buffer of bytes.
_Source = Union[str, tuple[str, int, int], bytes, bytearray, memoryview, npt.NDArray[np.uint8]]

class Status:
    """What became of one image: decoded, left to Pillow (not a JPEG, or a JPEG process this libjpeg lacks), or
    refused (the reason says why). A pybind11 enum: compare with ==, not `is` (each value crossing from C++ is a new
    object)."""

    OK: ClassVar[Status]  # 0
    FALLBACK: ClassVar[Status]  # 1
    ERROR: ClassVar[Status]  # 2
    __members__: ClassVar[dict[str, Status]]
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class CropParams:
    """Crop geometry of a transform (crop.h): torchvision's RandomResizedCrop (train) or Resize + CenterCrop (eval)."""

    mode: int
    out_w: int
    out_h: int
    scale_lo: float
    scale_hi: float
    ratio_lo: float
    ratio_hi: float
    flip_prob: float
    resize_short: int
    resize_w: int
    resize_h: int
    pad: int
    box_tries: int
    min_box_overlap: float
    boxes: Optional[BoxTable]
    def __init__(self) -> None: ...

class BoxTable:
    """Object boxes by dataset index (crop.h): boxes[offsets[i]:offsets[i + 1]] (normalised xmin, ymin, xmax, ymax)
    belong to sample i."""

    def __init__(self, offsets: npt.NDArray[np.int64], boxes: npt.NDArray[np.float64]) -> None: ...
    def __len__(self) -> int: ...
    @property
    def num_boxes(self) -> int: ...

class DecodeOptions:
    """Limits and switches of a decode (jpeg_decoder.h); 0 lifts a limit."""

    max_pixels: int
    max_scans: int
    max_scan_blocks: int
    max_file_bytes: int
    strict: bool
    apply_exif_orientation: bool
    dct_scaling: bool
    decode_only: bool
    restart_index: bool  # use a file's restart index (csrc/restart_index.h) for region decodes; False: normal path
    def __init__(self) -> None: ...

class DecodeReport:
    """The outcome of one single-image call besides its pixels."""

    @property
    def status(self) -> Status: ...
    @property
    def reason(self) -> str: ...
    @property
    def warnings(self) -> int: ...
    @property
    def scale_num(self) -> int: ...

def decode_batch(
    sources: Sequence[_Source],
    out: npt.NDArray[np.uint8],
    crop: CropParams,
    filter: int,
    seed: int,
    epoch: int,
    indices: Optional[npt.NDArray[np.uint64]],
    num_threads: int,
    options: DecodeOptions,
) -> tuple[list[tuple[int, Status, str]], int, list[int]]:
    """Every source into out[i] (N, H, W, 3); returns (failures [(position, status, reason)], warnings, images per DCT
    scale numerator). A failed slot is zero-filled; FALLBACK slots are for the caller to decode with Pillow."""

def decode_full(source: _Source, options: DecodeOptions) -> tuple[DecodeReport, Optional[npt.NDArray[np.uint8]]]:
    """Full-frame RGB decode; the array is None unless report.status is OK."""

def decode_transform(
    source: _Source,
    out: npt.NDArray[np.uint8],
    crop: CropParams,
    filter: int,
    seed: int,
    epoch: int,
    index: int,
    options: DecodeOptions,
) -> DecodeReport:
    """One sample of decode_batch into out (H, W, 3); out holds it when report.status is OK."""

def read_header(
    source: _Source, with_orientation: bool = True, options: DecodeOptions = ...
) -> tuple[DecodeReport, Optional[dict[str, Any]]]:
    """(report, {width, height, components, color_space, progressive, arithmetic, orientation}); the dict is None
    unless report.status is OK."""

def transform_pixels(
    pixels: npt.NDArray[np.uint8],
    out: npt.NDArray[np.uint8],
    crop: CropParams,
    filter: int,
    seed: int,
    epoch: int,
    index: int,
) -> None:
    """Crop + resize + flip decoded pixels (H, W, 3 or 4) into out as a JPEG sample would be; ValueError when it
    cannot."""

def sample_crop(
    crop: CropParams, width: int, height: int, seed: int, epoch: int, index: int
) -> tuple[tuple[float, float, float, float], bool]:
    """The (left, top, right, bottom) box and flip a sample gets, without decoding."""

def uniform(seed: int, epoch: int, index: int, count: int) -> list[float]:
    """The first `count` uniform draws of a sample's generator."""

def resize(
    pixels: npt.NDArray[np.uint8],
    box: Sequence[float],
    out_w: int,
    out_h: int,
    filter: int = 0,
    flip: bool = False,
    scalar: bool = False,
) -> npt.NDArray[np.uint8]:
    """Pillow-semantics antialiased resize of box (for tests)."""

def add_restart_index(
    data: Union[bytes, bytearray, memoryview, npt.NDArray[np.uint8]],
    optimize_coding: bool = True,
    options: DecodeOptions = ...,
    tile_width: int = 64,
) -> bytes:
    """Lossless transcode to baseline whose MCU rows are cut into restart intervals (tiles) of about tile_width pixels
    (<= 0: one per row), their offsets in an APP10 segment (region decodes then read only the tiles they cover);
    DecodeError says why a file is not transcoded. Already-indexed bytes come back unchanged."""

def restart_index_info(
    data: Union[bytes, bytearray, memoryview, npt.NDArray[np.uint8]],
) -> tuple[Optional[dict[str, Any]], str]:
    """({width, height, mcu_width, mcu_height, restart_interval, version, intervals, mcu_rows, tiles_per_row,
    tile_width, scan_start, scan_bytes, segment_offset, segment_bytes, offsets}, "") for a valid index, else (None,
    why it is absent or not trusted)."""
def transform_raw_batch(
    images: npt.NDArray[np.uint8],
    out: npt.NDArray[np.uint8],
    crop: CropParams,
    filter: int,
    seed: int,
    epoch: int,
    indices: npt.NDArray[np.uint64],
    num_threads: int,
) -> list[tuple[int, str]]:
    """Transform images[indices[i]] (raw (N, H, W, 3 or 4) uint8 pixels) into out[i]; returns failures
    [(position, reason)], each failed slot zero-filled."""

def jpeg_version() -> str: ...
def is_libjpeg_turbo() -> bool: ...
def source_digest() -> str: ...
def simd_path() -> str:
    """The resampler's fast path in use: 'avx512vbmi', 'avx512vnni', 'avxvnni', 'avx2', 'sse4.1',
    'neon' or 'scalar'."""
def simd_paths() -> list[str]:
    """Every resampler path this CPU runs, widest first ('scalar' last); IPU_CNN_RESAMPLE_ISA may name any."""
def available_cpus() -> int: ...
def io_stats() -> dict[str, int]:
    """Process-wide counters of source reads: 'opens' (open() calls), 'reads' (read/pread calls), 'bytes'."""

def reset_io_stats() -> None: ...
def drop_cached_files() -> None:
    """Close the shard descriptors every thread keeps, now (a shard may have changed, or its copy be released)."""

