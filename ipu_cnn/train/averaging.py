"""Weight averaging over training steps: an exponential moving average (EfficientNet's EMA) or an arithmetic mean.

The average is a second copy of the plain network, updated after every optimizer step with fused ``_foreach``
operations (no host synchronisation). Floating-point buffers (BatchNorm statistics) are averaged with the weights;
integer buffers are copied. The exponential average uses TensorFlow's warm-up, decay ``min(d, (1 + t) / (10 + t))``
at update ``t``, so it tracks the weights early on instead of holding the initialisation for thousands of steps.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn


class WeightAverage:
    """Averaged copy of a network, updated by `update` after each optimizer step."""

    def __init__(self, model: nn.Module, strategy: str, decay: float = 0.9999, start_step: int = 0) -> None:
        if strategy not in ("mean", "exponential"):
            raise ValueError(f"--weight-avg-strategy must be none, mean or exponential, got {strategy!r}")
        self.strategy = strategy
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor,
                                                                                                    torch.Tensor]]]:
        mine: dict[str, torch.Tensor] = dict(self.module.named_parameters())
        mine.update(dict(self.module.named_buffers()))
        theirs: dict[str, torch.Tensor] = dict(model.named_parameters())
        theirs.update(dict(model.named_buffers()))
        avg: list[torch.Tensor] = []
        src: list[torch.Tensor] = []
        copies: list[tuple[torch.Tensor, torch.Tensor]] = []
        for name, target in mine.items():
            source = theirs[name].detach()
            if target.is_floating_point():
                avg.append(target)
                src.append(source.to(target.dtype))
            else:
                copies.append((target, source))
        return avg, src, copies

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold `model`'s current weights (the plain network, unwrapped) into the average; `step` is the global
        optimizer step just taken."""
        avg, src, copies = self._pairs(model)
        for target, source in copies:
            target.copy_(source)
        if self.strategy == "mean" and step < self.start_step:
            torch._foreach_copy_(avg, src)
            return
        self.updates += 1
        if self.strategy == "exponential":
            decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
            weight = 1.0 - decay
        else:
            weight = 1.0 / self.updates
        torch._foreach_lerp_(avg, src, weight)

    def state_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "decay": self.decay, "start_step": self.start_step, "updates": self.updates,
                "model": self.module.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
