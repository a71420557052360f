"""The training and evaluation loops: `train_one_epoch` and `evaluate`.

They know nothing about devices (the backend's step does, and the `DeviceFeeder` moves the batches) or files (the
logger does). Per-step values stay on the device; the loops synchronise only at log points, where one reduction over
ranks and one transfer give the window's loss, accuracy and throughput.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ipu_cnn.backends.base import Backend, StepResult
from ipu_cnn.backends.distributed import DistContext
from ipu_cnn.backends.feeder import DeviceFeeder
from ipu_cnn.train.logs import Progress, RunLogger


@dataclass
class TrainState:
    """Where the run is: the epoch in progress (0-based), optimizer steps done in total and in this epoch."""

    epoch: int = 0
    step: int = 0
    epoch_step: int = 0
    samples: int = 0


@dataclass
class EpochResult:
    """An epoch's (or its completed part's) means over all ranks, and whether a stop was requested."""

    loss: float = float("nan")
    accuracy: float = float("nan")
    throughput: float = float("nan")
    data_wait: float = float("nan")
    seconds: float = 0.0
    samples: int = 0
    stopped: bool = False
    completed: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _current_lr(optimizer: Any) -> float:
    return float(max(group["lr"] for group in optimizer.param_groups))


def train_one_epoch(
    step_fn: Callable[[torch.Tensor, torch.Tensor], StepResult],
    feeder: DeviceFeeder,
    *,
    backend: Backend,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: TrainState,
    steps_per_epoch: int,
    epochs: int,
    dist: DistContext,
    logger: RunLogger,
    logs_per_epoch: int = 10,
    progress_mode: str = "auto",
    should_stop: Callable[[], bool] = lambda: False,
    on_step_end: Callable[[TrainState], None] | None = None,
    train_mode: Callable[[nn.Module], None] | None = None,
) -> EpochResult:
    """Train until the feeder's epoch ends or a stop is requested (checked after every step, agreed over ranks).

    `state` is advanced in place. The learning rate is stepped per iteration by `scheduler`. Each log interval
    prints ``epoch E/N step S/T loss: L accuracy: A % lr: R throughput: X samples/sec`` and writes a metrics record.
    `train_mode` puts the model in training mode (default ``model.train()``; fine-tuning keeps frozen layers in eval).
    """
    log_every = max(1, steps_per_epoch // max(1, logs_per_epoch))
    device = backend.device
    if train_mode is not None:
        train_mode(model)
    else:
        model.train()
    progress = Progress(steps_per_epoch, f"epoch {state.epoch + 1}/{epochs}", mode=progress_mode,
                        enabled=dist.is_main, initial=state.epoch_step)
    window_loss = torch.zeros((), device=device, dtype=torch.float64)
    window_correct = torch.zeros((), device=device, dtype=torch.int64)
    window_count = 0
    window_start = time.perf_counter()
    window_wait = 0.0
    window_steps = 0
    epoch_start = window_start
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0, "wait": 0.0}
    result = EpochResult()
    feeder.take_wait()
    for images, labels in feeder:
        window_wait += feeder.take_wait()
        out = step_fn(images, labels)
        lr = _current_lr(optimizer)  # the rate this step used (a Python float: no device sync)
        scheduler.step()
        state.step += 1
        state.epoch_step += 1
        window_steps += 1
        window_loss += out.loss_sum.detach().double()
        window_correct += out.correct
        window_count += out.samples
        if on_step_end is not None:
            on_step_end(state)
        progress.update(1)
        end_of_epoch = state.epoch_step >= steps_per_epoch
        if state.epoch_step % log_every == 0 or end_of_epoch:
            backend.synchronize()
            sums = torch.stack([window_loss.cpu(), window_correct.cpu().double(),
                                torch.tensor(float(window_count), dtype=torch.float64),
                                torch.tensor(window_wait, dtype=torch.float64)])
            loss_sum, correct, count, wait = dist.all_reduce_sum(sums).tolist()
            elapsed = time.perf_counter() - window_start
            state.samples += int(count)
            record = {
                "split": "train", "epoch": round(state.epoch + state.epoch_step / steps_per_epoch, 4),
                "step": state.step, "samples": state.samples, "loss": loss_sum / max(count, 1.0),
                "accuracy": 100.0 * correct / max(count, 1.0), "lr": lr,
                "throughput": count / elapsed if elapsed > 0 else float("nan"),
                "data_wait": 100.0 * wait / dist.world_size / elapsed if elapsed > 0 else float("nan"),
            }
            logger.record(record)
            logger.print(f"epoch {state.epoch + 1}/{epochs} step {state.epoch_step}/{steps_per_epoch} "
                         f"loss: {record['loss']:.4f} accuracy: {record['accuracy']:.2f} % lr: {record['lr']:.6g} "
                         f"throughput: {record['throughput']:.1f} samples/sec")
            progress.update(0, loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.3g}",
                            img_s=f"{record['throughput']:.0f}")
            result.history.append(record)
            totals["loss"] += loss_sum
            totals["correct"] += correct
            totals["count"] += count
            totals["wait"] += wait / dist.world_size
            window_loss.zero_()
            window_correct.zero_()
            window_count, window_wait, window_steps = 0, 0.0, 0
            window_start = time.perf_counter()
        if dist.any_flag(should_stop()):
            result.stopped = True
            break
    progress.close()
    seconds = time.perf_counter() - epoch_start
    if window_steps:  # a stop between log points: fold the rest in
        backend.synchronize()
        sums = torch.stack([window_loss.cpu(), window_correct.cpu().double(),
                            torch.tensor(float(window_count), dtype=torch.float64)])
        loss_sum, correct, count = dist.all_reduce_sum(sums).tolist()
        state.samples += int(count)
        totals["loss"] += loss_sum
        totals["correct"] += correct
        totals["count"] += count
    result.completed = state.epoch_step >= steps_per_epoch
    if totals["count"]:
        result.loss = totals["loss"] / totals["count"]
        result.accuracy = 100.0 * totals["correct"] / totals["count"]
        result.samples = int(totals["count"])
        result.throughput = totals["count"] / seconds if seconds > 0 else float("nan")
        result.data_wait = 100.0 * totals["wait"] / seconds if seconds > 0 else float("nan")
    result.seconds = seconds
    return result


@dataclass
class EvalResult:
    """Validation loss (plain cross-entropy) and top-1 accuracy in percent, over all ranks' samples."""

    loss: float
    accuracy: float
    count: int
    seconds: float


def evaluate(backend: Backend, model: nn.Module, feeder: DeviceFeeder, dist: DistContext) -> EvalResult:
    """Run `model` over the feeder's batches without gradients; restores the model's training mode afterwards."""
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    loss = torch.zeros((), dtype=torch.float64, device=backend.device)
    correct = torch.zeros((), dtype=torch.int64, device=backend.device)
    count = 0
    for images, labels in feeder:
        out = backend.eval_step(model, images, labels)
        loss += out.loss_sum.double()
        correct += out.correct
        count += out.samples
    sums = torch.stack([loss.cpu(), correct.cpu().double(), torch.tensor(float(count), dtype=torch.float64)])
    loss_sum, correct_sum, total = dist.all_reduce_sum(sums).tolist()
    model.train(was_training)
    return EvalResult(loss_sum / max(total, 1.0), 100.0 * correct_sum / max(total, 1.0), int(total),
                      time.perf_counter() - start)
