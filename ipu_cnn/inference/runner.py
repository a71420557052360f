"""Running a model on a device: uint8 host batches in, float32 logits on the host out.

`TorchRunner` is CPU and CUDA (``torch.inference_mode``, autocast for 16.16); `IpuRunner` compiles the model with
``poptorch.inferenceModel`` (PopTorch is imported only here, and only when ``--device ipu`` is asked for). Both take
a whole host batch per call and return when its logits are on the host, so the time of a call is the batch's
latency.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, ContextManager, Mapping, Protocol

import torch
from torch import nn

from ipu_cnn.backends import (
    import_poptorch,
    ipu_options,
    precision_policy,
    resolve_device_type,
    select_device,
    under_poprun,
)


class Runner(Protocol):
    """Runs a model on one device."""

    device: torch.device

    @property
    def host_batch(self) -> int | None:
        """Samples one call takes (None: any number)."""
        ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (float32, host) of uint8 images ``[B, 3, H, W]``."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


class TorchRunner:
    """CPU/CUDA execution: the model in eval mode, channels_last, autocast to the precision's half dtype for 16.16."""

    host_batch: int | None = None

    def __init__(self, model: nn.Module, device: torch.device, precision: str = "32.32",
                 half_dtype: str = "auto") -> None:
        self.device = device
        self.autocast_dtype = precision_policy(precision, device.type, half_dtype).autocast_dtype
        self.model = model.to(device).to(memory_format=torch.channels_last).eval()

    def autocast(self) -> ContextManager[object]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        """Start copying a host batch to the device (non-blocking from pinned memory)."""
        if images.device == self.device:
            return images
        return images.to(self.device, non_blocking=True, memory_format=torch.channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self.autocast():
            logits = self.model(self.to_device(images))
        return logits.float().cpu()  # the device-to-host copy waits for the batch: the call's time is its latency

    def close(self) -> None:
        return None


class IpuRunner:
    """IPU execution with ``poptorch.inferenceModel``: one call runs ``device_iterations`` micro-batches on each of
    ``replicas`` IPUs, so it takes ``micro_batch_size x device_iterations x replicas`` samples; a shorter batch (the
    last one of a prediction) is padded to that size and the padding's outputs dropped."""

    def __init__(self, model: nn.Module, options: Mapping[str, Any], micro_batch_size: int, *,
                 synthetic_data: bool = False, poptorch: Any = None, popdist: Any = None) -> None:
        self.poptorch = poptorch if poptorch is not None else import_poptorch()
        self.device = torch.device("cpu")  # host tensors: PopTorch moves them
        model = model.to(memory_format=torch.contiguous_format).eval()
        if options["precision"] == "16.16":
            model = model.half()
        opts = ipu_options(options, self.poptorch, training=False, popdist=popdist)
        if synthetic_data:
            opts.enableSyntheticData(True)
        self.host_batch = int(micro_batch_size) * int(options["device_iterations"]) * int(options["replicas"])
        self.model = self.poptorch.inferenceModel(model, options=opts)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n = int(images.shape[0])
        if n < self.host_batch:
            images = torch.cat([images, images.new_zeros((self.host_batch - n, *images.shape[1:]))])
        return self.model(images.contiguous())[:n].float()

    def close(self) -> None:
        self.model.detachFromDevice()


def create_runner(model: nn.Module, options: Mapping[str, Any], micro_batch_size: int, *,
                  synthetic_data: bool = False) -> Runner:
    """The runner for ``options["device"]`` (``auto``, ``cpu``, ``cuda`` or ``ipu``); ``--device ipu`` without
    PopTorch is the backends' clear `RuntimeError`."""
    device_type = resolve_device_type(options["device"])
    if device_type == "ipu":
        popdist: Any = None
        if under_poprun():  # popdist's poptorch.Options set the instance's replicas and the distributed environment
            importlib.import_module("popdist.poptorch")
            popdist = importlib.import_module("popdist")
        return IpuRunner(model, options, micro_batch_size, synthetic_data=synthetic_data, popdist=popdist)
    # "cuda" without an index is the current device, which init_distributed pins to the local rank under torchrun
    return TorchRunner(model, select_device(device_type), options["precision"], options["half_dtype"])
