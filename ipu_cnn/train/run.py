"""The training application: build everything from a `Config`, train, validate, checkpoint, log and plot.

`train` is what ``python -m ipu_cnn.train`` runs. It takes optional ready-made loaders so tests can drive the whole
application with in-memory data.

Checkpoint contents (``torch.save`` dict of tensors and plain values, format ``ipu_cnn.checkpoint`` v2, see
`ipu_cnn.train.checkpoint`): ``model`` (the plain timm state dict),
``optimizer``, ``scheduler``, ``scaler``, ``weight_average``, ``mixing``, ``epoch`` (the epoch in progress, 0-based),
``step``, ``epoch_step``, ``samples``, ``loader`` and ``rng`` (one entry per rank), ``config`` (the resolved config),
``metrics`` (the last validation), and for inference on its own: ``model_name``, ``num_classes``, ``class_names``,
``image_size``, ``eval`` (crop fraction, interpolation, mean, std); `save_checkpoint` adds ``checksums``.
"""
from __future__ import annotations

import json
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ipu_cnn.backends import DistContext, create_backend, init_distributed, resolve_device_type
from ipu_cnn.backends.torch_device import TorchBackend, TorchTrainStep
from ipu_cnn.models import LabelSmoothingCrossEntropy, NormalizedModel, create_model, model_spec, unwrap_model
from ipu_cnn.train.averaging import WeightAverage
from ipu_cnn.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    capture_rng_state,
    checkpoint_name,
    prepare_checkpoint_dir,
    remove_partials,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from ipu_cnn.train.config import Config, config_to_yaml, run_options
from ipu_cnn.train.engine import EvalResult, TrainState, evaluate, train_one_epoch
from ipu_cnn.train.logs import RunLogger
from ipu_cnn.train.mixing import mixing_from_config
from ipu_cnn.train.optim import create_optimizer, effective_lr, parameter_groups
from ipu_cnn.train.schedule import create_scheduler, load_scheduler_state, schedule_from_config
from ipu_cnn.train.signals import StopRequest

Loaders = tuple[Iterable[Any], Iterable[Any] | None, int, list[str]]


def derive(config: Config, dist: DistContext) -> dict[str, Any]:
    """Values that follow from the options, the device and the process group; stored in the config as well.

    ``loader_batch_size`` is what one loader batch holds on this process: one optimizer step (micro-batch x
    gradient accumulation) on CPU/CUDA, one host call (x replicas x device iterations) on IPUs.
    """
    spec = model_spec(config["model"])
    ipu = config["device"] == "ipu"
    micro, accumulation = int(config["micro_batch_size"]), int(config["gradient_accumulation"])
    if not ipu and config["replicas"] not in (1, dist.world_size):
        raise SystemExit(f"--replicas {config['replicas']}: on CPU/CUDA each replica is a process; launch with "
                         f"`torchrun --nproc-per-node {config['replicas']} -m ipu_cnn.train ...` (this job has "
                         f"{dist.world_size} process{'es' if dist.world_size > 1 else ''})")
    replicas = int(config["replicas"]) if ipu else 1
    device_iterations = int(config["device_iterations"]) if ipu else 1
    loader_batch = micro * accumulation * replicas * device_iterations
    global_batch = micro * accumulation * replicas * dist.world_size
    val_micro = int(config["validation_batch_size"] or micro)
    # --normalization-location none: pixels scaled to [0, 1], no mean/std step (an identity mean and std)
    plain = config["normalization_location"] == "none"
    return {
        "timm_model": spec.name,
        "image_size": int(config["image_size"] or spec.image_size),
        "eval_crop_pct": float(config["eval_crop_pct"] or spec.crop_pct),
        "mean": [0.0, 0.0, 0.0] if plain else list(spec.mean),
        "std": [1.0, 1.0, 1.0] if plain else list(spec.std),
        "world_size": dist.world_size,
        "loader_batch_size": loader_batch,
        "validation_loader_batch_size": val_micro * replicas * device_iterations,
        "global_batch_size": global_batch,
        "lr_effective": effective_lr(config, global_batch),
    }


