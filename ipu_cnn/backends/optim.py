"""Optimizers for CPU/CUDA through timm's factory, with weight decay kept off 1-D parameters.

Biases and normalisation scales/shifts (every parameter with fewer than two dimensions) go into a group without
weight decay: decaying them only pulls BatchNorm towards zero and costs accuracy (Goyal et al., the ResNet-50 and
EfficientNet recipes). The names follow the Graphcore app; on IPUs `ipu_cnn.backends.ipu.ipu_optimizer` maps them
to ``poptorch.optim``. `OptimizerSettings` is what both backends' ``create_optimizer`` take.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from torch import nn

#: ``--optimizer`` -> (timm optimizer name, extra keyword arguments).
_TIMM_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("momentum", {}),  # timm's "sgd" is Nesterov; the Graphcore app's was classical momentum
    "sgd_combined": ("momentum", {}),  # the IPU memory layout differs, the maths does not
    "adamw": ("adamw", {}),
    "rmsprop": ("rmsprop", {}),
    "rmsprop_tf": ("rmsproptf", {}),
}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: parameters with >= 2 dims get `weight_decay`, 1-D ones (biases, norm weights) get none."""
    return param_groups_weight_decay(model, weight_decay=weight_decay, weight_decay_exclude_1d=True)


@dataclass(frozen=True)
class OptimizerSettings:
    """The optimizer the run asks for, with its peak learning rate (the schedule scales it per step).

    Attributes:
        name: ``--optimizer`` (sgd, sgd_combined, adamw, rmsprop, rmsprop_tf).
        lr: peak learning rate, already scaled to the global batch.
        weight_decay: decay of parameters with two or more dimensions (1-D ones get none).
        momentum: sgd and rmsprop momentum.
        eps: adamw and rmsprop epsilon.
        rmsprop_decay: RMSprop's squared-gradient decay (alpha).
        loss_scaling: static loss scale (``--loss-scaling``), which PopTorch's optimizers take; None for none.
    """

    name: str
    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.9
    eps: float = 1e-8
    rmsprop_decay: float = 0.9
    loss_scaling: float | None = None


def create_optimizer(model: nn.Module, settings: OptimizerSettings) -> torch.optim.Optimizer:
    """The CPU/CUDA optimizer `settings` describe, over `parameter_groups`."""
    name = settings.name
    if name not in _TIMM_NAMES:
        raise ValueError(f"--optimizer must be one of {', '.join(_TIMM_NAMES)}, got {name!r}")
    timm_name, extra = _TIMM_NAMES[name]
    kwargs: dict[str, Any] = dict(extra)
    if name in ("sgd", "sgd_combined", "rmsprop", "rmsprop_tf"):
        kwargs["momentum"] = float(settings.momentum)
    if name in ("adamw", "rmsprop", "rmsprop_tf"):
        kwargs["eps"] = float(settings.eps)
    if name in ("rmsprop", "rmsprop_tf"):
        kwargs["alpha"] = float(settings.rmsprop_decay)
    groups = parameter_groups(model, float(settings.weight_decay))
    return create_optimizer_v2(groups, opt=timm_name, lr=float(settings.lr), weight_decay=float(settings.weight_decay),
                               **kwargs)
