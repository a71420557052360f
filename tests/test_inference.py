"""The inference application: benchmark figures, prediction with a trained checkpoint, export round trips, errors.

The checkpoint comes from a short run of the training application (ResNet-10t at 32 px on a 4-class generated set,
a few seconds on a CPU), so the tests also hold the two applications to one checkpoint format.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import subprocess_env
import torch
from PIL import Image

from ipu_cnn.backends import POPTORCH_MISSING
from ipu_cnn.inference.cli import main
from ipu_cnn.inference.config import named_configs, options_for, parse_options
from ipu_cnn.inference.stats import Timings, summarize

THROUGHPUT = re.compile(r"^throughput: (\S+) samples/sec \(mean\) \(min: (\S+), max: (\S+), std: (\S+)\)$", re.MULTILINE)
LATENCY = re.compile(r"^latency: (\S+) ms \(mean\) \(p50: (\S+), p90: (\S+), p99: (\S+), min: (\S+), max: (\S+)\)",
                     re.MULTILINE)
TINY = ["--model", "resnet10t", "--image-size", "32", "--num-classes", "4", "--device", "cpu"]
CLASSES, PER_CLASS, VAL_PER_CLASS = 4, 40, 8


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def generated() -> Any:
    """A small generated JPEG set (4 classes), made once under the user's cache."""
    from ipu_cnn.data import GeneratedImages

    return GeneratedImages(num_classes=CLASSES, images_per_class=PER_CLASS, val_images_per_class=VAL_PER_CLASS)


