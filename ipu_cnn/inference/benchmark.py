"""Benchmark mode: throughput and latency of a model on real, generated or synthetic data.

What ``python -m ipu_cnn.inference`` runs by default, as the Graphcore application's ``run_benchmark.py`` did: build
the model, feed it ``--warmup-iterations`` batches that are not counted, then ``--iterations`` measured batches, and
print the throughput (samples/sec: mean, min, max, std over iterations) and the latency per batch (mean, p50, p90,
p99 in ms). Under ``torchrun`` every rank measures its own share and rank 0 prints the reduction (see
`ipu_cnn.inference.stats`). Each batch's logits are brought back to the host before its latency is taken, so the
figures are what a caller gets, not how fast work can be queued.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Iterable, Iterator, Mapping, TextIO

import torch

from ipu_cnn.backends import DistContext, init_distributed, resolve_device_type
from ipu_cnn.batch_sources import BatchSource, forever
from ipu_cnn.inference.config import InferenceOptions
from ipu_cnn.inference.data import benchmark_source
from ipu_cnn.inference.model import ModelChoice, load_model
from ipu_cnn.inference.runner import Runner, create_runner
from ipu_cnn.inference.stats import Figures, Timings, format_figures, summarize


def measure(runner: Runner, batches: Iterable[torch.Tensor], iterations: int, warmup_iterations: int = 2) -> Timings:
    """Run `warmup_iterations` + `iterations` batches through `runner`; time the measured ones.

    An iteration's time starts where the previous one ended (so waiting for the next batch counts); its latency
    starts when the batch is in hand.
    """
    timings = Timings()
    stream = iter(batches)
    last = time.perf_counter()
    for i in range(warmup_iterations + iterations):
        images = next(stream)
        ready = time.perf_counter()
        runner(images)
        done = time.perf_counter()
        if i >= warmup_iterations:
            timings.add(int(images.shape[0]), done - last, done - ready)
        last = done
    return timings


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if isinstance(v, (str, int, float, bool, type(None), list))}


def write_json(document: Mapping[str, Any], target: str) -> None:
    """Write `document` to file `target`, or to stdout for ``-``."""
    text = json.dumps(document, indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(target, "w") as f:
            f.write(text)


def _images(source: BatchSource) -> Iterator[torch.Tensor]:
    for images, _labels in forever(source):
        yield images


def run_benchmark(options: InferenceOptions, dist: DistContext | None = None) -> Figures | None:
    """Benchmark as `options` say (the benchmark mode's options); returns the figures reduced over ranks, which
    rank 0 also prints (and writes with ``--json``); None after ``--compile-only`` (nothing ran)."""
    device_type = resolve_device_type(options.device)  # --device ipu without PopTorch fails here, first
    own_dist = dist is None
    dist = dist or init_distributed(device_type)
    try:
        return _benchmark(options, device_type, dist)
    finally:
        if own_dist:
            dist.close()


def _compile_only(runner: Runner, loaded: Any, host_batch: int, out: TextIO | None, cache: str | None) -> None:
    """``--compile-only``: compile the inference executable for one host batch of uint8 images at the model's eval
    size (offline when no IPU is attached), and stop; `out` (rank 0's stream, else None) gets one line."""
    height, width = loaded.preprocessing.eval_transform().output_hw
    images = torch.zeros((host_batch, 3, height, width), dtype=torch.uint8)
    start = time.perf_counter()
    try:
        runner.compile(images)
    finally:
        runner.close()
    seconds = time.perf_counter() - start
    if out is not None:
        kept = f"cached in {cache}" if cache else "not kept: add --executable-cache-dir to keep it"
        print(f"compiled the inference executable for host batch {host_batch} x 3 x {height} x {width} in "
              f"{seconds:.1f} s (--compile-only); {kept}", file=out, flush=True)


def _benchmark(options: InferenceOptions, device_type: str, dist: DistContext) -> Figures | None:
    loaded = load_model(ModelChoice.from_options(options), default_weights="random")
    micro = int(options.micro_batch_size or 32)
    data = str(options.data or "real")
    runner = create_runner(loaded.model, options, micro, synthetic_data=data == "synthetic", dist=dist)
    host_batch = runner.host_batch or micro
    out: TextIO = sys.stderr if options.json == "-" else sys.stdout
    iterations, warmup = int(options.iterations or 20), int(options.warmup_iterations or 0)
    if dist.is_main:
        replicas = dist.local_replicas or options.replicas  # poprun's count per instance, when under poprun
        ipu = f", {replicas} replica(s) x {options.device_iterations} device iterations" if device_type == "ipu" else ""
        print(f"benchmarking {loaded.describe()}", file=out)
        print(f"device {device_type} x {dist.world_size} process(es){ipu}, data {data}, micro batch {micro} "
              f"(host batch {host_batch}), precision {options.precision}, "
              + ("compile only" if options.compile_only else f"{warmup} warm-up + {iterations} measured iterations"),
              file=out, flush=True)
    if options.compile_only:
        _compile_only(runner, loaded, host_batch, out if dist.is_main else None, options.executable_cache_dir)
        return None
    source = benchmark_source(data, host_batch, loaded.preprocessing, runner.device,
                              pin_memory=runner.backend.pin_memory, data_path=options.data_path,
                              num_threads=options.dataloader_worker, prefetch=int(options.dataloader_prefetch or 2),
                              rank=dist.rank, world_size=dist.world_size, seed=int(options.seed or 0))
    try:
        timings = measure(runner, _images(source), iterations, warmup)
    finally:
        source.close()
        runner.close()
    figures = summarize(dist.gather_objects(timings))
    if dist.is_main:
        for line in format_figures(figures, host_batch):
            print(line, file=out)
        if data == "synthetic":
            print("note: synthetic data stays on the device, so these figures leave out every host-side cost",
                  file=out)
        out.flush()
        if options.json:
            write_json({"mode": "benchmark", "model": loaded.name, "weights": loaded.weights,
                        "num_classes": loaded.num_classes, "preprocessing": loaded.preprocessing.as_dict(),
                        "device": device_type, "data": data, "micro_batch_size": micro,
                        "host_batch_size": host_batch, "precision": options.precision,
                        "warmup_iterations": warmup, **figures.as_dict(),
                        "options": _jsonable({**options.mode_dict(), "device": device_type})}, options.json)
    return figures
