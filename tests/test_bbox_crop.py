"""--use-bbox-info: ImageNet's bounding-box CSV, and the box-guided RandomResizedCrop in the native sampler.

The rule (Graphcore's RandomResizedBoxCrop, as it intends): a sample with boxes redraws its whole RandomResizedCrop,
up to 10 draws, until the union of its boxes covers at least 10% of the crop's area; the last draw is kept when none
does. It is checked against a Python re-implementation of the sampler (the counter generator, torchvision's
get_params, and the union area by inclusion-exclusion, a different method from the native core's grid sweep), crop
for crop, so every produced crop is known to satisfy the rule or to be the tenth failed draw.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from ipu_cnn import _C
from ipu_cnn.data import TrainTransform, decode_batch
from ipu_cnn.data.bboxes import BBOX_FILE_NAME, BoundingBoxes, read_bounding_boxes
from ipu_cnn.data.datasets import ImageFolder
from conftest import encode_jpeg, photo_like

_M = (1 << 64) - 1
_G = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M
    return z ^ (z >> 31)


class _Rng:
    """The native CounterRng (crop.cpp), in Python."""

    def __init__(self, seed: int, epoch: int, index: int) -> None:
        k = _mix64((seed + _G) & _M) ^ ((epoch + 0x632BE59BD9B4E019) & _M)
        self.key = _mix64(_mix64(k) ^ ((index + 0x8CB92BA72F3D8DD7) & _M))
        self.counter = 0

    def u64(self) -> int:
        self.counter += 1
        return _mix64((self.key + _G * self.counter) & _M)

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * ((self.u64() >> 11) * (1.0 / 9007199254740992.0))

    def randint(self, lo: int, hi: int) -> int:
        span = hi - lo
        if span <= 1:
            return lo
        threshold = ((1 << 64) - span) % span
        while True:
            m = self.u64() * span
            if m & _M >= threshold:
                return lo + (m >> 64)


def _get_params(rng: _Rng, w: int, h: int) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params (scale (0.08, 1), ratio (3/4, 4/3)): (top, left, height, width)."""
    area = w * h
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(lo, hi))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            i = rng.randint(0, h - ch + 1)
            j = rng.randint(0, w - cw + 1)
            return i, j, ch, cw
    ratio = w / h
    if ratio < 3 / 4:
        cw, ch = w, round(w / (3 / 4))
    elif ratio > 4 / 3:
        ch, cw = h, round(h * 4 / 3)
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def coverage(boxes: np.ndarray, w: int, h: int, crop: tuple[float, float, float, float]) -> float:
    """The fraction of crop (x0, y0, x1, y1) covered by the union of the normalised boxes: inclusion-exclusion."""
    x0, y0, x1, y1 = crop
    rects = [(max(x0, b[0] * w), max(y0, b[1] * h), min(x1, b[2] * w), min(y1, b[3] * h)) for b in boxes]
    total = 0.0
    for k in range(1, len(rects) + 1):
        for subset in itertools.combinations(rects, k):
            ix = min(r[2] for r in subset) - max(r[0] for r in subset)
            iy = min(r[3] for r in subset) - max(r[1] for r in subset)
            if ix > 0 and iy > 0:
                total += (-1) ** (k + 1) * ix * iy
    return total / ((x1 - x0) * (y1 - y0))


def reference_crop(boxes: np.ndarray, w: int, h: int, seed: int, epoch: int, index: int
                   ) -> tuple[tuple[float, float, float, float], bool, int]:
    """The box-guided crop in Python: (x0, y0, x1, y1), flip, and how many draws it took."""
    rng = _Rng(seed, epoch, index)
    for tries in range(1, 11):
        i, j, ch, cw = _get_params(rng, w, h)
        crop = (float(j), float(i), float(j + cw), float(i + ch))
        if len(boxes) == 0 or coverage(boxes, w, h, crop) >= 0.1:
            break
    return crop, rng.uniform(0.0, 1.0) < 0.5, tries


