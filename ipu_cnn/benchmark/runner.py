"""Timing: every pipeline on the same in-memory files, interleaved, repeated, in one process.

The order of work is: one checking pass per pipeline and workload (also the warm-up of decoders and allocators); files
any pipeline cannot decode are dropped for all of them, so every figure is over the same files; a short warm-up of
each timed configuration; then ``repeat`` rounds (fewer when a time budget runs out), each timing one full pass of
every configuration in a shuffled order, so slow drifts of a shared machine's load spread over all pipelines instead of
favouring whichever ran first. Ours and the floors on one thread for one workload are timed back to back within a
round (``round_order``): the floor targets are judged on each round's ratio, and a shared machine's speed drifts
within seconds, so passes a whole round apart would compare two different machines.
Peers run with one thread (``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``); ours runs at each thread count
asked for. The garbage collector is paused during each timed pass.
"""
from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ipu_cnn.benchmark.peers import MODES, NativePrepared, Pipeline, Prepared, Workload

__all__ = ["Measurement", "Results", "measure", "one_thread_peers", "round_order"]

#: Images each configuration processes untimed right before the first round.
WARMUP_IMAGES = 32

#: The pipelines timed back to back, per workload on one thread: ours and the floors the targets compare it with.
BACK_TO_BACK = ("ours", "floor", "ours-rst", "floor-rst")


@dataclass
class Measurement:
    """The timed passes of one pipeline on one workload at one thread count."""

    pipeline: str
    label: str
    mode: str
    threads: int
    images: int
    seconds: list[float] = field(default_factory=list)  # wall time of each pass
    cpu_seconds: list[float] = field(default_factory=list)  # CPU time of the process (all threads) in each pass

    @property
    def best(self) -> float:
        """Images/s of the fastest pass: the one least disturbed by other load (the table's figure)."""
        return self.images / min(self.seconds) if self.seconds else float("nan")

    @property
    def best_cpu(self) -> float:
        """Images per CPU-second of the pass that used least CPU: per-core throughput that time-slicing by other
        processes does not lower (it still feels their cache and memory-bandwidth use)."""
        return self.images / min(self.cpu_seconds) if self.cpu_seconds and min(self.cpu_seconds) > 0 else float("nan")

    @property
    def cores_busy(self) -> float:
        """CPU time over wall time of the fastest pass: how many cores the process actually got. Below the thread
        count, other load on the machine (or waiting) held the threads back."""
        if not self.seconds:
            return float("nan")
        i = min(range(len(self.seconds)), key=self.seconds.__getitem__)
        return self.cpu_seconds[i] / self.seconds[i]

    @property
    def median(self) -> float:
        """Images/s of the median pass."""
        return self.images / statistics.median(self.seconds) if self.seconds else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "pipeline": self.pipeline, "label": self.label, "mode": self.mode, "threads": self.threads,
            "images": self.images, "seconds": self.seconds, "cpu_seconds": self.cpu_seconds,
            "best_images_per_s": self.best, "median_images_per_s": self.median, "cores_busy": self.cores_busy,
            "best_images_per_cpu_s": self.best_cpu,
        }


@dataclass
class Results:
    """Everything measured in one run."""

    images: int  # files timed (after exclusions)
    excluded: dict[str, str]  # file name -> which pipeline failed on it and why
    skipped: dict[str, str]  # pipeline name -> why it did not run here
    measurements: list[Measurement]
    dct_scales: dict[str, dict[int, int]]  # mode -> DCT scale numerator (of 8) -> images
    non_jpeg: dict[str, int]  # mode -> images ours decoded through Pillow
    rounds: int = 0  # timed passes of every configuration
    seconds_total: float = 0.0
    load_average: tuple[float, float] = (float("nan"), float("nan"))  # 1-minute load average before and after

    def get(self, pipeline: str, mode: str, threads: int = 1) -> Measurement | None:
        for m in self.measurements:
            if (m.pipeline, m.mode, m.threads) == (pipeline, mode, threads):
                return m
        return None


@contextmanager
def one_thread_peers() -> Iterator[None]:
    """Run the peers' libraries on one thread (torch intra-op, OpenCV), restoring the settings afterwards."""
    restore: list[Callable[[], None]] = []
    try:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        restore.append(lambda: torch.set_num_threads(before))
    except ImportError:
        pass
    try:
        import cv2

        cv_before = cv2.getNumThreads()
        cv2.setNumThreads(1)
        restore.append(lambda: cv2.setNumThreads(cv_before))
    except ImportError:
        pass
    try:
        yield
    finally:
        for undo in restore:
            undo()


