"""Learning-rate schedules evaluated per iteration: linear warm-up, then step, cosine or exponential decay.

A schedule is a pure function of the optimizer step (`LRSchedule.factor`), applied as a multiplier of each
parameter group's peak learning rate through ``torch.optim.lr_scheduler.LambdaLR``; its state is the step count, so
a resumed run continues on the same curve.

``--lr-scheduler-freq F`` (Graphcore's meaning: learning-rate updates per epoch; 0 = every step) holds the rate
constant between updates: the rate of step ``s`` is the curve's value at the first step of its update interval,
``ceil(k * S / F)`` with ``k = floor(s * F / S)`` and ``S`` steps per epoch. On IPUs that is how often the optimizer
is sent to the device. Unlike Graphcore's application, whose warm-up changed the rate every step whatever F was,
the warm-up is held the same way, so F bounds the transfers over the whole run.

`loss_scale_ramp` is ``--initial-loss-scaling``: the static loss scale doubles from the initial value towards
``--loss-scaling`` in equal spans of epochs.
"""
from __future__ import annotations

import math
from fractions import Fraction
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
        updates_per_epoch: ``--lr-scheduler-freq``: rate changes per epoch (0: every step).
    """

    kind: str
    steps_per_epoch: int
    epochs: float
    warmup_epochs: float = 0.0
    decay: float = 0.1
    decay_epochs: Sequence[float] = field(default_factory=list)
    decay_period: float = 1.0
    min_ratio: float = 0.0
    updates_per_epoch: float = 0.0

    def __post_init__(self) -> None:
        if self.updates_per_epoch < 0:
            raise ValueError(f"--lr-scheduler-freq must be >= 0 (0: update every step), got {self.updates_per_epoch}")
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

    def update_step(self, step: int) -> int:
        """The step whose curve value step `step` uses: itself, or with ``--lr-scheduler-freq`` the first step of its
        update interval (exact rational arithmetic, so 0.424 updates per epoch lands where it should)."""
        if not self.updates_per_epoch:
            return step
        freq = Fraction(str(self.updates_per_epoch))
        k = math.floor(step * freq / self.steps_per_epoch)
        return math.ceil(k * self.steps_per_epoch / freq)

    def factor(self, step: int) -> float:
        """Learning-rate multiplier for optimizer step `step` (0-based: the first step uses ``factor(0)``)."""
        return self.curve(self.update_step(step))

    def curve(self, step: int) -> float:
        """The schedule's multiplier at `step`, before ``--lr-scheduler-freq`` holds it."""
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


def loss_scale_steps(initial: float, final: float) -> int:
    """How many loss scales the ramp from `initial` to `final` visits: ``int(log2(final // initial)) + 1``
    (Graphcore's count: it doubles, and never goes above `final`)."""
    if not 0 < initial <= final:
        raise ValueError(f"--initial-loss-scaling must be positive and at most --loss-scaling, got {initial} and "
                         f"{final}")
    return int(math.log2(final // initial)) + 1


def loss_scale_ramp(epoch: int, epochs: int, initial: float, final: float) -> float:
    """The static loss scale of 0-based `epoch` of `epochs`: ``initial * 2**i`` over ``n = loss_scale_steps``
    equal spans of ``epochs // n`` epochs (the last scale holds to the end; with fewer epochs than scales, the last
    scale from the start, as Graphcore's table of change points then collapses to its last entry). Example:
    100 epochs, 16 -> 128: epochs 1-25 at 16, 26-50 at 32, 51-75 at 64, 76-100 at 128."""
    n = loss_scale_steps(initial, final)
    span = epochs // n
    index = n - 1 if span == 0 else min(n - 1, epoch // span)
    return float(initial) * 2.0 ** index


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
