"""What one image file is and whether training can read it: the check that the packer and the dataset check share.

`inspect_image` reads the header with the native core (GIL released, ~70k headers/s per core), falls back to Pillow for
formats other than JPEG, and decodes the whole image only when asked (``full_decode``) or when the header cannot vouch
for the file: a JPEG without an end-of-image marker near its end (the commonest damage, a cut-off download, passes a
header check and fails in the middle of an epoch) or a JPEG in a process this libjpeg lacks (12-bit, lossless), which
Pillow may only identify. It never raises for a bad file: the verdict is in the result, with the reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace

from ipu_cnn import _C
from ipu_cnn.data.decode import DecodeError, decode_image

__all__ = ["ImageInfo", "inspect_image", "JPEG_COLOR_SPACES", "GRAYSCALE_MODES"]

#: libjpeg's J_COLOR_SPACE values, as the native header reports them.
JPEG_COLOR_SPACES: dict[int, str] = {0: "unknown", 1: "grayscale", 2: "RGB", 3: "YCbCr", 4: "CMYK", 5: "YCCK"}
#: Pillow modes of single-channel (grayscale) images.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
#: How far from the end an end-of-image marker may lie (files may carry a short trailer after it).
_EOI_WINDOW = 1024
#: The libjpeg message of data that ends before the image does.
_TRUNCATED_MESSAGES = ("Premature end of JPEG file", "premature end", "truncated", "image file is truncated")


@dataclass(frozen=True)
class ImageInfo:
    """The verdict on one image file.

    ``problem`` is "" for a good file, else "truncated" (the data ends before the image) or "undecodable" (anything
    else: not an image, a corrupt header or scan, above the pixel limit); ``reason`` then says why, in the words of
    the decoder that refused it. The geometry fields are 0 / "" when the header could not be read.
    """

    format: str = ""  # "JPEG", or Pillow's format name ("PNG", "WEBP", ...)
    width: int = 0
    height: int = 0
    components: int = 0
    color_space: str = ""  # JPEG: a JPEG_COLOR_SPACES name; others: Pillow's mode
    progressive: bool = False
    arithmetic: bool = False
    restart_indexed: bool = False  # carries a valid restart index (``pack``'s default; crops decode only their tiles)
    problem: str = ""
    reason: str = ""
    full_decoded: bool = False  # whether the verdict rests on a full decode, not only the header

    @property
    def ok(self) -> bool:
        """Whether the loader will decode this file."""
        return not self.problem

    @property
    def grayscale(self) -> bool:
        return self.components == 1 or self.color_space in GRAYSCALE_MODES or self.color_space == "grayscale"

    @property
    def cmyk(self) -> bool:
        """CMYK or YCCK (Adobe) data: decodes, but through a colour conversion most loaders get wrong or lack."""
        return self.color_space in ("CMYK", "YCCK")


def _classify(reason: str) -> str:
    return "truncated" if any(m.lower() in reason.lower() for m in _TRUNCATED_MESSAGES) else "undecodable"


def _full_decode(data: bytes, info: ImageInfo) -> ImageInfo:
    """`info` confirmed by decoding every pixel (native for JPEG, Pillow for the rest), or the reason it fails."""
    try:
        decode_image(data)
    except DecodeError as e:
        return replace(info, problem=_classify(e.reason), reason=e.reason, full_decoded=True)
    return replace(info, full_decoded=True)


def _pillow_header(data: bytes, native_reason: str) -> ImageInfo:
    """The header of an image the native core does not decode, read by Pillow (lazily: no pixel is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the pixel limit is judged by the decoder
            with Image.open(io.BytesIO(data)) as im:
                if im.width < 1 or im.height < 1:
                    return ImageInfo(format=str(im.format), problem="undecodable",
                                     reason=f"{native_reason}, and Pillow identifies it as {im.format} but finds no "
                                            "image size")
                return ImageInfo(format=str(im.format), width=im.width, height=im.height,
                                 components=len(im.getbands()), color_space=im.mode,
                                 progressive=bool(im.info.get("progressive") or im.info.get("interlace")))
    except UnidentifiedImageError:
        return ImageInfo(problem="undecodable", reason=f"{native_reason}, and not an image format Pillow can read")
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for one bad file; each is a verdict on it
        return ImageInfo(problem="undecodable", reason=f"{native_reason}, and Pillow cannot read its header either: "
                                                       f"{type(e).__name__}: {e}")


def inspect_image(data: bytes, full_decode: bool = False) -> ImageInfo:
    """Check one image's bytes: header always, every pixel when `full_decode` (or when the header is not enough).

    Safe to call from many threads: the native calls release the GIL and keep per-thread decoders.
    """
    report, header = _C.read_header(data, False, _C.DecodeOptions())
    if report.status == _C.Status.ERROR:
        return ImageInfo(problem=_classify(report.reason), reason=report.reason)
    if header is None:  # FALLBACK: not a JPEG, or a JPEG process this libjpeg lacks
        info = _pillow_header(data, report.reason)
        if info.ok and (full_decode or info.format == "JPEG"):
            return _full_decode(data, info)
        return info
    info = ImageInfo(format="JPEG", width=header["width"], height=header["height"],
                     components=header["components"],
                     color_space=JPEG_COLOR_SPACES.get(header["color_space"], str(header["color_space"])),
                     progressive=bool(header["progressive"]), arithmetic=bool(header["arithmetic"]),
                     restart_indexed=_C.restart_index_info(data)[0] is not None)
    if full_decode or b"\xff\xd9" not in data[-_EOI_WINDOW:]:
        return _full_decode(data, info)
    return info
