"""One optimizer step on CPU: weight decay groups, gradient accumulation, loss scaling, autocast, mixing, averaging."""
from __future__ import annotations

import copy

import pytest
import torch

from ipu_cnn.backends import TorchBackend, TorchTrainStep, create_optimizer, precision_policy
from ipu_cnn.models import LabelSmoothingCrossEntropy, create_model, unwrap_model
from ipu_cnn.train.averaging import WeightAverage
from ipu_cnn.train.config import config_from_mapping
from ipu_cnn.train.mixing import Mixing
from ipu_cnn.train.plan import effective_lr, optimizer_settings

CPU = torch.device("cpu")


def _optimizer(model: torch.nn.Module, options, lr: float) -> torch.optim.Optimizer:
    return create_optimizer(model, optimizer_settings(options, lr))


def _batch(n: int, size: int = 32, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
    return images, torch.randint(0, classes, (n,), generator=g)


def _step(model: torch.nn.Module, accumulation: int = 1, precision: str = "32.32", loss_scaling: float | None = None,
          optimizer: str = "sgd", smoothing: float = 0.0, mix: Mixing | None = None) -> TorchTrainStep:
    config = config_from_mapping({"data": "synthetic", "optimizer": optimizer, "weight_decay": 1e-2})
    opt = _optimizer(model, config, lr=0.05)
    backend = TorchBackend(CPU, precision_policy(precision, "cpu", loss_scaling=loss_scaling))
    return TorchTrainStep(backend, model, opt, LabelSmoothingCrossEntropy(smoothing), accumulation=accumulation,
                          scaler=backend.create_scaler(), mix=mix)


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["sgd", "sgd_combined", "adamw", "rmsprop", "rmsprop_tf"])
def test_weight_decay_excludes_1d_parameters(name: str) -> None:
    model = create_model("test_resnet", 4)
    opt = _optimizer(model, config_from_mapping({"data": "synthetic", "optimizer": name,
                                                       "weight_decay": 1e-4}), lr=0.1)
    by_id = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for param in model.parameters():
        assert by_id[id(param)] == (0.0 if param.ndim <= 1 else 1e-4)
    assert len(by_id) == sum(1 for _ in model.parameters())


def test_sgd_is_classical_momentum_and_rmsprop_tf_is_timms() -> None:
    model = create_model("test_resnet", 4)
    sgd = _optimizer(model, config_from_mapping({"data": "synthetic", "optimizer": "sgd"}), lr=0.1)
    assert type(sgd).__name__ == "SGD" and sgd.defaults["nesterov"] is False and sgd.defaults["momentum"] == 0.9
    tf = _optimizer(model, config_from_mapping({"data": "synthetic", "optimizer": "rmsprop_tf",
                                                      "optimizer_eps": 1e-3}), lr=0.1)
    assert type(tf).__name__ == "RMSpropTF" and tf.defaults["eps"] == 1e-3


def test_lr_scaling_to_the_global_batch() -> None:
    assert effective_lr(0.1, 256, 1024) == pytest.approx(0.4)
    assert effective_lr(0.1, None, 1024) == pytest.approx(0.1)


