"""CIFAR-10: the python-pickle batches, the pad-4 crop + flip on raw pixels, and both through the Loader and the app.

The folder each test reads is written here in the exact published layout (pickle protocol 2, bytes keys as Python 2's
cPickle wrote them, (N, 3072) uint8 rows of 1024 red, green, blue values). The crop is checked against torchvision's
RandomCrop(32, padding=4) geometry given the same offsets (torchvision's pad with zeros, then crop), and against
Pillow for the resized sizes.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ipu_cnn import _C
from ipu_cnn.data import EvalTransform, TrainTransform
from ipu_cnn.data.datasets import CIFAR10, ImageFolder
from ipu_cnn.data.datasets import cifar as cifar_module
from ipu_cnn.data.pixels import transform_raw_batch
from ipu_cnn.data.transforms import PadCropTransform

NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar(folder: Path, per_batch: int = 12, test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the standard cifar-10-batches-py files into folder; returns each file's raw data rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"batch_label": f"{name} of 5".encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        rows[name] = data
        rows[name + ":labels"] = np.asarray(labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": per_batch, b"label_names": NAMES, b"num_vis": 3072}, f, protocol=2)
    return rows


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root / "cifar-10-batches-py")
    return root


# -- the dataset ------------------------------------------------------------------------------------------------------
def test_reads_the_standard_batches_from_the_folder_or_its_parent(tmp_path: Path) -> None:
    rows = write_cifar(tmp_path / "cifar-10-batches-py", per_batch=5, test=7)
    train = CIFAR10(tmp_path)
    same = CIFAR10(tmp_path / "cifar-10-batches-py", "train")
    test = CIFAR10(tmp_path, "test")
    assert len(train) == 25 and len(test) == 7 and train.classes[0] == "airplane" and train.classes[9] == "truck"
    assert np.array_equal(train.pixels, same.pixels) and train.pixels.shape == (25, 32, 32, 3)
    # Sample 7 is data_batch_2's third row; pixel (row r, column c, channel ch) is rows[ch * 1024 + r * 32 + c].
    raw = rows["data_batch_2"][2]
    img, label = train[7]
    for r, c, ch in [(0, 0, 0), (0, 31, 1), (5, 9, 2), (31, 31, 0), (17, 3, 1)]:
        assert img[r, c, ch] == raw[ch * 1024 + r * 32 + c]
    assert label == rows["data_batch_2:labels"][2]
    assert np.array_equal(test.labels, rows["test_batch:labels"])
    assert not train.pixels.flags.writeable and train.labels.dtype == np.int64


def test_missing_files_name_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*test_batch.*batches\.meta.*cifar-10-python\.tar\.gz"):
        CIFAR10(tmp_path)
    with pytest.raises(ValueError, match="unknown CIFAR-10 split"):
        CIFAR10(tmp_path, "dev")


def test_a_foreign_pickle_is_refused_not_run(tmp_path: Path) -> None:
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR-10 python batch file.*not part of"):
        CIFAR10(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_malformed_batches_name_the_file(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    with open(tmp_path / "data_batch_4", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"data_batch_4: 'data' must be a uint8 array of shape \(N, 3072\)"):
        CIFAR10(tmp_path)
    write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch: 'labels' must be a list of 3 ints"):
        CIFAR10(tmp_path, "test")


def _archive(tmp_path: Path) -> tuple[str, str]:
    src = tmp_path / "src"
    write_cifar(src / "cifar-10-batches-py", per_batch=2, test=2)
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return tar_path.as_uri(), hashlib.md5(tar_path.read_bytes()).hexdigest()


def test_download_checks_the_md5_and_publishes_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, md5 = _archive(tmp_path)
    dest = tmp_path / "data"
    monkeypatch.setattr(cifar_module, "CIFAR10_URL", url)
    monkeypatch.setattr(cifar_module, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(RuntimeError, match="MD5 .* not the published 0{32}.*nothing was kept"):
        CIFAR10(dest, download=True)
    assert os.listdir(dest) == []  # no partial folder, no staging left behind
    monkeypatch.setattr(cifar_module, "CIFAR10_MD5", md5)
    ds = CIFAR10(dest, download=True)
    assert len(ds) == 10 and sorted(os.listdir(dest)) == ["cifar-10-batches-py"]
    assert len(CIFAR10(dest, "test")) == 2  # found in place, no second download


def test_download_without_a_network_names_the_expected_files(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar_module, "CIFAR10_URL", (tmp_path / "nowhere.tar.gz").as_uri())
    with pytest.raises(RuntimeError, match=r"could not download CIFAR-10 from .*nowhere.*data_batch_1"):
        CIFAR10(tmp_path / "d", download=True)
    assert os.listdir(tmp_path / "d") == []


# -- the pad-4 crop ---------------------------------------------------------------------------------------------------
def _offsets(t: PadCropTransform, seed: int, epoch: int, index: int) -> tuple[int, int, bool]:
    """The (top, left) offsets in the padded image and the flip the native sampler gives a sample."""
    (x0, y0, x1, y1), flip = _C.sample_crop(t.native(), 32, 32, seed, epoch, index)
    assert (x1 - x0, y1 - y0) == (32, 32)
    return int(y0) + t.padding, int(x0) + t.padding, bool(flip)


def _torchvision_crop(img: np.ndarray, top: int, left: int, flip: bool, padding: int = 4) -> np.ndarray:
    """torchvision RandomCrop(32, padding=padding)'s pad (zeros) + crop at the given offsets, then hflip."""
    import torchvision.transforms.functional as F

    t = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    out = F.crop(F.pad(t, [padding], fill=0), top, left, 32, 32)
    if flip:
        out = F.hflip(out)
    return out.permute(1, 2, 0).numpy()


