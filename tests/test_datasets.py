"""Dataset indexes: ImageFolder (against torchvision), ImageNet splits, FileList parsing, RandomImages."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ipu_cnn.data.datasets import Dataset, FileDataset, FileList, ImageFolder, ImageNet, RandomImages


def touch(path: Path) -> Path:
    """Create an empty file (and its folders); the index never opens files, so contents do not matter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (a symlink loop walked forever would otherwise stall the suite)."""

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A class tree with nested folders whose names sort differently as paths and as walk order, mixed-case
    extensions, non-images, a symlinked class folder, a symlinked sub-folder and a symlinked file."""
    root = tmp_path / "data"
    outside = tmp_path / "elsewhere"
    for cls in ["dog", "cat", "Zebra", "cat-2"]:
        for sub in ["", "x", "x/y", "x-y", "x y", "X"]:
            for name in ["1.jpg", "10.JPG", "2.png", "notes.txt", "B.jpeg"]:
                touch(root / cls / sub / name)
    for name in ["a.jpg", "b.JPEG"]:
        touch(outside / "birds" / name)
        touch(outside / "extra" / name)
    (root / "bird").symlink_to(outside / "birds", target_is_directory=True)
    (root / "dog" / "linked").symlink_to(outside / "extra", target_is_directory=True)
    (root / "cat" / "link.jpg").symlink_to(outside / "birds" / "a.jpg")
    touch(root / "README.md")  # a file at the top is not a class
    return root


def test_imagefolder_matches_torchvision(tree: Path) -> None:
    tv = pytest.importorskip("torchvision.datasets")
    ref = tv.ImageFolder(str(tree), loader=lambda p: p)
    ours = ImageFolder(str(tree))
    assert ours.classes == ref.classes
    assert ours.class_to_idx == ref.class_to_idx
    assert ours.samples == ref.samples
    assert ours.paths == [p for p, _ in ref.samples]
    assert ours.labels.tolist() == ref.targets


def test_imagefolder_order_explicit(tmp_path: Path) -> None:
    for rel in ["b/2.jpg", "b/10.jpg", "b/a-b/1.jpg", "b/a/1.jpg", "b/a/z/1.jpg", "a/x.JPG", "B/y.jpeg"]:
        touch(tmp_path / rel)
    ds = ImageFolder(tmp_path)
    assert ds.classes == ["B", "a", "b"]
    # Within a class: folders in path-string order ("a-b" < "a" + "/" ...), files sorted by name.
    rels = [(os.path.relpath(p, tmp_path), label) for p, label in ds.samples]
    assert rels == [("B/y.jpeg", 0), ("a/x.JPG", 1), ("b/10.jpg", 2), ("b/2.jpg", 2), ("b/a/1.jpg", 2),
                    ("b/a-b/1.jpg", 2), ("b/a/z/1.jpg", 2)]


def test_imagefolder_follows_symlinks(tree: Path) -> None:
    ds = ImageFolder(tree)
    assert "bird" in ds.classes
    bird = [p for p, label in ds.samples if label == ds.class_to_idx["bird"]]
    assert [os.path.basename(p) for p in bird] == ["a.jpg", "b.JPEG"]
    assert str(tree / "dog" / "linked" / "a.jpg") in ds.paths
    assert str(tree / "cat" / "link.jpg") in ds.paths


def test_imagefolder_symlink_loop_terminates(tmp_path: Path) -> None:
    touch(tmp_path / "cls" / "sub" / "1.jpg")
    touch(tmp_path / "cls" / "0.jpg")
    (tmp_path / "cls" / "sub" / "loop").symlink_to(tmp_path / "cls", target_is_directory=True)
    (tmp_path / "cls" / "self").symlink_to(tmp_path / "cls" / "sub" / "loop", target_is_directory=True)
    with time_limit(20), pytest.warns(UserWarning, match="symlink loop"):
        ds = ImageFolder(tmp_path)
    assert [os.path.relpath(p, tmp_path) for p in ds.paths] == ["cls/0.jpg", "cls/sub/1.jpg"]


def test_imagefolder_extensions_case_insensitive(tmp_path: Path) -> None:
    for name in ["a.JPG", "b.jpg", "c.JpEg", "d.png", "e.jpg.txt", "f"]:
        touch(tmp_path / "c" / name)
    assert [os.path.basename(p) for p in ImageFolder(tmp_path, extensions=("JPG", ".JPEG")).paths] == \
        ["a.JPG", "b.jpg", "c.JpEg"]
    assert [os.path.basename(p) for p in ImageFolder(tmp_path, extensions=".png").paths] == ["d.png"]
    assert len(ImageFolder(tmp_path)) == 4


def test_imagefolder_index_accessors(tree: Path) -> None:
    ds = ImageFolder(tree)
    assert isinstance(ds, Dataset)
    assert isinstance(ds.paths, list) and all(isinstance(p, str) for p in ds.paths)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (len(ds),)
    assert not ds.labels.flags.writeable
    assert ds.paths is ds.paths and ds.labels is ds.labels  # computed once
    assert ds[0] == ds.samples[0] and ds[-1] == ds.samples[-1]
    assert isinstance(ds[0][1], int)
    assert np.all(np.diff(ds.labels) >= 0)
    assert ds.num_classes == len(ds.classes) == 5