@pytest.fixture(scope="session")
def trained_run(generated: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A short training run of the training application on `generated`; its summary (run folder, checkpoint,
    validation accuracy)."""
    from ipu_cnn.train.config import config_from_mapping
    from ipu_cnn.train.run import train

    out = tmp_path_factory.mktemp("runs")
    config = config_from_mapping({
        "data": "demo", "demo_classes": CLASSES, "demo_images_per_class": PER_CLASS, "model": "resnet10t",
        "image_size": 32, "epoch": 4, "micro_batch_size": 16, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.0,
        "warmup_epoch": 0.0, "train_crop_scale": [0.35, 1.0], "device": "cpu", "output_dir": str(out),
        "run_name": "short", "plot": False, "progress": "lines", "logs_per_epoch": 1, "validation_mode": "after",
        "dataloader_worker": 2,
    })
    summary = train(config)
    assert summary["checkpoint"] and Path(summary["checkpoint"]).is_file()
    return summary


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# -- benchmark ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data,precision", [("synthetic", "32.32"), ("generated", "16.16"), ("real", "32.32")])
def test_benchmark_prints_parseable_figures(data: str, precision: str, generated: Any, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    extra = ["--data-path", str(generated.root / "validation")] if data == "real" else []
    report = tmp_path / "figures.json"
    status, out, err = _run([*TINY, "--data", data, *extra, "--precision", precision, "--micro-batch-size", "4",
                             "--iterations", "3", "--warmup-iterations", "1", "--json", str(report)], capsys)
    assert status == 0, err
    (mean, low, high, std), = THROUGHPUT.findall(out)
    assert 0 < float(low) <= float(mean) <= float(high) and float(std) >= 0
    (_mean, p50, p90, p99, lat_min, lat_max), = LATENCY.findall(out)
    assert 0 < float(lat_min) <= float(p50) <= float(p90) <= float(p99) <= float(lat_max)
    figures = json.loads(report.read_text())
    assert figures["iterations"] == 3 and figures["samples"] == 12 and figures["ranks"] == 1
    assert figures["data"] == data and figures["model"] == "resnet10t" and figures["precision"] == precision
    assert f"{figures['throughput_mean']:.2f}" == mean and f"{figures['latency_p99_ms']:.2f}" == p99


def test_json_to_stdout_keeps_stdout_parseable(capsys: pytest.CaptureFixture) -> None:
    status, out, err = _run([*TINY, "--data", "synthetic", "--micro-batch-size", "2", "--iterations", "2",
                             "--json", "-"], capsys)
    assert status == 0
    assert json.loads(out)["iterations"] == 2
    assert THROUGHPUT.search(err)


def test_figures_reduce_over_ranks_sum_of_throughput_max_of_latency() -> None:
    fast, slow = Timings(), Timings()
    for i in range(4):
        fast.add(8, 0.1, 0.05 + 0.01 * i)
        slow.add(8, 0.2, 0.15 + 0.01 * i)
    one, both = summarize([fast]), summarize([fast, slow])
    assert one.throughput_mean == pytest.approx(80.0)
    assert both.throughput_mean == pytest.approx(80.0 + 40.0) and both.throughput_overall == pytest.approx(120.0)
    assert both.latency_p50_ms == pytest.approx(np.percentile([150, 160, 170, 180], 50))
    assert both.latency_max_ms == pytest.approx(180.0) and both.latency_min_ms == pytest.approx(150.0)
    assert one.data_wait_pct == pytest.approx(100 * (0.4 - 0.26) / 0.4)
    assert both.ranks == 2 and both.samples == 64
    with pytest.raises(ValueError, match="different numbers of iterations"):
        summarize([fast, Timings([8], [0.1], [0.1])])


def test_warmup_iterations_are_run_but_not_counted() -> None:
    from ipu_cnn.inference.benchmark import measure

    calls: list[int] = []

    def runner(images: torch.Tensor) -> torch.Tensor:
        calls.append(int(images.shape[0]))
        return torch.zeros(images.shape[0], 2)

    timings = measure(runner, iter(lambda: torch.zeros(3, 3, 8, 8, dtype=torch.uint8), None), 5, 2)  # type: ignore
    assert len(calls) == 7 and len(timings) == 5 and timings.samples == [3] * 5
    assert all(t >= lat >= 0 for t, lat in zip(timings.iteration_s, timings.latency_s))


def test_named_configs_carry_graphcore_defaults_and_flags_override() -> None:
    assert {"resnet50", "efficientnet-b0", "efficientnet-b4"} <= set(named_configs())
    options = parse_options(["--config", "resnet50"])
    assert (options.model, options.micro_batch_size, options.precision, options.device_iterations) == \
        ("resnet50", 90, "16.16", 128)
    options = parse_options(["--config", "efficientnet-b4", "--micro-batch-size", "2", "--precision", "32.32"])
    assert (options.model, options.micro_batch_size, options.precision) == ("efficientnet-b4", 2, "32.32")
    assert parse_options(["predict", "x.jpg", "--config", "efficientnet-b0"]).micro_batch_size == 49


def test_config_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text("model: resnet18\ndata: generated\ntopk: 3\n")
    assert parse_options(["--config", str(good)]).data == "generated"
    assert parse_options(["predict", "a.jpg", "--config", str(good)]).topk == 3  # keys of other modes are ignored
    bad = tmp_path / "bad.yaml"
    bad.write_text("micro_batch_sise: 8\n")
    with pytest.raises(SystemExit, match="unknown key 'micro_batch_sise'.*micro_batch_size"):
        parse_options(["--config", str(bad)])
    bad.write_text("precision: 16.32\n")
    with pytest.raises(SystemExit, match="not one of 16.16, 32.32"):
        parse_options(["--config", str(bad)])
    with pytest.raises(SystemExit, match="unknown config name.*resnet50"):
        parse_options(["--config", "resnet-50"])


# -- devices -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--data", "synthetic"], ["predict", "x.jpg", "--random-weights"]])
def test_device_ipu_without_poptorch_is_a_clear_error(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "poptorch", None)  # `import poptorch` raises ImportError
    status, _out, err = _run([*argv, "--device", "ipu", "--model", "resnet10t"], capsys)
    assert status == 2 and POPTORCH_MISSING in err and "Traceback" not in err


def test_ipu_runner_compiles_an_inference_model_and_pads_short_batches() -> None:
    from ipu_cnn.backends import DistContext, create_backend
    from ipu_cnn.inference.runner import Runner, ipu_settings

    calls: list[tuple[str, tuple]] = []

    class Options:
        def __getattr__(self, name: str) -> Any:
            def record(*args: Any) -> Options:
                calls.append((name, args))
                return self
            return record

    class Compiled:
        def __init__(self, model: torch.nn.Module, options: Any) -> None:
            self.model, self.options, self.batches = model, options, []

        def __call__(self, images: torch.Tensor) -> torch.Tensor:
            self.batches.append(int(images.shape[0]))
            return self.model(images)

        def detachFromDevice(self) -> None:  # PopTorch's name
            calls.append(("detachFromDevice", ()))

    poptorch = types.SimpleNamespace(Options=Options, inferenceModel=lambda m, options: Compiled(m, options),
                                     OutputMode=types.SimpleNamespace(All="All"))
    options = options_for("benchmark", device="cpu", replicas=2, device_iterations=4, precision="32.32")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    backend = create_backend("ipu", DistContext(), ipu=ipu_settings(options, synthetic_data=True),
                             eval_batch_size=3 * options.device_iterations * options.replicas, poptorch=poptorch)
    runner = Runner(backend, model)
    assert runner.host_batch == 3 * 4 * 2
    logits = runner(torch.zeros(5, 3, 4, 4, dtype=torch.float32))
    assert logits.shape == (5, 5) and backend.inference_model.batches == [24]
    runner.close()
    names = [name for name, _ in calls]
    assert ("replicationFactor", (2,)) in calls and ("deviceIterations", (4,)) in calls
    assert ("enableSyntheticData", (True,)) in calls and names[-1] == "detachFromDevice"


# -- model options -----------------------------------------------------------------------------------------------
def test_pretrained_offline_fails_fast_with_a_clear_message(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    status, _out, err = _run(["--pretrained", "--model", "resnet18", "--data", "synthetic"], capsys)
    assert status == 2 and "Traceback" not in err
    assert "--pretrained" in err and "cannot be reached" in err and "--weights FILE" in err


def test_predict_and_export_ask_for_weights(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match="needs trained weights.*--weights.*--pretrained.*--random-weights"):
        main(["predict", "x.jpg"])
    with pytest.raises(SystemExit, match="choose different weights"):
        options_for("benchmark", weights="a.pt", random_weights=True)


def test_imagenet_class_names_for_1000_classes() -> None:
    from ipu_cnn.inference.classes import class_names_for

    names = class_names_for(1000)
    assert len(names) == 1000 and names[0].startswith("tench") and "goldfish" in names[1]
    assert class_names_for(3) == ["0", "1", "2"] and class_names_for(2, ["cat", "dog"]) == ["cat", "dog"]
    with pytest.raises(ValueError, match="names 2 classes but its model has 3"):
        class_names_for(3, ["cat", "dog"])


# -- predict -----------------------------------------------------------------------------------------------------
def test_predict_with_a_trained_checkpoint_names_the_right_classes(trained_run: dict[str, Any], generated: Any,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    report = tmp_path / "predictions.json"
    status, out, err = _run(["predict", str(generated.root / "validation"), "--weights", trained_run["run_dir"],
                             "--topk", "3", "--json", str(report)], capsys)
    assert status == 0, err
    result = json.loads(report.read_text())
    assert result["model"] == "resnet10t" and result["num_classes"] == CLASSES
    assert result["preprocessing"]["image_size"] == 32  # restored from the checkpoint
    predictions = result["predictions"]
    assert len(predictions) == CLASSES * VAL_PER_CLASS and not result["errors"]
    assert len(out.splitlines()) == len(predictions)  # one line per image as well
    hits = 0
    for p in predictions:
        truth = Path(p["path"]).parent.name
        top = p["topk"]
        assert len(top) == 3 and all(t["name"] == generated.classes[t["index"]] for t in top)
        assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
        hits += top[0]["name"] == truth
    accuracy = 100.0 * hits / len(predictions)
    assert accuracy >= 2 * 100.0 / CLASSES, f"top-1 {accuracy:.1f} % is not clearly above chance"
    # the same checkpoint, images and eval preprocessing as the training run's own validation
    assert accuracy == pytest.approx(trained_run["validation"]["accuracy"], abs=100.0 / len(predictions) + 1e-6)


def test_predict_reports_bad_images_and_predicts_the_others(trained_run: dict[str, Any], generated: Any,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = [Path(p) for p in generated.validation.paths[::VAL_PER_CLASS]]
    for i, path in enumerate(good):
        shutil.copy(path, folder / f"good_{i}.jpg")
    data = good[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.jpg").write_text("not an image")
    status, out, err = _run(["predict", str(folder), str(tmp_path / "missing.jpg"), "--weights",
                             trained_run["checkpoint"], "--micro-batch-size", "2"], capsys)
    assert status == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert sorted(Path(line.split(":")[0]).name for line in lines) == [f"good_{i}.jpg" for i in range(len(good))]
    for name in ("truncated.jpg", "notes.jpg", "missing.jpg"):
        assert re.search(rf"^error: \S*{name}: \S", err, re.MULTILINE), err
    assert f"{len(good)} image(s) predicted, 3 skipped" in err


def test_predict_applies_exif_orientation(tmp_path: Path) -> None:
    from ipu_cnn.data import EvalTransform, decode_image
    from ipu_cnn.inference.predict import decode_files

    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = (250, 20, 20)  # left half red, right half blue: rotating moves them
    pixels[:, 40:] = (20, 20, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())
    transform = EvalTransform(size=16, crop_pct=1.0)
    images, good, failures = decode_files([str(path)], transform)
    assert good == [0] and not failures
    upright = decode_image(str(path), transform, apply_exif_orientation=True)
    as_stored = decode_image(str(path), transform)
    assert np.array_equal(images[0].permute(1, 2, 0).numpy(), upright)
    assert not np.array_equal(upright, as_stored)


def test_checkpoint_and_model_must_agree(trained_run: dict[str, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match="does not match the checkpoint.*holds resnet10t"):
        main(["predict", "x.jpg", "--weights", trained_run["checkpoint"], "--model", "resnet50"])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(Path(trained_run["checkpoint"]).read_bytes()[:5000])
    status, _out, err = _run(["predict", "x.jpg", "--weights", str(truncated)], capsys)
    assert status == 2 and "not a readable checkpoint" in err and "Traceback" not in err


def test_plain_state_dict_weights(trained_run: dict[str, Any], tmp_path: Path) -> None:
    from ipu_cnn.inference.model import ModelChoice, load_model

    state = torch.load(trained_run["checkpoint"], map_location="cpu", weights_only=False)["model"]
    plain = tmp_path / "weights.pth"
    torch.save(state, plain)
    loaded = load_model(ModelChoice.from_options(options_for("predict", model="resnet10t", weights=str(plain),
                                                         image_size=32)))
    assert loaded.num_classes == CLASSES and loaded.class_names == [str(i) for i in range(CLASSES)]
    assert torch.equal(loaded.model.model.fc.weight, state["fc.weight"])


# -- export ------------------------------------------------------------------------------------------------------
def _real_batch(generated: Any, count: int) -> torch.Tensor:
    from ipu_cnn.data import EvalTransform
    from ipu_cnn.inference.predict import decode_files

    images, _, _ = decode_files(generated.validation.paths[:count], EvalTransform(size=32))
    return images.contiguous()


def test_export_onnx_round_trip(trained_run: dict[str, Any], generated: Any, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("onnxscript", reason="the ONNX exporter needs the export extra: pip install '.[export]'")
    ort = pytest.importorskip("onnxruntime", reason="the round trip needs onnxruntime: pip install '.[export]'")
    from ipu_cnn.inference.model import ModelChoice, load_model

    out = tmp_path / "model.onnx"
    status, _out, err = _run(["export", "--format", "onnx", str(out), "--weights", trained_run["run_dir"]], capsys)
    assert status == 0, err
    assert "check: onnxruntime agrees with PyTorch" in err
    info = json.loads((tmp_path / "model.onnx.json").read_text())
    assert info["input"]["dtype"] == "uint8" and info["class_names"] == generated.classes
    model = load_model(ModelChoice.from_options(options_for("export", weights=trained_run["run_dir"]))).model
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.type == "tensor(uint8)" and graph_input.shape[1:] == [3, 32, 32]
    for batch in (1, 5):  # a batch size other than the traced one: the batch dimension is dynamic
        images = _real_batch(generated, batch)
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.inference_mode():
            expected = model(images)
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-3, rtol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_torchscript_and_triton_repository(trained_run: dict[str, Any], generated: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.inference.model import ModelChoice, load_model

    repo = tmp_path / "repository"
    status, _out, err = _run(["export", "--format", "torchscript", str(repo), "--triton", "--triton-name", "shapes",
                              "--input-layout", "nhwc", "--softmax", "--weights", trained_run["checkpoint"]], capsys)
    assert status == 0, err
    folder = repo / "shapes"
    config = (folder / "config.pbtxt").read_text()
    assert 'backend: "pytorch"' in config and "TYPE_UINT8" in config and "dims: [ 32, 32, 3 ]" in config
    assert "dims: [ 4 ]" in config and 'name: "INPUT__0"' in config and 'label_filename: "labels.txt"' in config
    assert (folder / "labels.txt").read_text().splitlines() == generated.classes
    scripted = torch.jit.load(str(folder / "1" / "model.pt"))
    model = load_model(ModelChoice.from_options(options_for("export", weights=trained_run["checkpoint"]))).model
    images = _real_batch(generated, 3)
    with torch.inference_mode():
        probabilities = scripted(images.permute(0, 2, 3, 1).contiguous())
        expected = torch.softmax(model(images), dim=1)
    torch.testing.assert_close(probabilities, expected, atol=1e-3, rtol=0)


def test_export_without_onnxscript_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    status, _out, err = _run(["export", str(tmp_path / "m.onnx"), "--random-weights", *TINY], capsys)
    assert status == 2 and "Traceback" not in err
    assert "onnxscript" in err and "ipu_cnn[export]" in err and "--format torchscript" in err


def test_export_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="device-independent graph"):
        main(["export", str(tmp_path / "m.onnx"), "--device", "ipu", "--random-weights"])
    with pytest.raises(SystemExit, match="float32 graphs"):
        main(["export", str(tmp_path / "m.onnx"), "--precision", "16.16", "--random-weights", *TINY])


# -- torchrun ----------------------------------------------------------------------------------------------------
@pytest.mark.distributed
@pytest.mark.slow
def test_benchmark_under_torchrun_reduces_over_ranks(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    report = tmp_path / "figures.json"
    env = subprocess_env()
    result = subprocess.run([torchrun, "--nproc-per-node", "2", "-m", "ipu_cnn.inference", *TINY, "--data",
                             "synthetic", "--micro-batch-size", "2", "--iterations", "3", "--json", str(report)],
                            capture_output=True, text=True, env=env, timeout=300, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(THROUGHPUT.findall(result.stdout)) == 1  # rank 0 prints the reduction, once
    figures = json.loads(report.read_text())
    assert figures["ranks"] == 2 and figures["samples"] == 2 * 2 * 3
