"""What the fuzz targets share: the corpora's location, per-input knobs, the ways a source can be passed, the oracle.

A target is a module with ``one_input(data: bytes) -> None`` that returns when ipu_cnn behaved (a valid result, or a
ValueError/DecodeError for bad input) and raises anything else (AssertionError when a result is wrong); a crash or a
sanitizer report ends the process. ``fuzz_main`` hands it to atheris. Nothing here imports ipu_cnn at module level:
the targets import it inside ``instrumented()`` so atheris can add its Python code to the coverage map.
"""
from __future__ import annotations

import contextlib
import os
import random
import struct
import sys
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: Where the test corpora are: $IPU_CNN_CORPORA, else ../shared/corpora beside the checkout (as the tests look).
CORPORA = Path(os.environ.get("IPU_CNN_CORPORA", REPO.parent / "shared" / "corpora"))

#: Pixel limits the targets draw from. The default (179 Mpx) is left out on purpose: one input claiming that size
#: would allocate 0.5 GB and take seconds under ASan; the guard is the same code whatever the number.
MAX_PIXELS = (1 << 22, 1 << 22, 1 << 16, 1 << 24)

#: Bytes that separate sources in a decode_batch input (also in its libFuzzer dictionary).
SOURCE_SEPARATOR = b"|ipu-next-source|"

#: Named checks that $IPU_CNN_FUZZ_SKIP_CHECKS (comma-separated) turns off, to fuzz past a known finding.
SKIP_CHECKS = frozenset(filter(None, os.environ.get("IPU_CNN_FUZZ_SKIP_CHECKS", "").split(",")))

#: How a source can be handed to the API; "strided" and "reversed" are non-contiguous numpy views, which the API
#: refuses (NONCONTIGUOUS_FORMS: the targets check the refusal). Forms named in $IPU_CNN_FUZZ_SKIP_FORMS
#: (comma-separated) are left out, to fuzz past a known finding until it is fixed.
ALL_SOURCE_FORMS = ("bytes", "bytearray", "memoryview", "ndarray", "strided", "reversed", "path")
SOURCE_FORMS = tuple(f for f in ALL_SOURCE_FORMS if f not in os.environ.get("IPU_CNN_FUZZ_SKIP_FORMS", "").split(","))
#: The forms whose bytes are not one C-contiguous buffer (of two bytes or more; shorter views are contiguous):
#: the native core reads a source as one block of bytes, so it refuses these (a DecodeError from decode_image and
#: read_header, a ValueError for the whole call from decode_batch) with a message containing CONTIGUITY_REFUSAL.
NONCONTIGUOUS_FORMS = frozenset({"strided", "reversed"})
CONTIGUITY_REFUSAL = "must be a C-contiguous buffer of bytes"


#: The resample target's input record, then pixel bytes: width, height (u16: the image a crop is sampled for),
#: out_w - 1, out_h - 1 (u8), flags (u8: BICUBIC, FLIP, RGBX pixels, EVAL transform, INT_SIZE square size), pixel
#: image width - 1 and height - 1 (u8, mod 64), seed (u32), epoch (u16), index (u32), box (4 f64), then scale lo/hi,
#: ratio lo/hi, flip_prob, crop_pct (6 f64), then EvalTransform's resize_size as two u32 (0, 0: not given, crop_pct
#: is; (n, 0): the int n; (h, w): (h, w)). Short inputs are zero-padded.
RECORD = struct.Struct("<HHBBBBBIHI4d6dII")
BICUBIC, FLIP, RGBX, EVAL, INT_SIZE = 1, 2, 4, 8, 16


class Record(NamedTuple):
    width: int
    height: int
    out_w: int
    out_h: int
    flags: int
    pix_w: int
    pix_h: int
    seed: int
    epoch: int
    index: int
    box: tuple[float, float, float, float]
    params: tuple[float, float, float, float, float, float]  # scale lo/hi, ratio lo/hi, flip_prob, crop_pct
    resize: tuple[int, int] = (0, 0)  # EvalTransform's resize_size: (0, 0) none, (n, 0) n, (h, w) (h, w)


def parse_record(data: bytes) -> tuple[Record, bytes]:
    """The record at the start of ``data`` and the pixel bytes after it."""
    head = data[: RECORD.size].ljust(RECORD.size, b"\0")
    v = RECORD.unpack(head)
    rec = Record(max(1, v[0]), max(1, v[1]), v[2] + 1, v[3] + 1, v[4], v[5] % 64 + 1, v[6] % 64 + 1, v[7], v[8], v[9],
                 tuple(v[10:14]), tuple(v[14:20]), tuple(v[20:22]))
    return rec, data[RECORD.size:]


def pack_record(rec: Record, pixels: bytes = b"") -> bytes:
    """The input bytes for a record (the seed builder's side of ``parse_record``)."""
    return RECORD.pack(rec.width, rec.height, rec.out_w - 1, rec.out_h - 1, rec.flags, rec.pix_w - 1, rec.pix_h - 1,
                       rec.seed, rec.epoch, rec.index, *rec.box, *rec.params, *rec.resize) + pixels