def _run_dir(config: Config, dist: DistContext, resumed: Mapping[str, Any] | None) -> Path:
    """The run folder: the resumed run's (when it still exists and no --run-name is given) or a new one, named on
    rank 0 and shared with the other ranks."""
    if resumed is not None and not config["run_name"]:
        previous = resumed["config"].get("run_dir")
        if previous and Path(previous).is_dir():
            return Path(previous)
    name = config["run_name"] or f"{time.strftime('%Y%m%d-%H%M%S')}-{config['config']}-{config['model']}"
    name = dist.gather_objects(name)[0]
    return Path(config["output_dir"]).expanduser().absolute() / name


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _inference_metadata(config: Config, num_classes: int, class_names: list[str]) -> dict[str, Any]:
    return {
        "model_name": config["timm_model"],
        "num_classes": num_classes,
        "class_names": list(class_names),
        "image_size": config["image_size"],
        "eval": {"size": config["image_size"], "crop_pct": config["eval_crop_pct"],
                 "interpolation": config["interpolation"], "mean": config["mean"], "std": config["std"],
                 "normalization_location": config["normalization_location"]},
    }


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


class _Trainer:
    """Holds the run's objects so checkpointing and validation read them from one place."""

    def __init__(self, config: Config, loaders: Loaders | None) -> None:
        self.config = config
        self.options = run_options(config)  # what the user asked, before anything is derived: --resume restores it
        config["device"] = resolve_device_type(config["device"])
        self.dist = init_distributed(config["device"], config["dist_backend"])
        config.update(derive(config, self.dist))
        self.resumed_from: Path | None = None
        resumed: dict[str, Any] | None = None
        if config["resume"]:
            self.resumed_from, resumed = resolve_checkpoint(config["resume"])
        self.run_dir = _run_dir(config, self.dist, resumed)
        config["run_dir"] = str(self.run_dir)
        ckpt_dir = config["checkpoint_output_dir"]
        if not ckpt_dir and self.resumed_from is not None and resumed is not None \
                and resumed["config"].get("run_dir") == str(self.run_dir):
            ckpt_dir = str(self.resumed_from.parent)
        self.checkpoint_dir = Path(ckpt_dir or self.run_dir / "checkpoints").expanduser()
        config["checkpoint_dir"] = str(self.checkpoint_dir)
        if self.dist.is_main:  # a folder that cannot be written fails now, not at the first checkpoint
            prepare_checkpoint_dir(self.checkpoint_dir)
        _seed_everything(int(config["seed"]))

        self.train_loader, self.val_loader, self.num_classes, self.class_names = (
            loaders if loaders is not None else self._create_loaders())
        config["num_classes_resolved"] = self.num_classes
        self.model: NormalizedModel = create_model(
            config["model"], self.num_classes, pretrained=bool(config["pretrained"]), weights=config["weights"],
            drop_rate=config["dropout"], drop_path_rate=config["drop_path"],
            zero_init_residual=config["zero_init_residual"],
            normalize=config["normalization_location"] != "host", mean=config["mean"], std=config["std"],
            channels_last=config["device"] != "ipu")
        self.host_normalizer = None
        if config["normalization_location"] == "host":
            from ipu_cnn.models import InputNormalizer

            self.host_normalizer = InputNormalizer(config["mean"], config["std"])
        # different ranks draw different dropout masks; the weights are equal (DDP broadcasts rank 0's)
        torch.manual_seed(int(config["seed"]) * 1000 + self.dist.rank)

        self.backend = create_backend(config, self.dist)
        self.train_model = self.backend.prepare_model(self.model)
        self.steps_per_epoch = len(self.train_loader)  # type: ignore[arg-type]
        if self.steps_per_epoch < 1:
            raise SystemExit(f"the training set gives no full batch of {config['loader_batch_size']} samples per rank: "
                             "lower --micro-batch-size or --gradient-accumulation, or use more data")
        lr = float(config["lr_effective"])
        if config["device"] == "ipu":
            from ipu_cnn.backends.ipu import ipu_optimizer

            self.optimizer = ipu_optimizer(config, parameter_groups(self.model, float(config["weight_decay"])),
                                           self.backend.poptorch)  # type: ignore[union-attr]
        else:
            self.optimizer = create_optimizer(self.model, config, lr)
        self.schedule = schedule_from_config(config, self.steps_per_epoch)
        self.scheduler = create_scheduler(self.optimizer, self.schedule)
        self.scaler = self.backend.create_scaler() if isinstance(self.backend, TorchBackend) else None
        self.mixing = mixing_from_config(config, self.num_classes, self.dist.rank)
        criterion = LabelSmoothingCrossEntropy(float(config["label_smoothing"]))
        self.average: WeightAverage | None = None
        if config["weight_avg_strategy"] != "none":
            start = int(round(float(config["weight_avg_start_epoch"]) * self.steps_per_epoch))
            self.average = WeightAverage(unwrap_model(self.model), config["weight_avg_strategy"],
                                         float(config["weight_avg_exp_decay"]), start)
        if isinstance(self.backend, TorchBackend):
            self.step_fn: Any = TorchTrainStep(self.backend, self.train_model, self.optimizer, criterion,
                                               accumulation=int(config["gradient_accumulation"]), scaler=self.scaler,
                                               mix=self.mixing)
        else:
            self.step_fn = self.backend.create_train_step(self.train_model, self.optimizer, criterion, mix=self.mixing)
        if self.host_normalizer is not None:
            self.step_fn = _HostNormalized(self.step_fn, self.host_normalizer)
        self.state = TrainState()
        self.loader_state: Any = None
        self.last_validation: dict[str, Any] = {}
        if resumed is not None:
            self._restore(resumed)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main, tensorboard=bool(config["tensorboard"]),
                                wandb=bool(config["wandb"]), wandb_project=str(config["wandb_project"]), config=config,
                                append=resumed is not None)

    def _create_loaders(self) -> Loaders:
        from ipu_cnn.train.data import create_loaders

        if self.config["device"] == "ipu" and self.dist.launcher != "poprun":
            return create_loaders(self.config, 0, 1)
        return create_loaders(self.config, self.dist.rank, self.dist.world_size)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _restore(self, ckpt: Mapping[str, Any]) -> None:
        if ckpt.get("version", 0) > CHECKPOINT_VERSION:
            raise SystemExit(f"{self.resumed_from}: written by a newer ipu_cnn (checkpoint version {ckpt['version']})")
        if ckpt["model_name"] != self.config["timm_model"] or ckpt["num_classes"] != self.num_classes:
            raise SystemExit(f"--resume {self.resumed_from}: it holds {ckpt['model_name']} with {ckpt['num_classes']} "
                             f"classes, but this run builds {self.config['timm_model']} with {self.num_classes}; "
                             "resume with the same --model and data (or start from it with --weights)")
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        load_scheduler_state(self.scheduler, ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.average is not None and ckpt.get("weight_average"):
            self.average.load_state_dict(ckpt["weight_average"])
        rank = self.dist.rank
        same_world = len(ckpt["rng"]) == self.dist.world_size
        if self.mixing is not None and ckpt.get("mixing"):
            self.mixing.load_state_dict(ckpt["mixing"][rank if same_world else 0])
        restore_rng_state(ckpt["rng"][rank if same_world else 0])
        self.state = TrainState(int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt["epoch_step"]),
                                int(ckpt.get("samples", 0)))
        loader_states = ckpt.get("loader")
        if self.state.epoch_step and loader_states is not None:
            if not same_world:
                raise SystemExit(f"--resume {self.resumed_from}: it stopped mid-epoch with {len(loader_states)} "
                                 f"ranks; resume it with the same number of processes ({self.dist.world_size} now)")
            self.loader_state = loader_states[rank]
        self.last_validation = dict(ckpt.get("metrics") or {})
        if self.dist.is_main:
            print(f"resumed from {self.resumed_from}: epoch {self.state.epoch + 1}, step {self.state.step}",
                  flush=True)

    def save(self, tag: str | None = None) -> Path | None:
        """Write a checkpoint of the current state (collective: every rank contributes its RNG and loader state)."""
        self.backend.sync_weights_to_host()
        epoch, epoch_step, loader_state = self.state.epoch, self.state.epoch_step, None
        if epoch_step >= self.steps_per_epoch:
            epoch, epoch_step = epoch + 1, 0
        elif epoch_step:
            loader_state = self.train_loader.state_dict()  # type: ignore[attr-defined]
        per_rank = self.dist.gather_objects({"rng": capture_rng_state(), "loader": loader_state,
                                             "mixing": self.mixing.state_dict() if self.mixing else None})
        path = None
        if self.dist.is_main:
            remove_partials(self.checkpoint_dir)
            state = {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "model": unwrap_model(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "weight_average": self.average.state_dict() if self.average is not None else None,
                "mixing": [r["mixing"] for r in per_rank],
                "epoch": epoch, "step": self.state.step, "epoch_step": epoch_step, "samples": self.state.samples,
                "loader": [r["loader"] for r in per_rank] if epoch_step else None,
                "rng": [r["rng"] for r in per_rank],
                "config": dict(self.config), "options": dict(self.options), "metrics": self.last_validation,
                **_inference_metadata(self.config, self.num_classes, self.class_names),
            }
            path = save_checkpoint(state, self.checkpoint_dir / checkpoint_name(epoch, self.state.step, tag))
        self.dist.barrier()
        return path

    # -- validation ----------------------------------------------------------------------------------------------
    def validate(self) -> EvalResult | None:
        if self.val_loader is None:
            return None
        self.backend.sync_weights_to_host()
        result = evaluate(self.backend, self._eval_model(self.model), self.val_loader, self.dist)
        epoch = round(self.state.epoch + self.state.epoch_step / self.steps_per_epoch, 4)
        self.last_validation = {"loss": result.loss, "accuracy": result.accuracy, "count": result.count,
                                "epoch": epoch, "step": self.state.step}
        self.logger.record({"split": "validation", "weights": "trained", "epoch": epoch, "step": self.state.step,
                            "samples": self.state.samples, "loss": result.loss, "accuracy": result.accuracy})
        self.logger.print(f"validation accuracy: {result.accuracy:.2f} % (epoch {epoch:g}, loss {result.loss:.4f}, "
                          f"{result.count} images, {result.seconds:.1f} s)")
        if self.average is not None:
            averaged = NormalizedModel(self.average.module, self.model.normalizer)
            avg = evaluate(self.backend, self._eval_model(averaged), self.val_loader, self.dist)
            self.last_validation["averaged_accuracy"] = avg.accuracy
            self.logger.record({"split": "validation", "weights": "averaged", "epoch": epoch,
                                "step": self.state.step, "samples": self.state.samples, "loss": avg.loss,
                                "accuracy": avg.accuracy})
            self.logger.print(f"validation accuracy (averaged weights): {avg.accuracy:.2f} % (loss {avg.loss:.4f})")
        return result

    def _eval_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.host_normalizer is None:
            return model
        return _HostNormalizedModel(model, self.host_normalizer)

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        config, dist, logger = self.config, self.dist, self.logger
        if dist.is_main:
            (self.run_dir / "config.yaml").write_text(config_to_yaml(config, _derived(config)))
            logger.print(f"run folder: {self.run_dir}")
            logger.print(f"training {config['timm_model']} ({sum(p.numel() for p in self.model.parameters()):,} "
                         f"parameters) on {config['data']} data, {self.num_classes} classes, "
                         f"{config['image_size']} px, "
                         f"device {config['device']} x {dist.world_size}, global batch {config['global_batch_size']}, "
                         f"{self.steps_per_epoch} steps per epoch, peak lr {config['lr_effective']:.4g}")
        epochs = int(config["epoch"])
        max_steps = config["max_steps"]
        start = time.perf_counter()
        stop = StopRequest()
        stopped = False
        last_checkpoint: Path | None = None
        val_mode = config["validation_mode"]
        with stop:
            while self.state.epoch < epochs:
                epoch = self.state.epoch
                self.train_loader.set_epoch(epoch)  # type: ignore[attr-defined]
                if self.loader_state is not None:
                    self.train_loader.load_state_dict(self.loader_state)  # type: ignore[attr-defined]
                    self.loader_state = None
                result = train_one_epoch(
                    self.step_fn, self.train_loader, backend=self.backend, model=self.train_model,
                    optimizer=self.optimizer, scheduler=self.scheduler, state=self.state,
                    steps_per_epoch=self.steps_per_epoch, epochs=epochs, dist=dist, logger=logger,
                    logs_per_epoch=int(config["logs_per_epoch"]), progress_mode=config["progress"],
                    should_stop=lambda: stop.requested or (max_steps is not None and self.state.step >= max_steps),
                    on_step_end=self._after_step)
                if result.samples:
                    logger.print(f"epoch {epoch + 1}/{epochs} {'done' if result.completed else 'stopped'}: "
                                 f"loss: {result.loss:.4f} accuracy: {result.accuracy:.2f} % throughput: "
                                 f"{result.throughput:.1f} samples/sec, waiting for data {result.data_wait:.1f} % "
                                 f"({_format_duration(result.seconds)})")
                last_epoch = epoch + 1 == epochs
                if result.completed:
                    if val_mode == "during" and ((epoch + 1) % int(config["validation_freq"]) == 0 or last_epoch):
                        self.validate()
                    # with --validation-mode after, the final checkpoint is written once, after that validation
                    final_later = last_epoch and val_mode == "after"
                    if not final_later and ((epoch + 1) % int(config["checkpoint_save_freq"]) == 0 or last_epoch
                                            or result.stopped):
                        last_checkpoint = self.save("final" if last_epoch else None)
                    self.state.epoch += 1
                    self.state.epoch_step = 0
                elif result.stopped:
                    last_checkpoint = self.save("interrupted")
                if result.stopped and self.state.epoch < epochs:  # a stop at the very last step is just the end
                    stopped = True
                    break
        if not stopped and val_mode == "after":
            self.validate()
            last_checkpoint = self.save("final")
        seconds = time.perf_counter() - start
        plot_path = None
        if dist.is_main and config["plot"]:
            plot_path = _plot(self.run_dir)
        summary = {
            "run_dir": str(self.run_dir), "checkpoint": str(last_checkpoint) if last_checkpoint else None,
            "plot": str(plot_path) if plot_path else None, "stopped": stopped,
            "stop_reason": (stop.signal_name or "max-steps") if stopped else None,
            "epoch": self.state.epoch, "step": self.state.step, "seconds": seconds,
            "validation": self.last_validation,
        }
        if dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            why = f" ({summary['stop_reason']})" if stopped else ""
            logger.print(f"{'stopped' if stopped else 'finished'}{why} after {_format_duration(seconds)}, "
                         f"step {self.state.step}")
            if self.last_validation:
                logger.print(f"final validation accuracy: {self.last_validation['accuracy']:.2f} %")
            logger.print(f"logs: {self.run_dir / 'metrics.jsonl'} (and metrics.csv, config.yaml)")
            if last_checkpoint:
                logger.print(f"checkpoint: {last_checkpoint}")
            if plot_path:
                logger.print(f"plot: {plot_path}")
            if stopped:
                logger.print(f"continue with: python -m ipu_cnn.train --resume "
                             f"{shlex.quote(str(self.checkpoint_dir.absolute()))}")
        return summary

    def _after_step(self, state: TrainState) -> None:
        if self.average is not None:
            self.average.update(unwrap_model(self.model), state.step)

    def close(self) -> None:
        self.logger.close()
        for loader in (self.train_loader, self.val_loader):
            close = getattr(loader, "close", None)
            if close is not None:
                close()
        detach = getattr(self.backend, "detach", None)
        if detach is not None:
            detach()
        self.dist.close()


class _HostNormalized:
    """``--normalization-location host``: normalise the uint8 batch on the host before the step moves it."""

    def __init__(self, step_fn: Any, normalizer: torch.nn.Module) -> None:
        self.step_fn = step_fn
        self.normalizer = normalizer

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Any:
        with torch.no_grad():
            images = self.normalizer(images)
        return self.step_fn(images, labels)


class _HostNormalizedModel(torch.nn.Module):
    """Evaluation counterpart of `_HostNormalized` (the normaliser runs where the images are)."""

    def __init__(self, model: torch.nn.Module, normalizer: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.normalizer = normalizer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalizer.to(images.device)(images))


def _derived(config: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("timm_model", "image_size", "eval_crop_pct", "mean", "std", "world_size", "loader_batch_size",
            "validation_loader_batch_size", "global_batch_size", "lr_effective", "num_classes_resolved", "run_dir",
            "checkpoint_dir", "device")
    return {k: config[k] for k in keys if k in config}


def _plot(run_dir: Path) -> Path | None:
    try:
        from ipu_cnn.plot import plot_run

        return plot_run(run_dir)
    except Exception as error:  # a plot must never fail a finished run
        print(f"warning: could not write the metrics plot: {error}", file=sys.stderr)
        return None


def train(config: Config, loaders: Loaders | None = None) -> dict[str, Any]:
    """Run training as `config` says; returns a summary (run folder, last checkpoint, plot, final validation).

    Args:
        loaders: ``(train_loader, val_loader, num_classes, class_names)`` to use instead of `create_loaders`'s.
    """
    trainer = _Trainer(config, loaders)
    try:
        return trainer.run()
    finally:
        trainer.close()
