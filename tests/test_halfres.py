"""Half-resolution training (``--half-res-training``): the stage plan, freezing, the eval preprocessing of the
fine-tuning stage, both stages in one command, resuming mid-fine-tune, and starting from the averaged weights."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_train_e2e import ColourImages

from ipu_cnn.batch_sources import HostBatches
from ipu_cnn.train import config_from_mapping, train
from ipu_cnn.train.checkpoint import list_checkpoints, load_checkpoint
from ipu_cnn.train.freeze import freeze_before
from ipu_cnn.train.plan import Stage, half_resolution, plan_stages

NAMES = ["r", "g", "b", "y"]


def _options(tmp_path: Path, name: str, **overrides: Any) -> Any:
    values = {"data": "synthetic", "model": "test_resnet", "image_size": 32, "epoch": 2, "micro_batch_size": 8,
              "lr": 0.05, "warmup_epoch": 0.0, "half_res_training": True, "fine_tune_epoch": 2,
              "fine_tune_lr": 0.02, "fine_tune_micro_batch_size": 4, "fine_tune_gradient_accumulation": 2,
              "fine_tune_first_trainable_layer": "layer4", "logs_per_epoch": 2, "output_dir": str(tmp_path),
              "run_name": name, "progress": "lines", "plot": False, "device": "cpu"}
    values.update(overrides)
    return config_from_mapping(values)


class _StageLoaders:
    """Loaders as a function of the stage, recording the stages asked for (images at the stage's side)."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []

    def __call__(self, stage: Stage) -> tuple:
        self.stages.append(stage)
        batch = stage.options.micro_batch_size * stage.options.gradient_accumulation
        return (HostBatches(ColourImages(32, size=stage.train_image_size), batch, seed=0),
                HostBatches(ColourImages(16, seed=1), 8, shuffle=False, drop_last=False), 4, NAMES)


def test_half_resolution_sides_follow_graphcore() -> None:
    assert half_resolution(224) == 160 and half_resolution(380) == 252  # Graphcore's table (FixRes)
    assert half_resolution(32) == 23 and half_resolution(300) == 214  # other sides: x 5/7


def test_fine_tune_stage_options_are_graphcores(tmp_path: Path) -> None:
    options = _options(tmp_path, "plan", optimizer="rmsprop_tf", momentum=0.9, lr_schedule="step", warmup_epoch=1.0,
                       mixup_alpha=0.2, weight_avg_strategy="exponential", lr_reference_batch=256)
    train_stage, tune = plan_stages(options, 224)
    assert (train_stage.name, train_stage.train_image_size, train_stage.epochs) == ("train", 160, 2)
    assert not train_stage.eval_preprocessing_for_training and train_stage.first_trainable_layer is None
    assert (tune.name, tune.first_epoch, tune.epochs, tune.train_image_size) == ("fine-tune", 2, 2, 224)
    assert tune.eval_preprocessing_for_training and tune.first_trainable_layer == "layer4" and not tune.average
    o = tune.options
    assert (o.optimizer, o.momentum, o.lr, o.lr_reference_batch, o.lr_schedule, o.warmup_epoch) == \
        ("sgd", 0.0, 0.02, None, "cosine", 0.0)
    assert (o.micro_batch_size, o.gradient_accumulation, o.mixup_alpha, o.weight_avg_strategy) == (4, 2, 0.0, "none")
    assert plan_stages(options.replace(half_res_training=False), 224)[0].train_image_size == 224


@pytest.mark.parametrize(("change", "message"), [
    ({"fine_tune_epoch": 0}, "needs a fine-tuning stage"),
    ({"fine_tune_first_trainable_layer": ""}, "needs --fine-tune-first-trainable-layer"),
    ({"weight_avg_N": 3}, "--weight-avg-N averages the saved checkpoints with --weight-avg-strategy"),
])
def test_option_errors_name_the_fix(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        _options(tmp_path, "x", **change)


def test_freeze_before_freezes_the_prefix_and_keeps_its_norms_in_eval() -> None:
    import timm

    net = timm.create_model("efficientnet_b0", num_classes=4)
    frozen = freeze_before(net, "blocks.5.3")  # Graphcore's blocks/5/3, as the caller passes it
    names = [n for n, _ in net.named_parameters()]
    first = names.index(next(n for n in names if n.startswith("blocks.5.3.")))
    assert list(frozen.parameters) == names[:first]
    assert all(not p.requires_grad for p in list(net.parameters())[:first])
    assert all(p.requires_grad for p in list(net.parameters())[first:])
    frozen.train_mode(net)
    modules = dict(net.named_modules())
    assert not modules["bn1"].training and not modules["blocks.5.2.bn3"].training  # BatchNormAct2d: not a leaf
    assert modules["blocks.5.3"].training and modules["bn2"].training and net.training
    with pytest.raises(SystemExit, match="no parameter of the model lies in that layer; its top-level layers are "
                                         "conv_stem, bn1, blocks"):
        freeze_before(timm.create_model("efficientnet_b0", num_classes=4), "block.5")


def test_both_stages_freeze_and_keep_frozen_batch_norm_statistics(tmp_path: Path) -> None:
    loaders = _StageLoaders()
    summary = train(_options(tmp_path, "run"), loaders=loaders)
    assert not summary["stopped"] and summary["stage"] == "fine-tune" and summary["epoch"] == 4
    assert [(s.name, s.train_image_size, s.eval_preprocessing_for_training) for s in loaders.stages] == \
        [("train", 23, False), ("fine-tune", 32, True)]
    stages = {load_checkpoint(p)["stage"]: p for p in list_checkpoints(Path(summary["run_dir"]) / "checkpoints")}
    end_of_training = load_checkpoint(stages["train"])
    final = load_checkpoint(summary["checkpoint"])
    assert final["stage"] == "fine-tune" and final["image_size"] == 32 and final["epoch"] == 4
    # 4 steps of 8 at half size per epoch, then 4 optimizer steps of 4 x 2 per fine-tuning epoch
    assert end_of_training["step"] == 8 and final["step"] == 16
    assert final["config"]["micro_batch_size"] == 8 and final["options"]["fine_tune_micro_batch_size"] == 4
    before, after = end_of_training["model"], final["model"]
    frozen_prefixes = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
    for key in before:
        if key.startswith(frozen_prefixes):  # weights and BatchNorm statistics (running mean/var, counts) kept
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    trained = [k for k in before if k.startswith(("layer4.", "fc.")) and before[k].is_floating_point()]
    assert all(not torch.equal(after[k], before[k]) for k in trained if k.endswith("weight"))
    assert int(after["layer4.0.bn1.num_batches_tracked"]) > int(before["layer4.0.bn1.num_batches_tracked"])
    text = (Path(summary["run_dir"]) / "metrics.jsonl").read_text()
    assert text.count('"split": "validation"') == 4  # every epoch of both stages (--validation-mode during)


def test_resume_mid_fine_tune_matches_the_uninterrupted_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    full = train(_options(tmp_path, "full"), loaders=_StageLoaders())
    part = train(_options(tmp_path, "part", max_steps=10), loaders=_StageLoaders())  # 2 steps into fine-tuning
    assert part["stopped"] and part["stage"] == "fine-tune" and part["step"] == 10
    hint = capsys.readouterr().out.splitlines()[-1]
    assert hint.startswith("continue with: python -m ipu_cnn.train --resume ")
    folder = hint.split("--resume ", 1)[1]
    assert folder == str(tmp_path / "part" / "checkpoints")
    stopped = load_checkpoint(part["checkpoint"])
    assert stopped["stage"] == "fine-tune" and stopped["epoch_step"] == 2 and stopped["loader"] is not None
    loaders = _StageLoaders()
    resumed = train(_options(tmp_path, "", resume=folder), loaders=loaders)
    assert [s.name for s in loaders.stages] == ["fine-tune"]  # straight back into the stage it stopped in
    assert resumed["run_dir"] == str(tmp_path / "part") and resumed["step"] == 16
    a, b = load_checkpoint(full["checkpoint"])["model"], load_checkpoint(resumed["checkpoint"])["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_resume_between_the_stages_runs_the_fine_tuning(tmp_path: Path) -> None:
    part = train(_options(tmp_path, "part", max_steps=8), loaders=_StageLoaders())  # the training stage's last step
    assert part["stopped"] and part["stage"] == "train"
    loaders = _StageLoaders()
    resumed = train(_options(tmp_path, "", resume=part["checkpoint"]), loaders=loaders)
    assert [s.name for s in loaders.stages] == ["train", "fine-tune"] and resumed["step"] == 16
    assert resumed["stage"] == "fine-tune"


def test_fine_tuning_starts_from_the_averaged_checkpoints(tmp_path: Path) -> None:
    summary = train(_options(tmp_path, "avg", weight_avg_strategy="mean", weight_avg_N=-1, epoch=3,
                             validation_mode="after"), loaders=_StageLoaders())
    folder = Path(summary["run_dir"]) / "checkpoints"
    averaged = sorted(folder.glob("*_averaged.pt"))
    assert [p.name for p in averaged] == ["checkpoint-epoch0003-step000000012_averaged.pt"]
    record = load_checkpoint(averaged[0])
    assert record["averaged"]["count"] == 3 and record["stage"] == "train"
    sources = [load_checkpoint(folder / name)["model"] for name in record["averaged"]["checkpoints"]]
    final = load_checkpoint(summary["checkpoint"])["model"]
    frozen = [k for k in final if k.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "layer3."))
              and final[k].is_floating_point()]
    assert any(k.endswith("running_mean") for k in frozen) and any(k.endswith("weight") for k in frozen)
    for key in frozen:  # frozen weights and BatchNorm statistics: the average of the 3 checkpoints, kept
        expected = sum(s[key].double() for s in sources) / 3
        torch.testing.assert_close(final[key].double(), expected, rtol=1e-6, atol=1e-7, msg=key)


def _loader_built() -> bool:
    try:
        from ipu_cnn.data import Loader  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _loader_built(), reason="needs the compiled loader (build the extension)")
