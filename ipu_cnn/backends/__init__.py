"""What differs between CPU, CUDA and IPU execution, and the distributed set-up (torchrun, poprun)."""
from __future__ import annotations

from typing import Any, Mapping

from ipu_cnn.backends.base import Backend, MixFn, StepResult, TrainStep
from ipu_cnn.backends.distributed import DistContext, init_distributed, under_poprun, under_torchrun
from ipu_cnn.backends.ipu import POPTORCH_MISSING, IpuBackend, import_poptorch, ipu_optimizer, ipu_options
from ipu_cnn.backends.precision import PRECISIONS, PrecisionPolicy, precision_policy
from ipu_cnn.backends.torch_device import TorchBackend, TorchTrainStep, select_device

__all__ = [
    "POPTORCH_MISSING",
    "PRECISIONS",
    "Backend",
    "DistContext",
    "IpuBackend",
    "MixFn",
    "PrecisionPolicy",
    "StepResult",
    "TorchBackend",
    "TorchTrainStep",
    "TrainStep",
    "create_backend",
    "import_poptorch",
    "init_distributed",
    "ipu_optimizer",
    "ipu_options",
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


def create_backend(config: Mapping[str, Any], dist: DistContext) -> TorchBackend | IpuBackend:
    """The backend for ``config["device"]`` (already resolved by `resolve_device_type`)."""
    device = config["device"]
    if device == "ipu":
        return IpuBackend(config, dist)
    policy = precision_policy(config["precision"], device, config["half_dtype"], config["loss_scaling"],
                              config["auto_loss_scaling"])
    return TorchBackend(select_device(device), policy, dist, compile_model=bool(config["compile"]),
                        sync_bn=bool(config["sync_bn"]))
