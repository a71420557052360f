"""The training configuration: named YAML configs, flags over configs, unknown keys, checks, the saved config."""
from __future__ import annotations

import pytest
import yaml

from ipu_cnn.models import create_model, model_spec
from ipu_cnn.train.config import build_parser, config_to_yaml, named_configs, parse_config


def test_shipped_configs() -> None:
    assert {"demo", "resnet50", "efficientnet-b0", "efficientnet-b4"} <= set(named_configs())


@pytest.mark.parametrize("name", ["demo", "resnet50", "efficientnet-b0", "efficientnet-b4"])
def test_every_named_config_parses_and_builds_its_model(name: str) -> None:
    config = parse_config(["--config", name, "--data-path", "/nonexistent"])
    assert config.config == name
    model = create_model(config.model, 10, drop_rate=config.dropout, drop_path_rate=config.drop_path,
                         zero_init_residual=config.zero_init_residual)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_recipes_carry_the_published_settings() -> None:
    r50 = parse_config(["--config", "resnet50", "--data-path", "x"])
    assert (r50.optimizer, r50.momentum, r50.lr_schedule, r50.warmup_epoch) == ("sgd_combined", 0.9,
                                                                                            "cosine", 5.0)
    assert r50.label_smoothing == 0.1 and r50.weight_decay == 1e-4 and r50.zero_init_residual is True
    # Graphcore's published lr 2.0 for its global batch 18 x 57 x 16, scaled linearly to any other global batch
    assert (r50.lr, r50.lr_reference_batch, r50.micro_batch_size * r50.gradient_accumulation * r50.replicas) == \
        (2.0, 16416, 16416)
    b0 = parse_config(["--config", "efficientnet-b0", "--data-path", "x"])
    assert b0.optimizer == "rmsprop_tf" and b0.lr_schedule == "exponential"
    assert b0.weight_avg_strategy == "exponential" and b0.optimizer_eps == 1e-3
    b4 = parse_config(["--config", "efficientnet-b4", "--data-path", "x"])
    assert b4.mixup_alpha > 0 and b4.cutmix_lambda_high > 0
    assert b4.image_size is None and model_spec(b4.model).image_size == 380


def test_default_is_the_demo_config_and_other_data_the_plain_defaults() -> None:
    assert parse_config([]).config == "demo"
    assert parse_config([]).model == "resnet18"
    plain = parse_config(["--data", "synthetic"])
    assert plain.config == "none" and plain.model == "resnet50"


def test_flags_override_the_config() -> None:
    config = parse_config(["--config", "resnet50", "--data-path", "x", "--lr", "0.5", "--epoch", "3",
                           "--precision", "32.32", "--no-zero-init-residual"])
    assert config.lr == 0.5 and config.epoch == 3 and config.precision == "32.32"
    assert config.zero_init_residual is False


def test_yaml_file_config_with_type_conversion(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("model: test_resnet\nweight-decay: 1e-4\nprecision: 16.32\ntrain_crop_scale: [0.5, 1]\n"
                    "data: synthetic\n")
    config = parse_config(["--config", str(path)])
    assert config.model == "test_resnet" and config.weight_decay == 1e-4  # PyYAML reads 1e-4 as a string
    assert config.precision == "16.32" and config.train_crop_scale == [0.5, 1.0]


@pytest.mark.parametrize("text, message", [
    ("learning_rate: 0.1\n", "unknown key 'learning_rate'"),
    ("micro_batch_sise: 8\n", "did you mean micro_batch_size"),
    ("optimizer: lamb\n", "not one of"),
    ("micro_batch_size: 0\n", "invalid value"),
    ("pretrained: 1\n", "must be true or false"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_bad_config_files_are_rejected(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit, match=message):
        parse_config(["--config", str(path)])


def test_unknown_config_name_suggests() -> None:
    with pytest.raises(SystemExit, match="resnet50"):
        parse_config(["--config", "resnet5"])


@pytest.mark.parametrize("argv, message", [
    (["--data", "imagenet"], "needs --data-path"),
    (["--normalization-location", "host", "--eight-bit-io"], "--eight-bit-io and --normalization-location host"),
    (["--cutmix-lambda-low", "0.8", "--cutmix-lambda-high", "0.2"], "cutmix needs"),
    (["--auto-loss-scaling"], "needs half precision"),
    (["--train-crop-scale", "0", "1"], "0 < LO"),
])
def test_cross_option_checks(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        parse_config(["--data", "synthetic", *argv] if "--data" not in argv else argv)


def test_saved_config_reads_back(tmp_path) -> None:
    config = parse_config(["--data", "synthetic", "--model", "test_resnet", "--lr", "0.3"])
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(config, {"global_batch_size": 32}))
    assert yaml.safe_load(path.read_text())["derived"] == {"global_batch_size": 32}
    again = parse_config(["--config", str(path)])
    saved, read = config.as_dict(), again.as_dict()
    assert {k: read[k] for k in saved if k != "config"} == {k: saved[k] for k in saved if k != "config"}


def test_help_documents_every_graphcore_option() -> None:
    text = build_parser().format_help()
    for flag in ("--micro-batch-size", "--gradient-accumulation", "--replicas", "--device-iterations", "--epoch",
                 "--lr", "--lr-schedule", "--warmup-epoch", "--optimizer", "--weight-decay", "--label-smoothing",
                 "--precision", "--loss-scaling", "--auto-loss-scaling", "--mixup-alpha", "--cutmix-lambda-low",
                 "--cutmix-lambda-high", "--weight-avg-strategy", "--checkpoint-output-dir", "--checkpoint-input-dir",
                 "--resume", "--validation-mode", "--seed", "--dataloader-worker", "--eight-bit-io",
                 "--normalization-location", "--device", "--data", "--data-path", "--model", "--image-size"):
        assert flag in text, flag
