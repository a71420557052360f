"""python -m ipu_cnn.plot: the metrics PNG of a run folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipu_cnn.plot import main, plot_run, read_metrics


def _write_run(folder: Path, cut_last_line: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, 21):
        lines.append({"split": "train", "step": step, "epoch": step / 10, "loss": 2.0 / step, "accuracy": 3.0 * step,
                      "lr": 0.1 * (1 - step / 20), "throughput": 100.0 + step})
        if step % 10 == 0:
            lines.append({"split": "validation", "weights": "trained", "step": step, "loss": 1.0 / step,
                          "accuracy": 4.0 * step})
            lines.append({"split": "validation", "weights": "averaged", "step": step, "loss": 0.9 / step,
                          "accuracy": 4.2 * step})
    text = "\n".join(json.dumps(r) for r in lines) + "\n"
    if cut_last_line:
        text += '{"split": "train", "ste'
    (folder / "metrics.jsonl").write_text(text)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    _write_run(tmp_path / "run")
    path = plot_run(tmp_path / "run")
    assert path == tmp_path / "run" / "metrics.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_plot_tolerates_a_cut_last_line(tmp_path: Path) -> None:
    _write_run(tmp_path / "run", cut_last_line=True)
    assert len(read_metrics(tmp_path / "run")) == 24
    assert plot_run(tmp_path / "run").is_file()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_run(tmp_path / "run")
    assert main([str(tmp_path / "run"), "-o", str(tmp_path / "out.png")]) == 0
    assert "plot: " in capsys.readouterr().out and (tmp_path / "out.png").is_file()


def test_missing_metrics_say_what_to_give(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path)])
    assert info.value.code == 2
    assert "give the run folder" in capsys.readouterr().err
