"""Model registry: the Graphcore app's model names and any timm model, built with the normaliser as first op.

Names: ``resnet18/34/50/101/152``, ``efficientnet-b0`` .. ``efficientnet-b7`` (the Graphcore spelling, mapped to
timm's ``efficientnet_bN``), Graphcore's ``mobilenet`` / ``mobilenet-v3-small`` / ``mobilenet-v3-large`` (timm's
``mobilenetv2_100`` / ``mobilenetv3_small_100`` / ``mobilenetv3_large_100``, see `GRAPHCORE_ALIASES`) and any name
``timm.list_models()`` knows. Every model comes back as a `NormalizedModel` in channels_last memory format whose
``.model`` is the plain timm network, so checkpoints of the default shape hold a state dict that
``timm.create_model(name, num_classes=...).load_state_dict`` accepts as is.

`ModelShape` carries Graphcore's shape options (``--norm-type``, ``--norm-num-groups``, ``--norm-eps``,
``--batchnorm-momentum``, ``--efficientnet-expand-ratio``, ``--efficientnet-group-dim``); see `create_model` for how
they map onto timm's EfficientNet builder and norm layers.
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import asdict, dataclass, fields
from functools import partial
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


#: Graphcore's model names that are not timm's, and the timm model each builds. Graphcore's ``mobilenet`` was
#: torchvision's ``mobilenet_v2``, the same network as timm's ``mobilenetv2_100``; its MobileNetV3s (ported from
#: ModelZoo.pytorch) are the paper's Small / Large at width 1.0, timm's ``mobilenetv3_small_100`` / ``_large_100``.
GRAPHCORE_ALIASES: dict[str, str] = {
    "mobilenet": "mobilenetv2_100",
    "mobilenet-v3-small": "mobilenetv3_small_100",
    "mobilenet-v3-large": "mobilenetv3_large_100",
}

#: Width and depth multipliers of timm's ``efficientnet_bN`` (the EfficientNet paper's compound scaling), for the
#: builds with another expand ratio than 6.
_EFFICIENTNET_SCALING: dict[str, tuple[float, float]] = {
    "efficientnet_b0": (1.0, 1.0), "efficientnet_b1": (1.0, 1.1), "efficientnet_b2": (1.1, 1.2),
    "efficientnet_b3": (1.2, 1.4), "efficientnet_b4": (1.4, 1.8), "efficientnet_b5": (1.6, 2.2),
    "efficientnet_b6": (1.8, 2.6), "efficientnet_b7": (2.0, 3.1),
}
NORM_TYPES: tuple[str, ...] = ("batch", "group", "none")


@dataclass(frozen=True)
class ModelShape:
    """Graphcore's model-shape options; the defaults build each model as timm defines it.

    Attributes:
        norm_type: ``batch`` keeps the model's BatchNorm layers; ``group`` replaces each by a GroupNorm of
            `norm_num_groups` groups; ``none`` removes them (the activation that followed a fused norm stays).
        norm_num_groups: GroupNorm groups (Graphcore's default 32; its EfficientNet recipes use 4).
        norm_eps: epsilon of every norm layer (None: the model's own, 1e-5 for timm's; GroupNorm then 1e-5).
        batchnorm_momentum: running-statistics momentum of every BatchNorm (None: the model's own, PyTorch's 0.1).
        efficientnet_expand_ratio: inverted-bottleneck expansion of the EfficientNet blocks after the first (6 as
            published; Graphcore's G16 recipes use 4).
        efficientnet_group_dim: channels per group of the EfficientNet ``conv_dw`` convolutions (1: depthwise as
            published; 16: Graphcore's G16 group convolutions).
    """

    norm_type: str = "batch"
    norm_num_groups: int = 32
    norm_eps: float | None = None
    batchnorm_momentum: float | None = None
    efficientnet_expand_ratio: int = 6
    efficientnet_group_dim: int = 1

    def __post_init__(self) -> None:
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"--norm-type {self.norm_type!r}: use one of {', '.join(NORM_TYPES)}")
        if self.norm_num_groups < 1:
            raise ValueError(f"--norm-num-groups must be >= 1, got {self.norm_num_groups}")
        if self.norm_eps is not None and not self.norm_eps > 0:
            raise ValueError(f"--norm-eps must be positive, got {self.norm_eps}")
        if self.batchnorm_momentum is not None and not 0.0 <= self.batchnorm_momentum <= 1.0:
            raise ValueError(f"--batchnorm-momentum must be in [0, 1], got {self.batchnorm_momentum}")
        if self.efficientnet_expand_ratio < 1:
            raise ValueError(f"--efficientnet-expand-ratio must be >= 1, got {self.efficientnet_expand_ratio}")
        if self.efficientnet_group_dim < 1:
            raise ValueError(f"--efficientnet-group-dim must be >= 1, got {self.efficientnet_group_dim}")

    @property
    def is_default(self) -> bool:
        """True when the model builds exactly as timm defines it (so a plain timm state dict fits)."""
        return self == ModelShape()

    @property
    def reshapes_efficientnet(self) -> bool:
        return self.efficientnet_expand_ratio != 6 or self.efficientnet_group_dim != 1

    def record(self) -> dict[str, Any]:
        """The options by name (what checkpoints store under ``model_shape``)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> ModelShape:
        """The shape a record names (a checkpoint's ``model_shape``, or run options holding these keys); missing
        keys take the defaults, other keys are ignored."""
        if not record:
            return cls()
        names = {f.name for f in fields(cls)}
        return cls(**{k: record[k] for k in names if k in record and record[k] is not None})

    def describe(self) -> str:
        """A short label for log lines (empty for the default shape)."""
        parts = []
        if self.reshapes_efficientnet:
            parts.append(f"expand ratio {self.efficientnet_expand_ratio}, group dim {self.efficientnet_group_dim}")
        if self.norm_type == "group":
            parts.append(f"GroupNorm {self.norm_num_groups} groups")
        elif self.norm_type == "none":
            parts.append("no norm layers")
        if self.norm_eps is not None:
            parts.append(f"norm eps {self.norm_eps:g}")
        if self.batchnorm_momentum is not None and self.norm_type == "batch":
            parts.append(f"BatchNorm momentum {self.batchnorm_momentum:g}")
        return ", ".join(parts)


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
    if name.lower() in GRAPHCORE_ALIASES:
        return GRAPHCORE_ALIASES[name.lower()]
    candidates = [name, name.replace("-", "_"), name.lower().replace("-", "_")]
    for candidate in candidates:
        if timm.models.is_model(candidate):
            return candidate
    known = timm.list_models()
    close = difflib.get_close_matches(name.lower().replace("-", "_"), known, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}: use resnet50, efficientnet-b0, efficientnet-b4, mobilenet-v3-large, "
                     f"resnet18 or any name from timm.list_models().{hint}")


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
    shape: ModelShape | None = None,
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
        shape: Graphcore's shape options (default: the model as timm defines it). Another expand ratio or group
            dimension builds ``efficientnet_bN`` with timm's own EfficientNet builder (its block decoder, channel
            rounding and init) from the published block table with that expansion, then gives each ``conv_dw``
            ``max(channels // group_dim, 1)`` groups, as Graphcore's application did; ``norm_type`` group / none then
            replaces every BatchNorm (timm's ``BatchNormAct2d`` by a ``GroupNormAct`` keeping its activation).
    """
    shape = shape or ModelShape()
    spec = model_spec(name)
    kwargs: dict[str, Any] = {"num_classes": int(num_classes)}
    if drop_rate is not None:
        kwargs["drop_rate"] = float(drop_rate)
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = float(drop_path_rate)
    if zero_init_residual is not None:
        kwargs["zero_init_last"] = bool(zero_init_residual)
    if pretrained and (shape.reshapes_efficientnet or shape.norm_type != "batch"):
        raise ValueError(f"pretrained weights exist for {spec.name} as published only: drop --pretrained, or drop "
                         f"the shape options ({shape.describe()})")
    try:
        if shape.reshapes_efficientnet:
            model = _reshaped_efficientnet(spec.name, shape, kwargs)
        else:
            model = timm.create_model(spec.name, pretrained=pretrained, **kwargs)
        _apply_norm_type(model, shape)
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


def _reshaped_efficientnet(timm_name: str, shape: ModelShape, kwargs: dict[str, Any]) -> nn.Module:
    """``efficientnet_bN`` with another expand ratio and group dimension, built by timm's EfficientNet builder (the
    same stem, head, channel rounding, block decoding, SE ratio, swish and init as timm's ``efficientnet_bN``)."""
    from timm.layers import get_act_layer
    from timm.models.efficientnet import EfficientNet, decode_arch_def, round_channels

    if timm_name not in _EFFICIENTNET_SCALING:
        raise ValueError(f"--efficientnet-expand-ratio / --efficientnet-group-dim reshape EfficientNet-B0..B7 "
                         f"(efficientnet-b0 .. efficientnet-b7), not {timm_name}: drop them or pick an EfficientNet")
    width, depth = _EFFICIENTNET_SCALING[timm_name]
    e = shape.efficientnet_expand_ratio
    # the published block table (Tan & Le 2019, table 1) with expansion e in place of 6: kernel, stride, channels
    blocks = [["ds_r1_k3_s1_e1_c16_se0.25"], [f"ir_r2_k3_s2_e{e}_c24_se0.25"], [f"ir_r2_k5_s2_e{e}_c40_se0.25"],
              [f"ir_r3_k3_s2_e{e}_c80_se0.25"], [f"ir_r3_k5_s1_e{e}_c112_se0.25"], [f"ir_r4_k5_s2_e{e}_c192_se0.25"],
              [f"ir_r1_k3_s1_e{e}_c320_se0.25"]]
    round_chs = partial(round_channels, multiplier=width, divisor=8)
    model = EfficientNet(block_args=decode_arch_def(blocks, depth), num_features=round_chs(1280), stem_size=32,
                         round_chs_fn=round_chs, act_layer=get_act_layer("swish"), **kwargs)
    if shape.efficientnet_group_dim > 1:
        _group_depthwise_convolutions(model, shape.efficientnet_group_dim)
    return model


def _group_depthwise_convolutions(model: nn.Module, group_dim: int) -> None:
    """Give every ``conv_dw`` ``max(channels // group_dim, 1)`` groups (Graphcore's rule: a layer narrower than
    `group_dim` becomes a full convolution), initialised as timm initialises EfficientNet convolutions."""
    from timm.layers import create_conv2d

    for name, module in list(model.named_modules()):
        if not (name.endswith("conv_dw") and isinstance(module, nn.Conv2d)):
            continue
        channels, k = module.in_channels, module.kernel_size[0]
        groups = max(channels // group_dim, 1)
        if channels % groups:
            raise ValueError(f"--efficientnet-group-dim {group_dim}: {name} has {channels} channels, which "
                             f"{groups} groups do not divide; use a group dimension that divides the block widths "
                             "(1, 2, 4, 8 or 16)")
        conv = create_conv2d(channels, module.out_channels, k, stride=module.stride[0], dilation=module.dilation[0],
                             groups=groups)
        fan_out = k * k * module.out_channels // groups  # timm's EfficientNet (TF "goog") init
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
        _set_submodule(model, name, conv)


def _apply_norm_type(model: nn.Module, shape: ModelShape) -> None:
    """Set every BatchNorm's eps and momentum (``batch``), or replace it by a GroupNorm (``group``) or by nothing
    (``none``), keeping the dropout and activation that timm's fused ``BatchNormAct2d`` applies after the norm."""
    from timm.layers import BatchNormAct2d, GroupNormAct

    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        if shape.norm_type == "batch":
            if shape.norm_eps is not None:
                module.eps = shape.norm_eps
            if shape.batchnorm_momentum is not None:
                module.momentum = shape.batchnorm_momentum
            continue
        fused = isinstance(module, BatchNormAct2d)
        replacement: nn.Module
        if shape.norm_type == "none":
            replacement = nn.Sequential(module.drop, module.act) if fused else nn.Identity()
        else:
            channels, groups = module.num_features, shape.norm_num_groups
            if channels % groups:
                raise ValueError(f"--norm-num-groups {groups} does not divide the {channels} channels of {name}: "
                                 "use a divisor of every norm layer's width (Graphcore's EfficientNets use 4)")
            eps = shape.norm_eps if shape.norm_eps is not None else 1e-5
            if fused:
                replacement = GroupNormAct(channels, groups, eps=eps, apply_act=False)
                replacement.drop, replacement.act = module.drop, module.act
            else:
                replacement = nn.GroupNorm(groups, channels, eps=eps)
        _set_submodule(model, name, replacement)


def _set_submodule(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