def test_pad_crop_equals_torchvision_given_the_same_offsets(cifar_root: Path) -> None:
    ds = CIFAR10(cifar_root)
    t = PadCropTransform()
    idx = np.arange(len(ds))
    out = np.empty((len(ds), 32, 32, 3), np.uint8)
    transform_raw_batch(ds.pixels, idx, out, t, seed=3, epoch=1)
    seen_flip = set()
    for i in idx:
        top, left, flip = _offsets(t, 3, 1, int(i))
        assert 0 <= top <= 8 and 0 <= left <= 8
        seen_flip.add(flip)
        assert np.array_equal(out[i], _torchvision_crop(ds.pixels[i], top, left, flip)), i
    assert seen_flip == {True, False}


def test_offsets_and_flips_are_uniform() -> None:
    t = PadCropTransform()
    counts = np.zeros((9, 9))
    flips = 0
    n = 8100
    for i in range(n):
        top, left, flip = _offsets(t, 0, 0, i)
        counts[top, left] += 1
        flips += flip
    expected = n / 81
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 140  # 80 degrees of freedom: the 0.9999 quantile is about 135
    assert abs(flips / n - 0.5) < 0.03


def test_pad_crop_then_resize_equals_pillow(cifar_root: Path) -> None:
    ds = CIFAR10(cifar_root)
    for size, interp, pil_filter in [(64, "bilinear", Image.BILINEAR), (48, "bicubic", Image.BICUBIC)]:
        t = PadCropTransform(size=size, interpolation=interp)
        out = np.empty((6, size, size, 3), np.uint8)
        transform_raw_batch(ds.pixels, np.arange(6), out, t, seed=1, epoch=0)
        for i in range(6):
            top, left, flip = _offsets(t, 1, 0, i)
            crop = Image.fromarray(_torchvision_crop(ds.pixels[i], top, left, False))
            ref = np.asarray(crop.resize((size, size), pil_filter))
            assert np.array_equal(out[i], ref[:, ::-1] if flip else ref), (size, i)