def _random_boxes(n: int, seed: int) -> list[np.ndarray]:
    """0..3 boxes an image, many of them small (so that the first draw often misses them)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(0, 4))
        sizes = rng.uniform(0.03, 0.5, (k, 2))
        corners = rng.uniform(0, 1, (k, 2)) * (1 - sizes)
        out.append(np.concatenate([corners, corners + sizes], axis=1) if k else np.empty((0, 4)))
    return out


def _table(per_sample: list[np.ndarray]) -> BoundingBoxes:
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in per_sample])])
    return BoundingBoxes(offsets, np.concatenate(per_sample) if per_sample else np.empty((0, 4)))


# -- the sampler ------------------------------------------------------------------------------------------------------
def test_python_generator_matches_the_native_one() -> None:
    rng = _Rng(7, 3, 12345)
    assert [rng.uniform(0, 1) for _ in range(5)] == _C.uniform(7, 3, 12345, 5)


@pytest.mark.parametrize(("w", "h"), [(500, 375), (333, 500), (64, 64)])
def test_every_crop_follows_the_rule_crop_for_crop(w: int, h: int) -> None:
    per_sample = _random_boxes(1500, seed=w)
    boxes = _table(per_sample)
    with_boxes = TrainTransform(size=64, boxes=boxes).native()
    plain = TrainTransform(size=64).native()
    draws = []
    for index, b in enumerate(per_sample):
        box, flip = _C.sample_crop(with_boxes, w, h, 5, 2, index)
        ref_box, ref_flip, tries = reference_crop(b, w, h, 5, 2, index)
        assert (box, flip) == (ref_box, ref_flip), index
        if len(b):
            draws.append(tries)
            # The rule: at least 10% of the crop shows the objects, unless all 10 draws missed (the last is kept).
            assert coverage(b, w, h, box) >= 0.1 or tries == 10
        else:  # no boxes: exactly the crop and flip of a run without boxes
            assert _C.sample_crop(plain, w, h, 5, 2, index) == (box, flip)
    assert max(draws) > 1  # the redraw path is exercised


def test_statistics_shift_toward_the_boxes() -> None:
    """Every image has one box in its top-left part (17% of the image): the share of crops that meet the rule and
    their mean coverage rise, and their centres move toward the box."""
    n, w, h = 3000, 400, 300
    box = np.array([[0.02, 0.03, 0.40, 0.45]])
    boxes = _table([box] * n)
    guided, plain = TrainTransform(boxes=boxes).native(), TrainTransform().native()
    cov = {"guided": [], "plain": []}
    centres = {"guided": [], "plain": []}
    for name, params in [("guided", guided), ("plain", plain)]:
        for index in range(n):
            (x0, y0, x1, y1), _ = _C.sample_crop(params, w, h, 1, 0, index)
            cov[name].append(coverage(box, w, h, (x0, y0, x1, y1)))
            centres[name].append(((x0 + x1) / 2, (y0 + y1) / 2))
    met = {k: np.mean(np.asarray(v) >= 0.1) for k, v in cov.items()}
    assert met["plain"] < 0.75 and met["guided"] > 0.99
    assert np.mean(cov["guided"]) > np.mean(cov["plain"]) + 0.05
    cg, cp = np.mean(centres["guided"], axis=0), np.mean(centres["plain"], axis=0)
    assert cg[0] < cp[0] - 15 and cg[1] < cp[1] - 2  # standard errors of these means: under 2 pixels


def test_native_table_checks_its_arrays() -> None:
    with pytest.raises(TypeError, match="boxes must be an ipu_cnn.data.BoundingBoxes"):
        TrainTransform(boxes=np.zeros((1, 4)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalised"):
        _C.BoxTable(np.array([0, 1], np.int64), np.array([[0.5, 0.1, 0.2, 0.3]]))
    with pytest.raises(ValueError, match="offsets must start at 0 and end at the number of boxes"):
        _C.BoxTable(np.array([0, 2], np.int64), np.array([[0.1, 0.1, 0.2, 0.3]]))
    with pytest.raises(ValueError, match="non-decreasing"):
        _C.BoxTable(np.array([0, 1, 0, 1], np.int64), np.array([[0.1, 0.1, 0.2, 0.3]]))


# -- the CSV ----------------------------------------------------------------------------------------------------------
def test_reads_the_tensorflow_layout_and_maps_by_file_name(tmp_path: Path) -> None:
    csv = tmp_path / BBOX_FILE_NAME
    csv.write_text("n01440764_10026.JPEG,0.1000,0.2000,0.5000,0.6000\n"
                   "n01440764_10026.JPEG,0.0000,0.0000,1.0000,1.0050\n"
                   "\n"
                   "n01443537_2.JPEG,0.3,0.3,0.4,0.9\r\n")
    by_name = read_bounding_boxes(csv)
    assert by_name["n01440764_10026.JPEG"] == [(0.1, 0.2, 0.5, 0.6), (0.0, 0.0, 1.0, 1.0)]  # slack clamped
    paths = ["/d/train/n01443537/n01443537_2.JPEG", "/d/train/n01440764/n01440764_99.JPEG",
             "/d/train/n01440764/n01440764_10026.JPEG"]
    table = BoundingBoxes.from_csv(csv, paths)
    assert len(table) == 3 and table.images_with_boxes == 2 and len(table.boxes) == 3
    assert table.of(0).tolist() == [[0.3, 0.3, 0.4, 0.9]] and table.of(1).shape == (0, 4)
    assert table.of(2).shape == (2, 4)
    import pickle

    again = pickle.loads(pickle.dumps(table))
    assert np.array_equal(again.offsets, table.offsets) and len(again.native()) == 3


@pytest.mark.parametrize(("line", "match"), [
    ("a.JPEG,0.1,0.2,0.3", r"line 2: expected 5 comma-separated fields <file name>,<xmin>"),
    ("a.JPEG,0.1,zero,0.3,0.4", r"line 2: coordinates must be numbers"),
    ("a.JPEG,12,30,200,180", r"line 2: coordinates must be normalised to \[0, 1\].*pixel coordinates"),
    ("a.JPEG,0.5,0.2,0.3,0.4", r"line 2: expected xmin <= xmax and ymin <= ymax"),
    (",0.1,0.2,0.3,0.4", r"line 2: the file name \(first field\) is empty"),
    ("a.JPEG,nan,0.2,0.3,0.4", r"line 2: coordinates must be finite"),
])
def test_malformed_csv_names_the_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    csv = tmp_path / BBOX_FILE_NAME
    csv.write_text("ok.JPEG,0.1,0.1,0.2,0.2\n" + line + "\n")
    with pytest.raises(ValueError, match=f"{BBOX_FILE_NAME}, " + match):
        read_bounding_boxes(csv)


def test_missing_csv_says_where_it_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{BBOX_FILE_NAME}.*--use-bbox-info needs"):
        read_bounding_boxes(tmp_path / BBOX_FILE_NAME)


# -- through the decoder, the Loader and the app ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageNet layout: 2 classes x 8 JPEGs in train and 2 in validation, and a box file for half the
    training images."""
    root = tmp_path_factory.mktemp("imagenet")
    rows = []
    for c, wnid in enumerate(["n01440764", "n01443537"]):
        for split, count in [("train", 8), ("validation", 2)]:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for k in range(count):
                name = f"{wnid}_{k}.JPEG"
                (folder / name).write_bytes(encode_jpeg(photo_like(160 + 8 * k, 120, seed=c * 10 + k), quality=90))
                if split == "train" and k % 2 == 0:
                    rows.append(f"{name},0.05,0.1,0.2,0.3")
    (root / BBOX_FILE_NAME).write_text("\n".join(rows) + "\n")
    return root


