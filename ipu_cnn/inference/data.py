"""Where the inference modes' images come from: image files found under paths, and the benchmark's batch streams.

Benchmark data modes (as the Graphcore application's): ``real`` decodes JPEG files with the eval transform through
ipu_cnn's loader, ``generated`` repeats one random uint8 host batch (so decoding is left out but the host-to-device
copy is not), ``synthetic`` makes one random batch on the device once (no host work at all). Every stream yields
uint8 ``[B, 3, H, W]`` channels_last batches forever; `BatchStream.close` releases the loader.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ipu_cnn.data.datasets import IMG_EXTENSIONS


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


class BatchStream:
    """An endless stream of uint8 ``[B, 3, H, W]`` channels_last batches; iterate it, then `close` it."""

    def __init__(self, batches: Iterator[torch.Tensor], loader: Any = None) -> None:
        self._batches = batches
        self._loader = loader

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self._batches

    def close(self) -> None:
        if self._loader is not None:
            self._loader.close()
            self._loader = None


def _repeat(batch: torch.Tensor) -> Iterator[torch.Tensor]:
    while True:
        yield batch


def _epochs(loader: Any) -> Iterator[torch.Tensor]:
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        for images, _labels in loader:
            yield images


def benchmark_stream(mode: str, batch_size: int, transform: Any, device: torch.device, *, data_path: str | None = None,
                     num_threads: int | None = None, prefetch: int = 2, rank: int = 0, world_size: int = 1,
                     seed: int = 0) -> BatchStream:
    """The batches of benchmark data mode `mode` (``real``, ``generated`` or ``synthetic``) for `device`.

    `transform` is the model's `EvalTransform` (its output size is the batches' size). ``real`` shards the files by
    rank like training does; every rank gets full batches only.
    """
    height, width = transform.output_hw
    pinned = device.type == "cuda"
    if mode == "synthetic":
        generator = torch.Generator(device=device).manual_seed(seed + rank)
        batch = torch.randint(0, 256, (batch_size, height, width, 3), dtype=torch.uint8, device=device,
                              generator=generator).permute(0, 3, 1, 2)
        return BatchStream(_repeat(batch))
    if mode == "generated":
        from ipu_cnn.data import RandomImages

        pixels, _labels = RandomImages(1000, (height, width), batch_size, seed=seed + rank).batch(np.arange(batch_size))
        batch = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)  # channels_last view, no copy
        if pinned:
            batch = batch.pin_memory()
        return BatchStream(_repeat(batch))
    if mode != "real":
        raise ValueError(f"--data {mode!r}: use real, generated or synthetic")
    from ipu_cnn.data import Loader

    dataset = real_dataset(data_path)
    if len(dataset) < batch_size * world_size:
        raise SystemExit(f"--data real: {len(dataset)} images make no full batch of {batch_size} per rank on "
                         f"{world_size} rank(s): lower --micro-batch-size or give --data-path a larger folder")
    loader = Loader(dataset, batch_size, transform, shuffle=True, seed=seed,  # type: ignore[operator]
                    drop_last=True, num_threads=num_threads, prefetch=prefetch, rank=rank, world_size=world_size,
                    on_error="replace", pin_memory=pinned)
    return BatchStream(_epochs(loader), loader)