def test_imagefolder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist: expected root/<class>/<image>"):
        ImageFolder(tmp_path / "nope")
    touch(tmp_path / "file.jpg")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        ImageFolder(tmp_path / "file.jpg")


def test_imagefolder_no_class_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no class folders in .*expected root/<class>/<image> "
                                                r"\(torchvision ImageFolder layout\)$"):
        ImageFolder(tmp_path)
    touch(tmp_path / "flat1.jpg")
    touch(tmp_path / "flat2.JPEG")
    with pytest.raises(FileNotFoundError, match=r"holds 2 images directly.*FileList"):
        ImageFolder(tmp_path)


def test_imagefolder_empty_class(tmp_path: Path) -> None:
    touch(tmp_path / "full" / "1.jpg")
    touch(tmp_path / "empty" / "notes.txt")
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images in class folder\(s\) bare, empty of .*allow_empty=True"):
        ImageFolder(tmp_path)
    ds = ImageFolder(tmp_path, allow_empty=True)
    assert ds.classes == ["bare", "empty", "full"] and ds.labels.tolist() == [2]


def test_imagefolder_given_classes(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "1.jpg")
    touch(tmp_path / "b" / "1.jpg")
    ds = ImageFolder(tmp_path, classes=["b", "a"])
    assert ds.class_to_idx == {"b": 0, "a": 1}
    assert [(os.path.basename(os.path.dirname(p)), label) for p, label in ds.samples] == [("a", 1), ("b", 0)]
    with pytest.raises(FileNotFoundError, match=r"class folder .*c does not exist"):
        ImageFolder(tmp_path, classes=["a", "b", "c"])
    assert ImageFolder(tmp_path, classes=["a", "b", "c"], allow_empty=True).num_classes == 3


def test_imagenet_splits(tmp_path: Path) -> None:
    for cls in ["n01", "n02", "n03"]:
        touch(tmp_path / "train" / cls / "t.JPEG")
    touch(tmp_path / "val" / "n01" / "v.JPEG")
    touch(tmp_path / "val" / "n03" / "v.JPEG")
    train = ImageNet(tmp_path, "train")
    assert train.split == "train" and len(train) == 3 and train.classes == ["n01", "n02", "n03"]
    for name in ("validation", "val"):
        val = ImageNet(tmp_path, split=name)
        assert val.split == "validation"
        assert val.root == str(tmp_path / "val")
        # Labels follow the training classes although n02 has no validation folder.
        assert val.classes == train.classes and val.labels.tolist() == [0, 2]
    touch(tmp_path / "validation" / "n02" / "v.JPEG")
    assert ImageNet(tmp_path, "val").root == str(tmp_path / "validation")  # "validation" preferred over "val"


