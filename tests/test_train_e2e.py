"""The training application end to end: it learns, writes its run folder, validates checkpoints and plots."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ipu_cnn.batch_sources import HostBatches
from ipu_cnn.models import model_spec
from ipu_cnn.train import config_from_mapping, train
from ipu_cnn.train.__main__ import main


class ColourImages:
    """A learnable in-memory set: class c is a noisy image of hue c (no JPEG loader needed)."""

    PALETTE = np.array([[220, 40, 40], [40, 200, 60], [50, 60, 220], [230, 210, 40]], dtype=np.float32)

    def __init__(self, n: int, size: int = 32, seed: int = 0) -> None:
        self.n, self.size, self.seed = n, size, seed

    def __len__(self) -> int:
        return self.n

    def batch(self, indices, out=None):
        idx = np.asarray(indices, dtype=np.int64)
        labels = idx % 4
        rng = np.random.default_rng([self.seed, *idx.tolist()])
        noise = rng.normal(0, 60, (len(idx), self.size, self.size, 3))
        images = np.clip(self.PALETTE[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        return images, labels


def _loaders(batch: int = 16) -> tuple:
    return (HostBatches(ColourImages(128), batch, seed=0), HostBatches(ColourImages(64, seed=1), batch, shuffle=False,
                                                                        drop_last=False), 4, ["r", "g", "b", "y"])


def test_learns_above_chance_and_writes_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = config_from_mapping({"data": "synthetic", "model": "test_resnet", "image_size": 32, "epoch": 3,
                                  "micro_batch_size": 16, "lr": 0.05, "warmup_epoch": 0.5, "weight_decay": 0.0,
                                  "label_smoothing": 0.1, "output_dir": str(tmp_path), "run_name": "run",
                                  "logs_per_epoch": 2, "progress": "lines", "weight_avg_strategy": "exponential",
                                  "weight_avg_exp_decay": 0.9, "device": "cpu"})
    summary = train(config, loaders=_loaders())
    out = capsys.readouterr().out
    run = tmp_path / "run"
    assert summary["validation"]["accuracy"] > 60.0  # chance: 25 %
    assert re.search(r"^validation accuracy: \d+\.\d\d %", out, re.M)
    assert re.search(r"loss: \d+\.\d+ .*throughput: \d+\.\d samples/sec", out)
    assert "validation accuracy (averaged weights)" in out
    for name in ("metrics.jsonl", "metrics.csv", "config.yaml", "metrics.png", "summary.json"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "validation"}
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("time,split,weights,epoch,step")
    ckpt = torch.load(summary["checkpoint"], weights_only=False)
    assert ckpt["class_names"] == ["r", "g", "b", "y"] and ckpt["num_classes"] == 4 and ckpt["image_size"] == 32
    assert ckpt["eval"]["crop_pct"] == model_spec("test_resnet").crop_pct and ckpt["model_name"] == "test_resnet"
    assert ckpt["epoch"] == 3 and ckpt["step"] == 24 and ckpt["loader"] is None
    assert ckpt["weight_average"]["updates"] == 24
    import timm

    timm.create_model("test_resnet", num_classes=4).load_state_dict(ckpt["model"])


def test_generated_data_cli_then_validate_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("ipu_cnn.data.datasets", reason="needs ipu_cnn.data.datasets.RandomImages")
    status = main(["--data", "generated", "--model", "test_resnet", "--image-size", "32", "--num-classes", "4",
                   "--generated-samples", "64", "--micro-batch-size", "8", "--gradient-accumulation", "2",
                   "--epoch", "2", "--output-dir", str(tmp_path), "--run-name", "gen", "--progress", "lines",
                   "--checkpoint-save-freq", "1", "--no-plot"])
    assert status == 0
    ckpts = sorted((tmp_path / "gen" / "checkpoints").glob("checkpoint-*.pt"))
    assert len(ckpts) == 2
    capsys.readouterr()
    from ipu_cnn.train.validate import main as validate_main

    assert validate_main(["--checkpoint", str(tmp_path / "gen")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "validation accuracy:" in line]
    assert len(lines) == 2 and all(re.search(r"validation accuracy: \d+\.\d\d %", line) for line in lines)
    from ipu_cnn.plot import main as plot_main

    assert plot_main([str(tmp_path / "gen"), "--output", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000


def _loader_available() -> bool:
    try:
        from ipu_cnn.data import Loader  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _loader_available(), reason="needs ipu_cnn.data.Loader (the compiled JPEG loader)")
def test_default_demo_run_on_a_tiny_generated_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    """The no-argument run (demo config: generated JPEGs -> loader -> training -> validation -> checkpoint -> plot),
    shrunk to 4 classes x 48 images and a tiny network at 48 px so that it takes seconds."""
    monkeypatch.setenv("IPU_CNN_CACHE", str(tmp_path / "cache"))
    status = main(["--demo-classes", "4", "--demo-images-per-class", "48", "--epoch", "4", "--micro-batch-size", "16",
                   "--model", "test_resnet", "--image-size", "48", "--lr", "0.1", "--output-dir",
                   str(tmp_path / "runs"), "--run-name", "demo", "--progress", "lines", "--dataloader-worker", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    summary = json.loads((tmp_path / "runs" / "demo" / "summary.json").read_text())
    assert summary["validation"]["accuracy"] > 45.0, out  # chance: 25 %
    assert summary["plot"] and Path(summary["plot"]).is_file()
    assert "checkpoint: " in out and "plot: " in out


def test_host_normalisation_trains_the_same_network(tmp_path: Path) -> None:
    """--no-eight-bit-io --normalization-location host: float batches from the host, no normaliser in the model."""
    common = {"data": "synthetic", "model": "test_convnext", "image_size": 32, "epoch": 1, "micro_batch_size": 16,
              "lr": 0.05, "output_dir": str(tmp_path), "progress": "lines", "plot": False, "device": "cpu",
              "validation_mode": "after"}
    device = train(config_from_mapping({**common, "run_name": "device"}), loaders=_loaders())
    host = train(config_from_mapping({**common, "run_name": "host", "eight_bit_io": False,
                                      "normalization_location": "host"}), loaders=_loaders())
    a = torch.load(device["checkpoint"], weights_only=False)
    b = torch.load(host["checkpoint"], weights_only=False)
    assert b["eval"]["normalization_location"] == "host"
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5)
    assert host["validation"]["accuracy"] == pytest.approx(device["validation"]["accuracy"])
