"""Batch sources of the training app that need no JPEG loader, and create_loaders for generated/synthetic data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ipu_cnn.batch_sources import HostBatches, RandomBatches
from ipu_cnn.models import EvalPreprocessing, model_spec
from ipu_cnn.train.data import DataSettings, create_loaders


class IndexImages:
    """Images whose pixels encode their index: catches ordering and sharding bugs."""

    def __init__(self, n: int, size: int = 4) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def batch(self, indices, out=None):
        idx = np.asarray(indices, dtype=np.int64)
        images = np.broadcast_to((idx % 256).astype(np.uint8)[:, None, None, None],
                                 (len(idx), self.size, self.size, 3)).copy()
        return images, idx


def _ids(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].tolist()


def test_host_batches_layout_and_order() -> None:
    loader = HostBatches(IndexImages(20), 4, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 4, 4)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert _ids(images) == labels.tolist()
    seen = sorted(i for x, _ in batches for i in _ids(x))
    assert seen == list(range(20))
    loader.set_epoch(1)
    assert [_ids(x) for x, _ in loader] != [_ids(x) for x, _ in batches]


def test_host_batches_shard_by_rank() -> None:
    ranks = [HostBatches(IndexImages(22), 3, seed=0, rank=r, world_size=2) for r in range(2)]
    got = [[i for x, _ in r for i in _ids(x)] for r in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 3
    assert not set(got[0]) & set(got[1])
    every = [HostBatches(IndexImages(7), 2, shuffle=False, drop_last=False, rank=r, world_size=2) for r in range(2)]
    assert sorted(i for r in every for x, _ in r for i in _ids(x)) == list(range(7))


def test_host_batches_resume_mid_epoch() -> None:
    loader = HostBatches(IndexImages(40), 4, seed=3)
    loader.set_epoch(2)
    it = iter(loader)
    first = [_ids(next(it)[0]) for _ in range(3)]
    state = loader.state_dict()
    rest = [_ids(x) for x, _ in it]
    again = HostBatches(IndexImages(40), 4, seed=3)
    again.set_epoch(2)
    again.load_state_dict(state)
    assert [_ids(x) for x, _ in again] == rest
    assert len(first) + len(rest) == 10


def test_device_batches() -> None:
    loader = RandomBatches(4, 16, 10, steps=3, device=torch.device("cpu"))
    batches = list(loader)
    assert len(batches) == 3 and batches[0][0].shape == (4, 3, 16, 16)
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)


def _loaders(data: DataSettings, batch: int = 8, image_size: int = 16, crop_pct: float | None = None):
    eval_pre = EvalPreprocessing.resolve(model_spec("resnet18"), image_size=image_size, crop_pct=crop_pct,
                                         interpolation=data.interpolation)
    return create_loaders(data, batch_size=batch, val_batch_size=batch, eval=eval_pre, device=torch.device("cpu"))


def _config(mode: str) -> DataSettings:
    return DataSettings(mode, num_classes=5, generated_samples=64, seed=0)


def test_create_loaders_generated() -> None:
    pytest.importorskip("ipu_cnn.data.datasets", reason="needs ipu_cnn.data.datasets.RandomImages")
    train, val, classes, names = _loaders(_config("generated"))
    assert classes == 5 and names == ["0", "1", "2", "3", "4"] and len(train) == 8
    images, labels = next(iter(train))
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert val is not None and sum(y.numel() for _, y in val) == 64 // 10


def test_create_loaders_synthetic() -> None:
    train, val, classes, _ = _loaders(_config("synthetic"))
    images, labels = next(iter(train))
    assert len(train) == 8 and images.shape == (8, 3, 16, 16) and int(labels.max()) < 5


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory: pytest.TempPathFactory):
    """root/{train,validation}/<class>/*.jpg with 2 classes, and train.csv / val.csv lists of the same files."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tree")
    rows: dict[str, list[str]] = {"train": [], "validation": []}
    for split, count in (("train", 6), ("validation", 3)):
        for c, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                path = folder / f"{i}.jpg"
                Image.new("RGB", (40 + 7 * i, 30 + 5 * i), colour).save(path, quality=90)
                rows[split].append(f"{path.relative_to(root)},class{c}")
    (root / "train.csv").write_text("path,label\n" + "\n".join(rows["train"]) + "\n")
    (root / "val.csv").write_text("\n".join(rows["validation"]) + "\n")
    return root


def _loader_built() -> bool:
    try:
        from ipu_cnn.data import Loader  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("mode", ["imagenet", "folder", "filelist"])
def test_file_modes(jpeg_tree, mode: str) -> None:
    paths = {"imagenet": (jpeg_tree, None), "folder": (jpeg_tree / "train", jpeg_tree / "validation"),
             "filelist": (jpeg_tree / "train.csv", jpeg_tree / "val.csv")}[mode]
    config = DataSettings(mode, data_path=str(paths[0]), val_data_path=str(paths[1]) if paths[1] else None,
                          num_classes=None, train_crop_scale=(0.5, 1.0), flip_prob=0.5, interpolation="bilinear",
                          workers=1, prefetch=1, on_bad_sample="raise", seed=0)
    if not _loader_built():
        with pytest.raises(RuntimeError, match="--data generated or synthetic"):
            _loaders(config, batch=4, crop_pct=0.875)
        return
    train, val, classes, names = _loaders(config, batch=4, crop_pct=0.875)
    try:
        assert classes == 2 and names == ["class0", "class1"] and len(train) == 3
        train.set_epoch(0)
        images, labels = next(iter(train))
        assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
        assert images.is_contiguous(memory_format=torch.channels_last)
        seen = [int(v) for _, y in val for v in y]
        assert sorted(seen) == [0, 0, 0, 1, 1, 1]  # every validation image once, none dropped
    finally:
        train.close()
        val.close()