def test_eval_is_the_raw_image_or_its_resize(cifar_root: Path) -> None:
    ds = CIFAR10(cifar_root, "test")
    out = np.empty((len(ds), 32, 32, 3), np.uint8)
    transform_raw_batch(ds.pixels, np.arange(len(ds)), out, EvalTransform(32, resize_size=(32, 32)))
    assert np.array_equal(out, ds.pixels)
    big = np.empty((3, 72, 72, 3), np.uint8)
    transform_raw_batch(ds.pixels, [4, 0, 2], big, EvalTransform(72, resize_size=(72, 72)))
    for pos, i in enumerate([4, 0, 2]):
        assert np.array_equal(big[pos], np.asarray(Image.fromarray(ds.pixels[i]).resize((72, 72), Image.BILINEAR)))


def test_padding_zero_is_the_image_and_no_flip_keeps_it() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    out = np.empty_like(pixels)
    transform_raw_batch(pixels, np.arange(4), out, PadCropTransform(padding=0, flip_prob=0.0))
    assert np.array_equal(out, pixels)
    transform_raw_batch(pixels, np.arange(4), out, PadCropTransform(padding=0, flip_prob=1.0))
    assert np.array_equal(out, pixels[:, :, ::-1])


def test_keyed_by_seed_epoch_index_not_by_batch_or_threads(cifar_root: Path) -> None:
    ds = CIFAR10(cifar_root)
    t = PadCropTransform()
    a = np.empty((len(ds), 32, 32, 3), np.uint8)
    transform_raw_batch(ds.pixels, np.arange(len(ds)), a, t, seed=5, epoch=2, num_threads=1)
    order = np.random.default_rng(0).permutation(len(ds))
    b = np.empty_like(a)
    transform_raw_batch(ds.pixels, order, b, t, seed=5, epoch=2, num_threads=2)
    assert np.array_equal(a[order], b)
    transform_raw_batch(ds.pixels, np.arange(len(ds)), b, t, seed=5, epoch=3)
    assert not np.array_equal(a, b)


