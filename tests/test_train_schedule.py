"""Learning-rate schedules at known steps, per iteration, with warm-up."""
from __future__ import annotations

import math

import pytest
import torch

from ipu_cnn.train.schedule import LRSchedule, create_scheduler, load_scheduler_state


def test_warmup_is_linear_to_the_peak() -> None:
    s = LRSchedule("cosine", steps_per_epoch=10, epochs=10, warmup_epochs=2)
    assert s.warmup_steps == 20
    assert [s.factor(i) for i in (0, 9, 19)] == pytest.approx([1 / 20, 10 / 20, 1.0])
    assert s.factor(20) == pytest.approx(1.0)


def test_cosine_known_points() -> None:
    s = LRSchedule("cosine", steps_per_epoch=10, epochs=10, warmup_epochs=0, min_ratio=0.1)
    assert s.factor(0) == pytest.approx(1.0)
    assert s.factor(50) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s.factor(25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s.factor(100) == pytest.approx(0.1)


def test_cosine_after_warmup_starts_at_peak_and_ends_at_zero() -> None:
    s = LRSchedule("cosine", steps_per_epoch=4, epochs=5, warmup_epochs=1)
    assert s.factor(4) == pytest.approx(1.0)
    assert s.factor(12) == pytest.approx(0.5)
    assert s.factor(20) == pytest.approx(0.0)


def test_step_schedule() -> None:
    s = LRSchedule("step", steps_per_epoch=100, epochs=90, decay=0.1, decay_epochs=[60, 30, 80])
    assert s.factor(2999) == pytest.approx(1.0)
    assert s.factor(3000) == pytest.approx(0.1)
    assert s.factor(6000) == pytest.approx(0.01)
    assert s.factor(8500) == pytest.approx(0.001)


def test_exponential_schedule_is_continuous_per_iteration() -> None:
    s = LRSchedule("exponential", steps_per_epoch=10, epochs=100, warmup_epochs=5, decay=0.97, decay_period=2.4)
    assert s.factor(50) == pytest.approx(1.0)
    assert s.factor(50 + 24) == pytest.approx(0.97)
    assert s.factor(50 + 12) == pytest.approx(0.97 ** 0.5)


def test_bad_schedules() -> None:
    with pytest.raises(ValueError, match="step, cosine or exponential"):
        LRSchedule("linear", 10, 1)
    with pytest.raises(ValueError, match="at least one optimizer step"):
        LRSchedule("cosine", 0, 1)


def test_scheduler_steps_per_iteration_and_resumes() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.4)
    schedule = LRSchedule("cosine", steps_per_epoch=5, epochs=2, warmup_epochs=1)
    sched = create_scheduler(opt, schedule)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.4 * schedule.factor(i) for i in range(7)])
    state = sched.state_dict()
    opt2 = torch.optim.SGD([param], lr=0.4)
    opt2.load_state_dict(opt.state_dict())
    sched2 = create_scheduler(opt2, LRSchedule("cosine", steps_per_epoch=5, epochs=2, warmup_epochs=1))
    load_scheduler_state(sched2, state)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.4 * schedule.factor(7))


# -- --lr-scheduler-freq and --initial-loss-scaling -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cosine", "exponential", "step"])
@pytest.mark.parametrize("freq", [1.0, 4.0, 2.5, 0.424, 16.0])
def test_scheduler_freq_holds_the_rate_between_updates(kind: str, freq: float) -> None:
    from fractions import Fraction

    spe = 10
    held = LRSchedule(kind, steps_per_epoch=spe, epochs=12, warmup_epochs=2, decay=0.5, decay_epochs=[3.3, 7.1],
                      updates_per_epoch=freq)
    free = LRSchedule(kind, steps_per_epoch=spe, epochs=12, warmup_epochs=2, decay=0.5, decay_epochs=[3.3, 7.1])
    f = Fraction(str(freq))
    for step in range(spe * 12):
        # closed form: the curve at the first step of the update interval k = floor(step * F / S)
        k = math.floor(Fraction(step) * f / spe)
        first = math.ceil(k * spe / f)
        assert held.update_step(step) == first <= step
        assert held.factor(step) == free.factor(first)
    changes = sum(1 for s in range(1, spe * 12) if held.update_step(s) != held.update_step(s - 1))
    # update k >= 1 starts at step ceil(k * S / F), which exists while that is <= the last step; more updates per
    # epoch than steps is every step
    assert changes == min(spe * 12 - 1, math.floor((spe * 12 - 1) * f / spe))


def test_scheduler_freq_zero_is_every_step_and_negative_is_refused() -> None:
    a = LRSchedule("cosine", steps_per_epoch=7, epochs=3, warmup_epochs=1, updates_per_epoch=0.0)
    b = LRSchedule("cosine", steps_per_epoch=7, epochs=3, warmup_epochs=1)
    assert [a.factor(s) for s in range(21)] == [b.factor(s) for s in range(21)]
    with pytest.raises(ValueError, match="--lr-scheduler-freq must be >= 0"):
        LRSchedule("cosine", steps_per_epoch=7, epochs=3, updates_per_epoch=-1.0)


def _graphcore_ramp(epochs: int, initial: float, final: float) -> dict[int, float]:
    """Graphcore's table of 1-based change epochs -> loss scale, built as its train.py builds it."""
    n = int(math.log2(final // initial)) + 1
    return {i * (epochs // n) + 1: initial * 2 ** i for i in range(n)}


@pytest.mark.parametrize("epochs, initial, final", [(100, 16, 128), (350, 1, 128), (10, 32, 128), (3, 16, 128),
                                                    (7, 16, 100), (5, 128, 128), (90, 0.5, 4)])
def test_loss_scale_ramp_matches_graphcores_change_points(epochs: int, initial: float, final: float) -> None:
    from ipu_cnn.train.schedule import loss_scale_ramp

    table = _graphcore_ramp(epochs, initial, final)
    scale = None
    for epoch in range(epochs):
        scale = table.get(epoch + 1, scale)  # Graphcore changes the scale at the start of a listed epoch
        assert loss_scale_ramp(epoch, epochs, initial, final) == scale, epoch
    assert scale is not None and scale <= final


def test_loss_scale_ramp_documented_example_and_errors() -> None:
    from ipu_cnn.train.schedule import loss_scale_ramp

    values = [loss_scale_ramp(e, 100, 16, 128) for e in range(100)]
    assert values == [16.0] * 25 + [32.0] * 25 + [64.0] * 25 + [128.0] * 25
    with pytest.raises(ValueError, match="at most --loss-scaling"):
        loss_scale_ramp(0, 10, 256, 128)
