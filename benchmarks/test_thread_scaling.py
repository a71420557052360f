"""Ours at 1, 2, 4, ... threads up to the CPUs available (decode_batch num_threads=k), train and eval.

Groups "train, ours thread scaling" and "eval, ours thread scaling"; the terminal summary prints the speed-up over one
thread (the issue's target: 2 threads >= 1.6x one thread on 2 cores). Run with
``pytest benchmarks/ --benchmark-enable``.
"""
from __future__ import annotations

import pytest

from ipu_cnn import _C
from ipu_cnn.benchmark.cli import parse_threads
from ipu_cnn.benchmark.peers import MODES


@pytest.mark.parametrize("threads", parse_threads("all", _C.available_cpus()))
@pytest.mark.parametrize("mode", MODES)
def test_ours_threads(throughput, mode: str, threads: int) -> None:
    """One pass of ours over the corpus per round with ``threads`` worker threads."""
    throughput.time(f"{mode}, ours thread scaling", throughput.pipeline("ours"), mode, threads)
