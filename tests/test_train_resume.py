"""Resume: a run stopped at step k and resumed reproduces the uninterrupted run (CPU, fp32, within 1e-5)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_train_e2e import ColourImages

from ipu_cnn.batch_sources import HostBatches
from ipu_cnn.train import config_from_mapping, train


def _loaders() -> tuple:
    return (HostBatches(ColourImages(64), 8, seed=0), HostBatches(ColourImages(16, seed=1), 8, shuffle=False,
                                                                   drop_last=False), 4, ["r", "g", "b", "y"])


def _config(tmp_path: Path, name: str, **overrides: Any) -> Any:
    values = {"data": "synthetic", "model": "test_resnet", "image_size": 32, "epoch": 2, "micro_batch_size": 8,
              "lr": 0.05, "warmup_epoch": 0.5, "dropout": 0.2, "mixup_alpha": 0.2, "cutmix_lambda_low": 0.3,
              "cutmix_lambda_high": 0.9, "label_smoothing": 0.1, "weight_avg_strategy": "exponential",
              "weight_avg_exp_decay": 0.9, "logs_per_epoch": 8, "output_dir": str(tmp_path), "run_name": name,
              "progress": "lines", "plot": False, "device": "cpu"}
    values.update(overrides)
    return config_from_mapping(values)


def _train_losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-5, atol=1e-5, msg=key)
    for key in a["weight_average"]["model"]:
        torch.testing.assert_close(b["weight_average"]["model"][key], a["weight_average"]["model"][key], rtol=1e-5,
                                   atol=1e-5, msg=key)


@pytest.mark.parametrize("stop_at", [5, 8])  # mid-epoch (loader state) and at an epoch boundary
def test_resumed_run_reproduces_the_uninterrupted_one(tmp_path: Path, stop_at: int) -> None:
    full = train(_config(tmp_path, "full"), loaders=_loaders())
    part = train(_config(tmp_path, "part", max_steps=stop_at), loaders=_loaders())
    assert part["stopped"] and part["step"] == stop_at and part["stop_reason"] == "max-steps"
    ckpt = torch.load(part["checkpoint"], weights_only=False)
    assert ckpt["step"] == stop_at
    if stop_at % 8:
        assert ckpt["loader"] is not None and ckpt["epoch_step"] == stop_at % 8
        assert "interrupted" in Path(part["checkpoint"]).name
    resumed = train(_config(tmp_path, "", resume=str(tmp_path / "part" / "checkpoints")), loaders=_loaders())
    assert resumed["run_dir"] == str(tmp_path / "part") and resumed["step"] == 16
    _assert_same_state(torch.load(full["checkpoint"], weights_only=False),
                       torch.load(resumed["checkpoint"], weights_only=False))
    a, b = _train_losses(tmp_path / "full"), _train_losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 17))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    assert resumed["validation"]["accuracy"] == pytest.approx(full["validation"]["accuracy"])


def test_resume_refuses_another_model(tmp_path: Path) -> None:
    part = train(_config(tmp_path, "part", max_steps=2), loaders=_loaders())
    with pytest.raises(SystemExit, match="same --model"):
        train(_config(tmp_path, "other", model="test_convnext", resume=part["checkpoint"]), loaders=_loaders())


def _loader_built() -> bool:
    try:
        from ipu_cnn.data import Loader  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _loader_built(), reason="needs ipu_cnn.data.Loader (the compiled JPEG loader)")
def test_resume_mid_epoch_through_the_jpeg_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same equivalence with the demo JPEGs and the real loader's state_dict (crops keyed by seed and epoch)."""
    monkeypatch.setenv("IPU_CNN_CACHE", str(tmp_path / "cache"))
    demo = {"data": "demo", "demo_classes": 4, "demo_images_per_class": 16, "micro_batch_size": 8, "image_size": 32,
            "dataloader_worker": 1, "mixup_alpha": 0.0, "cutmix_lambda_high": 0.0, "cutmix_lambda_low": 0.0}
    full = train(_config(tmp_path, "full", **demo))
    part = train(_config(tmp_path, "part", max_steps=3, **demo))
    assert torch.load(part["checkpoint"], weights_only=False)["loader"][0]["batch"] == 3
    resumed = train(_config(tmp_path, "", resume=part["checkpoint"], **demo))
    assert resumed["step"] == full["step"] == 16
    _assert_same_state(torch.load(full["checkpoint"], weights_only=False),
                       torch.load(resumed["checkpoint"], weights_only=False))


def test_resume_reads_the_checkpoint_once_unless_it_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--resume: the options (at parse time) and the training state (in the trainer) come from one load and one
    checksum pass of the file; a file rewritten in between is read again."""
    from ipu_cnn.train import checkpoint as checkpoint_module
    from ipu_cnn.train.config import parse_config

    part = train(_config(tmp_path, "part", max_steps=5), loaders=_loaders())
    loads: list[Path] = []
    real_load = checkpoint_module.load_checkpoint

    def counting_load(path: Any) -> dict:
        loads.append(Path(path))
        return real_load(path)

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", counting_load)
    options = parse_config(["--resume", str(tmp_path / "part" / "checkpoints"), "--max-steps", "6"])
    assert loads == [Path(part["checkpoint"])]
    resumed = train(options, loaders=_loaders())
    assert resumed["step"] == 6 and loads == [Path(part["checkpoint"])]

    loads.clear()
    newest = Path(resumed["checkpoint"])
    options = parse_config(["--resume", str(newest), "--max-steps", "7"])
    newest.touch()  # rewritten after parsing: the trainer must not use the state read before
    train(options, loaders=_loaders())
    assert loads == [newest, newest]