def test_decoded_batches_with_boxes(imagenet_root: Path) -> None:
    ds = ImageFolder(imagenet_root / "train")
    boxes = BoundingBoxes.from_csv(imagenet_root / BBOX_FILE_NAME, ds.paths)
    assert boxes.images_with_boxes == 8
    guided, plain = TrainTransform(size=48, boxes=boxes), TrainTransform(size=48)
    idx = np.arange(len(ds))
    outs = {}
    for name, t, threads in [("g1", guided, 1), ("g2", guided, 2), ("p", plain, 2)]:
        out = np.empty((len(ds), 48, 48, 3), np.uint8)
        decode_batch(ds.paths, out, t, seed=4, epoch=1, indices=idx, num_threads=threads)
        outs[name] = out
    assert np.array_equal(outs["g1"], outs["g2"])
    no_boxes = np.diff(boxes.offsets) == 0
    assert np.array_equal(outs["g1"][no_boxes], outs["p"][no_boxes])  # images without boxes are unchanged
    assert not np.array_equal(outs["g1"][~no_boxes], outs["p"][~no_boxes])


def test_loader_with_boxes_is_the_same_in_threads_and_processes(imagenet_root: Path) -> None:
    from ipu_cnn.data import Loader

    ds = ImageFolder(imagenet_root / "train")
    t = TrainTransform(size=40, boxes=BoundingBoxes.from_csv(imagenet_root / BBOX_FILE_NAME, ds.paths))
    got = []
    for workers in ("thread", "process"):
        with Loader(ds, 4, t, seed=9, workers=workers, copy=True) as loader:
            loader.set_epoch(2)
            got.append([(x.numpy(), loader.last_indices.copy()) for x, _ in loader])
    for (a, ia), (b, ib) in zip(*got):
        assert np.array_equal(ia, ib) and np.array_equal(a, b)


def test_train_app_uses_the_box_file(imagenet_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from ipu_cnn.train.__main__ import main

    args = ["--data", "imagenet", "--data-path", str(imagenet_root), "--use-bbox-info", "--model", "test_resnet",
            "--image-size", "32", "--micro-batch-size", "4", "--epoch", "1", "--output-dir", str(tmp_path),
            "--progress", "lines", "--no-plot"]
    with caplog.at_level(logging.INFO, logger="ipu_cnn.train"):
        assert main([*args, "--run-name", "b"]) == 0
    assert "--use-bbox-info: 8 of 16 training images have boxes (8 boxes)" in caplog.text


def test_train_app_reports_a_bad_box_file(imagenet_root: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.train.__main__ import main

    root = tmp_path / "in"
    root.mkdir()
    for split in ("train", "validation"):
        (root / split).symlink_to(imagenet_root / split)
    (root / BBOX_FILE_NAME).write_text("n01440764_0.JPEG,0.1,0.1,0.5,0.5\nn01440764_2.JPEG;0.1;0.1;0.5;0.5\n")
    args = ["--data", "imagenet", "--data-path", str(root), "--use-bbox-info", "--model", "test_resnet",
            "--image-size", "32", "--micro-batch-size", "4", "--epoch", "1", "--output-dir", str(tmp_path),
            "--no-plot"]
    assert main(args) != 0
    assert f"{BBOX_FILE_NAME}, line 2: expected 5 comma-separated fields" in capsys.readouterr().err
