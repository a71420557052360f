"""Graphcore's recipes under their own names: every named config (training and inference) parses, carries the values
Graphcore's configs.yml publishes, and builds its model; the norm / EfficientNet shape options build the G16-GN and
G1-GN networks with the parameter counts of an independent closed-form count; a config's IPU replication factor
runs on one CPU process as gradient accumulation, said in the log; checkpoints carry the shape to validation and
inference."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torchvision
import yaml
from torch import nn

from ipu_cnn import _cli
from ipu_cnn.inference.config import named_configs as inference_configs
from ipu_cnn.inference.config import parse_options
from ipu_cnn.models import ModelShape, count_parameters, create_model, resolve_model_name
from ipu_cnn.train.config import build_parser, named_configs, parse_config
from ipu_cnn.train.plan import fold_config_replicas, ipu_only_notes, plan_batches

CONFIG_DIRS = {"ipu_cnn.train": Path(__file__).parent.parent / "ipu_cnn" / "train" / "configs",
               "ipu_cnn.inference": Path(__file__).parent.parent / "ipu_cnn" / "inference" / "configs"}

# -- Graphcore's published values (its train/configs.yml and inference/configs.yml), typed in by hand --------------
_R50 = dict(model="resnet50", micro_batch_size=18, gradient_accumulation=57, replicas=16, device_iterations=1,
            epoch=100, optimizer="sgd_combined", lr=2.0, momentum=0.9, weight_decay=1e-4, label_smoothing=0.1,
            lr_schedule="cosine", warmup_epoch=5.0, precision="16.16", enable_stochastic_rounding=True,
            half_partial=True, loss_scaling=128.0, seed=42, norm_type="batch", disable_stable_batchnorm=True,
            eight_bit_io=True, normalization_location="device", recompute_mode="manual",
            available_memory_proportion=[0.16], lr_scheduler_freq=16.0, pipeline_splits=[],
            exchange_memory_target="memory", offload_optimizer=False, enable_optimizer_rts=False, use_bbox_info=True)
_EFF = dict(seed=0, precision="16.32", eight_bit_io=True, normalization_location="device",
            enable_stochastic_rounding=False, efficientnet_group_dim=16, efficientnet_expand_ratio=4,
            norm_type="group", norm_eps=1e-3, norm_num_groups=4, epoch=350, warmup_epoch=5.0, optimizer="rmsprop_tf",
            optimizer_eps=1e-3, momentum=0.9, rmsprop_decay=0.953125, lr_schedule="exponential", lr_decay=0.97,
            loss_scaling=128.0, weight_decay=1e-5, label_smoothing=0.1, available_memory_proportion=[0.15],
            half_partial=True, enable_fast_groupnorm=True, drop_path=0.2, lr_scheduler_freq=0.424,
            exchange_memory_target="balanced", offload_optimizer=False, enable_optimizer_rts=False,
            pipeline_splits=["blocks/3/0/conv_pw"], use_bbox_info=True, weight_avg_strategy="exponential",
            weight_avg_exp_decay=0.97, weight_avg_N=-1)
_B4 = dict(_EFF, model="efficientnet-b4", precision="16.16", enable_stochastic_rounding=True, micro_batch_size=4,
           available_memory_proportion=[0.1], exchange_memory_target="memory", enable_optimizer_rts=True,
           pipeline_splits=["blocks/3/0/bn2"], recompute_checkpoints=["add_1", "add_3"], lr=0.1, replicas=8, gradient_accumulation=64, device_iterations=4,
           mixup_alpha=0.2, cutmix_lambda_low=0.65, cutmix_lambda_high=1.0, cutmix_disable_prob=0.35, dropout=0.4)
_MNV3 = dict(label_smoothing=0.1, weight_decay=3e-5, optimizer="sgd_combined", lr_schedule="cosine", warmup_epoch=5.0,
             loss_scaling=128.0, seed=42, norm_type="batch", half_partial=True, eight_bit_io=True,
             normalization_location="device", epoch=360, momentum=0.9, lr=0.52, device_iterations=1,
             validation_mode="after", micro_batch_size=32, dropout=0.2, initial_loss_scaling=128.0,
             offload_optimizer=False, enable_optimizer_rts=False)
_SMALL = dict(_MNV3, model="mobilenet-v3-small", precision="16.16", recompute_mode="auto", gradient_accumulation=32,
              replicas=1, enable_stochastic_rounding=True)
_LARGE = dict(_MNV3, model="mobilenet-v3-large", precision="16.32", gradient_accumulation=32, replicas=1,
              enable_stochastic_rounding=True, pipeline_splits=["mb_block/2/seq/0", "mb_block/7/seq/0",
                                                                "mb_block/11/seq/0"])
GRAPHCORE_TRAIN: dict[str, dict[str, Any]] = {
    "resnet50": _R50,
    "resnet50-pod64": dict(_R50, replicas=64, gradient_accumulation=14),
    "resnet50-pod4": dict(_R50, replicas=4, gradient_accumulation=228),  # not in configs.yml: see its YAML
    "efficientnet-b0-g16-gn-pod16": dict(_EFF, model="efficientnet-b0", lr=0.05, micro_batch_size=20, replicas=8,
                                         gradient_accumulation=5, mixup_alpha=0.1, dropout=0.2),
    "efficientnet-b4-g16-gn-pod16": _B4,
    "efficientnet-b4-g16-gn-pod64": dict(_B4, replicas=32, gradient_accumulation=16),
    "efficientnet-b4-g1-gn-pod16": dict(_B4, efficientnet_group_dim=1, efficientnet_expand_ratio=6, replicas=4,
                                        micro_batch_size=4, gradient_accumulation=48, lr=0.0483, recompute_checkpoints=[],
                                        pipeline_splits=["blocks/1/1/conv_pw", "blocks/3/0/conv_pw",
                                                         "blocks/4/5/conv_pw"]),
    "mobilenet-v3-small": _SMALL,
    "mobilenet-v3-small-pod4": dict(_SMALL, replicas=4, gradient_accumulation=8, enable_stochastic_rounding=False),
    "mobilenet-v3-large": _LARGE,
    "mobilenet-v3-large-pod16": dict(_LARGE, replicas=4, gradient_accumulation=8, enable_stochastic_rounding=False),
}
_INF = dict(precision="16.16", replicas=1, device_iterations=128, half_partial=True, norm_type="batch")
_G16 = dict(_INF, efficientnet_group_dim=16, efficientnet_expand_ratio=4, norm_type="group", norm_eps=1e-3,
            norm_num_groups=4, enable_fast_groupnorm=True, random_weights=True)
GRAPHCORE_INFERENCE: dict[str, dict[str, Any]] = {
    "resnet50": dict(_INF, model="resnet50", micro_batch_size=90),
    "efficientnet-b0": dict(_INF, model="efficientnet-b0", micro_batch_size=49),
    "efficientnet-b4": dict(_INF, model="efficientnet-b4", micro_batch_size=12),
    "efficientnet-b0-g16-gn": dict(_G16, model="efficientnet-b0", micro_batch_size=106),
    "efficientnet-b4-g16-gn": dict(_G16, model="efficientnet-b4", micro_batch_size=26),
    "mobilenet-v3-small": dict(_INF, model="mobilenet-v3-small", micro_batch_size=224, device_iterations=64),
    "mobilenet-v3-large": dict(_INF, model="mobilenet-v3-large", micro_batch_size=64),
}


def _check_values(options: Any, expected: dict[str, Any], where: str) -> None:
    for key, value in expected.items():
        got = getattr(options, key)
        if isinstance(value, float):
            assert got is not None and math.isclose(got, value, rel_tol=1e-9), (where, key, got, value)
        else:
            assert got == value, (where, key, got, value)


def test_every_graphcore_config_name_is_shipped() -> None:
    assert set(GRAPHCORE_TRAIN) <= set(named_configs())
    assert set(GRAPHCORE_INFERENCE) <= set(inference_configs())


@pytest.mark.parametrize("name", sorted(GRAPHCORE_TRAIN))
def test_training_config_carries_graphcores_published_values(name: str) -> None:
    options = parse_config(["--config", name, "--data-path", "/imagenet"])
    _check_values(options, GRAPHCORE_TRAIN[name], name)
    # the published lr is for the published global batch; lr_reference_batch makes it scale from there
    assert options.lr_reference_batch == options.micro_batch_size * options.gradient_accumulation * options.replicas
    if options.lr_schedule == "exponential":  # Graphcore: x lr_decay per scheduler step, 0.424 steps per epoch
        assert math.isclose(options.lr_decay_period, 1 / 0.424)


@pytest.mark.parametrize("name", sorted(GRAPHCORE_INFERENCE))
def test_inference_config_carries_graphcores_published_values(name: str) -> None:
    _check_values(parse_options(["--config", name]), GRAPHCORE_INFERENCE[name], name)


# -- the models: closed-form parameter counts, and each config's model built -----------------------------------------
_BLOCKS = [("ds", 1, 3, 16), ("ir", 2, 3, 24), ("ir", 2, 5, 40), ("ir", 3, 3, 80), ("ir", 3, 5, 112),
           ("ir", 4, 5, 192), ("ir", 1, 3, 320)]  # Tan & Le 2019, table 1: block, repeats, kernel, channels


def _round8(value: float) -> int:
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


def efficientnet_parameters(width: float, depth: float, expand: int, group_dim: int, classes: int = 1000) -> int:
    """Trainable parameters of an EfficientNet counted from the paper's block table, written out independently of
    timm: stem, MBConv blocks (expansion, grouped k x k convolution with max(C // group_dim, 1) groups, squeeze-
    excite to a quarter of the block input, projection), head and classifier; a norm layer (BatchNorm or GroupNorm)
    holds 2 parameters per channel."""
    def grouped(channels: int, k: int) -> int:
        return channels * (channels // max(channels // group_dim, 1)) * k * k

    def squeeze_excite(channels: int, reduced: int) -> int:
        return 2 * channels * reduced + reduced + channels

    stem = _round8(32 * width)
    total, cin = 27 * stem + 2 * stem, stem
    for kind, repeats, k, channels in _BLOCKS:
        out = _round8(channels * width)
        for _ in range(math.ceil(repeats * depth)):
            if kind == "ds":
                total += grouped(cin, k) + 2 * cin + squeeze_excite(cin, cin // 4) + cin * out + 2 * out
            else:
                mid = cin * expand
                total += (cin * mid + 2 * mid + grouped(mid, k) + 2 * mid + squeeze_excite(mid, cin // 4)
                          + mid * out + 2 * out)
            cin = out
    features = _round8(1280 * width)
    return total + cin * features + 2 * features + features * classes + classes


G16_GN = ModelShape(norm_type="group", norm_num_groups=4, norm_eps=1e-3, efficientnet_expand_ratio=4,
                    efficientnet_group_dim=16)
G1_GN = ModelShape(norm_type="group", norm_num_groups=4, norm_eps=1e-3)


def test_closed_form_count_reproduces_the_published_efficientnets() -> None:
    # EfficientNet paper: B0 5.3M, B4 19M parameters; timm's builds are the reference implementations
    assert efficientnet_parameters(1.0, 1.0, 6, 1) == count_parameters(timm.create_model("efficientnet_b0")) \
        == 5_288_548
    assert efficientnet_parameters(1.4, 1.8, 6, 1) == count_parameters(timm.create_model("efficientnet_b4")) \
        == 19_341_616


@pytest.mark.parametrize("name, shape, width, depth, expected", [
    ("efficientnet-b0", G16_GN, 1.0, 1.0, 5_913_796),
    ("efficientnet-b4", G16_GN, 1.4, 1.8, 19_328_168),
    ("efficientnet-b4", G1_GN, 1.4, 1.8, 19_341_616),  # GroupNorm holds as many parameters as BatchNorm
])
def test_graphcore_efficientnets_have_the_closed_form_parameter_counts(name: str, shape: ModelShape, width: float,
                                                                       depth: float, expected: int) -> None:
    model = create_model(name, 1000, shape=shape)
    assert count_parameters(model) == expected == efficientnet_parameters(
        width, depth, shape.efficientnet_expand_ratio, shape.efficientnet_group_dim)


def test_g16_gn_structure_is_graphcores() -> None:
    net = create_model("efficientnet-b4", 1000, shape=G16_GN).model
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 4 and m.eps == 1e-3 for m in norms)
    dws = {n: m for n, m in net.named_modules() if n.endswith("conv_dw")}
    for name, conv in dws.items():
        assert conv.groups == max(conv.in_channels // 16, 1), name
    assert dws["blocks.0.1.conv_dw"].groups == 1  # 24 channels < 16 x 2: a full convolution, as Graphcore's rule
    for block in net.blocks[1:]:
        for layer in block:
            assert layer.conv_pw.out_channels == 4 * layer.conv_pw.in_channels
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    net_in = create_model("efficientnet-b0", 7, shape=G16_GN).train()
    net_in(images).sum().backward()  # GroupNormAct kept its activation; gradients reach the stem
    assert net_in.model.conv_stem.weight.grad is not None


@pytest.mark.parametrize("graphcore, reference", [("mobilenet", torchvision.models.mobilenet_v2),
                                                  ("mobilenet-v3-small", torchvision.models.mobilenet_v3_small),
                                                  ("mobilenet-v3-large", torchvision.models.mobilenet_v3_large)])
def test_graphcore_mobilenet_names_build_the_same_networks_as_torchvision(graphcore: str, reference: Any) -> None:
    # Graphcore's `mobilenet` was torchvision's mobilenet_v2; MobileNetV3 papers: Small 2.5M, Large 5.4M parameters
    assert count_parameters(create_model(graphcore, 1000)) == count_parameters(reference())
    assert resolve_model_name(graphcore.upper()) == resolve_model_name(graphcore)


@pytest.mark.parametrize("name", sorted(set(named_configs())))
def test_every_training_config_builds_its_model(name: str) -> None:
    options = parse_config(["--config", name, "--data-path", "/imagenet"])
    shape = ModelShape.from_record(options.as_dict())
    model = create_model(options.model, 1000, drop_rate=options.dropout, drop_path_rate=options.drop_path,
                         zero_init_residual=options.zero_init_residual, shape=shape)
    expected = {"resnet50": 25_557_032, "mobilenet-v3-small": 2_542_856, "mobilenet-v3-large": 5_483_032,
                "efficientnet-b0": 5_288_548, "efficientnet-b4": 19_341_616}
    if shape.reshapes_efficientnet:
        width, depth = (1.0, 1.0) if options.model == "efficientnet-b0" else (1.4, 1.8)
        assert count_parameters(model) == efficientnet_parameters(width, depth, shape.efficientnet_expand_ratio,
                                                                  shape.efficientnet_group_dim)
    elif options.model in expected:
        assert count_parameters(model) == expected[options.model]
    else:
        assert count_parameters(model) > 0


@pytest.mark.parametrize("name", sorted(inference_configs()))
def test_every_inference_config_builds_its_model(name: str) -> None:
    from ipu_cnn.inference.model import ModelChoice, load_model

    loaded = load_model(ModelChoice.from_options(parse_options(["--config", name])))
    shape = ModelShape.from_record(parse_options(["--config", name]).as_dict())
    assert loaded.weights == "random" and (shape.norm_type == "group") == any(
        isinstance(m, nn.GroupNorm) for m in loaded.model.modules())


# -- shape option errors ----------------------------------------------------------------------------------------------
def test_shape_options_refuse_what_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="reshape EfficientNet-B0..B7.*not resnet50"):
        create_model("resnet50", 10, shape=ModelShape(efficientnet_group_dim=16))
    with pytest.raises(ValueError, match="--norm-num-groups 32 does not divide the 16 channels"):
        create_model("efficientnet-b0", 10, shape=ModelShape(norm_type="group"))
    with pytest.raises(ValueError, match="pretrained weights exist for efficientnet_b0 as published only"):
        create_model("efficientnet-b0", 10, pretrained=True, shape=G16_GN)
    with pytest.raises(SystemExit, match="--norm-eps must be positive"):
        parse_config(["--data", "synthetic", "--norm-eps", "0"])
    with pytest.raises(SystemExit, match="--batchnorm-momentum must be in"):
        parse_options(["--batchnorm-momentum", "1.5"])


def test_batch_norm_options_and_norm_type_none() -> None:
    model = create_model("test_resnet", 4, shape=ModelShape(norm_eps=1e-3, batchnorm_momentum=0.01))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)
    bare = create_model("efficientnet-b0", 4, shape=ModelShape(norm_type="none"))
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) for m in bare.modules())
    assert isinstance(bare.model.bn1[1], nn.SiLU)  # the stem's activation stays where the norm was
    assert bare(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)).shape == (1, 4)


# -- IPU-only values on CPU/CUDA --------------------------------------------------------------------------------------
def test_a_configs_replicas_become_gradient_accumulation_in_one_process() -> None:
    options = parse_config(["--config", "resnet50", "--data-path", "/imagenet"])
    folded, note = fold_config_replicas(options, "cpu", 1)
    assert (folded.replicas, folded.gradient_accumulation) == (1, 57 * 16)
    assert plan_batches(folded, "cpu", 1).global_batch_size == 16416  # the published global batch
    assert note is not None and "--replicas 16 is an IPU replication factor" in note and "57 x 16 = 912" in note
    four, note4 = fold_config_replicas(options, "cuda", 4)  # torchrun with 4 processes: 4 replicas each
    assert (four.replicas, four.gradient_accumulation) == (4, 57 * 4) and "4 processes" in str(note4)
    assert plan_batches(four, "cuda", 4).global_batch_size == 16416
    assert fold_config_replicas(options, "ipu", 1) == (options, None)  # IPUs replicate for real
    explicit = parse_config(["--data", "synthetic", "--replicas", "2"])  # a flag is taken literally
    assert fold_config_replicas(explicit, "cpu", 1) == (explicit, None)
    with pytest.raises(SystemExit, match="torchrun --nproc-per-node 2"):
        plan_batches(explicit, "cpu", 1)


def test_ipu_only_values_are_named_in_the_log() -> None:
    options = parse_config(["--config", "efficientnet-b4-g16-gn-pod16", "--data-path", "/imagenet"])
    notes = ipu_only_notes(options, "cpu")
    assert any(n.startswith("--device-iterations 4") for n in notes)
    assert any(n.startswith("--enable-fast-groupnorm") for n in notes)
    assert not any(n.startswith("--device-iterations") for n in ipu_only_notes(options, "ipu"))


def test_a_shaped_config_trains_validates_and_serves_with_its_shape(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("ipu_cnn.data.datasets", reason="needs ipu_cnn.data.datasets.RandomImages")
    from ipu_cnn.inference.model import ModelChoice, load_model
    from ipu_cnn.train.__main__ import main
    from ipu_cnn.train.checkpoint import load_checkpoint
    from ipu_cnn.train.validate import main as validate_main

    config = tmp_path / "g16.yaml"
    config.write_text(yaml.safe_dump({
        "data": "generated", "model": "efficientnet-b0", "image_size": 32, "num_classes": 4, "generated_samples": 16,
        "micro_batch_size": 4, "replicas": 2, "device_iterations": 2, "epoch": 1, "device": "cpu",
        "efficientnet_expand_ratio": 4, "efficientnet_group_dim": 16, "norm_type": "group", "norm_num_groups": 4,
        "norm_eps": 1e-3, "validation_mode": "after", "progress": "lines", "plot": False}))
    assert main(["--config", str(config), "--output-dir", str(tmp_path), "--run-name", "run"]) == 0
    out = capsys.readouterr().out
    assert "model shape: expand ratio 4, group dim 16, GroupNorm 4 groups, norm eps 0.001" in out
    assert re.search(r"--replicas 2 is an IPU replication factor; on cpu with 1 process each process runs 2 "
                     r"replicas' micro-batches in turn \(gradient accumulation 1 x 2 = 2\), keeping the global batch "
                     r"of 8", " ".join(out.split()))
    assert "--device-iterations 2 sets the steps an IPU runs per host call; on cpu the host feeds every step" in out
    checkpoint = sorted((tmp_path / "run" / "checkpoints").glob("checkpoint-*.pt"))[-1]
    state = load_checkpoint(checkpoint)
    assert state["model_shape"] == G16_GN.record()
    assert (state["options"]["replicas"], state["options"]["gradient_accumulation"]) == (1, 2)
    assert validate_main(["--checkpoint", str(checkpoint)]) == 0  # rebuilds the G16-GN shape to load the weights
    assert "validation accuracy:" in capsys.readouterr().out
    loaded = load_model(ModelChoice("benchmark", weights=str(checkpoint)))  # inference too, without shape flags
    assert any(isinstance(m, nn.GroupNorm) for m in loaded.model.modules())
    with pytest.raises(SystemExit, match="differ from the shape the checkpoint"):
        load_model(ModelChoice("benchmark", weights=str(checkpoint), shape=ModelShape(norm_type="none")))


# -- no value is left behind ----------------------------------------------------------------------------------------
def test_no_config_keeps_a_value_commented_out() -> None:
    """Every Graphcore value a config names is live: a `key: value` left in a comment would silently run the recipe
    without it."""
    key_line = re.compile(r"^#\s*[a-z_]+:\s*\S")
    for folder in CONFIG_DIRS.values():
        for path in sorted(folder.glob("*.yaml")):
            for line in path.read_text().splitlines():
                assert not key_line.match(line) and not line.startswith("# pending"), f"{path.name}: {line!r}"


# -- every Graphcore option: in --help, and in the docs table ---------------------------------------------------------
#: Graphcore's training options (utils/argparser.py's common parser, train/train_utils.py, train/weight_avg.py).
GRAPHCORE_TRAIN_OPTIONS = """
--micro-batch-size --dataloader-rebatch-size --iterations --model --pipeline-splits --replicas --device-iterations
--half-partial --exchange-memory-target --norm-type --norm-eps --norm-num-groups --enable-fast-groupnorm
--batchnorm-momentum --normalization-location --eight-bit-io --dataloader-worker --profile --model-cache-path
--input-image-padding --num-io-tiles --compile-only --offline-target-ipu-version --efficientnet-expand-ratio
--efficientnet-group-dim --config --data --precision --imagenet-data-path --gradient-accumulation --lr --weight-decay
--optimizer --optimizer-eps --momentum --rmsprop-decay --epoch --checkpoint-input-dir --checkpoint-output-dir
--checkpoint-save-freq --validation-mode --wandb --wandb-weight-histogram --seed --recompute-mode
--recompute-checkpoints --disable-stable-batchnorm --offload-optimizer --enable-optimizer-rts
--available-memory-proportion --logs-per-epoch --validation-frequency --label-smoothing --lr-schedule --lr-decay
--lr-epoch-decay --warmup-epoch --lr-scheduler-freq --loss-scaling --initial-loss-scaling --auto-loss-scaling
--enable-stochastic-rounding --enable-fp-exceptions --use-bbox-info --mixup-alpha --cutmix-lambda-low
--cutmix-lambda-high --cutmix-disable-prob --half-res-training --fine-tune-epoch --fine-tune-lr
--fine-tune-micro-batch-size --fine-tune-gradient-accumulation --fine-tune-first-trainable-layer --weight-avg-strategy
--weight-avg-exp-decay --weight-avg-N
""".split()
DOC = Path(__file__).parent.parent / "docs" / "graphcore-options.md"


def _doc_rows(section: str) -> list[tuple[list[str], str]]:
    text = DOC.read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `--") else []
        if len(cells) == 2:
            rows.append((re.findall(r"`(--[a-zA-Z0-9-]+)`", cells[0]), cells[1]))
    return rows


def test_the_docs_table_says_for_every_graphcore_option_what_it_is_here() -> None:
    rows = _doc_rows("Training")
    documented = {option for options, _ in rows for option in options}
    assert set(GRAPHCORE_TRAIN_OPTIONS) <= documented, set(GRAPHCORE_TRAIN_OPTIONS) - documented
    help_text = build_parser().format_help()
    for options, verdict in rows:
        assert re.match(r"(same|renamed to `--[a-z-]+`|not applicable here, because )", verdict), (options, verdict)
        if verdict.startswith("renamed to"):
            assert re.search(r"`(--[a-z-]+)`", verdict).group(1) in help_text  # type: ignore[union-attr]
        elif verdict.startswith("same"):
            for option in options:
                assert re.search(rf"{re.escape(option)}\b", help_text), option
    missing = [o for o in GRAPHCORE_TRAIN_OPTIONS if not re.search(rf"{re.escape(o)}\b", help_text)]
    assert set(missing) == {"--dataloader-rebatch-size", "--iterations", "--model-cache-path",
                            "--input-image-padding", "--wandb-weight-histogram"}, missing  # the not-applicable/renamed


def test_graphcores_spellings_of_renamed_options_are_accepted() -> None:
    options = parse_config(["--data", "imagenet", "--imagenet-data-path", "/imagenet", "--validation-frequency", "3"])
    assert (options.data_path, options.validation_freq) == ("/imagenet", 3)


def test_inference_config_random_weights_yield_to_given_weights(tmp_path: Path) -> None:
    assert parse_options(["--config", "efficientnet-b0-g16-gn"]).random_weights is True
    given = parse_options(["--config", "efficientnet-b0-g16-gn", "--weights", str(tmp_path / "ckpt.pt")])
    assert (given.random_weights, given.weights) == (False, str(tmp_path / "ckpt.pt"))
    with pytest.raises(SystemExit):  # two given on the command line still clash (argparse: not allowed with)
        parse_options(["--random-weights", "--weights", "x.pt"])
