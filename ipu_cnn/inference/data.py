"""Where the inference modes' images come from: image files found under paths, and the benchmark's batch streams.

Benchmark data modes (as the Graphcore application's): ``real`` decodes JPEG files with the eval transform through
ipu_cnn's loader (``shards``: the same, from WebDataset tar shards), ``generated`` repeats one random uint8 host batch (so decoding is left out but the host-to-device
copy is not), ``synthetic`` makes one random batch on the device once (no host work at all). Each is a
`ipu_cnn.batch_sources.BatchSource` of uint8 ``[B, 3, H, W]`` channels_last batches (the random ones are the
training application's `RandomBatches`); `ipu_cnn.batch_sources.forever` runs one epoch after another.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ipu_cnn.batch_sources import BatchSource, RandomBatches
from ipu_cnn.data.datasets import IMG_EXTENSIONS
from ipu_cnn.models import EvalPreprocessing

#: Label range of the benchmark's random batches (labels are unused; ImageNet's, as Graphcore's).
RANDOM_CLASSES = 1000


@dataclass
class ImageFiles:
    """A dataset index of image files for the loader (``paths``, ``labels``), all labelled 0 (labels are unused)."""

    paths: list[str]
    classes: list[str] = field(default_factory=lambda: ["unlabelled"])

    @property
    def labels(self) -> np.ndarray:
        return np.zeros(len(self.paths), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)


def find_images(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """Image files named by `paths`, in order: a file as given (whatever its extension), a folder's images found
    recursively (by extension, sorted). Returns ``(files, missing)``, where `missing` are paths that do not exist."""
    files: list[str] = []
    missing: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            files.append(str(path))
        elif path.is_dir():
            found: list[str] = []
            for folder, subfolders, names in os.walk(path, followlinks=True):
                subfolders.sort()
                found.extend(os.path.join(folder, n) for n in sorted(names) if n.lower().endswith(IMG_EXTENSIONS))
            files.extend(found)
        else:
            missing.append(str(raw))
    return files, missing


def real_dataset(data_path: str | None) -> Any:
    """The images of ``--data real``: those under `data_path` (any layout), or the generated demo set's training
    split (made under the user's cache on first use) when it is None."""
    if data_path is None:
        from ipu_cnn.data import GeneratedImages

        return GeneratedImages().train
    files, missing = find_images([data_path])
    if missing:
        raise FileNotFoundError(f"--data-path {data_path}: no such folder")
    if not files:
        raise FileNotFoundError(f"--data-path {data_path}: no images in it (extensions {', '.join(IMG_EXTENSIONS)})")
    return ImageFiles(files)


def benchmark_source(mode: str, batch_size: int, preprocessing: EvalPreprocessing, device: torch.device, *,
                     pin_memory: bool = False, data_path: str | None = None, num_threads: int | None = None,
                     prefetch: int = 2, rank: int = 0, world_size: int = 1, seed: int = 0) -> BatchSource:
    """The batches of benchmark data mode `mode` (``real``, ``generated`` or ``synthetic``) for `device`.

    `preprocessing` is the model's eval preprocessing (its image side is the batches' size); `device` and
    `pin_memory` are the backend's (where synthetic data is made; whether host batches are pinned). ``real`` shards
    the files by rank like training does; every rank gets full batches only.
    """
    transform = preprocessing.eval_transform()
    height, width = transform.output_hw
    pinned = pin_memory
    if mode in ("synthetic", "generated"):  # one batch, made once: on the device, or on the host (pinned)
        on = device if mode == "synthetic" else torch.device("cpu")
        return RandomBatches(batch_size, (height, width), RANDOM_CLASSES, 1, on, seed=seed + rank,
                             pin_memory=pinned and mode == "generated")
    if mode not in ("real", "shards", "cifar10"):
        raise ValueError(f"--data {mode!r}: use real, shards, cifar10, generated or synthetic")
    from ipu_cnn.data import Loader

    if mode == "shards":
        from ipu_cnn.data import TarShards

        if data_path is None:
            raise SystemExit("--data shards needs --data-path, the shard pattern (e.g. 'DIR/val-{000000..000015}.tar')")
        dataset: Any = TarShards(data_path)
    elif mode == "cifar10":  # the raw test images, resized to the model's side when that is not CIFAR's 32
        from ipu_cnn.data import EvalTransform
        from ipu_cnn.data.datasets import CIFAR10, default_cifar10_root

        dataset = CIFAR10(data_path or default_cifar10_root(), "test", download=True)
        transform = EvalTransform(size=(height, width), resize_size=(height, width),
                                  interpolation=preprocessing.interpolation)
    else:
        dataset = real_dataset(data_path)
    if len(dataset) < batch_size * world_size:
        raise SystemExit(f"--data {mode}: {len(dataset)} images make no full batch of {batch_size} per rank on "
                         f"{world_size} rank(s): lower --micro-batch-size or give --data-path a larger folder")
    return Loader(dataset, batch_size, transform, shuffle=True, seed=seed,  # type: ignore[operator]
                  drop_last=True, num_threads=num_threads, prefetch=prefetch, rank=rank, world_size=world_size,
                  on_error="replace", pin_memory=pinned)
