"""Crop sampling against torchvision's RandomResizedCrop.get_params, and the counter-based generator's keying."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ipu_cnn import _C
from ipu_cnn.data import EvalTransform, TrainTransform

torch = pytest.importorskip("torch")
T = pytest.importorskip("torchvision.transforms")


def ours(t: TrainTransform, w: int, h: int, n: int, seed: int = 0) -> np.ndarray:
    """(left, top, width, height, flip) for samples 0..n-1."""
    p = t.native()
    rows = []
    for i in range(n):
        (left, top, right, bottom), flip = _C.sample_crop(p, w, h, seed, 0, i)
        rows.append((left, top, right - left, bottom - top, flip))
    return np.array(rows, dtype=np.float64)


def torchvision(t: TrainTransform, w: int, h: int, n: int) -> np.ndarray:
    torch.manual_seed(0)
    img = torch.empty(3, h, w)
    rows = []
    for _ in range(n):
        i, j, hh, ww = T.RandomResizedCrop.get_params(img, list(t.scale), list(t.ratio))
        rows.append((j, i, ww, hh, 0))
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize("w,h", [(500, 375), (375, 500), (640, 480), (96, 400)])
def test_train_crop_distribution_equals_torchvision(w: int, h: int) -> None:
    """Two-sample Kolmogorov-Smirnov on area fraction, aspect ratio and position: same distribution."""
    t = TrainTransform(224)
    n = 6000
    a, b = ours(t, w, h, n), torchvision(t, w, h, n)
    features = {
        "area": lambda r: r[:, 2] * r[:, 3] / (w * h),
        "log_aspect": lambda r: np.log(r[:, 2] / r[:, 3]),
        "centre_x": lambda r: (r[:, 0] + r[:, 2] / 2) / w,
        "centre_y": lambda r: (r[:, 1] + r[:, 3] / 2) / h,
    }
    for name, f in features.items():
        p = stats.ks_2samp(f(a), f(b)).pvalue
        assert p > 1e-4, f"{name}: KS p-value {p:.2g} for {w}x{h}"
    assert np.all(a[:, 0] >= 0) and np.all(a[:, 0] + a[:, 2] <= w)
    assert np.all(a[:, 1] >= 0) and np.all(a[:, 1] + a[:, 3] <= h)
    assert np.all(a[:, :4] == np.round(a[:, :4])), "train boxes are whole pixels, as get_params returns"
    assert abs(a[:, 4].mean() - 0.5) < 0.03  # flip_prob 0.5


@pytest.mark.parametrize("w,h,ratio", [
    (1000, 10, (3 / 4, 4 / 3)),  # too wide for any try: height-bound fallback
    (10, 1000, (3 / 4, 4 / 3)),  # too tall: width-bound fallback
    (300, 200, (2.0, 3.0)),  # every try wider than the image: width-bound fallback at the min ratio
    (120, 100, (1.0, 1.0)),  # square of the whole area never fits: height-bound fallback at the max ratio
])
def test_fallback_path_is_exact(w: int, h: int, ratio: tuple[float, float]) -> None:
    """With scale (1, 1) these shapes fail all 10 tries: torchvision's answer is deterministic, ours must equal it."""
    t = TrainTransform(32, scale=(1.0, 1.0), ratio=ratio, flip_prob=0.0)
    i, j, hh, ww = T.RandomResizedCrop.get_params(torch.empty(3, h, w), [1.0, 1.0], list(ratio))
    for index in range(20):
        box, flip = _C.sample_crop(t.native(), w, h, 7, 3, index)
        assert box == (j, i, j + ww, i + hh)
        assert not flip


def test_keyed_by_seed_epoch_index_only() -> None:
    p = TrainTransform(224).native()
    a = [_C.sample_crop(p, 500, 375, 1, 2, i) for i in range(50)]
    assert a == [_C.sample_crop(p, 500, 375, 1, 2, i) for i in range(50)]  # repeatable, order-free
    assert a[::-1] == [_C.sample_crop(p, 500, 375, 1, 2, i) for i in reversed(range(50))]
    assert a != [_C.sample_crop(p, 500, 375, 1, 3, i) for i in range(50)]  # epoch changes it
    assert a != [_C.sample_crop(p, 500, 375, 2, 2, i) for i in range(50)]  # seed changes it
    assert len(set(a)) > 45  # samples differ from each other


def test_uniform_stream_is_uniform() -> None:
    u = np.array([x for i in range(200) for x in _C.uniform(0, 0, i, 50)])
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    assert np.all((u >= 0) & (u < 1))


def test_eval_box_is_the_centre_crop_window_mapped_back() -> None:
    """500x375, Resize(256) -> 341x256 (341.33 truncated), CenterCrop(224) at (round(58.5) = 58 half to even, 16)."""
    t = EvalTransform(224, resize_size=256)
    (left, top, right, bottom), flip = _C.sample_crop(t.native(), 500, 375, 0, 0, 0)
    assert (left, top, right, bottom) == (58 * 500 / 341, 16 * 375 / 256, 282 * 500 / 341, 240 * 375 / 256)
    assert not flip
    assert EvalTransform(224).resize == 256 and EvalTransform(224, crop_pct=0.95).resize == 235  # floor(235.79)
    assert EvalTransform(224, crop_pct=0.9).resize == 248 and EvalTransform((160, 96), resize_size=(200, 120)).resize \
        == (200, 120)


@pytest.mark.parametrize("kwargs,match", [
    ({"scale": (0.5, 0.1)}, "scale"),
    ({"ratio": (2.0, 1.0)}, "ratio"),
    ({"flip_prob": 1.5}, "flip_prob"),
    ({"interpolation": "nearest"}, "interpolation"),
    ({"size": 0}, "size"),
])
def test_train_transform_validation(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        TrainTransform(**kwargs)


def test_eval_transform_validation() -> None:
    with pytest.raises(ValueError, match="not both"):
        EvalTransform(224, resize_size=256, crop_pct=0.875)
    with pytest.raises(ValueError, match="pad it with zeros.*resize_size >= 224"):
        EvalTransform(224, resize_size=200)
    with pytest.raises(ValueError, match="must fit inside the image resized to a shorter side of 100"):
        EvalTransform((96, 128), resize_size=100)  # the crop's width 128 would need padding on a square image
    with pytest.raises(ValueError, match="must fit inside the resized 100x200"):
        EvalTransform((128, 128), resize_size=(100, 200))
    with pytest.raises(ValueError, match="crop_pct must be in"):
        EvalTransform(224, crop_pct=1.5)
    with pytest.raises(ValueError, match="crop_pct .*needs a square size.*give resize_size"):
        EvalTransform((224, 160), crop_pct=0.875)
    with pytest.raises(ValueError, match="crop_pct \\(default 0.875\\) needs a square size"):
        EvalTransform((224, 160))
    with pytest.raises(ValueError, match="resize_size must be positive"):
        EvalTransform(1, resize_size=0)
