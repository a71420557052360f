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
