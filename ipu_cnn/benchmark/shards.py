"""Files against tar shards, on the same images: ``python -m ipu_cnn.benchmark.loader --shards [FOLDER]``.

The images (a folder's, or the generated photo-like JPEGs) are written once into WebDataset-layout shards in a
temporary folder, twice: with the original bytes (``pack --no-restart-index``) and restart-indexed (what ``pack``
writes by default: ``_C.add_restart_index``, same pixels). Then one epoch of the `Loader` (train transform, thread
workers) is timed over each configuration: files, shards or restart-indexed shards, warm or cold page cache, one
thread or all. The configurations run interleaved, round after round, so
a machine whose load changes during the run slows all of them alike; the table gives the median round and the ratios
of medians measured in the same rounds, with the process's CPU-seconds, the bytes read and the ``open()`` calls of one
epoch (the native core's counters, `ipu_cnn._C.io_stats`), and the load average.

A cold cache is made by evicting every file of the configuration from the page cache before its epoch with
``posix_fadvise(POSIX_FADV_DONTNEED)``, which needs no privilege and touches only those files (writing
``/proc/sys/vm/drop_caches`` would need root and would flush the whole machine's cache, other users' included; the
report says which was used). `index_figures` measures the index of an ImageNet-sized dataset: the time to load it
and the memory it takes.
"""
from __future__ import annotations

import io
import os
import resource
import statistics
import tarfile
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ipu_cnn import _C
from ipu_cnn.benchmark.peers import restart_index_or_keep
from ipu_cnn.data import Loader, TarShards, TrainTransform
from ipu_cnn.data.datasets import FileDataset
from ipu_cnn.data.datasets import shards as shards_module

__all__ = ["evict", "generate_index", "index_bytes", "index_figures", "run", "write_shards"]


def write_shards(paths: Sequence[str], labels: Sequence[int], folder: Path, per_shard: int,
                 restart_index: bool = False) -> list[str]:
    """Pack the files into WebDataset-layout shards of per_shard samples (KEY.jpg + KEY.cls), in order; with
    restart_index, each image restart-indexed as ``pack`` does by default."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for s, start in enumerate(range(0, len(paths), per_shard)):
        target = folder / f"bench-{s:06d}.tar"
        with tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as tf:
            for i in range(start, min(start + per_shard, len(paths))):
                image = Path(paths[i]).read_bytes()
                if restart_index:
                    image = restart_index_or_keep(image)
                for ext, data in (("jpg", image), ("cls", str(int(labels[i])).encode())):
                    info = tarfile.TarInfo(f"s{i:07d}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        out.append(str(target))
    return out


def evict(files: Sequence[str]) -> None:
    """Drop the files' pages from the page cache (POSIX_FADV_DONTNEED, per file, no privilege needed)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _epoch(loader: Loader, epoch: int, cold_files: Sequence[str] | None) -> dict[str, float]:
    """One timed epoch: images/s, CPU-seconds, bytes read and open() calls (evicting cold_files first if given)."""
    if cold_files is not None:
        evict(cold_files)
    _C.drop_cached_files()  # every epoch starts with no shard open, as a fresh run does
    loader.set_epoch(epoch)
    _C.reset_io_stats()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    n = sum(int(y.shape[0]) for _, y in loader)
    wall = time.perf_counter() - t0
    stats = _C.io_stats()
    return {"img_s": n / wall, "cpu_s": _cpu_seconds() - cpu0, "bytes": stats["bytes"], "opens": stats["opens"],
            "images": n}


