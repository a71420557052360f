"""Python face of the native core: decode a batch of images into a caller-owned buffer, or one image.

JPEG files are decoded by the native core without the GIL; files that are not JPEG but that Pillow reads (ImageNet has
a PNG named .JPEG) are decoded by Pillow and then cropped, resized and flipped by the same native code, so the
geometry and the random draws are the same either way.
"""
from __future__ import annotations

import io
import operator
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, Sequence, Union

import numpy as np

from ipu_cnn import _C
from ipu_cnn.data.transforms import EvalTransform, TrainTransform, Transform

if TYPE_CHECKING:
    from PIL import Image



class ShardMember(NamedTuple):
    """One image stored inside a tar shard: the bytes ``[offset, offset + length)`` of the file at ``path``.

    The native core reads it with ``pread`` from a descriptor each worker thread keeps open (no per-sample open());
    ``key`` is the sample's WebDataset key (the member name without its extension), only used to name it in errors.
    """

    path: str
    offset: int
    length: int
    key: str = ""

    @property
    def name(self) -> str:
        """How errors name the sample: ``shard.tar[KEY]``."""
        return f"{self.path}[{self.key or f'@{self.offset}'}]"


Source = Union[str, "os.PathLike[str]", ShardMember, bytes, bytearray, memoryview, np.ndarray]

#: Pillow's DecompressionBombError threshold (twice Image.MAX_IMAGE_PIXELS).
DEFAULT_MAX_PIXELS = 178_956_970
#: Progressive JPEGs with more scans than this are refused (real files have up to ~20).
DEFAULT_MAX_SCANS = 500
#: Coefficient blocks the scans of a progressive JPEG may decode, summed over its scans (each scan costs a pass over
#: its components' blocks however little data it holds): 2**26 is 8 full passes over the largest 4:4:4 image
#: DEFAULT_MAX_PIXELS allows; the usual 10-scan progression makes about 5.
DEFAULT_MAX_SCAN_BLOCKS = 1 << 26
#: Image files larger than this (1 GiB) are refused before they are read.
DEFAULT_MAX_FILE_BYTES = 1 << 30


class DecodeError(ValueError):
    """An image could not be decoded. ``source`` names the file (or the in-memory buffer), ``reason`` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ImageHeader(NamedTuple):
    """What the header says, without decoding pixels."""

    width: int
    height: int
    components: int
    format: str  # "JPEG", or Pillow's format name for other images
    progressive: bool
    orientation: int  # EXIF orientation 1..8


@dataclass
class DecodeStats:
    """Counts accumulated over calls of decode_batch (pass the same object to each call)."""

    images: int = 0
    warnings: int = 0  # libjpeg corrupt-data warnings on images that still decoded
    non_jpeg: int = 0  # images decoded through Pillow
    errors: int = 0
    dct_scales: Counter = field(default_factory=Counter)  # scale numerator (1, 2, 4, 8 of 8) -> images

    def as_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "warnings": self.warnings,
            "non_jpeg": self.non_jpeg,
            "errors": self.errors,
            "dct_scales": {f"{k}/8": v for k, v in sorted(self.dct_scales.items())},
        }


def _options(
    max_pixels: int | None,
    max_scans: int,
    strict: bool,
    apply_exif_orientation: bool,
    dct_scaling: bool,
    decode_only: bool = False,
    *,
    max_scan_blocks: int | None = DEFAULT_MAX_SCAN_BLOCKS,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> "_C.DecodeOptions":
    o = _C.DecodeOptions()
    o.decode_only = bool(decode_only)
    o.max_scan_blocks = _limit("max_scan_blocks", max_scan_blocks)
    o.max_file_bytes = _limit("max_file_bytes", max_file_bytes)
    o.max_pixels = 0 if max_pixels is None else int(max_pixels)
    o.max_scans = int(max_scans)
    o.strict = bool(strict)
    o.apply_exif_orientation = bool(apply_exif_orientation)
    o.dct_scaling = bool(dct_scaling)
    return o


def _limit(name: str, value: int | None) -> int:
    """A limit for the native core: a positive integer, or None for no limit (0 there)."""
    if value is None:
        return 0
    try:
        v = operator.index(value)
    except TypeError:
        v = 0
    if not 0 < v < 1 << 63:
        raise ValueError(f"{name} must be a positive integer below 2**63, or None for no limit; got {value!r}")
    return v


def _u64(name: str, value: object) -> int:
    """value as an int in [0, 2**64), the range of the native core's seeds, epochs and sample indices."""
    try:
        v = operator.index(value)  # refuses floats, which int() would truncate
    except TypeError:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}") from None
    if not 0 <= v < 1 << 64:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {v}")
    return v


