"""The application layer's shape (issue 9): typed frozen options checked against their parsers, one CLI layer for
both applications, the Backend and BatchSource protocols, the device feeder's buffer rule, and eval preprocessing
recorded once."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from ipu_cnn import _cli
from ipu_cnn.backends import Backend, DistContext, TorchBackend, create_backend, precision_policy
from ipu_cnn.backends.feeder import DeviceFeeder
from ipu_cnn.batch_sources import BatchSource, HostBatches, RandomBatches, forever
from ipu_cnn.inference.config import InferenceOptions, MODES, build_parser as inference_parser, parse_options
from ipu_cnn.models import EvalPreprocessing, model_spec
from ipu_cnn.train.config import RunOptions, build_parser, config_from_mapping, parse_config, run_options
from ipu_cnn.train.plan import plan_batches


# -- typed, frozen options ------------------------------------------------------------------------------------------
def test_run_options_fields_are_the_parsers_options() -> None:
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    assert fields == set(_cli.option_actions(build_parser())) | {"config"}


def test_inference_options_fields_are_every_modes_options() -> None:
    every = {dest for mode in MODES for dest in _cli.option_actions(inference_parser(mode))}
    assert {f.name for f in dataclasses.fields(InferenceOptions)} == every | {"mode", "config"}


def test_a_drift_between_record_and_parser_is_an_error() -> None:
    @dataclasses.dataclass(frozen=True)
    class Short:
        data: str

    with pytest.raises(TypeError, match="options without a field.*'lr'"):
        _cli.check_fields(Short, _cli.option_actions(build_parser()))


def test_options_are_frozen_and_typed() -> None:
    options = parse_config(["--data", "synthetic", "--lr", "0.3", "--epochs", "4"])
    assert isinstance(options, RunOptions) and options.lr == 0.3 and options.epoch == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.lr = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown config key 'learning_rate'"):
        config_from_mapping({"learning_rate": 0.1})


def test_batch_plan_on_each_device() -> None:
    options = config_from_mapping({"data": "synthetic", "micro_batch_size": 4, "gradient_accumulation": 3,
                                   "replicas": 2, "device_iterations": 5, "validation_batch_size": 7})
    ipu = plan_batches(options, "ipu", 1)
    assert (ipu.loader_batch_size, ipu.validation_loader_batch_size, ipu.global_batch_size) == (120, 70, 24)
    cpu = plan_batches(options, "cpu", 2)  # two torchrun processes are the two replicas
    assert (cpu.loader_batch_size, cpu.validation_loader_batch_size, cpu.global_batch_size) == (12, 7, 24)
    with pytest.raises(SystemExit, match="torchrun --nproc-per-node 2"):
        plan_batches(options, "cpu", 1)


# -- one CLI layer ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--dataloader-worker", "--dataloader-workers"])
def test_shared_flags_parse_the_same_in_both_applications(flag: str) -> None:
    train = parse_config(["--data", "synthetic", flag, "3", "--batch-size", "8", "--image-size", "64"])
    infer = parse_options(["--random-weights", flag, "3", "--batch-size", "8", "--image-size", "64"])
    for name in ("dataloader_worker", "micro_batch_size", "image_size", "device", "precision", "half_dtype",
                 "replicas", "device_iterations", "seed"):
        assert getattr(train, name) == getattr(infer, name), name


@pytest.mark.parametrize("argv", [["--data", "synthetic"], ["--random-weights"]])
def test_image_size_is_checked_the_same_way_in_both(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    parse = parse_config if argv[0] == "--data" else parse_options
    with pytest.raises(SystemExit):
        parse([*argv, "--image-size", "4"])
    assert "must be at least 8 pixels, got 4" in capsys.readouterr().err


def test_one_error_presenter(capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.backends import select_device

    def ours() -> int:
        select_device("tpu")  # raised inside ipu_cnn, with a message that says what to use
        return 0

    assert _cli.present_errors(ours) == 2
    assert capsys.readouterr().err == "error: TorchBackend runs on cpu or cuda, got 'tpu'\n"

    def theirs() -> int:
        return int("x")  # raised inside Python itself, not in ipu_cnn: keeps its traceback

    with pytest.raises(ValueError, match="invalid literal"):
        _cli.present_errors(theirs)
    assert _cli.config_error_status(SystemExit("--config x: unknown key")) == 2
    assert capsys.readouterr().err == "error: --config x: unknown key\n"


# -- protocols ----------------------------------------------------------------------------------------------------
def test_backends_and_sources_implement_their_protocols(tmp_path: Path) -> None:
    backend = create_backend("cpu", DistContext())
    assert isinstance(backend, Backend) and isinstance(backend, TorchBackend)
    assert backend.fixed_batch is None and backend.pin_memory is False and backend.channels_last
    random = RandomBatches(2, 8, 3, steps=2, device=torch.device("cpu"))
    assert isinstance(random, BatchSource)

    class Images:
        def __len__(self) -> int:
            return 4

        def batch(self, indices: Any, out: Any = None) -> Any:
            import numpy as np

            return np.zeros((len(indices), 8, 8, 3), np.uint8), np.asarray(indices)

    assert isinstance(HostBatches(Images(), 2), BatchSource)
    loader_module = pytest.importorskip("ipu_cnn.data")
    assert isinstance(loader_module.Loader, type) and issubclass(loader_module.Loader, BatchSource)


def test_random_batches_serve_one_batch_each_step_and_forever_crosses_epochs() -> None:
    source = RandomBatches(3, (8, 6), 5, steps=2, device=torch.device("cpu"), seed=4)
    images, labels = next(iter(source))
    assert images.shape == (3, 3, 8, 6) and images.is_contiguous(memory_format=torch.channels_last)
    assert labels.dtype == torch.int64 and int(labels.max()) < 5
    stream = forever(source)
    seen = [next(stream) for _ in range(5)]  # two epochs and a half
    assert all(x is images and y is labels for x, y in seen) and source.epoch == 2


class _RecordingBackend:
    """Records the order of copies, copy waits and source reads (the buffer rule's events)."""

    device = torch.device("cpu")

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.events.append(f"copy {int(labels[0])}")
        return images, labels

    def release_host_batch(self) -> None:
        self.events.append("wait")


class _RecordingSource:
    def __init__(self, events: list[str], n: int) -> None:
        self.events, self.n = events, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        for i in range(self.n):
            self.events.append(f"read {i}")
            yield torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.tensor([i])


def test_feeder_waits_for_each_copy_before_the_source_reuses_its_buffer() -> None:
    events: list[str] = []
    feeder = DeviceFeeder(_RecordingSource(events, 3), _RecordingBackend(events))  # type: ignore[arg-type]
    assert len(feeder) == 3
    for _images, labels in feeder:
        events.append(f"step {int(labels[0])}")
    assert events == ["wait", "read 0", "copy 0", "step 0", "wait", "read 1", "copy 1", "step 1",
                      "wait", "read 2", "copy 2", "step 2", "wait"]


def test_feeder_applies_the_host_transform_before_the_copy() -> None:
    backend = TorchBackend(torch.device("cpu"), precision_policy("32.32", "cpu"))
    source = RandomBatches(2, 4, 3, steps=1, device=torch.device("cpu"))
    feeder = DeviceFeeder(source, backend, host_transform=lambda x: x.float() / 255.0)
    images, _ = next(iter(feeder))
    assert images.dtype == torch.float32 and float(images.max()) <= 1.0


# -- eval preprocessing recorded once -----------------------------------------------------------------------------
def test_eval_preprocessing_precedence_and_checkpoint_record() -> None:
    spec = model_spec("resnet50")
    default = EvalPreprocessing.resolve(spec)
    assert (default.image_size, default.crop_pct, default.mean) == (spec.image_size, spec.crop_pct, spec.mean)
    saved = {"size": 96, "crop_pct": 0.9, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3}
    restored = EvalPreprocessing.resolve(spec, saved=saved)
    assert (restored.image_size, restored.crop_pct, restored.interpolation) == (96, 0.9, "bilinear")
    assert restored.mean == (0.5, 0.5, 0.5) and restored.std == (0.25, 0.25, 0.25)
    flags = EvalPreprocessing.resolve(spec, image_size=64, crop_pct=1.0, interpolation="bicubic", saved=saved)
    assert (flags.image_size, flags.crop_pct, flags.interpolation) == (64, 1.0, "bicubic")
    record = restored.checkpoint_record("device")
    assert EvalPreprocessing.resolve(spec, saved=record) == restored
    plain = EvalPreprocessing.resolve(spec, plain=True)
    assert plain.mean == (0.0, 0.0, 0.0) and plain.std == (1.0, 1.0, 1.0)
    transform = flags.eval_transform()
    assert transform.output_hw == (64, 64)


def test_training_and_inference_resolve_the_same_preprocessing() -> None:
    from ipu_cnn.inference.config import options_for
    from ipu_cnn.inference.model import ModelChoice, load_model

    loaded = load_model(ModelChoice.from_options(options_for("benchmark", model="resnet10t", image_size=48)))
    options = config_from_mapping({"data": "synthetic", "model": "resnet10t", "image_size": 48,
                                   "interpolation": loaded.preprocessing.interpolation})
    trained = EvalPreprocessing.resolve(model_spec(options.model), image_size=options.image_size,
                                        crop_pct=options.eval_crop_pct, interpolation=options.interpolation)
    assert trained == loaded.preprocessing


def test_the_trainer_holds_no_mutable_config(tmp_path: Path) -> None:
    """`train` leaves its options as they were and saves the same flat record as before the refactor."""
    from ipu_cnn.train import train
    from ipu_cnn.train.checkpoint import load_checkpoint

    options = config_from_mapping({"data": "synthetic", "model": "test_resnet", "image_size": 32, "epoch": 1,
                                   "micro_batch_size": 8, "generated_samples": 32, "num_classes": 4,
                                   "output_dir": str(tmp_path), "run_name": "r", "plot": False, "device": "cpu",
                                   "progress": "lines", "validation_mode": "none"})
    before = options.as_dict()
    summary = train(options)
    assert options.as_dict() == before
    state = load_checkpoint(Path(summary["checkpoint"]))
    assert state["options"] == run_options(options) == {k: v for k, v in before.items() if k != "config"}
    record = state["config"]
    assert record["image_size"] == 32 and record["device"] == "cpu" and record["num_classes_resolved"] == 4
    assert record["loader_batch_size"] == 8 and record["global_batch_size"] == 8 and record["world_size"] == 1
    assert record["run_dir"] == str(tmp_path / "r") and record["checkpoint_dir"] == str(tmp_path / "r" / "checkpoints")
    assert record["eval_crop_pct"] == model_spec("test_resnet").crop_pct == state["eval"]["crop_pct"]
