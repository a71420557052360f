"""torchrun: two gloo processes with micro-batch b train like one process with micro-batch 2b (same global batch)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import subprocess_env

from ipu_cnn.train.__main__ import main
from ipu_cnn.train.checkpoint import resolve_checkpoint


# test_convnext has no BatchNorm, so per-rank batch statistics cannot make the two runs differ
ARGS = ["--data", "generated", "--model", "test_convnext", "--image-size", "32", "--num-classes", "4",
        "--generated-samples", "64", "--epoch", "2", "--lr", "0.05", "--warmup-epoch", "0.5", "--progress", "lines",
        "--no-plot", "--validation-mode", "after", "--label-smoothing", "0.1"]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    pytest.importorskip("ipu_cnn.data.datasets", reason="needs ipu_cnn.data.datasets.RandomImages")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = subprocess_env()
    proc = subprocess.run([*torchrun, "-m", "ipu_cnn.train", *ARGS, "--micro-batch-size", "4", "--output-dir",
                           str(tmp_path), "--run-name", "ddp"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("\nvalidation accuracy:") == 1  # rank 0 logs, rank 1 does not
    assert "global batch 8" in proc.stdout
    assert main([*ARGS, "--micro-batch-size", "8", "--output-dir", str(tmp_path), "--run-name", "single",
                 "--device", "cpu"]) == 0
    ddp = resolve_checkpoint(tmp_path / "ddp" / "checkpoints")[1]
    single = resolve_checkpoint(tmp_path / "single" / "checkpoints")[1]
    assert ddp["step"] == single["step"] == 16 and len(ddp["rng"]) == 2
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert ddp["metrics"]["count"] == single["metrics"]["count"]  # every validation sample counted once
    assert ddp["metrics"]["accuracy"] == pytest.approx(single["metrics"]["accuracy"])


@pytest.mark.distributed
def test_replicas_without_torchrun_says_how_to_launch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match="torchrun --nproc-per-node 2"):
        main([*ARGS, "--replicas", "2", "--device", "cpu", "--output-dir", str(tmp_path)])
