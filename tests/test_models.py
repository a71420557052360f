"""Model registry, device-side normaliser and label-smoothing loss (ipu_cnn.models)."""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from ipu_cnn.models import (
    InputNormalizer,
    LabelSmoothingCrossEntropy,
    NormalizedModel,
    create_model,
    model_spec,
    resolve_model_name,
    smooth_one_hot,
    unwrap_model,
)


def _uint8_batch(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)


def test_normalizer_matches_torchvision_normalize() -> None:
    from torchvision.transforms import v2

    images = _uint8_batch()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = v2.Normalize(mean, std)(images.float() / 255.0)
    got = InputNormalizer(mean, std)(images)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_normalizer_keeps_channels_last_and_takes_half_dtype() -> None:
    images = _uint8_batch()
    assert images.is_contiguous(memory_format=torch.channels_last)
    norm = InputNormalizer()
    out = norm(images)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    assert norm.half()(images).dtype == torch.float16


def test_normalizer_rejects_wrong_layout() -> None:
    with pytest.raises(ValueError, match=r"\[batch, 3, height, width\]"):
        InputNormalizer()(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))


def test_normalizer_is_first_op_and_state_dict_is_plain_timm() -> None:
    model = create_model("test_resnet", 5)
    assert isinstance(model, NormalizedModel) and isinstance(model.normalizer, InputNormalizer)
    first = next(iter(model.children()))
    assert first is model.normalizer
    plain = unwrap_model(model)
    fresh = timm.create_model("test_resnet", num_classes=5)
    fresh.load_state_dict(plain.state_dict())  # strict: same keys, same shapes
    images = _uint8_batch(2, 48)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), fresh(model.normalizer(images)))


def test_model_is_channels_last() -> None:
    model = create_model("test_resnet", 3)
    conv = model.model.conv1[0] if isinstance(model.model.conv1, torch.nn.Sequential) else model.model.conv1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name, timm_name, size", [("resnet50", "resnet50", 224),
                                                     ("efficientnet-b0", "efficientnet_b0", 224),
                                                     ("efficientnet-b4", "efficientnet_b4", 380),
                                                     ("resnet18", "resnet18", 224)])
def test_graphcore_names_and_image_sizes(name: str, timm_name: str, size: int) -> None:
    assert resolve_model_name(name) == timm_name
    spec = model_spec(name)
    assert spec.image_size == size and spec.crop_pct == 0.875


def test_unknown_model_suggests_names() -> None:
    with pytest.raises(ValueError, match="Did you mean: resnet50"):
        resolve_model_name("resnet-5O")


def test_zero_init_residual_only_for_resnets() -> None:
    model = create_model("test_resnet", 3, zero_init_residual=True)
    gammas = [m.bn2.weight for m in model.model.modules() if type(m).__name__ == "BasicBlock"]
    assert gammas and all(torch.count_nonzero(g) == 0 for g in gammas)
    with pytest.raises(ValueError, match="zero-init-residual"):
        create_model("test_convnext", 3, zero_init_residual=True)


def test_weights_file_round_trip(tmp_path) -> None:
    model = create_model("test_resnet", 4)
    path = tmp_path / "w.pt"
    torch.save(unwrap_model(model).state_dict(), path)
    again = create_model("test_resnet", 4, weights=str(path))
    for a, b in zip(unwrap_model(model).state_dict().values(), unwrap_model(again).state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="does not fit"):
        create_model("test_resnet", 7, weights=str(path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        create_model("test_resnet", 4, weights=str(tmp_path / "missing.pt"))


def test_label_smoothing_closed_form() -> None:
    """Smoothed CE = (1 - s) * NLL(true class) + s * mean over classes of -log p."""
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    s = 0.1
    logp = F.log_softmax(logits, dim=1)
    nll = -logp[torch.arange(6), labels]
    uniform = -logp.mean(dim=1)
    expected = ((1 - s) * nll + s * uniform).mean()
    loss = LabelSmoothingCrossEntropy(s)
    torch.testing.assert_close(loss(logits, labels), expected)
    # soft targets built by smooth_one_hot give the same value
    torch.testing.assert_close(loss(logits, smooth_one_hot(labels, 5, s)), expected)
    # and s = 0 is plain cross-entropy
    torch.testing.assert_close(LabelSmoothingCrossEntropy(0.0)(logits, labels), F.cross_entropy(logits, labels))


def test_smooth_one_hot_rows_sum_to_one() -> None:
    t = smooth_one_hot(torch.tensor([2, 0]), 4, 0.2)
    torch.testing.assert_close(t.sum(1), torch.ones(2))
    assert math.isclose(float(t[0, 2]), 0.85, rel_tol=1e-6) and math.isclose(float(t[0, 1]), 0.05, rel_tol=1e-6)


def test_loss_runs_in_float32_under_half_logits() -> None:
    logits = torch.randn(4, 3).half()
    loss = LabelSmoothingCrossEntropy(0.1)(logits, torch.tensor([0, 1, 2, 0]))
    assert loss.dtype == torch.float32


def test_bad_smoothing_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        LabelSmoothingCrossEntropy(1.0)