def round_order(keys: Sequence[tuple[str, str, int]], rng: np.random.Generator, round_index: int) -> list[int]:
    """One round's order of the jobs with these (pipeline, mode, threads) keys: a shuffled order of groups, where the
    BACK_TO_BACK pipelines on one thread for one workload form one group, timed back to back, and every other job is
    a group of its own. Within a group the members take turns at going first (rotated by one each round), so that
    none is favoured by what ran before it or by the cache state the previous member leaves."""
    groups: dict[object, list[int]] = {}
    for j, (pipeline, mode, threads) in enumerate(keys):
        key = ("back-to-back", mode) if pipeline in BACK_TO_BACK and threads == 1 else j
        groups.setdefault(key, []).append(j)
    members = list(groups.values())
    order: list[int] = []
    for g in rng.permutation(len(members)):
        group = members[g]
        shift = round_index % len(group)
        order.extend(group[shift:] + group[:shift])
    return order


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        return float("nan")


def _timed(prepared: Prepared) -> tuple[float, float]:
    """Wall and process CPU seconds of one pass."""
    gc.disable()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        prepared.run()
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        gc.enable()


def measure(
    pipelines: Sequence[Pipeline],
    names: Sequence[str],
    blobs: Sequence[bytes],
    work: Workload,
    thread_counts: Sequence[int],
    repeat: int,
    time_budget: float | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Results:
    """Time ``pipelines`` over ``blobs`` (``names`` label them in messages) for both workloads; see the module doc.

    ``repeat`` rounds are run, or fewer (never fewer than two) when another round would end more than ``time_budget``
    seconds after the start of the call, as can happen on a loaded machine; Results.rounds says how many ran.
    """
    started = time.perf_counter()
    load_before = _load_average()
    skipped: dict[str, str] = {}
    runnable: list[Pipeline] = []
    for p in pipelines:
        reason = p.unavailable()
        if reason is None:
            runnable.append(p)
        else:
            skipped[p.name] = reason
            log(f"skipping {p.name}: {reason}")

    with one_thread_peers():
        # 1. Checking pass (and warm-up): a file any pipeline fails on is left out for all.
        bad: dict[int, str] = {}
        for p in runnable:
            for mode in MODES:
                log(f"checking {p.name} / {mode} on {len(blobs)} images")
                for pos, reason in p.prepare(blobs, mode, work, 1).failures().items():
                    bad.setdefault(pos, f"{p.name} ({mode}): {reason}")
        keep = [i for i in range(len(blobs)) if i not in bad]
        excluded = {names[i]: bad[i] for i in sorted(bad)}
        for name, reason in excluded.items():
            log(f"excluded {name}: {reason}")
        files = [blobs[i] for i in keep]
        if not files:
            raise SystemExit("no image could be decoded by every pipeline; nothing to time")

        # 2. The timed configurations: every pipeline on one thread, ours also at each other thread count.
        jobs: list[tuple[Measurement, Prepared]] = []
        for p in runnable:
            for mode in MODES:
                for threads in sorted(set(thread_counts) | {1}) if p.name == "ours" else [1]:
                    m = Measurement(p.name, p.label, mode, threads, len(files))
                    jobs.append((m, p.prepare(files, mode, work, threads)))
        for _m, prepared in jobs:
            prepared.run(limit=WARMUP_IMAGES)

        # 3. Rounds, each in a fresh shuffled order (round_order). Objects alive now are frozen out of the collector's
        # reach, so the collections between passes (the collector is paused during them) stay short with torch loaded.
        rng = np.random.default_rng(work.seed)
        keys = [(m.pipeline, m.mode, m.threads) for m, _ in jobs]
        rounds = 0
        gc.collect()
        gc.freeze()
        try:
            for r in range(repeat):
                round_start = time.perf_counter()
                for j in round_order(keys, rng, r):
                    m, prepared = jobs[j]
                    wall, cpu = _timed(prepared)
                    m.seconds.append(wall)
                    m.cpu_seconds.append(cpu)
                rounds = r + 1
                now = time.perf_counter()
                log(f"round {rounds}/{repeat} done ({now - started:.0f} s)")
                over_budget = time_budget and now + (now - round_start) > started + time_budget
                if over_budget and 2 <= rounds < repeat:
                    log(f"stopping after {rounds} rounds: another would pass the time budget of {time_budget:.0f} s")
                    break
        finally:
            gc.unfreeze()

        # 4. What ours decoded: DCT scales used, images through the Pillow fallback.
        dct_scales: dict[str, dict[int, int]] = {}
        non_jpeg: dict[str, int] = {}
        for mode in MODES:
            native = NativePrepared(files, mode, work, max(thread_counts), decode_only=False)
            stats = native.stats()
            dct_scales[mode] = {int(k): int(v) for k, v in sorted(stats.dct_scales.items())}
            non_jpeg[mode] = stats.non_jpeg

    return Results(
        images=len(files), excluded=excluded, skipped=skipped, measurements=[m for m, _ in jobs],
        dct_scales=dct_scales, non_jpeg=non_jpeg, rounds=rounds, seconds_total=time.perf_counter() - started,
        load_average=(load_before, _load_average()),
    )
