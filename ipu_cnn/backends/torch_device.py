"""CPU and CUDA execution with plain PyTorch: channels_last, autocast, loss scaling, accumulation, DDP, compile.

Host batches arrive as uint8 tensors over the loader's ring (channels_last strides). On CUDA they are copied with
``non_blocking=True`` from pinned memory, and `release_host_batch` waits for that copy (not for the step) before the
loader may reuse the slot. Nothing here calls ``.item()``: a step returns device tensors.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch
from torch import nn

from ipu_cnn.backends.base import Criterion, MixFn, StepResult
from ipu_cnn.backends.distributed import DistContext
from ipu_cnn.backends.optim import OptimizerSettings, create_optimizer
from ipu_cnn.backends.precision import PrecisionPolicy


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a `ValueError` that says what to use."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is visible to PyTorch (torch.cuda.is_available() is "
                             "False); use --device cpu, or install a CUDA build of torch")
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"TorchBackend runs on cpu or cuda, got {name!r}")


class TorchBackend:
    """CPU/CUDA execution of training and evaluation steps (implements `ipu_cnn.backends.Backend`)."""

    channels_last = True

    def __init__(self, device: torch.device, policy: PrecisionPolicy, dist: DistContext | None = None, *,
                 compile_model: bool = False, sync_bn: bool = False) -> None:
        self.device = device
        self.name = device.type
        self.policy = policy
        self.dist = dist or DistContext()
        self.compile_model = compile_model
        self.sync_bn = sync_bn
        if device.type == "cuda" and self.dist.uses_torch_distributed:
            self.device = torch.device("cuda", self.dist.local_rank)
        self._copy_done: torch.cuda.Event | None = None
        self.pin_memory = self.device.type == "cuda"

    def data_shard(self) -> tuple[int, int]:
        """Each torchrun process reads its own shard."""
        return self.dist.rank, self.dist.world_size

    # -- model ---------------------------------------------------------------------------------------------------
    def prepare_model(self, model: nn.Module, training: bool = True) -> nn.Module:
        """Device, channels_last, and for training optional SyncBatchNorm + DDP (several ranks) and
        ``torch.compile``."""
        model = model.to(self.device).to(memory_format=torch.channels_last)
        if not training:
            return model
        if self.dist.world_size > 1 and self.dist.uses_torch_distributed:
            if self.sync_bn and self.device.type != "cuda":
                raise ValueError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm runs only on GPUs; drop it on CPU "
                                 "(each process then normalises with its own batch statistics)")
            if self.sync_bn:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.compile_model:
            model = torch.compile(model)  # type: ignore[assignment]
        return model

    def autocast(self) -> ContextManager[object]:
        """Autocast to the policy's half dtype, or nothing for float32."""
        if self.policy.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.policy.autocast_dtype)

    def create_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for dynamic loss scaling, else None."""
        if self.policy.loss_scaling != "dynamic":
            return None
        return torch.amp.GradScaler(self.device.type, init_scale=self.policy.loss_scale)

    def create_optimizer(self, model: nn.Module, settings: OptimizerSettings) -> torch.optim.Optimizer:
        """timm's optimizer over the host model's parameters (float32 master weights)."""
        return create_optimizer(model, settings)

    def create_train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, criterion: Criterion, *,
                          accumulation: int = 1, scaler: torch.amp.GradScaler | None = None,
                          mix: MixFn | None = None) -> TorchTrainStep:
        return TorchTrainStep(self, model, optimizer, criterion, accumulation=accumulation, scaler=scaler, mix=mix)

    # -- data ----------------------------------------------------------------------------------------------------
    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.device == self.device and labels.device == self.device:
            return images, labels
        images = images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        labels = labels.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            self._copy_done = torch.cuda.Event()
            self._copy_done.record()
        return images, labels

    def release_host_batch(self) -> None:
        if self._copy_done is not None:
            self._copy_done.synchronize()
            self._copy_done = None

    #: Samples one evaluation or prediction call takes: any number.
    fixed_batch: int | None = None

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits on the host of one batch of images; returns when they are there, so the time of a call
        is the batch's latency."""
        if images.device != self.device:
            images = images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast():
            logits = model(images)
        return logits.float().cpu()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def sync_weights_to_host(self) -> None:
        """Nothing to do: PyTorch's weights are read where they live."""
        return None

    def close(self) -> None:
        return None

    # -- steps ---------------------------------------------------------------------------------------------------
    def eval_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> StepResult:
        images, labels = self.to_device(images, labels)
        with torch.no_grad(), self.autocast():
            logits = model(images)
        logits = logits.float()
        if criterion is None:
            loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        else:
            loss = criterion(logits, labels) * labels.shape[0]
        correct = (logits.argmax(dim=1) == labels).sum()
        return StepResult(loss.detach(), correct, int(labels.shape[0]))


