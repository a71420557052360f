"""The training application: build everything from `RunOptions`, train, validate, checkpoint, log and plot.

`train` is what ``python -m ipu_cnn.train`` runs. It takes optional ready-made loaders so tests can drive the whole
application with in-memory data.

Checkpoint contents (``torch.save`` dict of tensors and plain values, format ``ipu_cnn.checkpoint`` v2, see
`ipu_cnn.train.checkpoint`): ``model`` (the plain timm state dict),
``optimizer``, ``scheduler``, ``scaler``, ``weight_average``, ``mixing``, ``epoch`` (the epoch in progress, 0-based),
``step``, ``epoch_step``, ``samples``, ``loader`` and ``rng`` (one entry per rank), ``config`` (the run's flat
resolved record, `RunPlan.record`), ``options`` (the options as asked, which --resume restores), ``metrics`` (the
last validation), and for inference on its own: ``model_name``, ``num_classes``, ``class_names``, ``image_size``,
``eval`` (`EvalPreprocessing.checkpoint_record`: size, crop fraction, interpolation, mean, std, normalisation
location); `save_checkpoint` adds ``checksums``.
"""
from __future__ import annotations

import copy
import json
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ipu_cnn.backends import (
    DistContext,
    create_backend,
    ignored_ipu_options,
    init_distributed,
    resolve_device_type,
)
from ipu_cnn.backends.distributed import popdist_replica_note
from ipu_cnn.backends.feeder import DeviceFeeder
from ipu_cnn.backends.precision import floating_point_checks
from ipu_cnn.batch_sources import BatchSource
from ipu_cnn.models import (
    EvalPreprocessing,
    InputNormalizer,
    LabelSmoothingCrossEntropy,
    ModelShape,
    NormalizedModel,
    create_model,
    model_spec,
    unwrap_model,
)
from ipu_cnn.train.averaging import WeightAverage
from ipu_cnn.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    capture_rng_state,
    checkpoint_name,
    load_checkpoint,
    prepare_checkpoint_dir,
    remove_partials,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from ipu_cnn.train.config import RunOptions, config_to_yaml, run_options
from ipu_cnn.train.data import DataSettings, Loaders, create_loaders, default_eval_crop_pct, default_image_size
from ipu_cnn.train.engine import EvalResult, TrainState, evaluate, train_one_epoch
from ipu_cnn.train.logs import RunLogger
from ipu_cnn.train.mixing import Mixing
from ipu_cnn.train.freeze import FrozenPrefix, freeze_before
from ipu_cnn.train.plan import (
    TRAIN_STAGE,
    BatchPlan,
    RunPlan,
    Stage,
    effective_lr,
    fold_config_replicas,
    ipu_only_notes,
    ipu_settings,
    optimizer_settings,
    plan_batches,
    plan_stages,
)
from ipu_cnn.train.schedule import LRSchedule, create_scheduler, load_scheduler_state, loss_scale_ramp
from ipu_cnn.train.signals import StopRequest


def _run_dir(options: RunOptions, dist: DistContext, resumed: Mapping[str, Any] | None) -> Path:
    """The run folder: the resumed run's (when it still exists and no --run-name is given) or a new one, named on
    rank 0 and shared with the other ranks."""
    if resumed is not None and not options.run_name:
        previous = resumed["config"].get("run_dir")
        if previous and Path(previous).is_dir():
            return Path(previous)
    name = options.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{options.config}-{options.model}"
    name = dist.gather_objects(name)[0]
    return Path(options.output_dir).expanduser().absolute() / name