def test_fine_tuning_trains_on_the_eval_transform() -> None:
    """The fine-tuning stage's training images are the eval transform's (resize + centre crop, no flip) of the
    samples drawn, in a shuffled order, at full size; the training stage's are random crops at the size asked."""
    from ipu_cnn.data import EvalTransform, TrainTransform, decode_image
    from ipu_cnn.models import EvalPreprocessing, model_spec
    from ipu_cnn.train.data import DataSettings, create_loaders

    data = DataSettings("demo", demo_classes=2, demo_images_per_class=8, seed=3)
    eval_pre = EvalPreprocessing.resolve(model_spec("test_resnet"), image_size=32)
    expected = EvalTransform(size=32, crop_pct=eval_pre.crop_pct, interpolation=eval_pre.interpolation)
    tune, no_val, _, _ = create_loaders(data, batch_size=8, val_batch_size=4, eval=eval_pre, device=torch.device("cpu"),
                                        train_eval_preprocessing=True, validation=False)
    half, _val, _, _ = create_loaders(data, batch_size=8, val_batch_size=4, eval=eval_pre, device=torch.device("cpu"),
                                      train_image_size=23, validation=False)
    try:
        assert no_val is None
        assert tune.transform == expected and isinstance(half.transform, TrainTransform)
        assert half.transform.size == 23
        tune.set_epoch(0)
        images, _labels = next(iter(tune))
        indices = tune.last_indices.copy()
        assert sorted(indices.tolist()) != indices.tolist()  # still shuffled
        paths = tune.paths
        got = images.permute(0, 2, 3, 1).contiguous().numpy()
        for row, index in zip(got, indices):
            np.testing.assert_array_equal(row, decode_image(paths[int(index)], expected))
    finally:
        tune.close()
        half.close()


