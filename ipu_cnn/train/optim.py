"""Optimizers for CPU/CUDA through timm's factory, with weight decay kept off 1-D parameters.

Biases and normalisation scales/shifts (every parameter with fewer than two dimensions) go into a group without
weight decay: decaying them only pulls BatchNorm towards zero and costs accuracy (Goyal et al., the ResNet-50 and
EfficientNet recipes). The names follow the Graphcore app; on IPUs `ipu_cnn.backends.ipu.ipu_optimizer` maps them
to ``poptorch.optim``.
"""
from __future__ import annotations

from typing import Any, Mapping

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


def create_optimizer(model: nn.Module, config: Mapping[str, Any], lr: float) -> torch.optim.Optimizer:
    """The CPU/CUDA optimizer for ``config["optimizer"]`` at peak learning rate `lr` (the schedule scales it)."""
    name = config["optimizer"]
    if name not in _TIMM_NAMES:
        raise ValueError(f"--optimizer must be one of {', '.join(_TIMM_NAMES)}, got {name!r}")
    timm_name, extra = _TIMM_NAMES[name]
    kwargs: dict[str, Any] = dict(extra)
    if name in ("sgd", "sgd_combined", "rmsprop", "rmsprop_tf"):
        kwargs["momentum"] = float(config["momentum"])
    if name in ("adamw", "rmsprop", "rmsprop_tf"):
        kwargs["eps"] = float(config["optimizer_eps"])
    if name in ("rmsprop", "rmsprop_tf"):
        kwargs["alpha"] = float(config["rmsprop_decay"])
    groups = parameter_groups(model, float(config["weight_decay"]))
    return create_optimizer_v2(groups, opt=timm_name, lr=lr, weight_decay=float(config["weight_decay"]), **kwargs)


def effective_lr(config: Mapping[str, Any], global_batch_size: int) -> float:
    """Peak learning rate: ``--lr``, scaled by ``global batch / --lr-reference-batch`` when that is set."""
    lr = float(config["lr"])
    reference = config.get("lr_reference_batch")
    return lr * global_batch_size / reference if reference else lr