@pytest.mark.parametrize("name, bn_eval", [("test_convnext", False), ("test_resnet", True)])
def test_gradient_accumulation_equals_the_whole_batch(name: str, bn_eval: bool) -> None:
    """k micro-batches of b accumulated == one batch of k*b (fp32; BatchNorm in eval mode, or a model without it)."""
    torch.manual_seed(0)
    whole = create_model(name, 4)
    accumulated = copy.deepcopy(whole)
    for model in (whole, accumulated):
        model.train(not bn_eval)
    step_whole, step_acc = _step(whole, 1), _step(accumulated, 4)
    for seed in range(2):
        images, labels = _batch(16, seed=seed)
        out_whole = step_whole(images, labels)
        out_acc = step_acc(images, labels)
        torch.testing.assert_close(out_acc.loss_sum, out_whole.loss_sum, rtol=1e-5, atol=1e-5)
        assert out_acc.samples == out_whole.samples == 16
    for a, b in zip(_weights(accumulated), _weights(whole)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_uneven_accumulation_is_refused() -> None:
    step = _step(create_model("test_convnext", 4), accumulation=3)
    with pytest.raises(ValueError, match="equal micro-batches"):
        step(*_batch(8))


def test_static_loss_scaling_gives_the_same_update() -> None:
    torch.manual_seed(0)
    plain = create_model("test_convnext", 4)
    scaled = copy.deepcopy(plain)
    images, labels = _batch(8)
    _step(plain)(images, labels)
    _step(scaled, loss_scaling=1024.0)(images, labels)
    for a, b in zip(_weights(scaled), _weights(plain)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_autocast_step_on_cpu() -> None:
    model = create_model("test_resnet", 4)
    before = _weights(model)
    step = _step(model, precision="16.16")
    out = step(*_batch(8))
    assert torch.isfinite(out.loss_sum)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # float32 master weights
    assert any(not torch.equal(a, b) for a, b in zip(before, _weights(model)))


def test_dynamic_loss_scaling_with_float16_on_cpu() -> None:
    model = create_model("test_convnext", 4)
    step = _step(model, precision="16.32")
    step.backend.policy = precision_policy("16.32", "cpu", "float16")
    step.scaler = step.backend.create_scaler()
    assert step.scaler is not None
    out = step(*_batch(8))
    assert torch.isfinite(out.loss_sum)


def test_step_returns_device_tensors_without_sync() -> None:
    out = _step(create_model("test_resnet", 4))(*_batch(8))
    assert isinstance(out.loss_sum, torch.Tensor) and isinstance(out.correct, torch.Tensor)
    assert 0 <= int(out.correct) <= 8


# -- mixup / cutmix ---------------------------------------------------------------------------------------------
def test_mixup_blends_images_and_targets() -> None:
    mix = Mixing(4, mixup_alpha=0.4, label_smoothing=0.0, seed=1)
    images, labels = _batch(6)
    mixed, targets = mix(images, labels)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    lam = float(targets[0, labels[0]]) if labels[0] != labels[-1] else None
    if lam is not None:
        expected = images[0].float() * lam + images[-1].float() * (1 - lam)
        torch.testing.assert_close(mixed[0], expected, rtol=1e-4, atol=1e-3)


def test_cutmix_pastes_a_box_and_weighs_targets_by_its_area() -> None:
    mix = Mixing(4, cutmix_low=0.3, cutmix_high=0.7, seed=3)
    images = torch.zeros(2, 3, 20, 20, dtype=torch.uint8)
    images[1] = 255
    labels = torch.tensor([0, 1])
    mixed, targets = mix(images, labels)
    pasted = float((mixed[0, 0] == 255).float().mean())
    assert 0.25 < pasted < 0.75
    assert float(targets[0, 1]) == pytest.approx(pasted, abs=1e-6)
    assert float(targets[0, 0]) == pytest.approx(1 - pasted, abs=1e-6)


def test_mixing_is_reproducible_from_its_state() -> None:
    a = Mixing(4, mixup_alpha=0.2, cutmix_low=0.2, cutmix_high=0.8, seed=5)
    images, labels = _batch(4)
    a(images, labels)
    state = a.state_dict()
    first = a(images, labels)
    b = Mixing(4, mixup_alpha=0.2, cutmix_low=0.2, cutmix_high=0.8, seed=99)
    b.load_state_dict(state)
    second = b(images, labels)
    torch.testing.assert_close(first[0], second[0])
    torch.testing.assert_close(first[1], second[1])


def test_training_step_with_mixing_and_smoothing() -> None:
    mix = Mixing(4, mixup_alpha=0.2, cutmix_low=0.5, cutmix_high=1.0, label_smoothing=0.1, seed=0)
    out = _step(create_model("test_resnet", 4), mix=mix)(*_batch(8))
    assert torch.isfinite(out.loss_sum)


# -- weight averaging -------------------------------------------------------------------------------------------
def test_exponential_average_with_tf_warmup() -> None:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    avg = WeightAverage(model, "exponential", decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    avg.update(model, step=1)  # decay min(0.5, 2/11) = 2/11
    assert float(avg.module.weight[0, 0]) == pytest.approx(9 / 11)
    avg.update(model, step=2)  # decay min(0.5, 3/12)
    assert float(avg.module.weight[0, 0]) == pytest.approx(1 - (2 / 11) * (3 / 12))


def test_mean_average_over_steps_after_start() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    avg = WeightAverage(model, "mean", start_step=2)
    for step, value in enumerate([5.0, 1.0, 2.0, 3.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        avg.update(model, step)
    assert float(avg.module.weight) == pytest.approx((1.0 + 2.0 + 3.0) / 3)
    restored = WeightAverage(model, "mean", start_step=2)
    restored.load_state_dict(avg.state_dict())
    assert restored.updates == 3 and float(restored.module.weight) == pytest.approx(2.0)


def test_average_copies_integer_buffers_and_averages_bn_stats() -> None:
    model = create_model("test_resnet", 4)
    plain = unwrap_model(model)
    avg = WeightAverage(plain, "exponential", decay=0.9)
    _step(model)(*_batch(8))
    avg.update(plain, 1)
    tracked = [b for n, b in avg.module.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked and all(int(t) == 1 for t in tracked)