class Knobs:
    """Options drawn deterministically from the input itself (a CRC-32 keyed generator): rerunning a saved input
    replays the same call, and any mutation of the input may flip any option."""

    def __init__(self, data: bytes, salt: int = 0) -> None:
        self.rng = random.Random(zlib.crc32(data) ^ (salt * 0x9E3779B9))

    def bit(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def int(self, lo: int, hi: int) -> int:
        """Uniform in [lo, hi]."""
        return self.rng.randint(lo, hi)

    def choice(self, options: tuple | list) -> object:
        return options[self.rng.randrange(len(options))]


def as_source(data: bytes, form: str, slot: int = 0) -> object:
    """``data`` passed the way ``form`` names. Views keep their base alive; "path" writes temp file number ``slot``
    of this process (one per source of a batch)."""
    if form == "bytes":
        return data
    if form == "bytearray":
        return bytearray(data)
    if form == "memoryview":
        return memoryview(data)
    if form == "ndarray":
        return np.frombuffer(data, np.uint8).copy()
    if form == "strided":  # every other byte of a buffer twice as long
        base = np.zeros(2 * len(data), np.uint8)
        base[::2] = np.frombuffer(data, np.uint8)
        return base[::2]
    if form == "reversed":  # a negative-stride view whose elements read in order are the data
        return np.frombuffer(data, np.uint8)[::-1].copy()[::-1]
    if form == "path":
        path = _scratch_dir() / f"source{slot}.jpg"
        path.write_bytes(data)
        return str(path)
    raise ValueError(f"unknown source form {form!r}; expected one of {ALL_SOURCE_FORMS}")


def noncontiguous(source: object) -> bool:
    """Whether the API must refuse ``source`` as not C-contiguous (as the buffer protocol judges it: a view of fewer
    than two bytes is contiguous whatever its stride)."""
    return isinstance(source, np.ndarray) and not source.flags.c_contiguous


_SCRATCH: list[Path] = []


def _scratch_dir() -> Path:
    """$IPU_CNN_FUZZ_SCRATCH (fuzz/run.py points it into its work folder), else a new temp folder. libFuzzer ends the
    process without Python's exit handlers, so nothing here could clean up a temp folder."""
    if not _SCRATCH:
        given = os.environ.get("IPU_CNN_FUZZ_SCRATCH")
        folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="ipu_cnn_fuzz_"))
        folder.mkdir(parents=True, exist_ok=True)
        _SCRATCH.append(folder)
    return _SCRATCH[0]


def check_image(img: object, hw: tuple[int, int] | None, what: str) -> None:
    """An image the API returned: a C-contiguous uint8 (H, W, 3) array, of size ``hw`` when given."""
    assert isinstance(img, np.ndarray), f"{what}: returned {type(img).__name__}, not an ndarray"
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, f"{what}: {img.dtype} {img.shape}"
    assert img.shape[0] >= 1 and img.shape[1] >= 1, f"{what}: empty image {img.shape}"
    assert img.flags.c_contiguous, f"{what}: not C-contiguous"
    if hw is not None:
        assert img.shape[:2] == tuple(hw), f"{what}: shape {img.shape}, expected {tuple(hw)} + (3,)"


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """Import ipu_cnn inside this block: under atheris its Python code joins the coverage map (the native code has
    its own counters when built with IPU_CNN_FUZZ_COVERAGE); without atheris (the harness's own tests) it is a plain
    import."""
    try:
        import atheris
    except ImportError:
        yield
        return
    with atheris.instrument_imports(include=["ipu_cnn"]):
        yield


def fuzz_main(one_input: Callable[[bytes], None]) -> None:
    """Run ``one_input`` under atheris (libFuzzer flags and corpus folders come from sys.argv)."""
    import atheris

    import ipu_cnn._C as native

    print(f"INFO: ipu_cnn native core: {native.__file__}", file=sys.stderr, flush=True)
    warnings.simplefilter("ignore")  # Pillow's warnings on damaged files would flood the log; errors still raise
    tolerated = tolerated_exceptions()
    if tolerated:
        print(f"INFO: tolerating known findings: {[t.__name__ for t in tolerated]}", file=sys.stderr, flush=True)

        def guarded(data: bytes) -> None:
            try:
                one_input(data)
            except tolerated:
                pass

        atheris.Setup(sys.argv, guarded)
    else:
        atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def tolerated_exceptions() -> tuple[type[BaseException], ...]:
    """Exception classes named in $IPU_CNN_FUZZ_TOLERATE (comma-separated "module.Class"): known findings that a
    target then treats like a ValueError (fuzz/known_findings, through fuzz/run.py)."""
    import importlib

    found = []
    for name in filter(None, os.environ.get("IPU_CNN_FUZZ_TOLERATE", "").split(",")):
        module, _, cls = name.strip().rpartition(".")
        found.append(getattr(importlib.import_module(module), cls))
    return tuple(found)
