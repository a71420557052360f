"""Model registry: the Graphcore app's model names and any timm model, built with the normaliser as first op.

Names: ``resnet18/34/50/101/152``, ``efficientnet-b0`` .. ``efficientnet-b7`` (the Graphcore spelling, mapped to
timm's ``efficientnet_bN``) and any name ``timm.list_models()`` knows. Every model comes back as a `NormalizedModel`
in channels_last memory format whose ``.model`` is the plain timm network, so checkpoints hold a state dict that
``timm.create_model(name, num_classes=...).load_state_dict`` accepts as is.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any, Mapping

import timm
import timm.models
import torch
from torch import nn

from ipu_cnn._serialization import CHECKSUMS_KEY, UnsafeFileError, load_weights_only, verify_checksums
from ipu_cnn.models.normalize import IMAGENET_MEAN, IMAGENET_STD, InputNormalizer, NormalizedModel
from ipu_cnn.models.preprocessing import EvalPreprocessing

#: Image sides of the published recipes (the EfficientNet paper's resolutions), where they differ from timm's.
_RECIPE_IMAGE_SIZE: dict[str, int] = {
    "efficientnet_b0": 224, "efficientnet_b1": 240, "efficientnet_b2": 260, "efficientnet_b3": 300,
    "efficientnet_b4": 380, "efficientnet_b5": 456, "efficientnet_b6": 528, "efficientnet_b7": 600,
}


@dataclass(frozen=True)
class ModelSpec:
    """What the application needs to know about a model before building it: its timm name and its default eval
    preprocessing (the one record of it, `EvalPreprocessing`; the fields below read it)."""

    name: str
    eval: EvalPreprocessing

    @property
    def image_size(self) -> int:
        return self.eval.image_size

    @property
    def crop_pct(self) -> float:
        return self.eval.crop_pct

    @property
    def interpolation(self) -> str:
        return self.eval.interpolation

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.eval.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.eval.std


def resolve_model_name(name: str) -> str:
    """The timm name for `name` (``efficientnet-b4`` -> ``efficientnet_b4``); an unknown name is a `ValueError`
    that suggests the closest known ones."""
    candidates = [name, name.replace("-", "_"), name.lower().replace("-", "_")]
    for candidate in candidates:
        if timm.models.is_model(candidate):
            return candidate
    known = timm.list_models()
    close = difflib.get_close_matches(name.lower().replace("-", "_"), known, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}: use resnet50, efficientnet-b0, efficientnet-b4, resnet18 or any name "
                     f"from timm.list_models().{hint}")


def model_spec(name: str) -> ModelSpec:
    """Default input size, eval crop fraction, interpolation and channel statistics of model `name`."""
    timm_name = resolve_model_name(name)
    cfg = timm.models.get_pretrained_cfg(timm_name)
    cfg_dict: Mapping[str, Any] = cfg.to_dict() if cfg is not None else {}
    input_size = cfg_dict.get("input_size") or (3, 224, 224)
    image_size = _RECIPE_IMAGE_SIZE.get(timm_name, int(input_size[-1]))
    crop_pct = float(cfg_dict.get("crop_pct") or 0.875)
    if timm_name in _RECIPE_IMAGE_SIZE or timm_name.startswith("resnet"):
        crop_pct = 0.875  # the published recipes' resize-256-crop-224 ratio, not timm's training-recipe crops
    interpolation = cfg_dict.get("interpolation") or "bilinear"
    if interpolation not in ("bilinear", "bicubic"):
        interpolation = "bilinear"
    mean = tuple(cfg_dict.get("mean") or IMAGENET_MEAN)
    std = tuple(cfg_dict.get("std") or IMAGENET_STD)
    return ModelSpec(timm_name, EvalPreprocessing(image_size, crop_pct, interpolation,
                                                  mean, std))  # type: ignore[arg-type]


def _load_weights_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from `path`: a plain ``state_dict`` file or one of this project's checkpoints, loaded
    weights-only (a crafted file cannot run code) and, for a checkpoint with checksums, verified."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--weights {path!r}: no such file; give a state dict saved by torch.save or an "
                                "ipu_cnn checkpoint (.pt)")
    try:
        obj = load_weights_only(path)
    except UnsafeFileError as error:
        raise ValueError(f"--weights {error}") from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(f"--weights {path!r}: not a readable state dict or checkpoint ({type(error).__name__}: "
                         f"{error})") from error
    if isinstance(obj, Mapping) and CHECKSUMS_KEY in obj:
        verify_checksums(obj, f"--weights {path}")
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"--weights {path!r} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    zero_init_residual: bool | None = None,
    normalize: bool = True,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    channels_last: bool = True,
) -> NormalizedModel:
    """Build model `name` for `num_classes` classes, with an `InputNormalizer` first (unless `normalize` is False).

    Args:
        pretrained: load timm's pretrained weights (needs the network, or the Hugging Face cache); the classifier is
            re-initialised when `num_classes` differs from the weights'.
        weights: a local state dict (or ipu_cnn checkpoint) to load, strictly, after building.
        drop_rate, drop_path_rate: classifier dropout and stochastic depth, passed to timm when given.
        zero_init_residual: initialise the last BatchNorm gamma of each residual block to zero (timm's
            ``zero_init_last``; ResNets only).
        normalize: put the normaliser in the model; False when the host normalises.
        mean, std: channel statistics on the 0..1 scale (default: the model's timm config).
    """
    spec = model_spec(name)
    kwargs: dict[str, Any] = {"num_classes": int(num_classes)}
    if drop_rate is not None:
        kwargs["drop_rate"] = float(drop_rate)
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = float(drop_path_rate)
    if zero_init_residual is not None:
        kwargs["zero_init_last"] = bool(zero_init_residual)
    try:
        model = timm.create_model(spec.name, pretrained=pretrained, **kwargs)
    except TypeError as error:
        if zero_init_residual is not None and "zero_init_last" in str(error):
            raise ValueError(f"--zero-init-residual applies to residual networks with BatchNorm (ResNets), not to "
                             f"{spec.name}: drop the option") from error
        raise ValueError(f"timm cannot build {spec.name} with {kwargs}: {error}") from error
    except (OSError, RuntimeError, ConnectionError) as error:
        if not pretrained:
            raise
        raise RuntimeError(f"could not fetch the pretrained weights of {spec.name} ({type(error).__name__}: {error}). "
                           "Without network access, download them where there is one (timm caches them under "
                           "~/.cache/huggingface) and pass --weights FILE, or drop --pretrained") from error
    if weights:
        state = _load_weights_file(weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"--weights {weights!r} does not fit {spec.name} with {num_classes} classes: {error}") \
                from error
    normalizer = InputNormalizer(mean or spec.mean, std or spec.std) if normalize else None
    wrapped = NormalizedModel(model, normalizer)
    if channels_last:
        wrapped = wrapped.to(memory_format=torch.channels_last)
    return wrapped


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
