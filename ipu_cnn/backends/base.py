"""What every execution backend gives the applications: model preparation, the optimizer and loss scaler, one
training step, one evaluation batch, data moves and weight sync.

The trainer (`ipu_cnn.train.run`), `ipu_cnn.train.validate` and the loops (`ipu_cnn.train.engine`) use a `Backend`
without knowing which one it is; `TorchBackend` (CPU, CUDA) and `IpuBackend` (PopTorch) implement it, and
`ipu_cnn.backends.create_backend` picks one. Every device branch of the training application lives below this line.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from ipu_cnn.backends.optim import OptimizerSettings

#: ``mix(images, labels) -> (images, soft_targets)``: mixup/cutmix applied to a whole combined batch on the device.
MixFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: ``criterion(logits, targets) -> mean loss``.
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


@runtime_checkable
class Backend(Protocol):
    """The device-specific half of training and evaluation."""

    name: str
    #: where batches and per-step results live (the host for PopTorch, which moves data itself)
    device: torch.device
    #: whether models run in channels_last memory format here
    channels_last: bool
    #: whether host batches should be made in pinned memory (so `to_device` can copy asynchronously)
    pin_memory: bool

    def data_shard(self) -> tuple[int, int]:
        """``(rank, count)`` of the data shard this process reads (one process may feed several IPU replicas)."""
        ...

    def prepare_model(self, model: nn.Module, training: bool = True) -> nn.Module:
        """Move `model` to the device and, for `training`, wrap it as training here needs (DDP, compile); half
        weights where the precision asks for them."""
        ...

    def create_optimizer(self, model: nn.Module, settings: OptimizerSettings) -> Any:
        """The optimizer for `model`'s parameters (timm's on CPU/CUDA, ``poptorch.optim`` on IPUs)."""
        ...

    def create_scaler(self) -> torch.amp.GradScaler | None:
        """A dynamic loss scaler where this backend needs one on the host, else None."""
        ...

    def create_train_step(self, model: nn.Module, optimizer: Any, criterion: Criterion, *, accumulation: int = 1,
                          scaler: torch.amp.GradScaler | None = None, mix: MixFn | None = None) -> TrainStep:
        """The step that trains `model` (as `prepare_model` returned it) on one combined host/device batch."""
        ...

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start moving a host batch to the device (asynchronously where possible); a batch already there is
        returned as is."""
        ...

    def release_host_batch(self) -> None:
        """Block until the last `to_device` copy has been read from host memory, so that buffer may be reused."""
        ...

    def eval_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        """Forward one evaluation batch, without gradients."""
        ...

    #: samples one `eval_step` or `predict` call takes (IPU: what the inference model is compiled for), or None: any
    fixed_batch: int | None

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits, on the host, of one batch of uint8 images through `model` (prepared for evaluation)."""
        ...

    def synchronize(self) -> None:
        """Wait for the device to finish queued work (for timing at log points)."""
        ...

    def sync_weights_to_host(self) -> None:
        """Make the host model's weights current (IPU: copy from the device) before evaluation or a checkpoint."""
        ...

    def close(self) -> None:
        """Release the device (IPU: detach the compiled models)."""
        ...
