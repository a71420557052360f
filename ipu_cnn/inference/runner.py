"""Running a model for inference on a backend: uint8 host batches in, float32 logits on the host out.

`Runner` is the same for every device: the model is prepared for evaluation by the backend (`ipu_cnn.backends`:
CPU/CUDA with ``torch.inference_mode`` and autocast for 16.16, IPUs with ``poptorch.inferenceModel``; PopTorch is
imported only when ``--device ipu`` is asked for), and each call is one `Backend.predict`. A call takes a whole host
batch and returns when its logits are on the host, so the time of a call is the batch's latency.
"""
from __future__ import annotations

import dataclasses
import sys

import torch
from torch import nn

from ipu_cnn.backends import (
    Backend,
    DistContext,
    IpuSettings,
    create_backend,
    ignored_ipu_options,
    resolve_device_type,
)
from ipu_cnn.inference.config import InferenceOptions


class Runner:
    """A model on one backend, in eval mode."""

    def __init__(self, backend: Backend, model: nn.Module) -> None:
        self.backend = backend
        self.device = backend.device
        self.model = backend.prepare_model(model.eval(), training=False).eval()

    @property
    def host_batch(self) -> int | None:
        """Samples one call takes (None: any number; on IPUs ``micro x device iterations x replicas``)."""
        return self.backend.fixed_batch

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (float32, host) of uint8 images ``[B, 3, H, W]``."""
        return self.backend.predict(self.model, images)

    def compile(self, images: torch.Tensor) -> None:
        """Compile the model for host batches shaped like `images` without running it (``--compile-only``; IPU
        only: the parser refuses it elsewhere)."""
        compile_inference = getattr(self.backend, "compile_inference", None)
        if compile_inference is None:
            raise RuntimeError(f"--compile-only needs --device ipu (the {self.backend.name} backend runs the model "
                               "eagerly)")
        compile_inference(self.model, images)

    def close(self) -> None:
        """Release the device."""
        self.backend.close()


def ipu_settings(options: InferenceOptions, *, synthetic_data: bool = False) -> IpuSettings:
    """The PopTorch settings of an inference invocation (the training-only ones keep their defaults); ``--profile``
    without a folder writes into ``./profile``."""
    profile = None if options.profile is None else (options.profile or "profile")
    return IpuSettings(replicas=options.replicas, device_iterations=options.device_iterations, seed=options.seed,
                       precision=options.precision, half_partial=options.half_partial,
                       available_memory_proportion=options.available_memory_proportion,
                       executable_cache_dir=options.executable_cache_dir, synthetic_data=synthetic_data,
                       pipeline_splits=tuple(options.pipeline_splits or ()),
                       exchange_memory_target=options.exchange_memory_target, num_io_tiles=options.num_io_tiles,
                       offline_target_ipu_version=options.offline_target_ipu_version,
                       compile_only=options.compile_only, profile_dir=profile)


def create_runner(model: nn.Module, options: InferenceOptions, micro_batch_size: int, *, synthetic_data: bool = False,
                  dist: DistContext | None = None) -> Runner:
    """The runner for ``options.device`` (``auto``, ``cpu``, ``cuda`` or ``ipu``); ``--device ipu`` without
    PopTorch is the backends' clear `RuntimeError`. `synthetic_data`: the benchmark's device-made input (an IPU is
    then told to make it itself; CPU/CUDA are fed a batch made on them once)."""
    device_type = resolve_device_type(options.device)
    dist = dist or DistContext()
    if dist.is_main:
        for line in ignored_ipu_options(options, device_type):
            print(line, file=sys.stderr)
    # under poprun, each instance drives popdist's local replica count, whatever --replicas says
    replicas = dist.local_replicas or options.replicas
    settings = dataclasses.replace(ipu_settings(options, synthetic_data=synthetic_data), replicas=replicas)
    # "cuda" without an index is the current device, which init_distributed pins to the local rank under torchrun
    backend = create_backend(device_type, dist, precision=options.precision,
                             half_dtype=options.half_dtype, ipu=settings,
                             eval_batch_size=micro_batch_size * options.device_iterations * replicas)
    return Runner(backend, model)
