"""The resampler alone, on the SIMD path this process runs, over the geometries the one-core benchmarks resize.

Each photo of the corpus is decoded once (full frame, RGBX as libjpeg hands the pipeline its regions), then every
round resizes all of them with ``_C.resize``: "train" the box and flip of ``TrainTransform(224)`` (the native sampler,
seed 0), "eval" torchvision's ``Resize(256)`` + ``CenterCrop(224)`` as one box (the taps of the windowed resize the
pipeline runs). The resampler's path is chosen once per process, so compare paths in separate runs::

    pytest benchmarks/test_resample.py --benchmark-enable
    IPU_CNN_RESAMPLE_ISA=avx2 pytest benchmarks/test_resample.py --benchmark-enable   # any of _C.simd_paths()

Here each resize reads its photo from memory (the photos together are far larger than the caches); inside the
pipeline the decoder has just written the region, and the same resizes with the photo in cache took about half as
long (docs/performance.md, "The VNNI resampler").
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from ipu_cnn import _C
from ipu_cnn.data import TrainTransform
from ipu_cnn.data.reference import eval_box

FILTERS = {"bilinear": 0, "bicubic": 1}


@pytest.fixture(scope="module")
def photos(corpus) -> list[np.ndarray]:
    """The corpus decoded once, as (H, W, 4) uint8 (the fourth byte 0, as libjpeg's RGBX)."""
    out = []
    for blob in corpus.blobs:
        with Image.open(io.BytesIO(blob)) as im:
            rgb = np.asarray(im.convert("RGB"))
        rgbx = np.zeros(rgb.shape[:2] + (4,), np.uint8)
        rgbx[..., :3] = rgb
        out.append(rgbx)
    return out


def _jobs(photos: list[np.ndarray], mode: str) -> list[tuple[np.ndarray, tuple[float, ...], bool]]:
    crop = TrainTransform(224).native()
    jobs = []
    for i, px in enumerate(photos):
        h, w = px.shape[:2]
        if mode == "train":
            box, flip = _C.sample_crop(crop, w, h, 0, 0, i)
        else:
            box, flip = eval_box(w, h, 224, 256), False
        jobs.append((px, tuple(float(v) for v in box), bool(flip)))
    return jobs


@pytest.mark.parametrize("interpolation", list(FILTERS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_resize_alone(benchmark, photos: list[np.ndarray], mode: str, interpolation: str) -> None:
    """One round: every photo's resize to 224x224 (pytest-benchmark's time is per round, i.e. per len(photos))."""
    jobs, filt = _jobs(photos, mode), FILTERS[interpolation]

    def run() -> None:
        for px, box, flip in jobs:
            _C.resize(px, box, 224, 224, filt, flip)

    benchmark.group = f"resize alone, {mode}, {interpolation}"
    benchmark.extra_info.update(path=_C.simd_path(), resizes=len(jobs),
                                cap=os.environ.get("IPU_CNN_RESAMPLE_ISA", ""))
    benchmark.pedantic(run, rounds=int(os.environ.get("IPU_CNN_BENCH_ROUNDS", "5")), warmup_rounds=1, iterations=1)
    if benchmark.enabled and benchmark.stats is not None:
        print(f"\n{mode} {interpolation} on {_C.simd_path()}: "
              f"{float(benchmark.stats.stats.min) / len(jobs) * 1e6:.1f} us a resize (fastest round)")