def test_raw_batch_refuses_bad_arguments(cifar_root: Path) -> None:
    ds = CIFAR10(cifar_root)
    out = np.empty((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"indices must be integers in \[0, 60\)"):
        transform_raw_batch(ds.pixels, [0, 60], out, PadCropTransform())
    with pytest.raises(ValueError, match=r"out must have shape \(2, 40, 40, 3\)"):
        transform_raw_batch(ds.pixels, [0, 1], out, PadCropTransform(size=40))
    with pytest.raises(ValueError, match="padding must be a non-negative integer"):
        PadCropTransform(padding=-1)


# -- through the Loader -----------------------------------------------------------------------------------------------
def _epoch(loader: object, epoch: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images, labels, indices = [], [], []
    loader.set_epoch(epoch)  # type: ignore[attr-defined]
    for x, y in loader:  # type: ignore[attr-defined]
        images.append(x.permute(0, 2, 3, 1).numpy().copy())
        labels.append(y.numpy().copy())
        indices.append(loader.last_indices.copy())  # type: ignore[attr-defined]
    return np.concatenate(images), np.concatenate(labels), np.concatenate(indices)


def test_loader_is_deterministic_across_threads_and_worker_modes(cifar_root: Path) -> None:
    from ipu_cnn.data import Loader

    ds = CIFAR10(cifar_root)
    t = PadCropTransform()
    results = []
    for workers, threads in [("thread", 1), ("thread", 2), ("process", 2)]:
        with Loader(ds, 8, t, seed=11, workers=workers, num_threads=threads) as loader:
            results.append(_epoch(loader, 1))
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert np.array_equal(a, b)
    images, labels, indices = results[0]
    assert len(indices) == 56 and len(set(indices.tolist())) == 56
    assert np.array_equal(labels, ds.labels[indices])
    ref = np.empty_like(images)
    transform_raw_batch(ds.pixels, indices, ref, t, seed=11, epoch=1)
    assert np.array_equal(images, ref)


def test_loader_shards_and_resumes(cifar_root: Path) -> None:
    from ipu_cnn.data import Loader

    ds = CIFAR10(cifar_root, "test")
    ev = EvalTransform(32, resize_size=(32, 32))
    seen = []
    for rank in range(3):
        with Loader(ds, 2, ev, shuffle=False, drop_last=False, rank=rank, world_size=3) as loader:
            images, _, indices = _epoch(loader)
            assert np.array_equal(images, ds.pixels[indices])
            seen.extend(indices.tolist())
    assert sorted(seen) == list(range(len(ds)))

    train = CIFAR10(cifar_root)
    with Loader(train, 8, PadCropTransform(), seed=2) as full:
        whole = _epoch(full, 4)
    with Loader(train, 8, PadCropTransform(), seed=2) as first:
        first.set_epoch(4)
        it = iter(first)
        for _ in range(3):
            next(it)
        state = first.state_dict()
    with Loader(train, 8, PadCropTransform(), seed=2, workers="process") as resumed:
        resumed.load_state_dict(state)
        rest = [(x.permute(0, 2, 3, 1).numpy().copy(), resumed.last_indices.copy()) for x, _ in resumed]
    assert len(rest) == 4
    assert np.array_equal(np.concatenate([r[0] for r in rest]), whole[0][24:])
    assert np.array_equal(np.concatenate([r[1] for r in rest]), whole[2][24:])


def test_pad_crop_is_refused_for_image_files(variant_files: dict[str, Path], tmp_path: Path) -> None:
    from ipu_cnn.data import Loader

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(next(iter(variant_files.values())).read_bytes())
    with pytest.raises(TypeError, match="PadCropTransform pads raw pixels"):
        Loader(ImageFolder(tmp_path), 1, PadCropTransform())
    assert TrainTransform()  # the JPEG path's transform is unchanged


# -- the application --------------------------------------------------------------------------------------------------
def test_train_app_runs_cifar10_and_validates(cifar_root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.train.__main__ import main

    status = main(["--data", "cifar10", "--data-path", str(cifar_root), "--model", "test_resnet",
                   "--micro-batch-size", "10", "--epoch", "1", "--output-dir", str(tmp_path), "--run-name", "c",
                   "--progress", "lines", "--no-plot"])
    assert status == 0
    out = capsys.readouterr().out
    assert "validation accuracy:" in out and "10 images" in out
    ckpt = torch.load(next((tmp_path / "c" / "checkpoints").glob("*final.pt")), weights_only=False)
    assert ckpt["image_size"] == 32 and ckpt["num_classes"] == 10 and ckpt["class_names"][1] == "automobile"
    assert ckpt["eval"]["crop_pct"] == 1.0  # evaluated whole, and recorded so for inference


def test_train_app_refuses_bbox_info_outside_imagenet(cifar_root: Path, capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.train.__main__ import main

    assert main(["--data", "cifar10", "--data-path", str(cifar_root), "--use-bbox-info", "--epoch", "1"]) != 0
    assert "--use-bbox-info reads ImageNet's bounding boxes" in capsys.readouterr().err


def test_inference_benchmark_reads_the_cifar10_test_batch(cifar_root: Path, capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.inference.__main__ import main

    status = main(["benchmark", "--model", "resnet10t", "--random-weights", "--device", "cpu", "--image-size", "32",
                   "--data", "cifar10", "--data-path", str(cifar_root / "cifar-10-batches-py"),
                   "--micro-batch-size", "5", "--iterations", "2", "--warmup-iterations", "1", "--json", "-"])
    out = capsys.readouterr().out
    assert status == 0
    import json

    figures = json.loads(out)
    assert figures["data"] == "cifar10" and figures["samples"] == 10
