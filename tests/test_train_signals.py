"""Preemption: SIGTERM finishes the step, checkpoints and exits 0; SIGKILL during a checkpoint write leaves the
previous checkpoint intact and resumable."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import subprocess_env

from ipu_cnn.train.__main__ import main
from ipu_cnn.train.checkpoint import list_checkpoints, resolve_checkpoint


ARGS = ["--data", "generated", "--model", "test_resnet", "--image-size", "32", "--num-classes", "4",
        "--generated-samples", "64", "--micro-batch-size", "8", "--progress", "lines", "--no-plot",
        "--validation-mode", "none"]


def _env() -> dict[str, str]:
    return subprocess_env(OMP_NUM_THREADS="1")


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early with status {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.1)


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("ipu_cnn.data.datasets", reason="needs ipu_cnn.data.datasets.RandomImages")
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ipu_cnn.train", *ARGS, "--epoch", "1000", "--output-dir",
                             str(tmp_path), "--run-name", "run", "--logs-per-epoch", "8"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    _wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err and "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] and summary["stop_reason"] == "SIGTERM"
    path, state = resolve_checkpoint(run / "checkpoints")
    assert state["step"] == summary["step"] >= 3
    assert "continue with: python -m ipu_cnn.train --resume" in out
    # and it resumes from there
    assert main([*ARGS, "--epoch", "1000", "--output-dir", str(tmp_path), "--resume", str(run / "checkpoints"),
                 "--max-steps", str(state["step"] + 2)]) == 0
    assert resolve_checkpoint(run / "checkpoints")[1]["step"] == state["step"] + 2


KILLER = textwrap.dedent("""
    import sys, time, torch
    marker = sys.argv[1]
    real_save, calls = torch.save, []
    def save(obj, f, *args, **kwargs):
        calls.append(1)
        real_save(obj, f, *args, **kwargs)
        if len(calls) == 2:  # the second checkpoint: bytes written to the temporary file, not yet renamed
            f.flush()
            open(marker, "w").close()
            time.sleep(600)
    torch.save = save
    from ipu_cnn.train.__main__ import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path: Path) -> None:
    pytest.importorskip("ipu_cnn.data.datasets", reason="needs ipu_cnn.data.datasets.RandomImages")
    marker = tmp_path / "writing"
    ckpts = tmp_path / "run" / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(marker), *ARGS, "--epoch", "3", "--output-dir",
                             str(tmp_path), "--run-name", "run"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker.exists, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    partials = list(ckpts.glob(".tmp-*.partial"))
    assert len(partials) == 1 and partials[0].stat().st_size > 0  # the torn write, under a temporary name
    names = [p.name for p in list_checkpoints(ckpts)]
    assert names == ["checkpoint-epoch0001-step000000008.pt"]
    path, state = resolve_checkpoint(ckpts)
    assert state["epoch"] == 1 and state["step"] == 8
    assert main([*ARGS, "--epoch", "3", "--output-dir", str(tmp_path), "--resume", str(ckpts)]) == 0
    final = resolve_checkpoint(ckpts)[1]
    assert final["step"] == 24 and not list(ckpts.glob(".tmp-*.partial"))
    assert torch.is_tensor(next(iter(final["model"].values())))
