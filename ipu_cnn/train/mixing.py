"""Mixup and cutmix on the device, over a whole combined batch, with smoothed soft targets.

Mixup blends each image with a partner (the batch reversed, as timm does) with weight ``lam ~ Beta(alpha, alpha)``;
cutmix pastes the partner's pixels into a box covering ``1 - lam`` of the image, ``lam ~ U(low, high)`` as the
Graphcore app parametrised it, and corrects ``lam`` to the box actually pasted after clipping. When both are on,
both apply (mixup first), and the targets mix accordingly. The random draws come from the class's own generator,
whose state goes into checkpoints, so a resumed run mixes the same way.

Blending uint8 pixels gives floats on the 0..255 scale, which the model's normaliser takes as well (the normaliser is
affine, so normalising a blend equals blending the normalised images).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from ipu_cnn.models.loss import smooth_one_hot


class Mixing:
    """``mix(images, labels) -> (images, soft_targets)`` for mixup and/or cutmix."""

    def __init__(self, num_classes: int, *, mixup_alpha: float = 0.0, cutmix_low: float = 0.0,
                 cutmix_high: float = 0.0, cutmix_disable_prob: float = 0.0, label_smoothing: float = 0.0,
                 seed: int = 0) -> None:
        if mixup_alpha < 0:
            raise ValueError(f"--mixup-alpha must be >= 0, got {mixup_alpha}")
        if not 0.0 <= cutmix_low <= cutmix_high <= 1.0:
            raise ValueError(f"cutmix needs 0 <= low <= high <= 1, got {cutmix_low} and {cutmix_high}")
        self.num_classes = num_classes
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_low, self.cutmix_high = float(cutmix_low), float(cutmix_high)
        self.cutmix_disable_prob = float(cutmix_disable_prob)
        self.label_smoothing = float(label_smoothing)
        self.generator = torch.Generator().manual_seed(int(seed) + 0x5EED)

    @property
    def cutmix_enabled(self) -> bool:
        return self.cutmix_high > 0.0

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0.0 or self.cutmix_enabled

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _beta(self, alpha: float) -> float:
        # Beta(a, a) from two Gammas drawn with our generator (torch's Beta sampler takes no generator).
        g1 = self._gamma(alpha)
        g2 = self._gamma(alpha)
        return g1 / (g1 + g2) if g1 + g2 > 0 else 0.5

    def _gamma(self, alpha: float) -> float:
        """Gamma(alpha, 1) by Marsaglia-Tsang (with the alpha < 1 boost), from this object's generator only."""
        boost = 1.0
        if alpha < 1.0:
            boost = self._uniform() ** (1.0 / alpha)
            alpha += 1.0
        d = alpha - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * d)
        while True:
            x = float(torch.randn((), generator=self.generator, dtype=torch.float64))
            v = (1.0 + c * x) ** 3
            if v <= 0:
                continue
            u = self._uniform()
            if math.log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * math.log(v):
                return d * v * boost

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        if not self.enabled:
            return images, targets
        if self.mixup_alpha > 0.0:
            lam = self._beta(self.mixup_alpha)
            images = images.float()
            images = images * lam + images.flip(0) * (1.0 - lam)
            targets = targets * lam + targets.flip(0) * (1.0 - lam)
        if self.cutmix_enabled and self._uniform() >= self.cutmix_disable_prob:
            lam = self.cutmix_low + (self.cutmix_high - self.cutmix_low) * self._uniform()
            height, width = images.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            box_h, box_w = int(round(height * cut)), int(round(width * cut))
            cy, cx = int(self._uniform() * height), int(self._uniform() * width)
            y0, y1 = max(0, cy - box_h // 2), min(height, cy + box_h - box_h // 2)
            x0, x1 = max(0, cx - box_w // 2), min(width, cx + box_w - box_w // 2)
            if y1 > y0 and x1 > x0:
                images = images.clone()
                images[:, :, y0:y1, x0:x1] = images.flip(0)[:, :, y0:y1, x0:x1]
                kept = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
                targets = targets * kept + targets.flip(0) * (1.0 - kept)
        return images, targets

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
