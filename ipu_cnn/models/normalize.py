"""Device-side input normalisation: the host ships uint8 pixels, the model's first op makes them float and standard.

Doing this on the device (timm's ``PrefetchLoader`` idea) keeps host batches four times smaller than float32 ones,
lets the loader hand its uint8 ring slots over without a conversion pass, and puts the arithmetic where it is cheap.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: ImageNet channel statistics on the 0..1 scale (what timm and torchvision use for every model here).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class InputNormalizer(nn.Module):
    """``(x - 255 * mean) / (255 * std)`` per channel, taking uint8 (or float 0..255) NCHW images.

    The statistics are non-persistent buffers, so they follow ``.to(device)`` and ``.half()`` but stay out of the
    state dict (the checkpointed weights are the plain timm model's). The output keeps the input's memory format
    (channels_last in, channels_last out) and takes the buffers' dtype, so a ``.half()`` model gets half inputs.
    """

    scaled_mean: torch.Tensor
    inv_scaled_std: torch.Tensor

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need one value per RGB channel, got mean={mean!r} std={std!r}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std!r}")
        self.register_buffer("scaled_mean", torch.tensor([255.0 * m for m in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_scaled_std", torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1),
                             persistent=False)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images shaped [batch, 3, height, width], got {list(images.shape)}")
        x = images.to(self.scaled_mean.dtype)
        return (x - self.scaled_mean) * self.inv_scaled_std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


class NormalizedModel(nn.Module):
    """A network whose first op is an `InputNormalizer`; ``.model`` is the plain network (e.g. a timm model).

    ``normalizer`` may be None when normalisation happens on the host (``--normalization-location host``); the
    forward is then the plain network's.
    """

    def __init__(self, model: nn.Module, normalizer: InputNormalizer | None) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.normalizer is not None:
            images = self.normalizer(images)
        return self.model(images)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain network inside DDP, ``torch.compile`` and `NormalizedModel` wrappers (whose state dict is saved)."""
    inner = unwrap_normalized(model)
    return unwrap_normalized(inner.model) if isinstance(inner, NormalizedModel) else inner


def unwrap_normalized(model: nn.Module) -> NormalizedModel | nn.Module:
    """The `NormalizedModel` (or the plain module if there is none) inside DDP and ``torch.compile`` wrappers."""
    while True:
        compiled = getattr(model, "_orig_mod", None)
        if isinstance(compiled, nn.Module):
            model = compiled
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
