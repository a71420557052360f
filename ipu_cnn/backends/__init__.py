"""What differs between CPU, CUDA and IPU execution, and the distributed set-up (torchrun, poprun)."""
from __future__ import annotations

from typing import Any

from ipu_cnn.backends.base import Backend, Criterion, MixFn, StepResult, TrainStep
from ipu_cnn.backends.distributed import DistContext, init_distributed, under_poprun, under_torchrun
from ipu_cnn.backends.ipu import (
    POPTORCH_MISSING,
    IpuBackend,
    IpuSettings,
    ignored_ipu_options,
    import_poptorch,
    ipu_optimizer,
    ipu_options,
)
from ipu_cnn.backends.optim import OptimizerSettings, create_optimizer, parameter_groups
from ipu_cnn.backends.precision import PRECISIONS, PrecisionPolicy, precision_policy
from ipu_cnn.backends.torch_device import TorchBackend, TorchTrainStep, select_device

__all__ = [
    "POPTORCH_MISSING",
    "PRECISIONS",
    "Backend",
    "Criterion",
    "DistContext",
    "IpuBackend",
    "IpuSettings",
    "MixFn",
    "OptimizerSettings",
    "PrecisionPolicy",
    "StepResult",
    "TorchBackend",
    "TorchTrainStep",
    "TrainStep",
    "create_backend",
    "create_optimizer",
    "ignored_ipu_options",
    "import_poptorch",
    "init_distributed",
    "ipu_optimizer",
    "ipu_options",
    "parameter_groups",
    "precision_policy",
    "resolve_device_type",
    "select_device",
    "under_poprun",
    "under_torchrun",
]


def resolve_device_type(name: str) -> str:
    """``auto`` -> ``cuda`` when PyTorch sees a GPU, else ``cpu``; ``ipu`` is checked for PopTorch right away, so a
    missing SDK is reported before any data is prepared."""
    if name == "ipu":
        import_poptorch()
        return "ipu"
    return select_device(name).type


def create_backend(device: str, dist: DistContext, *, precision: str = "32.32", half_dtype: str = "auto",
                   loss_scaling: float | None = None, auto_loss_scaling: bool = False, compile_model: bool = False,
                   sync_bn: bool = False, ipu: IpuSettings | None = None,
                   eval_batch_size: int | None = None, poptorch: Any = None) -> TorchBackend | IpuBackend:
    """The backend for `device` (already resolved by `resolve_device_type`): the one place that chooses by device.

    Args:
        precision, half_dtype, loss_scaling, auto_loss_scaling: the precision options (CPU/CUDA: the autocast and
            loss-scaling policy; IPU: taken from `ipu`).
        compile_model, sync_bn: ``torch.compile`` and SyncBatchNorm (CPU/CUDA).
        ipu: the PopTorch settings (IPU; the defaults when None).
        eval_batch_size: the host batch evaluation runs (IPU compiles for it; needed there).
        poptorch: a stand-in for the PopTorch module (tests).
    """
    if device == "ipu":
        if eval_batch_size is None:
            raise ValueError("create_backend('ipu', ...) needs eval_batch_size: the host batch evaluation compiles for")
        return IpuBackend(ipu or IpuSettings(precision=precision), dist, eval_batch_size=eval_batch_size,
                          poptorch=poptorch)
    policy = precision_policy(precision, device, half_dtype, loss_scaling, auto_loss_scaling)
    return TorchBackend(select_device(device), policy, dist, compile_model=compile_model, sync_bn=sync_bn)
