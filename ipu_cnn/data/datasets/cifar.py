"""`CIFAR10`: the CIFAR-10 "python version" batches, read into one raw-pixel array (no image files, no decoding).

The layout is the one https://www.cs.toronto.edu/~kriz/cifar.html publishes (``cifar-10-python.tar.gz``):
``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` (training, 10000 images each), ``test_batch`` and
``batches.meta``, each a pickled dict whose ``data`` is a (10000, 3072) uint8 array (a row is the 1024 red, then
green, then blue values of a 32x32 image, rows of the image in order), ``labels`` a list of ints in 0..9, and, in
``batches.meta``, ``label_names``. The files are unpickled with only the types that layout needs allowed (a dict,
lists, bytes, str, ints and a numpy array), so a foreign pickle cannot run code.

`download_cifar10` fetches the archive (checked against its published MD5) and publishes the folder atomically.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from typing import Any

import numpy as np

from ipu_cnn.data.datasets.base import LabelledSamples, PathLike

__all__ = ["CIFAR10", "CIFAR10_URL", "CIFAR10_MD5", "default_cifar10_root", "download_cifar10", "find_cifar10"]

log = logging.getLogger(__name__)

#: Where the archive is published, and its MD5 as published there.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
#: The folder the archive unpacks to, and the files read from it.
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
SIDE = 32

#: The globals a CIFAR batch pickle may name (numpy's array reconstruction, under its 1.x and 2.x module names).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch file")


def _load(path: str) -> dict[str, Any]:
    """A batch file's dict, keys as str (the published files were written by Python 2, so their keys read as bytes)."""
    try:
        with open(path, "rb") as f:
            raw = _BatchUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except OSError as e:
        raise FileNotFoundError(f"cannot read CIFAR-10 file {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is this file's fault
        raise ValueError(f"{path} is not a CIFAR-10 python batch file: {type(e).__name__}: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch file: it holds a {type(raw).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def default_cifar10_root() -> str:
    """Where the applications keep CIFAR-10 when no data path is given: the package cache's ``cifar10`` folder."""
    from ipu_cnn.data._cache import cache_dir

    return str(cache_dir() / "cifar10")


def find_cifar10(root: PathLike) -> str | None:
    """The folder holding the batch files: ``root`` itself or ``root/cifar-10-batches-py``; None when neither has
    all of them."""
    base = os.path.expanduser(os.fspath(root))
    for folder in (base, os.path.join(base, FOLDER)):
        if all(os.path.isfile(os.path.join(folder, n)) for n in (*TRAIN_FILES, *TEST_FILES, META_FILE)):
            return folder
    return None


def _missing_message(root: str) -> str:
    names = ", ".join((*TRAIN_FILES, *TEST_FILES, META_FILE))
    return (f"no CIFAR-10 data in {root}: expected the python-version batches ({names}) in {root} or in "
            f"{os.path.join(root, FOLDER)}. Download {CIFAR10_URL} (MD5 {CIFAR10_MD5}) and unpack it there, or let "
            "the application download it (it does when the files are missing and the network is reachable)")


def download_cifar10(root: PathLike, url: str | None = None, md5: str | None = None, timeout: float = 60.0) -> str:
    """Download the archive into ``root`` (created if needed), check its MD5, unpack it and publish
    ``root/cifar-10-batches-py`` by one rename, so no reader ever sees a partial folder; returns that folder.
    Raises RuntimeError naming the URL and the expected files when the download or the check fails."""
    url = CIFAR10_URL if url is None else url
    md5 = CIFAR10_MD5 if md5 is None else md5
    base = os.path.expanduser(os.fspath(root))
    os.makedirs(base, exist_ok=True)
    target = os.path.join(base, FOLDER)
    staging = tempfile.mkdtemp(prefix=".cifar10-download-", dir=base)
    try:
        archive = os.path.join(staging, "cifar-10-python.tar.gz")
        log.info("downloading CIFAR-10 from %s into %s", url, base)
        digest = hashlib.md5()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(archive, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, ValueError) as e:
            raise RuntimeError(f"could not download CIFAR-10 from {url} ({type(e).__name__}: {e}); "
                               f"{_missing_message(base)}") from None
        if digest.hexdigest() != md5:
            raise RuntimeError(f"the download from {url} has MD5 {digest.hexdigest()}, not the published {md5} "
                               "(a truncated or altered archive); nothing was kept")
        unpacked = os.path.join(staging, "unpacked")
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(unpacked, filter="data")
        folder = find_cifar10(unpacked)
        if folder is None:
            raise RuntimeError(f"the archive from {url} does not hold the CIFAR-10 python batches")
        try:
            os.rename(folder, target)
        except OSError:
            if find_cifar10(target) is None:  # not another process's complete copy: a real failure
                raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class CIFAR10(LabelledSamples):
    """CIFAR-10's training (50000) or test (10000) images as one (N, 32, 32, 3) uint8 array, in file order.

    Args:
        root: the folder holding the batch files, or its parent (holding ``cifar-10-batches-py``).
        split: ``"train"`` (data_batch_1..5) or ``"test"`` (test_batch; aliases ``"validation"``, ``"val"``).
        download: when the files are not there, download them into ``root`` (see `download_cifar10`).
    """

    def __init__(self, root: PathLike, split: str = "train", *, download: bool = False) -> None:
        splits = {"train": TRAIN_FILES, "test": TEST_FILES, "validation": TEST_FILES, "val": TEST_FILES}
        if split not in splits:
            raise ValueError(f"unknown CIFAR-10 split {split!r}: use 'train' or 'test' (aliases 'validation', 'val')")
        self.split = "train" if split == "train" else "test"
        base = os.path.expanduser(os.fspath(root))
        folder = find_cifar10(base)
        if folder is None and download:
            folder = download_cifar10(base)
        if folder is None:
            raise FileNotFoundError(_missing_message(base))
        self.root = folder
        meta = _load(os.path.join(folder, META_FILE))
        names = meta.get("label_names")
        if not isinstance(names, list) or not names:
            raise ValueError(f"{os.path.join(folder, META_FILE)}: no label_names list")
        self._classes = [_text(n) for n in names]
        self._class_to_idx = {c: i for i, c in enumerate(self._classes)}
        images, labels = [], []
        for name in splits[split]:
            path = os.path.join(folder, name)
            batch = _load(path)
            data, lab = batch.get("data"), batch.get("labels")
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or \
                    data.shape[1] != 3 * SIDE * SIDE:
                raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, {3 * SIDE * SIDE}), got "
                                 f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
            lab_arr = np.asarray(lab, dtype=np.int64).reshape(-1) if isinstance(lab, list) else None
            if lab_arr is None or len(lab_arr) != len(data):
                raise ValueError(f"{path}: 'labels' must be a list of {len(data)} ints, one per image")
            if len(lab_arr) and (lab_arr.min() < 0 or lab_arr.max() >= len(self._classes)):
                raise ValueError(f"{path}: labels must be in 0..{len(self._classes) - 1}")
            images.append(data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))
            labels.append(lab_arr)
        self.pixels: np.ndarray = np.ascontiguousarray(np.concatenate(images))
        self.pixels.flags.writeable = False
        self._labels = np.concatenate(labels)
        self._labels.flags.writeable = False

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """Image ``index`` (32, 32, 3) uint8 and its label."""
        return self.pixels[index], int(self._labels[index])

    def __repr__(self) -> str:
        return f"CIFAR10({self.split}, {len(self)} images, {self.root})"