def run(folder: Path | None, count: int, batch_size: int, rounds: int, image_size: int = 224) -> str:
    """Measure every configuration interleaved over `rounds` rounds; the Markdown report."""
    from ipu_cnn.benchmark.loader import _dataset

    files = _dataset(folder, count)
    all_threads = _C.available_cpus()
    sources = ("files", "shards", "shards-rst")
    with tempfile.TemporaryDirectory(prefix="ipu_cnn-bench-shards-") as tmp:
        per_shard = max(1, len(files) // 8)
        shard_paths = write_shards(files.paths, files.labels, Path(tmp) / "plain", per_shard)
        rst_paths = write_shards(files.paths, files.labels, Path(tmp) / "rst", per_shard, restart_index=True)
        transform = TrainTransform(image_size)
        datasets: dict[str, Any] = {"files": files, "shards": TarShards(shard_paths),
                                    "shards-rst": TarShards(rst_paths)}
        targets = {"files": list(files.paths), "shards": shard_paths, "shards-rst": rst_paths}
        configs = [(src, cache, threads) for cache in ("warm", "cold") for threads in (1, all_threads)
                   for src in sources]
        results: dict[tuple, list[dict[str, float]]] = {c: [] for c in configs}
        loaders = {(src, threads): Loader(datasets[src], batch_size, transform, num_threads=threads, seed=0,
                                          rank=0, world_size=1)
                   for src in sources for threads in (1, all_threads)}
        load_before = os.getloadavg()
        try:
            for (src, threads), loader in loaders.items():
                _epoch(loader, 0, None)  # warm-up: starts the producer, fills the page cache
            for r in range(rounds):
                for src, cache, threads in configs:
                    cold = targets[src] if cache == "cold" else None
                    results[(src, cache, threads)].append(_epoch(loaders[(src, threads)], r + 1, cold))
        finally:
            for loader in loaders.values():
                loader.close()
        load_after = os.getloadavg()
        mib = {src: sum(os.path.getsize(p) for p in targets[src]) / 2**20 for src in sources}
    lines = [f"{len(files)} images ({mib['files']:.1f} MiB as files, {mib['shards']:.1f} MiB in {len(shard_paths)} "
             f"shards, {mib['shards-rst']:.1f} MiB restart-indexed), batch {batch_size}, train transform {image_size}, "
             f"{rounds} interleaved rounds (median shown); cold cache: posix_fadvise(POSIX_FADV_DONTNEED) on every "
             f"file read, before each epoch; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
             f"{os.cpu_count()} CPUs",
             "",
             "| cache | threads | source | images/s | ÷ files | CPU-s per epoch | MiB read per epoch "
             "| open() per epoch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cache in ("warm", "cold"):
        for threads in (1, all_threads):
            for src in sources:
                runs = results[(src, cache, threads)]
                m = {k: statistics.median(x[k] for x in runs) for k in ("img_s", "cpu_s", "bytes", "opens")}
                # ratio to files within each round, then the median over rounds
                ratios = [s["img_s"] / f["img_s"] for s, f in zip(runs, results[("files", cache, threads)],
                                                                  strict=True)]
                ratio = f"{statistics.median(ratios):.2f}x" if src != "files" else ""
                lines.append(f"| {cache} | {threads} | {src} | {m['img_s']:.0f} | {ratio} | {m['cpu_s']:.2f} | "
                             f"{m['bytes'] / 2**20:.1f} | {m['opens']:.0f} |")
    return "\n".join(lines)


def generate_index(folder: Path, samples: int, shards: int) -> str:
    """Write index files for `samples` samples over `shards` shards (ImageNet-like keys, offsets, lengths, labels)
    beside small stand-in shard files in folder, as `TarShards` would have built them; returns the shard pattern."""
    per = -(-samples // shards)
    rng = np.random.default_rng(0)
    for s in range(shards):
        n = min(per, samples - s * per)
        p = folder / f"train-{s:06d}.tar"
        p.write_bytes(b"\0" * 1024)
        labels = rng.integers(0, 1000, n)
        keys = [f"n{lab:08d}_{s * per + i}".encode() for i, lab in enumerate(labels.tolist())]
        lengths = rng.integers(20_000, 200_000, n)
        offsets = 512 + np.concatenate([[0], np.cumsum((lengths + 1023) // 512 * 512 + 1024)[:-1]])
        arrays = {
            "meta": np.array([shards_module.INDEX_VERSION, *shards_module._identity(str(p))], dtype=np.int64),
            "offsets": offsets.astype(np.int64), "lengths": lengths.astype(np.int64),
            "labels": labels.astype(np.int64), "key_blob": np.frombuffer(b"".join(keys), np.uint8),
            "key_ends": np.cumsum([len(k) for k in keys], dtype=np.int64),
            "json_offsets": np.full(n, -1, np.int64), "json_lengths": np.zeros(n, np.int64),
            "problems": np.zeros(0, np.uint8), "truncated": np.zeros(0, np.uint8),
        }
        (folder / f".{p.name}.idx").write_bytes(shards_module._encode_index(arrays))
    return str(folder / f"train-{{000000..{shards - 1:06d}}}.tar")


def index_bytes(ds: TarShards) -> int:
    """Bytes the arrays of a dataset's index hold."""
    src = ds.sources
    return (src.offsets.nbytes + src.lengths.nbytes + src.key_blob.nbytes + src.key_ends.nbytes + ds.labels.nbytes
            + src.starts.nbytes)


def index_figures(samples: int = 1_281_167, shards: int = 128) -> str:
    """Load time and memory of the index of an ImageNet-sized dataset (`generate_index`): the best of three loads, the
    bytes its arrays hold, and the peak of Python-traced allocations while loading."""
    with tempfile.TemporaryDirectory(prefix="ipu_cnn-bench-index-") as tmp:
        pattern = generate_index(Path(tmp), samples, shards)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            TarShards(pattern, progress=False)
            best = min(best, time.perf_counter() - t0)
        tracemalloc.start()
        ds = TarShards(pattern, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        held = index_bytes(ds)
        assert len(ds) == samples
        return (f"index of {samples} samples in {shards} shards: loaded in {best * 1000:.0f} ms (best of 3, warm "
                f"page cache), {held / 1e6:.1f} MB of arrays ({held / samples:.1f} bytes a sample), "
                f"{peak / 1e6:.1f} MB allocated at the peak of loading")