def _indices(indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Sample indices as a uint64 array, each checked to lie in [0, 2**64)."""
    seq = indices if isinstance(indices, np.ndarray) else list(indices)
    arr = np.asarray(seq)
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            pos = int(np.argmin(arr.ravel()))
            raise ValueError(f"indices[{pos}] must be an integer in [0, 2**64), got {int(arr.ravel()[pos])}")
        return np.ascontiguousarray(arr, dtype=np.uint64)
    if isinstance(seq, np.ndarray) and arr.dtype.kind != "O":
        raise ValueError(f"indices must be integers in [0, 2**64), got an array of {arr.dtype}")
    # Python ints numpy could not hold in one integer dtype (e.g. -1 beside 2**63 makes float64): check each one.
    return np.array([_u64(f"indices[{i}]", v) for i, v in enumerate(seq)], dtype=np.uint64)


def _native_source(source: Source) -> str | ShardMember | bytes | bytearray | memoryview | np.ndarray:
    if isinstance(source, ShardMember):
        return source
    if isinstance(source, (bytes, bytearray, memoryview, np.ndarray)):
        return source
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    raise TypeError(f"a source must be a path or a bytes-like object (or a ShardMember of a tar shard), got "
                    f"{type(source).__name__}")


def source_name(source: Source, position: int | None = None) -> str:
    """How errors name a source: its path, ``shard.tar[KEY]`` for a shard member, or a description of a buffer."""
    if isinstance(source, ShardMember):
        return source.name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    where = "" if position is None else f" #{position}"
    return f"<in-memory image{where}, {memoryview(source).nbytes} bytes>"


#: What a path that is not a regular file is, in the words the native core uses for the same refusal.
_FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _refuse_irregular(mode: int, name: str) -> None:
    """Raise DecodeError unless ``mode`` (an ``st_mode``) is a regular file's. Reading a named pipe would block forever
    and a device may never end, so only regular files are images."""
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise DecodeError(name, f"is {kind}, not an image file (only regular files are read)")


def _check_regular_file(path: str, name: str) -> None:
    """Refuse a path that is missing or not a regular file before anything opens it (os.stat never blocks)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise DecodeError(name, f"cannot open file: {e.strerror or e}") from None
    _refuse_irregular(mode, name)


def _open_regular_file(path: str, name: str) -> BinaryIO:
    """Open a regular file for reading without ever blocking: checked by path first (so a device is never opened),
    opened non-blocking (a FIFO swapped in after the check opens at once instead of waiting for a writer), then the
    descriptor itself is checked, which closes the race."""
    _check_regular_file(path, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise DecodeError(name, f"cannot open file: {e.strerror or e}") from None
    try:
        _refuse_irregular(os.fstat(fd).st_mode, name)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _open_source(source: Source, name: str, max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> BinaryIO:
    """A file object over a source for Pillow: the bytes of the regular file a path names (read whole, up to
    ``max_file_bytes``), or the in-memory bytes. Pillow then reads from memory: a header that claims a huge field
    (a "4 GB comment" in a 21-byte file) gets what the file holds, where a file object's read(n) would allocate n
    bytes up front. A shard member is read with one pread of its range."""
    if isinstance(source, ShardMember):
        return io.BytesIO(_read_member(source, name, max_file_bytes))
    if isinstance(source, (str, os.PathLike)):
        with _open_regular_file(os.fspath(source), name) as f:
            size = os.fstat(f.fileno()).st_size
            if max_file_bytes and size > max_file_bytes:
                raise DecodeError(name, f"file of {size} bytes, above the limit of {max_file_bytes} bytes "
                                        "(raise max_file_bytes to allow it)")
            try:
                return io.BytesIO(f.read())
            except OSError as e:
                raise DecodeError(name, f"cannot read file: {e.strerror or e}") from None
    return io.BytesIO(memoryview(source).tobytes())


def _read_member(member: ShardMember, name: str, max_file_bytes: int | None) -> bytes:
    """The bytes of a shard member (the Pillow path's read; the native core reads JPEG members itself)."""
    if max_file_bytes and member.length > max_file_bytes:
        raise DecodeError(name, f"member of {member.length} bytes, above the limit of {max_file_bytes} bytes "
                                "(raise max_file_bytes to allow it)")
    try:
        with _open_regular_file(member.path, name) as f:
            data = os.pread(f.fileno(), member.length, member.offset)
    except OSError as e:
        raise DecodeError(name, f"cannot read shard: {e.strerror or e}") from None
    if len(data) != member.length:
        raise DecodeError(name, f"member at bytes {member.offset}..{member.offset + member.length} ends early: the "
                                f"shard holds only {member.offset + len(data)} bytes (truncated)")
    return data


def _describe(error: BaseException) -> str:
    """An exception as a reason: its message, led by its type where the message alone would not say what went wrong
    (a KeyError's message is only the key; a MemoryError's is often empty)."""
    text = str(error)
    if isinstance(error, (OSError, SyntaxError)) or (type(error) is ValueError and text):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _pil_decode(
    source: Source, max_pixels: int | None, apply_exif_orientation: bool, name: str, native_reason: str
) -> np.ndarray:
    """Decode an image the native core leaves to Pillow (not JPEG, or a JPEG process this libjpeg lacks) into an RGB
    array, with the same pixel limit. native_reason says why the native core declined it.

    Raises only DecodeError: whatever Pillow raises for one file (its many exception types, MemoryError included)
    is a fact about that file, and a batch must be able to go on without it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with _open_source(source, name) as fp, Image.open(fp) as im:
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise DecodeError(
                    name,
                    f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} (decompression bomb guard; "
                    "raise max_pixels to allow it)",
                )
            if apply_exif_orientation and _exif_orientation(im) != 1:
                im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                # Composite transparency on black, as convert("RGB") does for RGBA.
                im = im.convert("RGBA").convert("RGB")
            else:
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy(order="C")
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(name, f"{native_reason}, and not an image format Pillow can read") from None
    except Exception as e:  # noqa: BLE001 - every failure of this one file becomes its DecodeError
        raise DecodeError(name, f"{native_reason}, and Pillow could not decode it either: {_describe(e)}") from None


def _exif_orientation(im: "Image.Image") -> int:
    """EXIF orientation 1..8 of an opened image; 1 when absent or malformed, as the native core reads JPEGs."""
    try:
        value = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is metadata to ignore, not a broken image
        return 1
    return value if 1 <= value <= 8 else 1


def _pil_transform(
    source: Source, out: np.ndarray, transform: Transform, seed: int, epoch: int, index: int,
    max_pixels: int | None, apply_exif_orientation: bool, name: str, native_reason: str,
) -> None:
    """The Pillow path of one sample: decode with Pillow, then crop, resize and flip into out with the native
    resampler (the same geometry and random draws as a JPEG gets). Raises only DecodeError."""
    pixels = _pil_decode(source, max_pixels, apply_exif_orientation, name, native_reason)
    try:
        _C.transform_pixels(pixels, out, transform.native(), transform.filter, int(seed), int(epoch), int(index))
    except Exception as e:  # noqa: BLE001 - as in _pil_decode: one sample's failure, not the batch's
        h, w = pixels.shape[:2]
        raise DecodeError(name, f"{native_reason}; Pillow decoded it ({w}x{h}), but it cannot be cropped and resized: "
                                f"{_describe(e)}") from None


def _pillow_reason(report: "_C.DecodeReport", name: str) -> str:
    """Why the native core left an image to Pillow; a refusal (status ERROR) becomes the source's DecodeError."""
    if report.status == _C.Status.ERROR:
        raise DecodeError(name, report.reason)
    return report.reason


def decode_batch(
    sources: Sequence[Source],
    out: np.ndarray,
    transform: Transform,
    *,
    seed: int = 0,
    epoch: int = 0,
    indices: Sequence[int] | np.ndarray | None = None,
    num_threads: int | None = None,
    on_error: str = "raise",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_scans: int = DEFAULT_MAX_SCANS,
    strict: bool = False,
    apply_exif_orientation: bool = False,
    dct_scaling: bool = True,
    stats: DecodeStats | None = None,
    decode_only: bool = False,
    max_scan_blocks: int | None = DEFAULT_MAX_SCAN_BLOCKS,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> list[tuple[int, str, str]]:
    """Decode, crop, resize and flip ``sources[i]`` into ``out[i]`` (N, H, W, 3 uint8, C-contiguous, writable).

    ``indices`` are the samples' dataset indices (default 0..N-1); with ``seed`` and ``epoch`` they key each sample's
    random crop and flip, so results do not depend on threads, batch composition or order. The GIL is released for
    the whole batch. ``on_error="raise"`` decodes the whole batch, then raises DecodeError for the first bad source;
    ``"report"`` zero-fills bad slots and returns their ``(position, source, reason)``. ``decode_only`` is the
    benchmark floor: JPEGs are decoded (only the region the crop needs) but not resized, and ``out`` is left as is.
    ``seed``, ``epoch`` and ``indices`` are integers in [0, 2**64). Limits (None lifts one): ``max_pixels`` per image,
    ``max_scans`` and ``max_scan_blocks`` (8x8 blocks decoded, summed over scans) per progressive JPEG,
    ``max_file_bytes`` per file read from a path.
    """
    if on_error not in ("raise", "report"):
        raise ValueError(f"on_error must be 'raise' or 'report', got {on_error!r}")
    if not isinstance(transform, (TrainTransform, EvalTransform)):
        raise TypeError(f"transform must be a TrainTransform or EvalTransform, got {type(transform).__name__}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None (all available CPUs), got {num_threads}")
    sources = list(sources)
    native = [_native_source(s) for s in sources]
    crop = transform.native()
    seed, epoch = _u64("seed", seed), _u64("epoch", epoch)
    idx = None if indices is None else _indices(indices)
    opts = _options(max_pixels, max_scans, strict, apply_exif_orientation, dct_scaling, decode_only,
                    max_scan_blocks=max_scan_blocks, max_file_bytes=max_file_bytes)
    raw_failures, warnings, scales = _C.decode_batch(
        native, out, crop, transform.filter, seed, epoch, idx, 0 if num_threads is None else num_threads, opts
    )
    failures: list[tuple[int, str, str]] = []
    non_jpeg = 0
    for pos, status, reason in raw_failures:
        name = source_name(sources[pos], pos)
        if status == _C.Status.FALLBACK:
            index = pos if idx is None else int(idx[pos])
            try:
                _pil_transform(sources[pos], out[pos], transform, seed, epoch, index, max_pixels,
                               apply_exif_orientation, name, reason)
                non_jpeg += 1
                continue
            except DecodeError as e:
                reason = e.reason
                out[pos] = 0  # a bad slot is zero-filled, whatever the Pillow path left in it
        failures.append((pos, name, reason))
    if stats is not None:
        stats.images += len(sources) - len(failures)
        stats.warnings += warnings
        stats.non_jpeg += non_jpeg
        stats.errors += len(failures)
        for num, count in enumerate(scales):
            if count:
                stats.dct_scales[num] += count
    if failures and on_error == "raise":
        pos, name, reason = failures[0]
        more = f" (and {len(failures) - 1} more bad sources in this batch)" if len(failures) > 1 else ""
        raise DecodeError(name, reason + more)
    return failures


def decode_image(
    source: Source,
    transform: Transform | None = None,
    *,
    seed: int = 0,
    epoch: int = 0,
    index: int = 0,
    apply_exif_orientation: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_scans: int = DEFAULT_MAX_SCANS,
    strict: bool = False,
    dct_scaling: bool = True,
    max_scan_blocks: int | None = DEFAULT_MAX_SCAN_BLOCKS,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> np.ndarray:
    """Decode one image to an (H, W, 3) uint8 array: the full frame when ``transform`` is None (equal to Pillow's
    decode), else the transform's output for sample ``index`` of ``epoch`` (the same as decode_batch gives it).
    Arguments and limits as decode_batch's. Any image that cannot be decoded raises DecodeError naming it; a path
    that is not a regular file (a directory, a named pipe, a device) is refused without being opened.
    """
    name = source_name(source)
    seed, epoch, index = _u64("seed", seed), _u64("epoch", epoch), _u64("index", index)
    opts = _options(max_pixels, max_scans, strict, apply_exif_orientation, dct_scaling,
                    max_scan_blocks=max_scan_blocks, max_file_bytes=max_file_bytes)
    native = _native_source(source)
    if isinstance(native, str):
        _check_regular_file(native, name)
    if transform is None:
        try:
            report, pixels = _C.decode_full(native, opts)
        except ValueError as e:  # the source itself refused (e.g. a strided buffer)
            raise DecodeError(name, str(e)) from None
        except MemoryError:
            raise DecodeError(name, "out of memory while decoding it") from None
        if pixels is not None:
            return pixels
        return _pil_decode(source, max_pixels, apply_exif_orientation, name, _pillow_reason(report, name))
    h, w = transform.output_hw
    out = np.empty((h, w, 3), dtype=np.uint8)
    try:
        report = _C.decode_transform(native, out, transform.native(), transform.filter, seed, epoch, index, opts)
    except ValueError as e:  # the source itself refused (e.g. a strided buffer)
        raise DecodeError(name, str(e)) from None
    except MemoryError:
        raise DecodeError(name, "out of memory while decoding it") from None
    if report.status == _C.Status.OK:
        return out
    _pil_transform(source, out, transform, seed, epoch, index, max_pixels, apply_exif_orientation, name,
                   _pillow_reason(report, name))
    return out


def read_header(source: Source, *, max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> ImageHeader:
    """Width, height and layout from the header only (no pixel decode); EXIF orientation is read, not applied.

    Raises only DecodeError, naming the source and the reason. A JPEG's header is read whatever the image's size;
    other formats above Pillow's decompression-bomb limit are refused, as Pillow will not open them. A broken EXIF
    block reads as orientation 1, as it does for a JPEG.
    """
    name = source_name(source)
    native = _native_source(source)
    if isinstance(native, str):
        _check_regular_file(native, name)
    opts = _C.DecodeOptions()
    opts.max_file_bytes = _limit("max_file_bytes", max_file_bytes)
    try:
        report, h = _C.read_header(native, True, opts)
    except ValueError as e:  # the source itself refused (e.g. a strided buffer)
        raise DecodeError(name, str(e)) from None
    except MemoryError:
        raise DecodeError(name, "out of memory while reading it") from None
    if h is not None:
        return ImageHeader(h["width"], h["height"], h["components"], "JPEG", h["progressive"], h["orientation"])
    native_reason = _pillow_reason(report, name)
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_source(source, name, max_file_bytes) as fp, Image.open(fp) as im:
            if im.width < 1 or im.height < 1:  # a format Pillow only identifies (HDF5, BUFR, GRIB, WMF stubs)
                raise DecodeError(name, f"{native_reason}, and Pillow identifies it as {im.format} but cannot decode "
                                        "it (no image size)")
            return ImageHeader(im.width, im.height, len(im.getbands()), str(im.format), False, _exif_orientation(im))
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(name, f"{native_reason}, and not an image format Pillow can read") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for one bad file; each is this file's DecodeError
        raise DecodeError(name, f"{native_reason}, and Pillow cannot read its header either: {_describe(e)}") from None
