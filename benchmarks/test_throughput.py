"""One core, train and eval: ours, the region-decode floor, and every peer on the same in-memory files.

Groups "train, one core" and "eval, one core"; the terminal summary prints images/s and ours ÷ each peer. Run with
``pytest benchmarks/ --benchmark-enable`` (see conftest.py for inputs and settings).
"""
from __future__ import annotations

import pytest

from ipu_cnn.benchmark.peers import MODES, PIPELINES


@pytest.mark.parametrize("name", [p.name for p in PIPELINES])
@pytest.mark.parametrize("mode", MODES)
def test_one_core(throughput, mode: str, name: str) -> None:
    """One pass of pipeline ``name`` over the corpus per round, single-threaded."""
    throughput.time(f"{mode}, one core", throughput.pipeline(name), mode)