def test_imagenet_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown ImageNet split 'test': use 'train' or 'validation' \(alias 'val'\)"):
        ImageNet(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="ImageNet root .* does not exist"):
        ImageNet(tmp_path / "missing")
    touch(tmp_path / "train" / "n01" / "t.JPEG")
    with pytest.raises(FileNotFoundError, match=r"no validation split in .*validation or .*val"):
        ImageNet(tmp_path, "validation")
    touch(tmp_path / "val" / "n09" / "v.JPEG")
    with pytest.raises(ValueError, match="class folders that .*train lacks: n09"):
        ImageNet(tmp_path, "val")
    (tmp_path / "val" / "n09" / "v.JPEG").unlink()
    (tmp_path / "val" / "n09").rmdir()
    touch(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(FileNotFoundError, match=r"no class folders in .*val.*FileList"):
        ImageNet(tmp_path, "val")


def test_filelist_csv_with_header(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "train.csv"
    lst.write_text("path,label\nimgs/a.jpg,1\n\n# a comment\n/abs/b.jpg,0\n\"with, comma.jpg\",2\n", encoding="utf-8")
    ds = FileList(lst)
    assert ds.paths == [str(tmp_path / "lists" / "imgs" / "a.jpg"), "/abs/b.jpg",
                        str(tmp_path / "lists" / "with, comma.jpg")]
    assert ds.labels.tolist() == [1, 0, 2] and ds.labels.dtype == np.int64
    assert ds.classes == ["0", "1", "2"] and ds[0] == (ds.paths[0], 1)


def test_filelist_tsv_without_header_and_root(tmp_path: Path) -> None:
    lst = tmp_path / "val.tsv"
    lst.write_text("x/a b.jpg\t3\n# \"quoted\" comment\ny \"1\".jpg\t0\n", encoding="utf-8")
    ds = FileList(lst, root=tmp_path / "images")
    assert ds.paths == [str(tmp_path / "images" / "x" / "a b.jpg"), str(tmp_path / "images" / 'y "1".jpg')]
    assert ds.labels.tolist() == [3, 0] and ds.num_classes == 4
    assert FileList(lst, header=True).labels.tolist() == [0]


def test_filelist_bom_header_and_whitespace(tmp_path: Path) -> None:
    lst = tmp_path / "val.txt"
    lst.write_bytes("\ufefffilename\tclass\nILSVRC2012_val_00000001.JPEG\t65\n".encode("utf-8"))
    assert FileList(lst).labels.tolist() == [65]
    caffe = tmp_path / "caffe.txt"  # Caffe's val.txt: space separated, label last
    caffe.write_text("ILSVRC2012_val_00000001.JPEG 65\nsub dir/img 2.JPEG 970\n", encoding="utf-8")
    ds = FileList(caffe)
    assert ds.labels.tolist() == [65, 970]
    assert ds.paths[1] == str(tmp_path / "sub dir" / "img 2.JPEG")


def test_filelist_class_names(tmp_path: Path) -> None:
    lst = tmp_path / "l.csv"
    lst.write_text("a.jpg,dog\nb.jpg,cat\nc.jpg,dog\nd.jpg,7\n", encoding="utf-8")
    ds = FileList(lst)
    assert ds.classes == ["7", "cat", "dog"] and ds.labels.tolist() == [2, 1, 2, 0]
    fixed = FileList(lst, classes=["dog", "cat", "7", "bird"])
    assert fixed.labels.tolist() == [0, 1, 0, 2] and fixed.num_classes == 4
    with pytest.raises(ValueError, match=r"l.csv:2: label 'cat' is not one of the 2 classes given"):
        FileList(lst, classes=["dog", "7"])


@pytest.mark.parametrize(("text", "match"), [
    ("a.jpg,1\nb.jpg,2\nc.jpg,3,extra\n", r"bad.csv:3: expected 2 fields \(path, label\), got 3 .*quote"),
    ("a.jpg,1\n\nb.jpg\n", r"bad.csv:3: expected 2 fields \(path, label\), got 1"),
    ("path,label\na.jpg,1\nb.jpg,cat\n", r"bad.csv:3: label 'cat' is not an integer"),
    ("a.jpg,1\nb.jpg,-2\n", r"bad.csv:2: label -2 is negative"),
    ("a.jpg,1\n,2\n", r"bad.csv:2: empty path"),
    ("# only a comment\n\n", r"bad.csv has no rows"),
])
def test_filelist_bad_rows(tmp_path: Path, text: str, match: str) -> None:
    lst = tmp_path / "bad.csv"
    lst.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        FileList(lst)


def test_filelist_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="file list .*nope.csv does not exist"):
        FileList(tmp_path / "nope.csv")


def test_file_dataset_checks() -> None:
    ds = FileDataset(["a", "b"], [1, 0], ["x", "y"])
    assert ds.samples == [("a", 1), ("b", 0)] and ds.class_to_idx == {"x": 0, "y": 1}
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        FileDataset(["a", "b"], [0], ["x"])
    with pytest.raises(ValueError, match=r"label 2 is out of range for 2 classes"):
        FileDataset(["a"], [2], ["x", "y"])


def test_random_images_deterministic_and_shaped() -> None:
    ds = RandomImages(num_classes=5, size=(12, 20), length=50, seed=7)
    image, label = ds[3]
    assert image.shape == (12, 20, 3) and image.dtype == np.uint8 and label == 3
    assert np.array_equal(image, RandomImages(5, (12, 20), 50, seed=7)[3][0])
    assert not np.array_equal(image, RandomImages(5, (12, 20), 50, seed=8)[3][0])
    assert not np.array_equal(image, ds[4][0])
    assert image.std() > 50  # uniform bytes, not a constant
    images, labels = ds.batch([3, 49, -1, 0])
    assert images.shape == (4, 12, 20, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [3, 4, 4, 0]
    for k, i in enumerate([3, 49, 49, 0]):
        assert np.array_equal(images[k], ds[i][0])
    out = np.zeros((2, 12, 20, 3), np.uint8)
    got, _ = ds.batch(np.array([1, 2]), out=out)
    assert got is out and np.array_equal(out[1], ds[2][0])
    assert len(ds) == 50 and ds.classes == ["0", "1", "2", "3", "4"] and isinstance(ds, Dataset)
    assert ds.labels.tolist()[:7] == [0, 1, 2, 3, 4, 0, 1]
    assert RandomImages(2, 8, 1)[0][0].shape == (8, 8, 3)


def test_random_images_errors() -> None:
    ds = RandomImages(2, 4, 3)
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    with pytest.raises(IndexError, match="out of range"):
        ds.batch([0, 5])
    with pytest.raises(ValueError, match=r"out must be a writable C-contiguous uint8 array of shape \(1, 4, 4, 3\)"):
        ds.batch([0], out=np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="num_classes, length and size >= 1"):
        RandomImages(0, 4, 3)
    with pytest.raises(ValueError, match="seed must be"):
        RandomImages(2, 4, 3, seed=-1)
