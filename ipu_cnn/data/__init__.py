"""Data path: transforms (parameters), the native decoder, datasets and the shared-memory loader."""
from __future__ import annotations

from ipu_cnn.data.decode import (
    DEFAULT_MAX_PIXELS,
    DecodeError,
    DecodeStats,
    ImageHeader,
    decode_batch,
    decode_image,
    read_header,
)
from ipu_cnn.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodeError",
    "DecodeStats",
    "EvalTransform",
    "ImageHeader",
    "TrainTransform",
    "decode_batch",
    "decode_image",
    "read_header",
]
