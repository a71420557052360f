"""The inference application, ``python -m ipu_cnn.inference``: benchmark (default), predict and export modes.

- ``benchmark``: throughput and latency on real, generated or synthetic data, on CPU, CUDA or IPU (PopTorch);
- ``predict PATH...``: top-k classes of image files and folders, with class names;
- ``export --format onnx|torchscript OUT``: a uint8-input graph with the normaliser inside, for serving.

See ``docs/serving.md`` for serving an exported model.
"""
from __future__ import annotations

from ipu_cnn.inference.cli import main

__all__ = ["main"]
