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
from ipu_cnn.data.bboxes import BoundingBoxes
from ipu_cnn.data.datasets import CIFAR10, FileList, ImageFolder, ImageNet, RandomImages, TarShards
from ipu_cnn.data.generated import GeneratedImages, make_generated_dataset
from ipu_cnn.data.pixels import transform_raw_batch
from ipu_cnn.data.transforms import EvalTransform, PadCropTransform, TrainTransform

_LAZY = {"Loader", "WorkerDiedError", "WorkerTimeoutError"}  # import torch only when the loader is used


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from ipu_cnn.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'ipu_cnn.data' has no attribute {name!r}")


__all__ = [
    "Loader",
    "WorkerDiedError",
    "WorkerTimeoutError",
    "DEFAULT_MAX_PIXELS",
    "DecodeError",
    "DecodeStats",
    "EvalTransform",
    "FileList",
    "GeneratedImages",
    "ImageFolder",
    "ImageNet",
    "RandomImages",
    "TarShards",
    "ImageHeader",
    "TrainTransform",
    "decode_batch",
    "decode_image",
    "make_generated_dataset",
    "read_header",
    "BoundingBoxes",
    "CIFAR10",
    "PadCropTransform",
    "transform_raw_batch",
]
