"""Models: a registry over timm, the eval preprocessing each model records, the device-side input normaliser, and
the label-smoothing loss."""
from __future__ import annotations

from ipu_cnn.models.loss import LabelSmoothingCrossEntropy, smooth_one_hot
from ipu_cnn.models.normalize import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputNormalizer,
    NormalizedModel,
    unwrap_model,
    unwrap_normalized,
)
from ipu_cnn.models.preprocessing import EvalPreprocessing
from ipu_cnn.models.registry import (
    GRAPHCORE_ALIASES,
    NORM_TYPES,
    ModelShape,
    ModelSpec,
    count_parameters,
    create_model,
    model_spec,
    resolve_model_name,
)

__all__ = [
    "EvalPreprocessing",
    "GRAPHCORE_ALIASES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputNormalizer",
    "LabelSmoothingCrossEntropy",
    "ModelShape",
    "ModelSpec",
    "NORM_TYPES",
    "NormalizedModel",
    "count_parameters",
    "create_model",
    "model_spec",
    "resolve_model_name",
    "smooth_one_hot",
    "unwrap_model",
    "unwrap_normalized",
]