@pytest.mark.skipif(not _loader_built(), reason="needs the compiled loader (build the extension)")
def test_one_command_runs_both_stages_on_the_demo_jpegs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.train.__main__ import main

    status = main(["--data", "demo", "--demo-classes", "2", "--demo-images-per-class", "8", "--model", "test_resnet",
                   "--image-size", "32", "--epoch", "1", "--micro-batch-size", "8", "--half-res-training",
                   "--fine-tune-epoch", "1", "--fine-tune-micro-batch-size", "4", "--fine-tune-gradient-accumulation",
                   "2", "--fine-tune-first-trainable-layer", "layer4", "--fine-tune-lr", "0.01", "--device", "cpu",
                   "--output-dir", str(tmp_path), "--run-name", "demo", "--no-plot", "--progress", "lines",
                   "--validation-mode", "after", "--dataloader-worker", "1"])
    out = capsys.readouterr().out
    assert status == 0
    assert "train stage (1/2): test_resnet" in out and "23 px random crops, validation at 32 px" in out
    assert "fine-tune stage (2/2)" in out and "32 px eval-transform crops" in out
    assert "fine-tune stage: 36 parameter tensors frozen before layer4" in out
    assert out.count("validation accuracy:") == 2  # once, after both stages ("validation accuracy" + "final ...")
    final = load_checkpoint(tmp_path / "demo" / "checkpoints" / "checkpoint-epoch0002-step000000004-final.pt")
    assert final["stage"] == "fine-tune" and final["image_size"] == 32
