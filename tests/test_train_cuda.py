"""CUDA smoke runs (skipped without a GPU): AMP float16 with dynamic loss scaling and bfloat16, channels_last,
pinned non-blocking copies from host batches, and device-made synthetic batches."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_train_e2e import ColourImages  # noqa: I001

from ipu_cnn.batch_sources import HostBatches
from ipu_cnn.train import config_from_mapping, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch)")]


@pytest.mark.parametrize("half_dtype", ["float16", "bfloat16"])
def test_cuda_amp_run_learns(tmp_path: Path, half_dtype: str) -> None:
    loaders = (HostBatches(ColourImages(256), 32, seed=0, pin_memory=True),
               HostBatches(ColourImages(64, seed=1), 32, shuffle=False, drop_last=False, pin_memory=True), 4,
               ["r", "g", "b", "y"])
    config = config_from_mapping({"data": "synthetic", "model": "resnet18", "image_size": 32, "epoch": 3,
                                  "micro_batch_size": 32, "lr": 0.05, "precision": "16.16", "half_dtype": half_dtype,
                                  "device": "cuda", "output_dir": str(tmp_path), "run_name": half_dtype,
                                  "progress": "lines", "weight_avg_strategy": "exponential"})
    summary = train(config, loaders=loaders)
    assert summary["validation"]["accuracy"] > 60.0
    ckpt = torch.load(summary["checkpoint"], weights_only=False)
    assert (ckpt["scaler"] is not None) == (half_dtype == "float16")
    assert all(v.dtype != torch.float16 for v in ckpt["model"].values())  # float32 master weights


def test_cuda_synthetic_and_generated_data(tmp_path: Path) -> None:
    for data in ("synthetic", "generated"):
        config = config_from_mapping({"data": data, "model": "resnet18", "image_size": 64, "epoch": 1,
                                      "micro_batch_size": 32, "generated_samples": 256, "num_classes": 10,
                                      "precision": "16.32", "device": "cuda", "output_dir": str(tmp_path),
                                      "run_name": data, "progress": "lines", "plot": False})
        summary = train(config)
        assert summary["step"] == 8 and not summary["stopped"]