def _checkpoint_dir(options: RunOptions, run_dir: Path, resumed_from: Path | None,
                    resumed: Mapping[str, Any] | None) -> Path:
    """``--checkpoint-output-dir``, else the resumed checkpoint's folder when resuming in place, else
    RUN_DIR/checkpoints."""
    ckpt_dir = options.checkpoint_output_dir
    if not ckpt_dir and resumed_from is not None and resumed is not None \
            and resumed["config"].get("run_dir") == str(run_dir):
        ckpt_dir = str(resumed_from.parent)
    return Path(ckpt_dir or run_dir / "checkpoints").expanduser()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _inference_metadata(plan: RunPlan, normalization_location: str, class_names: list[str],
                        shape: ModelShape) -> dict[str, Any]:
    """What inference needs from a checkpoint on its own: the model and its shape options, its classes and its eval
    preprocessing."""
    return {
        "model_name": plan.timm_model,
        "model_shape": shape.record(),
        "num_classes": plan.num_classes,
        "class_names": list(class_names),
        "image_size": plan.eval.image_size,
        "eval": plan.eval.checkpoint_record(normalization_location),
    }


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


class _Trainer:
    """Holds the run's objects so checkpointing and validation read them from one place."""

    def __init__(self, options: RunOptions, loaders: Loaders | Callable[[Stage], Loaders] | None) -> None:
        self.device = device = resolve_device_type(options.device)
        self.dist = init_distributed(device, options.dist_backend)
        options, replica_note = fold_config_replicas(options, device, self.dist.world_size)
        self.options = options
        self.shape = ModelShape.from_record(options.as_dict())
        self.notes = ([f"model shape: {self.shape.describe()}"] if not self.shape.is_default else []) + \
            [n for n in [replica_note, popdist_replica_note(options.replicas, self.dist)] if n] + \
            ipu_only_notes(options, device) + ignored_ipu_options(options, device)
        # a --replicas that needs torchrun fails now
        plan_batches(options, device, self.dist.world_size, local_replicas=self.dist.local_replicas)
        self.spec = spec = model_spec(options.model)
        self.eval_pre = eval_pre = EvalPreprocessing.resolve(
            spec, image_size=options.image_size or default_image_size(options.data),
            crop_pct=options.eval_crop_pct or default_eval_crop_pct(options.data), interpolation=options.interpolation,
            plain=options.normalization_location == "none")
        self.resumed_from: Path | None = None
        resumed: dict[str, Any] | None = None
        if options.resume:
            self.resumed_from, resumed = resolve_checkpoint(options.resume)
            if resumed.get("averaged"):
                raise SystemExit(f"--resume {self.resumed_from}: an averaged checkpoint holds weights without "
                                 "training state; start a new run from it with --weights FILE")
        self.stages = plan_stages(options, eval_pre.image_size)
        stage = self._resumed_stage(resumed)
        self.run_dir_path = _run_dir(options, self.dist, resumed)
        self.checkpoint_dir_path = _checkpoint_dir(options, self.run_dir_path, self.resumed_from, resumed)
        if self.dist.is_main:  # a folder that cannot be written fails now, not at the first checkpoint
            prepare_checkpoint_dir(self.checkpoint_dir_path)
        _seed_everything(options.seed)
        self._loaders = loaders
        if isinstance(loaders, tuple) and len(self.stages) > 1:
            raise ValueError("with --half-res-training, pass loaders as a function of the stage (each stage has its "
                             "own training images)")
        self.val_loader: BatchSource | None = None
        self.val_feed: DeviceFeeder | None = None
        self.class_names: list[str] = []
        self.num_classes = 0
        self.model: NormalizedModel | None = None
        self.frozen: FrozenPrefix | None = None
        self.average: WeightAverage | None = None
        self._enter_stage(stage)
        self.state = TrainState(epoch=stage.first_epoch)
        self.loader_state: Any = None
        self.last_validation: dict[str, Any] = {}
        if resumed is not None:
            self._restore(resumed)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main, tensorboard=options.tensorboard,
                                wandb=options.wandb, wandb_project=options.wandb_project,
                                config=self.plan.record(options), append=resumed is not None)

    def _resumed_stage(self, resumed: Mapping[str, Any] | None) -> Stage:
        """The stage a resumed checkpoint was taken in (older checkpoints: the training stage)."""
        name = str((resumed or {}).get("stage") or TRAIN_STAGE)
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise SystemExit(f"--resume {self.resumed_from}: it was taken in the {name} stage, which this run does not "
                         "have; resume with the options it was started with (--half-res-training and its "
                         "--fine-tune-* options)")

    def _enter_stage(self, stage: Stage) -> None:
        """Build what the loop of `stage` runs with: backend, training data, the model (once), frozen layers,
        optimizer, schedule, scaler, mixing, averaging and the step."""
        first = self.model is None
        o, dist, device = stage.options, self.dist, self.device
        self.stage = stage
        batches = plan_batches(o, device, dist.world_size, local_replicas=dist.local_replicas)
        val_batch = plan_batches(self.options, device, dist.world_size,
                                 local_replicas=dist.local_replicas).validation_loader_batch_size
        self._loss_scale: float | None = None  # the new step starts at the stage's --loss-scaling
        if not first:
            self.backend.close()
        self.backend = create_backend(
            device, dist, precision=o.precision, half_dtype=o.half_dtype, loss_scaling=o.loss_scaling,
            auto_loss_scaling=o.auto_loss_scaling, compile_model=o.compile, sync_bn=o.sync_bn,
            ipu=ipu_settings(o, replicas=batches.device_replicas, profile_dir=str(self.run_dir_path / "profile")),
            eval_batch_size=val_batch)
        train_loader, val_loader, num_classes, class_names = self._create_loaders(stage, batches, val_batch, first)
        if first:
            self.val_loader, self.num_classes, self.class_names = val_loader, num_classes, class_names
        elif val_loader is not None and val_loader is not self.val_loader:
            val_loader.close()  # a later stage validates with the first stage's source
        self.train_loader = train_loader
        steps_per_epoch = len(train_loader)
        if steps_per_epoch < 1:
            raise SystemExit(f"the training set gives no full batch of {batches.loader_batch_size} samples per rank "
                             f"in the {stage.name} stage: lower its micro-batch size or gradient accumulation, or "
                             "use more data")
        self.plan = RunPlan(device=device, world_size=dist.world_size, timm_model=self.spec.name, batches=batches,
                            eval=self.eval_pre, lr_effective=effective_lr(o.lr, o.lr_reference_batch,
                                                                          batches.global_batch_size),
                            num_classes=self.num_classes, steps_per_epoch=steps_per_epoch, run_dir=self.run_dir_path,
                            checkpoint_dir=self.checkpoint_dir_path, stage=stage)
        options, eval_pre = self.options, self.eval_pre
        if first:
            self.model = create_model(
                options.model, self.num_classes, pretrained=options.pretrained, weights=options.weights,
                drop_rate=options.dropout, drop_path_rate=options.drop_path,
                zero_init_residual=options.zero_init_residual, normalize=options.normalization_location != "host",
                mean=eval_pre.mean, std=eval_pre.std, channels_last=self.backend.channels_last, shape=self.shape)
        assert self.model is not None
        self.frozen = None
        if stage.first_trainable_layer:
            self.frozen = freeze_before(unwrap_model(self.model), stage.first_trainable_layer)
            if dist.is_main:
                print(f"{stage.name} stage: {len(self.frozen.parameters)} parameter tensors frozen before "
                      f"{stage.first_trainable_layer}", flush=True)
        host_normalizer = None
        if options.normalization_location == "host":
            host_normalizer = InputNormalizer(eval_pre.mean, eval_pre.std)
        self.train_feed = DeviceFeeder(self.train_loader, self.backend, host_normalizer)
        self.val_feed = DeviceFeeder(self.val_loader, self.backend, host_normalizer) \
            if self.val_loader is not None else None
        # different ranks draw different dropout masks; the weights are equal (DDP broadcasts rank 0's)
        torch.manual_seed(options.seed * 1000 + dist.rank + 7919 * stage.index)

        self.train_model = self.backend.prepare_model(self.model)
        self.optimizer = self.backend.create_optimizer(self.model, optimizer_settings(o, self.plan.lr_effective))
        self.schedule = LRSchedule(kind=o.lr_schedule, steps_per_epoch=steps_per_epoch, epochs=float(stage.epochs),
                                   warmup_epochs=o.warmup_epoch, decay=o.lr_decay,
                                   decay_epochs=list(o.lr_epoch_decay or []), decay_period=o.lr_decay_period,
                                   min_ratio=o.lr_min_ratio, updates_per_epoch=o.lr_scheduler_freq)
        self.scheduler = create_scheduler(self.optimizer, self.schedule)
        self.scaler = self.backend.create_scaler()
        mixing = Mixing(self.num_classes, mixup_alpha=o.mixup_alpha, cutmix_low=o.cutmix_lambda_low,
                        cutmix_high=o.cutmix_lambda_high, cutmix_disable_prob=o.cutmix_disable_prob,
                        label_smoothing=o.label_smoothing, seed=options.seed * 1000 + dist.rank)
        self.mixing = mixing if mixing.enabled else None  # hard labels are cheaper
        criterion = LabelSmoothingCrossEntropy(o.label_smoothing)
        self.average = None
        if stage.average and o.weight_avg_strategy != "none" and o.weight_avg_N is None:  # per step
            start = int(round(o.weight_avg_start_epoch * steps_per_epoch))
            self.average = WeightAverage(unwrap_model(self.model), o.weight_avg_strategy, o.weight_avg_exp_decay,
                                         start)
        self.step_fn = self.backend.create_train_step(self.train_model, self.optimizer, criterion,
                                                      accumulation=o.gradient_accumulation, scaler=self.scaler,
                                                      mix=self.mixing)

    @property
    def run_dir(self) -> Path:
        return self.run_dir_path

    @property
    def checkpoint_dir(self) -> Path:
        return self.checkpoint_dir_path

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    def _create_loaders(self, stage: Stage, batches: BatchPlan, val_batch: int, validation: bool) -> Loaders:
        """`stage`'s training source (and with `validation`, the run's validation source): the caller's when
        `train` was given loaders, else `create_loaders`'s."""
        if self._loaders is not None:
            return self._loaders(stage) if callable(self._loaders) else self._loaders
        rank, count = self.backend.data_shard()
        return create_loaders(DataSettings.from_options(self.options), batch_size=batches.loader_batch_size,
                              val_batch_size=val_batch, eval=self.eval_pre, device=self.backend.device,
                              pin_memory=self.backend.pin_memory, rank=rank, world_size=count,
                              train_image_size=stage.train_image_size,
                              train_eval_preprocessing=stage.eval_preprocessing_for_training, validation=validation)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _restore(self, ckpt: Mapping[str, Any]) -> None:
        if ckpt.get("version", 0) > CHECKPOINT_VERSION:
            raise SystemExit(f"{self.resumed_from}: written by a newer ipu_cnn (checkpoint version {ckpt['version']})")
        if ckpt["model_name"] != self.plan.timm_model or ckpt["num_classes"] != self.plan.num_classes:
            raise SystemExit(f"--resume {self.resumed_from}: it holds {ckpt['model_name']} with {ckpt['num_classes']} "
                             f"classes, but this run builds {self.plan.timm_model} with {self.plan.num_classes}; "
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
            loader_state = self.train_loader.state_dict()
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
                "stage": self.stage.name,
                "epoch": epoch, "step": self.state.step, "epoch_step": epoch_step, "samples": self.state.samples,
                "loader": [r["loader"] for r in per_rank] if epoch_step else None,
                "rng": [r["rng"] for r in per_rank],
                "config": self.plan.record(self.options), "options": run_options(self.options),
                "metrics": self.last_validation,
                **_inference_metadata(self.plan, self.options.normalization_location, self.class_names, self.shape),
            }
            path = save_checkpoint(state, self.checkpoint_dir / checkpoint_name(epoch, self.state.step, tag))
        self.dist.barrier()
        return path

    # -- validation ----------------------------------------------------------------------------------------------
    def validate(self) -> EvalResult | None:
        if self.val_feed is None:
            return None
        self.backend.sync_weights_to_host()
        result = evaluate(self.backend, self.model, self.val_feed, self.dist)
        epoch = round(self.state.epoch + self.state.epoch_step / self.steps_per_epoch, 4)
        self.last_validation = {"loss": result.loss, "accuracy": result.accuracy, "count": result.count,
                                "epoch": epoch, "step": self.state.step}
        self.logger.record({"split": "validation", "weights": "trained", "epoch": epoch, "step": self.state.step,
                            "samples": self.state.samples, "loss": result.loss, "accuracy": result.accuracy})
        self.logger.print(f"validation accuracy: {result.accuracy:.2f} % (epoch {epoch:g}, loss {result.loss:.4f}, "
                          f"{result.count} images, {result.seconds:.1f} s)")
        if self.average is not None:
            averaged = NormalizedModel(self.average.module, self.model.normalizer)
            avg = evaluate(self.backend, averaged, self.val_feed, self.dist)
            self.last_validation["averaged_accuracy"] = avg.accuracy
            self.logger.record({"split": "validation", "weights": "averaged", "epoch": epoch,
                                "step": self.state.step, "samples": self.state.samples, "loss": avg.loss,
                                "accuracy": avg.accuracy})
            self.logger.print(f"validation accuracy (averaged weights): {avg.accuracy:.2f} % (loss {avg.loss:.4f})")
        return result

    # -- the run -------------------------------------------------------------------------------------------------
    def _announce(self) -> None:
        """The stage's opening lines (rank 0)."""
        options, plan, dist, stage = self.options, self.plan, self.dist, self.stage
        if not dist.is_main:
            return
        what = "training" if len(self.stages) == 1 else f"{stage.name} stage ({stage.index + 1}/{len(self.stages)}):"
        assert self.model is not None
        crops = "eval-transform" if stage.eval_preprocessing_for_training else "random"
        pixels = f"{stage.train_image_size} px {crops} crops, validation at {plan.eval.image_size} px"
        self.logger.print(f"{what} {plan.timm_model} ({sum(p.numel() for p in self.model.parameters()):,} "
                          f"parameters) on {options.data} data, {plan.num_classes} classes, {pixels}, "
                          f"device {plan.device} x {dist.world_size}, global batch {plan.batches.global_batch_size}, "
                          f"{self.steps_per_epoch} steps per epoch, peak lr {plan.lr_effective:.4g}")

    def _run_stage(self, stop: StopRequest) -> tuple[bool, Path | None]:
        """Train the current stage's remaining epochs; returns whether a stop ended it early, and the last
        checkpoint written."""
        options, dist, logger, stage = self.options, self.dist, self.logger, self.stage
        total = self.stages[-1].end_epoch
        max_steps = options.max_steps
        val_mode = options.validation_mode
        last_checkpoint: Path | None = None
        while self.state.epoch < stage.end_epoch:
            epoch = self.state.epoch
            self._set_loss_scale(epoch)
            self.train_loader.set_epoch(epoch - stage.first_epoch)
            if self.loader_state is not None:
                self.train_loader.load_state_dict(self.loader_state)
                self.loader_state = None
            result = train_one_epoch(
                self.step_fn, self.train_feed, backend=self.backend, model=self.train_model,
                optimizer=self.optimizer, scheduler=self.scheduler, state=self.state,
                steps_per_epoch=self.steps_per_epoch, epochs=total, dist=dist, logger=logger,
                logs_per_epoch=options.logs_per_epoch, progress_mode=options.progress,
                should_stop=lambda: stop.requested or (max_steps is not None and self.state.step >= max_steps),
                on_step_end=self._after_step, train_mode=self.frozen.train_mode if self.frozen else None)
            if result.samples:
                logger.print(f"epoch {epoch + 1}/{total} {'done' if result.completed else 'stopped'}: "
                             f"loss: {result.loss:.4f} accuracy: {result.accuracy:.2f} % throughput: "
                             f"{result.throughput:.1f} samples/sec, waiting for data {result.data_wait:.1f} % "
                             f"({_format_duration(result.seconds)})")
            last_epoch = epoch + 1 == total
            stage_end = epoch + 1 == stage.end_epoch
            if result.completed:
                if val_mode == "during" and ((epoch + 1) % options.validation_freq == 0 or stage_end):
                    self.validate()
                # with --validation-mode after, the final checkpoint is written once, after that validation; a stage
                # that another follows always ends with a checkpoint, which the next one resumes from
                final_later = last_epoch and val_mode == "after"
                if not final_later and ((epoch + 1) % options.checkpoint_save_freq == 0 or stage_end
                                        or result.stopped):
                    last_checkpoint = self.save("final" if last_epoch else None)
                self.state.epoch += 1
                self.state.epoch_step = 0
            elif result.stopped:
                last_checkpoint = self.save("interrupted")
            if result.stopped and self.state.epoch < total:  # a stop at the very last step is just the end
                return True, last_checkpoint
        return False, last_checkpoint

    def _averaged_weights(self) -> dict[str, torch.Tensor] | None:
        """At the end of the training stage: the averaged weights, or None without averaging. Per-step averaging
        has them in memory; with --weight-avg-N, the last N epoch checkpoints are averaged into
        CHECKPOINT_averaged.pt (rank 0 writes it, every rank reads it) and validated when validation is on."""
        o = self.options
        if self.average is not None:
            return {k: v.detach().clone() for k, v in self.average.module.state_dict().items()}
        if o.weight_avg_strategy == "none" or o.weight_avg_N is None:
            return None
        from ipu_cnn.train.average import average_checkpoints, select_checkpoints

        path: Path | None = None
        if self.dist.is_main:
            paths = select_checkpoints(self.checkpoint_dir, o.weight_avg_N, max_step=self.state.step)
            path, _ = average_checkpoints(paths, o.weight_avg_strategy, o.weight_avg_exp_decay)
            self.logger.print(f"averaged {len(paths)} checkpoint{'s' if len(paths) > 1 else ''} "
                              f"({o.weight_avg_strategy}): {path}")
        path = Path(self.dist.gather_objects(str(path))[0])
        self.dist.barrier()
        weights = dict(load_checkpoint(path)["model"])
        if self.val_feed is not None and o.validation_mode != "none":
            assert self.model is not None
            network = copy.deepcopy(unwrap_model(self.model))
            network.load_state_dict(weights)
            averaged = self.backend.prepare_model(NormalizedModel(network, self.model.normalizer), training=False)
            result = evaluate(self.backend, averaged, self.val_feed, self.dist)
            self.last_validation["averaged_checkpoints_accuracy"] = result.accuracy
            self.logger.record({"split": "validation", "weights": "averaged-checkpoints", "epoch": self.state.epoch,
                                "step": self.state.step, "samples": self.state.samples, "loss": result.loss,
                                "accuracy": result.accuracy})
            self.logger.print(f"validation accuracy (averaged checkpoints): {result.accuracy:.2f} % "
                              f"(loss {result.loss:.4f})")
        return weights

    def _next_stage(self, stage: Stage) -> None:
        """Leave the training stage for `stage`: its weights are the averaged ones when averaging is on."""
        self.backend.sync_weights_to_host()
        weights = self._averaged_weights()
        self.train_loader.close()
        assert self.model is not None
        if weights is not None:
            unwrap_model(self.model).load_state_dict(weights)
            self.logger.print(f"{stage.name} stage starts from the averaged weights")
        self._enter_stage(stage)
        self.state.epoch, self.state.epoch_step = stage.first_epoch, 0

    def run(self) -> dict[str, Any]:
        options, plan, dist, logger = self.options, self.plan, self.dist, self.logger
        if dist.is_main:
            (self.run_dir / "config.yaml").write_text(config_to_yaml(plan.record(options), plan.derived()))
            logger.print(f"run folder: {self.run_dir}")
            for note in self.notes:
                logger.print(note)
        self._announce()
        if options.compile_only:
            return self._compile_only()
        start = time.perf_counter()
        stop = StopRequest()
        stopped = False
        last_checkpoint: Path | None = None
        with stop, floating_point_checks(options.enable_fp_exceptions, plan.device):
            if options.enable_fp_exceptions and plan.device != "ipu":
                logger.print(f"--enable-fp-exceptions on {plan.device}: autograd anomaly detection stops the run at "
                             "the first operation whose gradient holds NaN (slow; IPUs trap in hardware)")
            while True:
                stopped, written = self._run_stage(stop)
                last_checkpoint = written or last_checkpoint
                later = [s for s in self.stages if s.index > self.stage.index]
                if stopped or not later:
                    break
                self._next_stage(later[0])
                self._announce()
        if not stopped and options.validation_mode == "after":
            self.validate()
            last_checkpoint = self.save("final")
        if not stopped and len(self.stages) == 1 and options.weight_avg_N is not None:
            self._averaged_weights()
        seconds = time.perf_counter() - start
        plot_path = None
        if dist.is_main and options.plot:
            plot_path = _plot(self.run_dir)
        summary = {
            "run_dir": str(self.run_dir), "checkpoint": str(last_checkpoint) if last_checkpoint else None,
            "plot": str(plot_path) if plot_path else None, "stopped": stopped,
            "stop_reason": (stop.signal_name or "max-steps") if stopped else None,
            "epoch": self.state.epoch, "step": self.state.step, "seconds": seconds, "stage": self.stage.name,
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

    def _set_loss_scale(self, epoch: int) -> None:
        """``--initial-loss-scaling``: the ramp's scale for `epoch`, logged when it changes."""
        initial, final = self.options.initial_loss_scaling, self.options.loss_scaling
        if initial is None or final is None:
            return
        scale = loss_scale_ramp(epoch, self.options.epoch, initial, final)
        if scale != self._loss_scale:
            self.step_fn.set_loss_scale(scale)
            self._loss_scale = scale
            self.logger.print(f"loss scaling {scale:g} from epoch {epoch + 1}")

    def _compile_only(self) -> dict[str, Any]:
        """``--compile-only``: compile the training executable for the first training batch's shapes, offline, and
        stop (PopTorch writes it to ``--executable-cache-dir`` when one is given)."""
        images, labels = next(iter(self.train_feed))
        start = time.perf_counter()
        self.step_fn.compile(images, labels)
        seconds = time.perf_counter() - start
        kept = self.options.executable_cache_dir
        self.logger.print(f"compiled the training executable in {_format_duration(seconds)} (--compile-only); "
                          + (f"cached in {kept}" if kept else "not kept: add --executable-cache-dir to keep it"))
        return {"run_dir": str(self.run_dir), "checkpoint": None, "plot": None, "stopped": False,
                "stop_reason": None, "epoch": 0, "step": 0, "seconds": seconds, "validation": {},
                "compiled": True}

    def _after_step(self, state: TrainState) -> None:
        if self.average is not None:
            self.average.update(unwrap_model(self.model), state.step)

    def close(self) -> None:
        self.logger.close()
        for loader in (self.train_loader, self.val_loader):
            if loader is not None:
                loader.close()
        self.backend.close()
        self.dist.close()


def _plot(run_dir: Path) -> Path | None:
    try:
        from ipu_cnn.plot import plot_run

        return plot_run(run_dir)
    except Exception as error:  # a plot must never fail a finished run
        print(f"warning: could not write the metrics plot: {error}", file=sys.stderr)
        return None


def train(options: RunOptions, loaders: Loaders | Callable[[Stage], Loaders] | None = None) -> dict[str, Any]:
    """Run training as `options` say; returns a summary (run folder, last checkpoint, plot, final validation).

    Args:
        loaders: ``(train_source, val_source, num_classes, class_names)`` to use instead of `create_loaders`'s
            (any `ipu_cnn.batch_sources.BatchSource`s), or a function of the `Stage` that returns them (needed with
            --half-res-training; later stages' validation sources are not used).
    """
    trainer = _Trainer(options, loaders)
    try:
        return trainer.run()
    finally:
        trainer.close()
