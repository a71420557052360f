"""`python -m ipu_cnn.benchmark.parity` at a tiny size: both pipelines train and validate, and the table adds up."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ipu_cnn.benchmark.parity import FEEDERS, main, table

pytest.importorskip("torchvision")
pytest.importorskip("timm")


@pytest.mark.slow
def test_parity_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--root", str(tmp_path / "set"), "--classes", "2", "--images-per-class", "4", "--val-images-per-class", "3",
            "--max-size", "40", "--model", "test_resnet", "--image-size", "32", "--batch-size", "4", "--epochs", "1",
            "--seeds", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "validated on 6 images" in out and "resize 36, crop 32" in out
    row = re.search(r"^\| 0 \| ([\d.]+) \| ([\d.]+) \| ([+-][\d.]+) \|$", out, re.M)
    assert row, out
    ours, theirs, diff = (float(v) for v in row.groups())
    # 6 validation images: every accuracy is a multiple of 100/6
    for acc in (ours, theirs):
        assert 0 <= acc <= 100 and min(abs(acc - k * 100 / 6) for k in range(7)) < 0.06
    assert diff == pytest.approx(ours - theirs, abs=0.11)


def test_table_gives_mean_and_sample_spread() -> None:
    text = table({FEEDERS[0]: [70.0, 72.0, 74.0], FEEDERS[1]: [71.0, 71.0, 71.0]}, [0, 1, 2])
    lines = text.splitlines()
    assert lines[2] == "| 0 | 70.0 | 71.0 | -1.0 |" and lines[4] == "| 2 | 74.0 | 71.0 | +3.0 |"
    assert lines[-1] == "| mean ± std | 72.0 ± 2.0 | 71.0 ± 0.0 | 1.0 ± 2.0 |"


@pytest.mark.parametrize("bad", [["--seeds", "0"], ["--epochs", "-1"], ["--image-size", "x"]])
def test_bad_arguments_are_refused(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(bad)
    assert "error" in capsys.readouterr().err
