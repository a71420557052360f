"""Process groups: torchrun (torch.distributed: gloo on CPU, NCCL on CUDA) and poprun (popdist) set-up and reductions.

Everything the training loop needs from distribution goes through one `DistContext`: who am I (rank, local rank,
world size), am I the one that logs and checkpoints (``is_main``), sum these tensors over ranks, gather these Python
objects, agree on a stop request. A single process gets the same object with ``world_size == 1``, whose methods are
no-ops, so the loop has no ``if distributed`` branches.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """This process's place in the job, and the collectives the training loop uses."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "none", "torchrun" or "poprun"
    backend: str | None = None  # torch.distributed backend, when one is initialised
    _flag_group: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """True on the process that logs, plots and writes checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def uses_torch_distributed(self) -> bool:
        return self.backend is not None

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks in place (and return it); a no-op for one process."""
        if self.uses_torch_distributed and self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        elif self.launcher == "poprun" and self.world_size > 1:
            tensor.copy_(_horovod_sum(tensor))
        return tensor

    def any_flag(self, flag: bool) -> bool:
        """True if `flag` is true on any rank: how a stop request seen by one rank stops all of them at one step.

        Uses a gloo group on the host, so on CUDA it does not synchronise the device.
        """
        if not (self.uses_torch_distributed and self.world_size > 1):
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self._flag_group)
        return bool(value[0])

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (picklable objects; e.g. RNG states for a checkpoint)."""
        if not (self.uses_torch_distributed and self.world_size > 1):
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._flag_group)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.uses_torch_distributed and self.world_size > 1:
            dist.barrier(group=self._flag_group)

    def close(self) -> None:
        """Tear down the process group (torchrun), so the job exits without warnings."""
        if self.uses_torch_distributed and dist.is_initialized():
            dist.destroy_process_group()
            self.backend = None


def _horovod_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over popdist instances with Horovod, as the Graphcore app did (horovod ships with the Poplar SDK)."""
    try:
        import horovod.torch as hvd  # type: ignore[import-not-found]
    except ImportError as error:
        raise RuntimeError("reducing metrics across poprun instances needs horovod (it ships with the Poplar SDK's "
                           "Python wheels): pip install it from the SDK, or run a single instance") from error
    return hvd.allreduce(tensor.cpu(), op=hvd.Sum).to(tensor.device)


def under_torchrun() -> bool:
    """True when started by torchrun (or any launcher that sets the torch.distributed environment variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def under_poprun() -> bool:
    """True when started by Graphcore's poprun (popdist's environment is set)."""
    if not any(k.startswith("POPDIST_") for k in os.environ):
        return False
    try:
        import popdist  # type: ignore[import-not-found]
    except ImportError:
        return False
    return bool(popdist.isPopdistEnvSet())


def init_distributed(device_type: str, backend: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the job this process was launched into, if any, and return its `DistContext`.

    torchrun: initialises torch.distributed (``backend="auto"``: NCCL for CUDA, gloo otherwise) from the environment,
    pins CUDA to the local rank, and adds a gloo group for host-side flags and object gathers. poprun: popdist gives
    the instance index and count (and Horovod the reductions). Otherwise a single-process context.
    """
    if under_torchrun():
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if backend == "auto":
            backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        flag_group = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
        return DistContext(rank, world_size, local_rank, "torchrun", backend, flag_group)
    if device_type == "ipu" and under_poprun():
        import popdist  # type: ignore[import-not-found]

        popdist.init()
        try:
            import horovod.torch as hvd  # type: ignore[import-not-found]

            hvd.init()
        except ImportError:
            pass
        return DistContext(int(popdist.getInstanceIndex()), int(popdist.getNumInstances()), 0, "poprun", None)
    return DistContext()
