"""Learning-rate schedules evaluated per iteration: linear warm-up, then step, cosine or exponential decay.

A schedule is a pure function of the optimizer step (`LRSchedule.factor`), applied as a multiplier of each
parameter group's peak learning rate through ``torch.optim.lr_scheduler.LambdaLR``; its state is the step count, so
a resumed run continues on the same curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch


@dataclass
class LRSchedule:
    """Multiplier of the peak learning rate at each optimizer step.

    Attributes:
        kind: ``"step"``, ``"cosine"`` or ``"exponential"``.
        steps_per_epoch: optimizer steps in one epoch (epochs may be fractional in the parameters below).
        epochs: length of the whole run in epochs (the cosine's end).
        warmup_epochs: linear warm-up from ``1 / warmup_steps`` to 1 over this many epochs.
        decay: factor of the step and exponential schedules.
        decay_epochs: epochs at which the step schedule multiplies by `decay`.
        decay_period: epochs per factor `decay` of the (continuous) exponential schedule.
        min_ratio: where the cosine ends, as a fraction of the peak.
    """

    kind: str
    steps_per_epoch: int
    epochs: float
    warmup_epochs: float = 0.0
    decay: float = 0.1
    decay_epochs: Sequence[float] = field(default_factory=list)
    decay_period: float = 1.0
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("step", "cosine", "exponential"):
            raise ValueError(f"--lr-schedule must be step, cosine or exponential, got {self.kind!r}")
        if self.steps_per_epoch < 1:
            raise ValueError(f"an epoch must hold at least one optimizer step, got {self.steps_per_epoch}: lower "
                             "--micro-batch-size or --gradient-accumulation, or use more data")
        if self.kind == "exponential" and self.decay_period <= 0:
            raise ValueError(f"--lr-decay-period must be positive, got {self.decay_period}")
        self.decay_epochs = sorted(float(e) for e in self.decay_epochs)

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_epochs * self.steps_per_epoch))

    @property
    def total_steps(self) -> int:
        return int(round(self.epochs * self.steps_per_epoch))

    def factor(self, step: int) -> float:
        """Learning-rate multiplier for optimizer step `step` (0-based: the first step uses ``factor(0)``)."""
        warmup = self.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        epoch = step / self.steps_per_epoch
        if self.kind == "step":
            return self.decay ** sum(1 for e in self.decay_epochs if epoch >= e)
        if self.kind == "exponential":
            return self.decay ** (max(0.0, epoch - self.warmup_epochs) / self.decay_period)
        span = max(1, self.total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        return self.factor(step)


def create_scheduler(optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping `schedule` once per optimizer step; it sets the first step's learning rate at once."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)


def load_scheduler_state(scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict[str, Any]) -> None:
    """Restore a scheduler's step count and put the learning rates of that step back into its optimizer
    (``LambdaLR.load_state_dict`` alone leaves the optimizer's rates as they were). The schedule's shape comes from
    this run's options, not from the saved state, so that ``--resume ... --epoch N`` stretches it to N epochs."""
    scheduler.load_state_dict({**state, "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    rates = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = lr
    scheduler._last_lr = rates  # what get_last_lr() reports
