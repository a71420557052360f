"""Run logs: JSONL + CSV records, console lines, progress bar modes, optional TensorBoard / wandb sinks."""
from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest

from ipu_cnn.train.logs import CSV_COLUMNS, Progress, RunLogger


def test_records_go_to_jsonl_and_csv(tmp_path: Path) -> None:
    logger = RunLogger(tmp_path)
    logger.record({"split": "train", "step": 1, "loss": 2.5, "lr": 0.1, "throughput": float("nan")})
    logger.record({"split": "validation", "weights": "trained", "step": 1, "accuracy": 12.5})
    logger.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["loss"] == 2.5 and lines[0]["throughput"] is None and lines[1]["accuracy"] == 12.5
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert tuple(rows[0]) == CSV_COLUMNS and rows[1]["accuracy"] == "12.5" and rows[0]["accuracy"] == ""
    again = RunLogger(tmp_path, append=True)
    again.record({"split": "train", "step": 2, "loss": 2.0})
    again.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert len(list(csv.DictReader((tmp_path / "metrics.csv").open()))) == 3  # one header, appended rows


def test_disabled_logger_writes_and_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    logger = RunLogger(tmp_path / "run", enabled=False)
    logger.record({"split": "train", "step": 1})
    logger.print("hello")
    logger.close()
    assert not (tmp_path / "run").exists() and capsys.readouterr().out == ""


def test_progress_bar_only_on_a_terminal_or_when_asked(capsys: pytest.CaptureFixture) -> None:
    assert Progress(10, "epoch 1", mode="auto").bar is None  # pytest's stderr is not a TTY
    assert Progress(10, "epoch 1", mode="lines").bar is None
    bar = Progress(10, "epoch 1", mode="bar")
    assert bar.bar is not None
    bar.update(3, loss="1.0")
    bar.close()
    assert "epoch 1" in capsys.readouterr().err


def test_tensorboard_missing_warns_and_continues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.warns(UserWarning, match="pip install tensorboard"):
        logger = RunLogger(tmp_path, tensorboard=True)
    logger.record({"split": "train", "step": 1, "loss": 1.0})
    logger.close()


def test_wandb_falls_back_to_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []

    class Run:
        def log(self, data: dict, step: int) -> None:
            calls.append(("log", data, step))

        def finish(self) -> None:
            calls.append(("finish",))

    def init(**kwargs: object) -> Run:
        calls.append(("init", kwargs.get("mode")))
        if kwargs.get("mode") != "offline":
            raise RuntimeError("not logged in")
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    with pytest.warns(UserWarning, match="logging offline"):
        logger = RunLogger(tmp_path, wandb=True, config={"lr": 0.1})
    logger.record({"split": "train", "step": 3, "loss": 1.5, "lr": 0.1})
    logger.close()
    assert calls[:2] == [("init", None), ("init", "offline")]
    assert calls[2] == ("log", {"train/loss": 1.5, "train/lr": 0.1}, 3) and calls[-1] == ("finish",)
