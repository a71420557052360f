"""`python -m ipu_cnn.benchmark.loader [FOLDER]`: what the loader costs on top of the native decoder.

Times, over the same files on disk and all threads: ``decode_batch`` alone (batches into one reused buffer), the
``Loader`` in thread mode and in process mode (consumer doing nothing), and the per-batch Python cost of the loader
(time inside ``next()`` when the batch is already waiting in the ring). Prints a Markdown table with the ratios the
loader's contract sets: loader >= 0.95x decode_batch, process mode >= 0.90x thread mode.

``--shards`` compares instead files against tar shards of the same images, warm and cold page cache, one thread and
all (`ipu_cnn.benchmark.shards`); ``--index`` measures the index of an ImageNet-sized set of shards.
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ipu_cnn.benchmark.images import generated_folder, load_images
from ipu_cnn.data import EvalTransform, Loader, TrainTransform, decode_batch
from ipu_cnn.data.datasets import FileDataset


def _dataset(folder: Path | None, count: int) -> FileDataset:
    if folder is None:
        root = generated_folder(count, None)
        paths = [os.fspath(root / f"photo_{i:05d}.jpg") for i in range(count)]
    else:
        paths, _ = load_images(folder, count)
    return FileDataset(paths, np.arange(len(paths)) % 10, [str(c) for c in range(10)])


def _decode_only(ds: FileDataset, transform, batch: int, threads: int | None) -> float:
    h, w = transform.output_hw
    out = np.empty((batch, h, w, 3), np.uint8)
    order = np.random.default_rng(0).permutation(len(ds))
    t0 = time.perf_counter()
    for s in range(0, len(order) - batch + 1, batch):
        idx = order[s:s + batch]
        decode_batch([ds.paths[i] for i in idx], out, transform, indices=idx, num_threads=threads)
    return (len(order) // batch) * batch / (time.perf_counter() - t0)


def _loader(ds: FileDataset, transform, batch: int, threads: int | None, workers: str, epochs: int) -> float:
    with Loader(ds, batch, transform, num_threads=threads, workers=workers, rank=0, world_size=1) as loader:
        for _ in loader:  # warm-up epoch: starts the worker, fills caches
            pass
        t0 = time.perf_counter()
        n = 0
        for e in range(1, epochs + 1):
            loader.set_epoch(e)
            for images, _ in loader:
                n += images.shape[0]
        return n / (time.perf_counter() - t0)


def _overhead_us(ds: FileDataset, transform, batch: int, threads: int | None) -> float:
    """Median time inside next() when the batch is already decoded (the consumer waits long enough each step)."""
    with Loader(ds, batch, transform, num_threads=threads, prefetch=2, rank=0, world_size=1) as loader:
        it = iter(loader)
        next(it)
        per_batch = batch / 200.0  # generous: decoding a batch takes less than this at >= 200 img/s
        costs = []
        for _ in range(len(loader) - 1):
            time.sleep(per_batch)
            t0 = time.perf_counter()
            next(it)
            costs.append(time.perf_counter() - t0)
        return float(np.median(costs) * 1e6)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipu_cnn.benchmark.loader", description=__doc__)
    parser.add_argument("folder", nargs="?", type=Path, help="folder of images (default: generated JPEGs)")
    parser.add_argument("--images", type=int, default=1024, help="files to use (default 1024)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="decoder threads (default: all CPUs)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per loader configuration (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; best figure shown (default 3)")
    parser.add_argument("--shards", action="store_true",
                        help="compare files with tar shards of the same images (warm/cold cache, 1/all threads)")
    parser.add_argument("--index", action="store_true",
                        help="measure loading the index of 1.28M samples in 128 shards (time and memory)")
    args = parser.parse_args(argv)
    if args.shards or args.index:
        from ipu_cnn.benchmark import shards

        if args.index:
            print(shards.index_figures())
        if args.shards:
            print(shards.run(args.folder, args.images, args.batch_size, args.repeat))
        return 0
    ds = _dataset(args.folder, args.images)
    rows = []
    for name, transform in (("train", TrainTransform(224)), ("eval", EvalTransform(224))):
        best = {"decode_batch": 0.0, "thread": 0.0, "process": 0.0}
        for _ in range(args.repeat):
            best["decode_batch"] = max(best["decode_batch"], _decode_only(ds, transform, args.batch_size, args.threads))
            for workers in ("thread", "process"):
                best[workers] = max(best[workers], _loader(ds, transform, args.batch_size, args.threads, workers,
                                                           args.epochs))
        overhead = _overhead_us(ds, transform, args.batch_size, args.threads)
        rows.append((name, best, overhead))
    threads = args.threads or os.cpu_count()
    print(f"{len(ds)} files, batch {args.batch_size}, {threads} threads; best of {args.repeat} rounds\n")
    print("| transform | decode_batch img/s | Loader thread img/s | Loader process img/s | thread / decode_batch "
          "| process / thread | next() overhead per batch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, b, overhead in rows:
        print(f"| {name} | {b['decode_batch']:.0f} | {b['thread']:.0f} | {b['process']:.0f} | "
              f"{b['thread'] / b['decode_batch']:.2f}x | {b['process'] / b['thread']:.2f}x | {overhead:.0f} us |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
