"""Benchmark figures: per-iteration timings in, throughput and latency statistics out, reduced over ranks.

An iteration's *time* runs from the end of the previous iteration to the end of this one, so it includes waiting for
the data (what makes ``real`` slower than ``generated`` when the loader cannot keep up); its *latency* runs from the
host batch being ready to its logits being on the host. Throughput is samples per iteration time.

Across ranks (torchrun, poprun): iteration ``i``'s throughput is the sum of every rank's, and each latency figure
is the largest of the ranks' (the slowest replica bounds what a client sees).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np


@dataclass
class Timings:
    """One rank's measured iterations (warm-up excluded): samples, iteration time and latency, in seconds."""

    samples: list[int] = field(default_factory=list)
    iteration_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)

    def add(self, samples: int, iteration_s: float, latency_s: float) -> None:
        self.samples.append(int(samples))
        self.iteration_s.append(float(iteration_s))
        self.latency_s.append(float(latency_s))

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class Figures:
    """Throughput (samples/s) and per-batch latency (ms) statistics over the measured iterations of every rank."""

    throughput_mean: float
    throughput_min: float
    throughput_max: float
    throughput_std: float
    throughput_overall: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_min_ms: float
    latency_max_ms: float
    data_wait_pct: float
    iterations: int
    ranks: int
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(per_rank: Sequence[Timings]) -> Figures:
    """The figures of one or more ranks' timings (every rank measured the same number of iterations)."""
    if not per_rank or not len(per_rank[0]):
        raise ValueError("no measured iterations: --iterations must be at least 1")
    counts = {len(t) for t in per_rank}
    if len(counts) != 1:
        raise ValueError(f"ranks measured different numbers of iterations: {sorted(counts)}")
    samples = np.array([t.samples for t in per_rank], dtype=np.float64)  # [ranks, iterations]
    times = np.array([t.iteration_s for t in per_rank], dtype=np.float64)
    latency_ms = np.array([t.latency_s for t in per_rank], dtype=np.float64) * 1000.0
    throughput = (samples / np.maximum(times, 1e-12)).sum(axis=0)  # per iteration, summed over ranks
    overall = float((samples.sum(axis=1) / np.maximum(times.sum(axis=1), 1e-12)).sum())
    wait = np.maximum(times * 1000.0 - latency_ms, 0.0).sum(axis=1) / np.maximum(times.sum(axis=1) * 1000.0, 1e-9)

    def worst(values: np.ndarray) -> float:
        return float(values.max())

    return Figures(
        throughput_mean=float(throughput.mean()),
        throughput_min=float(throughput.min()),
        throughput_max=float(throughput.max()),
        throughput_std=float(throughput.std()),
        throughput_overall=overall,
        latency_mean_ms=worst(latency_ms.mean(axis=1)),
        latency_p50_ms=worst(np.percentile(latency_ms, 50, axis=1)),
        latency_p90_ms=worst(np.percentile(latency_ms, 90, axis=1)),
        latency_p99_ms=worst(np.percentile(latency_ms, 99, axis=1)),
        latency_min_ms=worst(latency_ms.min(axis=1)),
        latency_max_ms=worst(latency_ms.max(axis=1)),
        data_wait_pct=float(wait.max() * 100.0),
        iterations=int(times.shape[1]),
        ranks=len(per_rank),
        samples=int(samples.sum()),
    )


def format_figures(figures: Figures, batch_size: int) -> list[str]:
    """The report lines; the first two are the Graphcore application's, and parse with
    ``throughput: (\\S+) samples/sec \\(mean\\) \\(min: (\\S+), max: (\\S+), std: (\\S+)\\)``."""
    f = figures
    throughput = (f"throughput: {f.throughput_mean:.2f} samples/sec (mean) (min: {f.throughput_min:.2f}, "
                  f"max: {f.throughput_max:.2f}, std: {f.throughput_std:.2f})")
    latency = (f"latency: {f.latency_mean_ms:.2f} ms (mean) (p50: {f.latency_p50_ms:.2f}, p90: {f.latency_p90_ms:.2f}, "
               f"p99: {f.latency_p99_ms:.2f}, min: {f.latency_min_ms:.2f}, max: {f.latency_max_ms:.2f}) per batch of "
               f"{batch_size}")
    wait = (f"waiting for data: {f.data_wait_pct:.1f} % of the measured time; {f.samples} samples in {f.iterations} "
            f"iterations x {f.ranks} rank{'s' if f.ranks > 1 else ''}")
    return [throughput, latency, wait]
