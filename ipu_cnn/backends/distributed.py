"""Process groups: torchrun (torch.distributed: gloo on CPU, NCCL on CUDA) and poprun (popdist) set-up and reductions.

Everything the training loop needs from distribution goes through one `DistContext`: who am I (rank, local rank,
world size), am I the one that logs and checkpoints (``is_main``), sum these tensors over ranks, gather these Python
objects, agree on a stop request. A single process gets the same object with ``world_size == 1``, whose methods are
no-ops, so the loop has no ``if distributed`` branches.

Under poprun the collectives are Horovod's (it ships with the Poplar SDK and is what Graphcore's application used):
sums are ``allreduce``, object gathers pickle each instance's object into a byte tensor and ``allgather`` those (one
size gather first, since instances' objects differ in length), so the figures, validation results and checkpoint
contents of every instance reach instance 0, which alone writes files.
"""
from __future__ import annotations

import datetime
import os
import pickle
from dataclasses import dataclass, field
from types import ModuleType
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
    #: poprun: IPU replicas this instance drives (popdist's local replica count), and over all instances
    local_replicas: int | None = None
    total_replicas: int | None = None
    #: poprun: the ``horovod.torch`` module (or a stand-in with ``allreduce``, ``allgather`` and ``Sum``)
    hvd: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """True on the process that logs, plots and writes checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def uses_torch_distributed(self) -> bool:
        return self.backend is not None

    @property
    def uses_horovod(self) -> bool:
        """True for a poprun job of several instances (reductions and gathers go through Horovod)."""
        return self.launcher == "poprun" and self.world_size > 1

    def _horovod(self) -> Any:
        if self.hvd is None:
            self.hvd = import_horovod()
        return self.hvd

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks in place (and return it); a no-op for one process."""
        if self.uses_torch_distributed and self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        elif self.uses_horovod:
            hvd = self._horovod()
            tensor.copy_(hvd.allreduce(tensor.detach().cpu(), op=hvd.Sum).to(tensor.device))
        return tensor

    def any_flag(self, flag: bool) -> bool:
        """True if `flag` is true on any rank: how a stop request seen by one rank stops all of them at one step.

        Uses a gloo group on the host, so on CUDA it does not synchronise the device.
        """
        if self.uses_horovod:
            return bool(self.all_reduce_sum(torch.tensor([1 if flag else 0], dtype=torch.int64))[0] > 0)
        if not (self.uses_torch_distributed and self.world_size > 1):
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self._flag_group)
        return bool(value[0])

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (picklable objects; e.g. RNG states for a checkpoint)."""
        if self.uses_horovod:
            return horovod_gather_objects(self._horovod(), obj)
        if not (self.uses_torch_distributed and self.world_size > 1):
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._flag_group)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.uses_horovod:
            self.all_reduce_sum(torch.zeros(1))  # completes only once every instance has contributed
        elif self.uses_torch_distributed and self.world_size > 1:
            dist.barrier(group=self._flag_group)

    def close(self) -> None:
        """Tear down the process group (torchrun), so the job exits without warnings."""
        if self.uses_torch_distributed and dist.is_initialized():
            dist.destroy_process_group()
            self.backend = None


HOROVOD_MISSING = ("reducing and gathering across poprun instances needs horovod (it ships with the Poplar SDK's "
                   "Python wheels): pip install it from the SDK, or run a single instance")


def import_horovod() -> ModuleType:
    """``import horovod.torch``, or a `RuntimeError` that says where it comes from."""
    try:
        import horovod.torch as hvd  # type: ignore[import-not-found]
    except ImportError as error:
        raise RuntimeError(HOROVOD_MISSING) from error
    return hvd


def horovod_gather_objects(hvd: Any, obj: Any) -> list[Any]:
    """Every instance's `obj`, in instance order, through Horovod: each pickles its object into a uint8 tensor;
    ``allgather`` of the lengths, then of the bytes (concatenated along the first dimension, which Horovod allows
    to differ between instances), then each slice is unpickled."""
    payload = torch.frombuffer(bytearray(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), dtype=torch.uint8)
    sizes = [int(n) for n in hvd.allgather(torch.tensor([payload.numel()], dtype=torch.int64)).tolist()]
    data = hvd.allgather(payload)
    out: list[Any] = []
    start = 0
    for size in sizes:
        out.append(pickle.loads(data[start:start + size].numpy().tobytes()))
        start += size
    return out


def poprun_context(popdist: Any, hvd: Any | None) -> DistContext:
    """This instance's `DistContext` under poprun, from popdist's public API: instance index and count, and the
    replicas poprun gave this instance (``getNumLocalReplicas``) and the whole job. Several instances need Horovod
    for the collectives; a missing one is an error now, not at the first reduction."""
    instances = int(popdist.getNumInstances())
    if instances > 1 and hvd is None:
        raise RuntimeError(HOROVOD_MISSING)
    local_rank = int(hvd.local_rank()) if hvd is not None and hasattr(hvd, "local_rank") else 0  # on its host
    return DistContext(int(popdist.getInstanceIndex()), instances, local_rank, "poprun", None,
                       local_replicas=int(popdist.getNumLocalReplicas()),
                       total_replicas=int(popdist.getNumTotalReplicas()), hvd=hvd)


def popdist_replica_note(asked: int, dist: DistContext) -> str | None:
    """The line that says poprun's replica count replaces ``--replicas`` when the two differ (else None)."""
    if dist.launcher != "poprun" or dist.total_replicas is None or dist.total_replicas == asked:
        return None
    return (f"--replicas {asked}: poprun runs {dist.total_replicas} replicas ({dist.local_replicas} per instance x "
            f"{dist.world_size} instances); using poprun's (set them with poprun --num-replicas)")


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
    the instance index and count and its replicas (and Horovod the reductions and gathers). Otherwise a
    single-process context.
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
            hvd: Any = import_horovod()
            hvd.init()
        except RuntimeError:
            hvd = None
        return poprun_context(popdist, hvd)
    return DistContext()
