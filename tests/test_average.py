"""``python -m ipu_cnn.train.average``: averaging saved checkpoints (mean / exponential, last N) against the closed
forms, integer buffers, the averaged file's format, and that validate, --weights, inference and export accept it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ipu_cnn.train import config_from_mapping, train
from ipu_cnn.train.average import average_state_dicts, main, select_checkpoints
from ipu_cnn.train.checkpoint import list_checkpoints, load_checkpoint


def _states() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"w": torch.randn(3, 2, generator=g), "half": torch.randn(4, generator=g).half(),
             "bn.num_batches_tracked": torch.tensor(10 * (i + 1))} for i in range(4)]


def test_mean_is_the_arithmetic_mean_and_counts_are_the_newest() -> None:
    states = _states()
    out = average_state_dicts(states, "mean")
    torch.testing.assert_close(out["w"], torch.stack([s["w"] for s in states]).mean(0), rtol=1e-6, atol=1e-7)
    assert out["half"].dtype == torch.float16
    torch.testing.assert_close(out["half"], torch.stack([s["half"].double() for s in states]).mean(0).half())
    assert out["bn.num_batches_tracked"].dtype == torch.int64 and int(out["bn.num_batches_tracked"]) == 40


def test_exponential_is_the_closed_form() -> None:
    states, d = _states(), 0.7
    out = average_state_dicts(states, "exponential", d)
    n = len(states)  # a = w1, then a = d a + (1 - d) w_i: d^(n-1) w1 + sum_{i>=2} (1 - d) d^(n-i) w_i
    expected = d ** (n - 1) * states[0]["w"].double() + sum((1 - d) * d ** (n - 1 - i) * states[i]["w"].double()
                                                             for i in range(1, n))
    torch.testing.assert_close(out["w"], expected.float(), rtol=1e-6, atol=1e-7)
    assert int(out["bn.num_batches_tracked"]) == 40


def test_mismatched_states_and_bad_arguments_are_refused() -> None:
    states = _states()
    with pytest.raises(ValueError, match="not of the same model"):
        average_state_dicts([states[0], {"w": states[1]["w"]}], "mean")
    with pytest.raises(ValueError, match="must be in \\(0, 1\\)"):
        average_state_dicts(states, "exponential", 1.0)
    with pytest.raises(ValueError, match="mean or exponential"):
        average_state_dicts(states, "median")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-epoch run on generated data (4 classes, 32 px) that keeps a checkpoint per epoch and, as Graphcore's
    train.py does with --weight-avg-N, averages them at the end."""
    out = tmp_path_factory.mktemp("avg")
    options = config_from_mapping({
        "data": "generated", "num_classes": 4, "generated_samples": 32, "model": "test_resnet", "image_size": 32,
        "epoch": 3, "micro_batch_size": 8, "lr": 0.05, "output_dir": str(out), "run_name": "run", "plot": False,
        "progress": "lines", "logs_per_epoch": 1, "device": "cpu", "weight_avg_strategy": "mean", "weight_avg_N": -1})
    return train(options)


def test_cli_averages_the_last_n_checkpoints(run: dict[str, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    folder = Path(run["run_dir"]) / "checkpoints"
    paths = list_checkpoints(folder)
    assert len(paths) == 3
    target = tmp_path / "exp_averaged.pt"
    assert main(["--checkpoint-input-dir", run["run_dir"], "--weight-avg-strategy", "exponential",
                 "--weight-avg-exp-decay", "0.6", "--weight-avg-N", "2", "--output", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    record = load_checkpoint(target)  # v2, checksums verified
    assert record["averaged"] == {"strategy": "exponential", "decay": 0.6, "count": 2,
                                  "checkpoints": [p.name for p in paths[1:]]}
    older, newer = (load_checkpoint(p)["model"] for p in paths[1:])
    for key, value in record["model"].items():
        if value.is_floating_point():  # weights and BatchNorm running statistics
            torch.testing.assert_close(value, (0.6 * older[key].double() + 0.4 * newer[key].double()).float(),
                                       rtol=1e-6, atol=1e-7, msg=key)
        else:
            assert torch.equal(value, newer[key]), key
    assert record["optimizer"] == {} and record["weight_average"] is None and record["step"] == 12


def test_averaged_checkpoint_is_accepted_everywhere_but_resume(run: dict[str, Any], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.inference.cli import main as inference
    from ipu_cnn.models import create_model
    from ipu_cnn.train.validate import validate_checkpoint

    folder = Path(run["run_dir"]) / "checkpoints"
    averaged = folder / "checkpoint-epoch0003-step000000012_averaged.pt"
    assert averaged.is_file() and averaged not in list_checkpoints(folder)  # --resume DIR never picks it
    written_by_the_run = load_checkpoint(averaged)["model"]
    assert "averaged_checkpoints_accuracy" in run["validation"]
    assert main(["--checkpoint-path", str(folder)]) == 0  # Graphcore's flag name; mean of all, as the run did
    state = load_checkpoint(averaged)
    for key, value in written_by_the_run.items():
        assert torch.equal(value, state["model"][key]), key
    sources = [load_checkpoint(p)["model"] for p in list_checkpoints(folder)]
    key = next(k for k in state["model"] if k.endswith("running_var"))
    torch.testing.assert_close(state["model"][key], sum(s[key].double() for s in sources).float() / 3)

    result = validate_checkpoint(averaged, {})
    assert result["count"] > 0 and 0.0 <= result["accuracy"] <= 100.0
    model = create_model("test_resnet", 4, weights=str(averaged))
    for name, value in model.model.state_dict().items():
        assert torch.equal(value, state["model"][name]), name
    with pytest.raises(SystemExit, match="averaged checkpoint holds weights without training state.*--weights"):
        train(config_from_mapping({"data": "generated", "num_classes": 4, "model": "test_resnet", "image_size": 32,
                                   "device": "cpu", "resume": str(averaged), "output_dir": str(tmp_path)}))

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (40, 36), (60 * i, 120, 200)).save(images / f"{i}.jpg")
    capsys.readouterr()
    assert inference(["predict", str(images), "--weights", str(averaged), "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    exported = tmp_path / "model.pt"
    assert inference(["export", "--format", "torchscript", str(exported), "--weights", str(averaged),
                      "--device", "cpu"]) == 0
    assert exported.is_file()


def test_selection_skips_interrupted_checkpoints_and_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        select_checkpoints(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no epoch checkpoints"):
        select_checkpoints(tmp_path)
    for name in ("checkpoint-epoch0001-step000000004.pt", "checkpoint-epoch0001-step000000006-interrupted.pt",
                 "checkpoint-epoch0002-step000000008-final.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in select_checkpoints(tmp_path)] == ["checkpoint-epoch0001-step000000004.pt",
                                                              "checkpoint-epoch0002-step000000008-final.pt"]
    assert [p.name for p in select_checkpoints(tmp_path, 1)] == ["checkpoint-epoch0002-step000000008-final.pt"]
    # at the end of a half-res run's first stage: none of a later (fine-tuning) attempt's checkpoints
    assert [p.name for p in select_checkpoints(tmp_path, max_step=7)] == ["checkpoint-epoch0001-step000000004.pt"]
    with pytest.raises(ValueError, match="--weight-avg-N must be a positive number"):
        select_checkpoints(tmp_path, 0)
