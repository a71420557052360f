"""Classification loss with label smoothing, for hard labels and for the soft targets that mixup/cutmix make."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with `smoothing` spread uniformly over all classes: ``(1 - s) * onehot + s / num_classes``.

    This is the distribution ``F.cross_entropy(..., label_smoothing=s)`` compares against, so hard and soft targets
    give the same loss for the same smoothing.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    targets = torch.full((labels.shape[0], num_classes), smoothing / num_classes, device=labels.device,
                         dtype=torch.float32)
    targets.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + smoothing / num_classes)
    return targets


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross-entropy against labels smoothed by `smoothing`, or against given soft targets (already smoothed).

    The log-softmax runs in float32 whatever the logits' dtype, so fp16/bf16 autocast does not lose the loss's
    precision. Hard labels (int64 ``[B]``) go through ``F.cross_entropy(label_smoothing=...)``; soft targets (float
    ``[B, C]``, rows summing to 1) through ``-(targets * log_softmax(logits)).sum(1).mean()``.
    """

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if targets.dtype in (torch.int64, torch.int32):
            return F.cross_entropy(logits, targets.long(), label_smoothing=self.smoothing)
        return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"