class TorchTrainStep:
    """One optimizer step on CPU/CUDA over a combined batch of ``accumulation`` micro-batches.

    The combined batch is split on the device; each micro-batch's loss is weighted by its share of the batch, so the
    accumulated gradient equals that of the whole batch at once (exactly, up to float rounding, for models without
    batch-dependent layers). Under DDP, gradients are all-reduced only on the last micro-batch.
    """

    def __init__(self, backend: TorchBackend, model: nn.Module, optimizer: torch.optim.Optimizer,
                 criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, accumulation: int = 1,
                 scaler: torch.amp.GradScaler | None = None, mix: MixFn | None = None,
                 after_step: Callable[[], None] | None = None) -> None:
        if accumulation < 1:
            raise ValueError(f"--gradient-accumulation must be >= 1, got {accumulation}")
        self.backend = backend
        self.model = model
        self.optimizer = optimizer
        self.criterion = criterion
        self.accumulation = accumulation
        self.scaler = scaler
        self.mix = mix
        self.after_step = after_step
        self.static_scale = backend.policy.loss_scale if backend.policy.loss_scaling == "static" else None

    def set_loss_scale(self, scale: float) -> None:
        """A new static loss scale from the next step on (``--initial-loss-scaling``'s ramp); dynamic scaling has
        its own and refuses one."""
        if self.scaler is not None:
            raise ValueError("a static loss-scale ramp cannot drive dynamic loss scaling: give --loss-scaling, or "
                             "drop --initial-loss-scaling")
        self.static_scale = float(scale) if scale != 1.0 else None

    def _no_sync(self, last: bool) -> ContextManager[object]:
        model = getattr(self.model, "_orig_mod", self.model)
        if not last and isinstance(model, nn.parallel.DistributedDataParallel):
            return model.no_sync()
        return contextlib.nullcontext()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        images, labels = self.backend.to_device(images, labels)
        targets: torch.Tensor = labels
        if self.mix is not None:
            images, targets = self.mix(images, labels)
        total = int(labels.shape[0])
        if total % self.accumulation:
            raise ValueError(f"a batch of {total} samples does not split into {self.accumulation} equal micro-batches")
        loss_sum = torch.zeros((), device=self.backend.device)
        correct = torch.zeros((), device=self.backend.device, dtype=torch.int64)
        chunks = zip(images.chunk(self.accumulation), targets.chunk(self.accumulation), labels.chunk(self.accumulation))
        for i, (x, t, y) in enumerate(chunks):
            with self._no_sync(i == self.accumulation - 1):
                with self.backend.autocast():
                    logits = self.model(x)
                loss = self.criterion(logits, t)
                weighted = loss * (y.shape[0] / total)
                if self.scaler is not None:
                    self.scaler.scale(weighted).backward()
                elif self.static_scale is not None:
                    (weighted * self.static_scale).backward()
                else:
                    weighted.backward()
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(dim=1) == y).sum()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.static_scale is not None:
                grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
                torch._foreach_mul_(grads, 1.0 / self.static_scale)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.after_step is not None:
            self.after_step()
        return StepResult(loss_sum, correct, total)
