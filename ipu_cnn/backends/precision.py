"""`--precision` as the Graphcore app spelled it (activations.weights) mapped to what CPU and CUDA do.

On IPUs, ``16.16`` is half weights and activations, ``16.32`` half activations with float32 master weights and
optimiser state, ``32.32`` float32 throughout. On CPU and CUDA the weights and optimiser state always stay float32
(master weights) and the half formats become autocast to float16 or bfloat16. Float16 needs loss scaling to keep
small gradients representable: dynamic (``torch.amp.GradScaler``) unless a static ``--loss-scaling`` is given;
bfloat16 has float32's range and needs none.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

PRECISIONS: tuple[str, ...] = ("16.16", "16.32", "32.32")
HALF_DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class PrecisionPolicy:
    """What one `--precision` means on one device type.

    Attributes:
        precision: the Graphcore spelling it came from.
        autocast_dtype: dtype for ``torch.autocast``, or None for float32 compute.
        loss_scaling: ``"none"``, ``"static"`` (multiply the loss by `loss_scale`, divide the gradients back) or
            ``"dynamic"`` (GradScaler starting at `loss_scale`, skipping steps whose gradients overflow).
        loss_scale: the static scale or the dynamic scaler's initial scale.
    """

    precision: str
    autocast_dtype: torch.dtype | None
    loss_scaling: str
    loss_scale: float

    @property
    def half_weights(self) -> bool:
        """True when the IPU holds the weights in half (16.16); CPU/CUDA keep float32 master weights regardless."""
        return self.precision == "16.16"


def precision_policy(precision: str, device_type: str, half_dtype: str = "auto", loss_scaling: float | None = None,
                     auto_loss_scaling: bool = False) -> PrecisionPolicy:
    """Map `precision` ("16.16", "16.32", "32.32") on `device_type` ("cpu", "cuda") to a `PrecisionPolicy`.

    Args:
        half_dtype: "float16", "bfloat16" or "auto" (float16 on CUDA, bfloat16 on CPU, where float16 kernels are slow).
        loss_scaling: a static loss scale (None: dynamic for float16, none otherwise).
        auto_loss_scaling: dynamic loss scaling, starting at `loss_scaling` when given.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)} (activations.weights), got {precision!r}")
    if loss_scaling is not None and not loss_scaling > 0:
        raise ValueError(f"--loss-scaling must be positive, got {loss_scaling}")
    if precision == "32.32":
        if auto_loss_scaling:
            raise ValueError("--auto-loss-scaling needs half precision: add --precision 16.16 or 16.32, or drop it")
        static = loss_scaling is not None and loss_scaling != 1.0
        return PrecisionPolicy(precision, None, "static" if static else "none", float(loss_scaling or 1.0))
    if half_dtype == "auto":
        dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    elif half_dtype in HALF_DTYPES:
        dtype = HALF_DTYPES[half_dtype]
    else:
        raise ValueError(f"--half-dtype must be auto, float16 or bfloat16, got {half_dtype!r}")
    if auto_loss_scaling or (dtype == torch.float16 and loss_scaling is None):
        return PrecisionPolicy(precision, dtype, "dynamic", float(loss_scaling or 2.0**16))
    if loss_scaling is not None and loss_scaling != 1.0:
        return PrecisionPolicy(precision, dtype, "static", float(loss_scaling))
    return PrecisionPolicy(precision, dtype, "none", 1.0)


def floating_point_checks(enabled: bool, device_type: str) -> ContextManager[object]:
    """``--enable-fp-exceptions`` where the hardware does not trap: on CPU and CUDA, autograd's anomaly detection
    with NaN checks, which raises at the first backward operation that produces NaN and names the forward operation
    it came from (slow: it records a stack per operation). On IPUs the PopTorch option does it in hardware, so this
    is a no-op there; nothing when not `enabled`."""
    if not enabled or device_type == "ipu":
        return contextlib.nullcontext()
    return torch.autograd.set_detect_anomaly(True, check_nan=True)
