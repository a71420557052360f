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
from typing import Any, Iterable, Mapping, TextIO

import torch

from ipu_cnn.backends import DistContext, init_distributed, resolve_device_type
from ipu_cnn.inference.data import benchmark_stream
from ipu_cnn.inference.model import load_model
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


def run_benchmark(options: Mapping[str, Any], dist: DistContext | None = None) -> Figures:
    """Benchmark as `options` say (the benchmark mode's options); returns the figures reduced over ranks, which
    rank 0 also prints (and writes with ``--json``)."""
    device_type = resolve_device_type(options["device"])  # --device ipu without PopTorch fails here, first
    own_dist = dist is None
    dist = dist or init_distributed(device_type)
    try:
        return _benchmark({**options, "device": device_type}, dist)
    finally:
        if own_dist:
            dist.close()


def _benchmark(options: Mapping[str, Any], dist: DistContext) -> Figures:
    device_type = options["device"]
    loaded = load_model(options, default_weights="random")
    micro = int(options["micro_batch_size"])
    synthetic_on_ipu = device_type == "ipu" and options["data"] == "synthetic"
    runner = create_runner(loaded.model, options, micro, synthetic_data=synthetic_on_ipu)
    host_batch = runner.host_batch or micro
    out: TextIO = sys.stderr if options.get("json") == "-" else sys.stdout
    if dist.is_main:
        ipu = f", {options['replicas']} replica(s) x {options['device_iterations']} device iterations" \
            if device_type == "ipu" else ""
        print(f"benchmarking {loaded.describe()}", file=out)
        print(f"device {device_type} x {dist.world_size} process(es){ipu}, data {options['data']}, micro batch {micro} "
              f"(host batch {host_batch}), precision {options['precision']}, {options['warmup_iterations']} warm-up + "
              f"{options['iterations']} measured iterations", file=out, flush=True)
    stream = benchmark_stream(options["data"], host_batch, loaded.preprocessing.eval_transform(), runner.device,
                              data_path=options.get("data_path"), num_threads=options.get("dataloader_worker"),
                              prefetch=int(options.get("dataloader_prefetch") or 2), rank=dist.rank,
                              world_size=dist.world_size, seed=int(options.get("seed") or 0))
    try:
        timings = measure(runner, stream, int(options["iterations"]), int(options["warmup_iterations"]))
    finally:
        stream.close()
        runner.close()
    figures = summarize(dist.gather_objects(timings))
    if dist.is_main:
        for line in format_figures(figures, host_batch):
            print(line, file=out)
        if options["data"] == "synthetic":
            print("note: synthetic data stays on the device, so these figures leave out every host-side cost",
                  file=out)
        out.flush()
        if options.get("json"):
            write_json({"mode": "benchmark", "model": loaded.name, "weights": loaded.weights,
                        "num_classes": loaded.num_classes, "preprocessing": loaded.preprocessing.as_dict(),
                        "device": device_type, "data": options["data"], "micro_batch_size": micro,
                        "host_batch_size": host_batch, "precision": options["precision"],
                        "warmup_iterations": int(options["warmup_iterations"]), **figures.as_dict(),
                        "options": _jsonable(options)}, options["json"])
    return figures
