"""Host throughput benchmark: ours (decode_batch) against the region-decode floor and the loaders people use.

Run it as ``python -m ipu_cnn.benchmark [FOLDER]`` (see ``--help``); ``benchmarks/`` holds the same comparisons as
pytest-benchmark suites. The pieces: ``images`` (inputs), ``peers`` (the pipelines), ``runner`` (timing), ``report``
(table, targets, JSON), ``cli``.
"""
from __future__ import annotations

from ipu_cnn.benchmark.cli import main

__all__ = ["main"]
