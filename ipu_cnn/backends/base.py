"""What every execution backend gives the training loop: one optimizer step, one evaluation batch, and data moves."""
from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import torch
from torch import nn

#: ``mix(images, labels) -> (images, soft_targets)``: mixup/cutmix applied to a whole combined batch on the device.
MixFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class StepResult(NamedTuple):
    """Sums over one batch, kept as device tensors so that no step waits for the device (synchronise at log points).

    Attributes:
        loss_sum: sum of the per-sample losses (so means over many steps weigh every sample the same).
        correct: number of top-1 hits against the batch's labels.
        samples: number of samples.
    """

    loss_sum: torch.Tensor
    correct: torch.Tensor
    samples: int


class TrainStep(Protocol):
    """One optimizer step over one combined batch (micro-batch x gradient accumulation [x device iterations])."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult: ...


class Backend(Protocol):
    """The device-specific half of training: model placement, data moves, the step and the evaluation forward."""

    name: str
    device: torch.device

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move `model` to the device and wrap it for training here (DDP, compile, PopTorch)."""
        ...

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start moving a host batch to the device (asynchronously where possible)."""
        ...

    def release_host_batch(self) -> None:
        """Block until the last host batch has been copied, so its buffer may be reused by the loader."""
        ...

    def eval_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        """Forward one evaluation batch, without gradients."""
        ...

    def synchronize(self) -> None:
        """Wait for the device to finish queued work (for timing at log points)."""
        ...

    def sync_weights_to_host(self) -> None:
        """Make the host model's weights current (IPU: copy from the device) before evaluation or a checkpoint."""
        ...
