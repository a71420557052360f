"""The loader: batches of (uint8 images, int64 labels) as zero-copy tensors over a shared-memory ring.

A producer (a thread, or a child process with ``workers="process"``) decodes an epoch's batches with the native core
into ring slots, ``prefetch`` ahead; iterating yields views of those slots, which are reused once the next batch is
asked for (``copy=True`` returns owned tensors). For a given (seed, epoch) the batches are bit-identical whatever the
thread count, prefetch depth, worker mode, or a resume in the middle of the epoch.

Feeding a PopTorch model: build the loader with ``batch_size`` = the combined batch (micro batch x device iterations
x replicas x gradient accumulation) and pass each ``images, labels`` to the ``poptorch.trainingModel``; the loader is
a plain iterable with ``len()``, so no ``poptorch.DataLoader`` is needed.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from ipu_cnn.data._producer import DECODE_LIMITS, BatchReport, Plan, Producer
from ipu_cnn.data._ring import SharedRing
from ipu_cnn.data._worker import command_loop
from ipu_cnn.data.decode import DecodeError
from ipu_cnn.data.pixels import RawImages
from ipu_cnn.data.sampling import default_rank_world, num_batches, num_stream_batches
from ipu_cnn.data.transforms import EvalTransform, PadCropTransform, TrainTransform, Transform

log = logging.getLogger("ipu_cnn.data")

#: How often a waiting consumer checks that the producer is still alive (seconds).
_POLL_S = 0.1
#: The default longest wait for one batch (seconds): far beyond any healthy batch, short of a silent overnight hang.
DEFAULT_TIMEOUT_S = 600.0


class WorkerDiedError(RuntimeError):
    """The loader's producer (thread or child process) stopped without finishing the epoch."""


class WorkerTimeoutError(WorkerDiedError):
    """The loader's producer delivered no batch within the loader's ``timeout``: stopped, stuck, or far too slow. A
    WorkerDiedError too, so code that handles a lost producer handles this one."""


#: Why a producer that is alive and not stopped has delivered nothing.
_STUCK = ("it is alive, so it is blocked reading a file that never ends (a named pipe, a stalled network filesystem) "
          "or slower than the timeout")


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _process_state(pid: int, if_running: str = "it is alive") -> str:
    """What the OS says process pid is doing, as a clause: stopped, in uninterruptible I/O, exited, else if_running
    (running or sleeping). Read from /proc where there is one (Linux); elsewhere only alive or not is known."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return if_running if _pid_exists(pid) else "it has exited"
    if state in ("T", "t"):
        return f"it is stopped (state {state}: SIGSTOP, job control or a debugger); `kill -CONT {pid}` resumes it"
    if state == "D":
        return "it is alive but blocked in uninterruptible I/O (a hung network filesystem or device?)"
    if state in ("Z", "X"):
        return "it has exited"
    return if_running


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _paths_and_labels(dataset: Any) -> tuple[Any, np.ndarray]:
    if hasattr(dataset, "pixels") and hasattr(dataset, "labels"):  # held as raw pixels (CIFAR-10)
        return RawImages(dataset.pixels), np.ascontiguousarray(dataset.labels, dtype=np.int64)
    if hasattr(dataset, "sources") and hasattr(dataset, "labels"):  # TarShards: a sequence of shard members, kept as is
        return dataset.sources, np.ascontiguousarray(dataset.labels, dtype=np.int64)
    if hasattr(dataset, "paths") and hasattr(dataset, "labels"):
        return list(dataset.paths), np.ascontiguousarray(dataset.labels, dtype=np.int64)
    if hasattr(dataset, "samples"):
        paths, labels = zip(*dataset.samples) if len(dataset.samples) else ((), ())
        return [str(p) for p in paths], np.asarray(labels, dtype=np.int64)
    raise TypeError(
        f"the loader needs a dataset of image files (.paths and .labels, or .samples), got {type(dataset).__name__}; "
        "use ImageFolder, ImageNet, FileList, TarShards, GeneratedImages(...).train, or a dataset of raw pixels "
        "(.pixels and .labels, e.g. CIFAR10)"
    )


class _ThreadChannel:
    """The producer in a thread of this process."""

    def __init__(self, producer: Producer) -> None:
        self.commands: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=command_loop, args=(producer, self.commands.get, self.results.put),
                                       name="ipu_cnn-loader", daemon=True)
        self.thread.start()

    def send(self, msg: tuple) -> None:
        self.commands.put(msg)

    def recv(self, timeout: float | None) -> tuple | None:
        """The producer's next message, or None when none came within timeout seconds (None: wait for it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _remaining(deadline)
            try:
                return self.results.get(timeout=_POLL_S if left is None else max(0.0, min(_POLL_S, left)))
            except queue.Empty:
                if not self.thread.is_alive():
                    raise WorkerDiedError("the loader's producer thread stopped unexpectedly") from None
            if left is not None and left <= _POLL_S:
                return None

    def stalled(self, timeout: float) -> str:
        """Why no batch came within timeout seconds, for the consumer's error."""
        return (f"the loader's producer thread has not delivered a batch for {timeout:g} s; {_STUCK}. Raise the "
                "loader's timeout= (None waits forever) if batches are legitimately this slow")

    def close(self) -> None:
        if self.thread.is_alive():
            self.commands.put(("exit",))
            self.thread.join(timeout=60)


class _ProcessChannel:
    """The producer in a child process: a fresh interpreter running ipu_cnn.data._worker, so no threads or locks are
    inherited (forking a process that has threads is unsafe) and the user's main module is not re-run, as
    multiprocessing's spawn would. It gets the ring's descriptor and one end of a socket pair, nothing else."""

    def __init__(self, ring: SharedRing, paths: list[str] | RawImages, labels: np.ndarray,
                 transform: Transform | PadCropTransform, plan: Plan, num_threads: int | None) -> None:
        parent_sock, child_sock = socket.socketpair()
        # A fresh interpreter that imports this very ipu_cnn, wherever it came from, ahead of the working directory
        # (a source checkout there would otherwise shadow it); the working directory itself is kept for relative paths.
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        # It ends with this process, however that ends (see die_with_parent); the kernel's death signal is tied to
        # the thread that starts it, so it is armed only when that thread is the main one.
        on_main_thread = threading.current_thread() is threading.main_thread()
        bootstrap = (f"import sys; sys.path.insert(0, {package_parent!r}); "
                     f"from ipu_cnn.data._worker import process_main; "
                     f"process_main({child_sock.fileno()}, {ring.fd}, {os.getpid()}, {on_main_thread})")
        self.proc = subprocess.Popen([sys.executable, "-c", bootstrap], pass_fds=(child_sock.fileno(), ring.fd),
                                     stdin=subprocess.DEVNULL)
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        shape = (ring.slots, ring.batch_size, ring.height, ring.width)
        self.send(("init", shape, paths, labels, transform, plan, num_threads))

    def send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, ConnectionResetError):
            self._died()
        except OSError as e:
            self._lost(e, "sending it a command")

    def recv(self, timeout: float | None) -> tuple | None:
        """The worker's next message, or None when none came within timeout seconds (None: wait for it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _remaining(deadline)
            try:
                if self.conn.poll(_POLL_S if left is None else max(0.0, min(_POLL_S, left))):
                    return self.conn.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError):
                self._died()
            except OSError as e:
                self._lost(e, "waiting for a batch")
            if self.proc.poll() is not None:
                self._died()
            if left is not None and left <= _POLL_S:
                return None

    def stalled(self, timeout: float) -> str:
        """Why no batch came within timeout seconds, for the consumer's error: what state the worker is in."""
        pid = self.proc.pid
        return (f"the loader's worker process (pid {pid}) has not delivered a batch for {timeout:g} s; "
                f"{_process_state(pid, _STUCK)}. Raise the loader's timeout= (None waits forever) if batches are "
                "legitimately this slow")

    def _lost(self, error: OSError, doing: str) -> None:
        """An OS error on the connection itself (not the worker closing it): report it, and the worker's state."""
        pid = self.proc.pid
        state = _process_state(pid) if self.proc.poll() is None else f"it has exited with code {self.proc.returncode}"
        raise WorkerDiedError(f"lost the connection to the loader's worker process (pid {pid}) while {doing}: "
                              f"{type(error).__name__}: {error}; {state}") from error

    def _died(self) -> None:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            raise WorkerDiedError(
                f"the loader's worker process (pid {self.proc.pid}) closed its connection but has not exited; "
                f"{_process_state(self.proc.pid)}"
            ) from None
        raise WorkerDiedError(
            f"the loader's worker process died (exit code {code}); it was decoding batches for this loader. Out of "
            "memory or a crash in native code are the usual causes; workers='thread' runs in-process"
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.conn.send(("exit",))
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.conn.close()


def _pin(ring: SharedRing) -> bool:
    """Page-lock the ring so host-to-device copies can overlap compute; False when CUDA is unavailable."""
    if not torch.cuda.is_available():
        log.warning("pin_memory=True but CUDA is not available: the ring stays pageable")
        return False
    err = torch.cuda.cudart().cudaHostRegister(ring.address, ring.size, 0)
    if int(err) != 0:
        log.warning("cudaHostRegister of the loader ring failed (%s); copies will not overlap", err)
        return False
    return True


def _finalize(channel: Any, ring: SharedRing, pinned: bool) -> None:
    if channel is not None:
        channel.close()
    if pinned:
        torch.cuda.cudart().cudaHostUnregister(ring.address)
    ring.close()


class Loader:
    """Iterate a dataset of image files as batches of ``(images, labels)``.

    A dataset held as raw pixels (``.pixels`` (N, H, W, 3) uint8 and ``.labels``, e.g. `CIFAR10`) is taken the same
    way: its images are transformed, not decoded (`PadCropTransform`, `TrainTransform` or `EvalTransform`).

    ``images`` is a torch.uint8 tensor [B, 3, H, W] with channels_last strides, a view of a shared-memory ring slot
    that stays valid until the next batch is requested (``copy=True`` gives owned tensors); ``labels`` is int64 [B].
    ``last_indices`` holds the dataset indices of the batch just yielded. Call ``set_epoch(e)`` before each epoch.

    ``timeout`` is the longest, in seconds, that asking for a batch waits for the producer (None: forever). Past it,
    WorkerTimeoutError says how long and what state the producer is in (e.g. a worker process stopped by SIGSTOP);
    a producer that dies raises WorkerDiedError at once, whatever the timeout. The default, 600 s, is far beyond any
    healthy batch yet ends a stuck run instead of leaving it hanging silently.

    ``decode_limits`` passes the decoder's guards on to every sample (the keyword arguments of `decode_batch` of
    those names: ``max_pixels``, ``max_scans``, ``max_scan_blocks``, ``max_file_bytes``, ``strict``); unset ones keep
    `decode_batch`'s defaults. A dataset of very large photos, for instance, needs a higher ``max_pixels``.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        transform: Transform | PadCropTransform,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        num_threads: int | None = None,
        prefetch: int = 2,
        rank: int | None = None,
        world_size: int | None = None,
        on_error: str = "raise",
        workers: str = "thread",
        pin_memory: bool = False,
        copy: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        decode_limits: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(transform, (TrainTransform, EvalTransform, PadCropTransform)):
            raise TypeError(f"transform must be a TrainTransform or EvalTransform (or, for raw pixels, a "
                            f"PadCropTransform), got {type(transform).__name__}")
        if on_error not in ("raise", "replace"):
            raise ValueError(f"on_error must be 'raise' or 'replace', got {on_error!r}")
        if workers not in ("thread", "process"):
            raise ValueError(f"workers must be 'thread' or 'process', got {workers!r}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None (all available CPUs), got {num_threads}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, or None to wait forever, got {timeout}")
        limits = dict(decode_limits or {})
        unknown = sorted(set(limits) - set(DECODE_LIMITS))
        if unknown:
            raise ValueError(f"decode_limits: unknown {', '.join(unknown)}; the limits are {', '.join(DECODE_LIMITS)}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (then they come from torch.distributed, "
                             "popdist or the RANK / WORLD_SIZE environment)")
        if rank is None:
            rank, world_size = default_rank_world()
        assert world_size is not None
        self.paths, self.labels = _paths_and_labels(dataset)
        if not len(self.paths):
            raise ValueError("the dataset is empty")
        if isinstance(transform, PadCropTransform) and not isinstance(self.paths, RawImages):
            raise TypeError("PadCropTransform pads raw pixels to their own size; a dataset of image files needs a "
                            "TrainTransform")
        self.dataset = dataset
        self.transform = transform
        self.batch_size = batch_size
        self.copy = copy
        self.workers = workers
        self.timeout = None if timeout is None else float(timeout)
        stream = getattr(dataset, "stream_plan", None)  # TarShards(mode="stream"): whole shards per rank
        self.plan = Plan(len(self.paths), batch_size, int(seed), bool(shuffle), int(rank), int(world_size),
                         bool(drop_last), on_error, stream, tuple(sorted(limits.items())))
        if stream is not None:
            self._len = num_stream_batches(stream[0], batch_size, int(rank), int(world_size), bool(drop_last))
        else:
            self._len = num_batches(len(self.paths), batch_size, int(rank), int(world_size), bool(drop_last))
        h, w = transform.output_hw
        self._ring = SharedRing(prefetch + 2, batch_size, h, w)
        self._pinned = bool(pin_memory) and _pin(self._ring)
        producer = Producer(self.paths, self.labels, transform, self.plan, self._ring, num_threads)
        if workers == "thread":
            self._channel: Any = _ThreadChannel(producer)
        else:
            self._channel = _ProcessChannel(self._ring, self.paths, self.labels, transform, self.plan, num_threads)
        self._finalizer = weakref.finalize(self, _finalize, self._channel, self._ring, self._pinned)
        self.epoch = 0
        self._resume_at = 0  # first batch of the next iteration (mid-epoch resume)
        self._position = 0  # batches of the current epoch handed to the consumer
        self._generation = 0
        self.bad_samples: list[tuple[int, str, str]] = []
        self._bad_indices: set[int] = set()  # this epoch's bad samples, each reported once
        self._logged_bad: set[str] = set()
        self.last_indices = np.empty(0, dtype=np.int64)
        self.wait_time = 0.0  # seconds the consumer spent waiting for batches (for data-stall measurements)

    # --- sizes and epochs ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._len

    @property
    def num_samples(self) -> int:
        """Samples this rank yields per epoch."""
        if self.plan.drop_last:
            return self._len * self.batch_size
        if self.plan.stream is not None:
            return sum(len(b) for b in self.plan.batches(0))
        return len(range(self.plan.rank, self.plan.num_samples, self.plan.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and crops the next iteration produces (a pending resume of it is kept)."""
        if epoch != self.epoch:
            self._resume_at = 0
            self._position = 0
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands: loading it into a fresh loader yields exactly the remaining batches of the epoch."""
        p = self.plan
        state = {"epoch": self.epoch, "batch": self._resume_at or self._position, "seed": p.seed,
                 "num_samples": p.num_samples, "batch_size": p.batch_size, "rank": p.rank, "world_size": p.world_size,
                 "shuffle": p.shuffle, "drop_last": p.drop_last}
        if p.stream is not None:  # stream mode's order also depends on the shard sizes and the buffer
            state["stream_buffer"] = p.stream[1]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        p = self.plan
        mine = {"num_samples": p.num_samples, "batch_size": p.batch_size, "world_size": p.world_size, "seed": p.seed,
                "shuffle": p.shuffle, "drop_last": p.drop_last}
        if p.stream is not None or "stream_buffer" in state:
            mine["stream_buffer"] = None if p.stream is None else p.stream[1]
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            raise ValueError(f"loader state does not match this loader (saved, current): {diff}; resuming would not "
                             "reproduce the same batches")
        if not 0 <= int(state["batch"]) <= self._len:
            raise ValueError(f"loader state batch {state['batch']} is outside this epoch's {self._len} batches")
        self.epoch = int(state["epoch"])
        self._resume_at = int(state["batch"])

    # --- iteration ---------------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self._finalizer.alive:
            raise RuntimeError("this loader is closed")
        self._generation += 1
        gen, epoch, first = self._generation, self.epoch, self._resume_at
        self._resume_at = 0
        if first == 0:
            self.bad_samples = []
            self._bad_indices = set()
        self._position = first
        self._channel.send(("start", gen, epoch, first, list(range(self._ring.slots))))
        return self._iterate(gen, first)

    def _iterate(self, gen: int, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        held: int | None = None  # the slot behind the batch the consumer holds; freed when it asks for the next
        for _ in range(first, self._len):
            if held is not None:
                self._channel.send(("free", gen, held))
                held = None
            report = self._next_report(gen)
            for index, path, reason in report.bad:
                if index in self._bad_indices:  # met again, e.g. drawn as another bad sample's substitute
                    continue
                self._bad_indices.add(index)
                self.bad_samples.append((index, path, reason))
                if path not in self._logged_bad:
                    self._logged_bad.add(path)
                    log.warning("bad sample %d replaced (on_error='replace'): %s: %s", index, path, reason)
            if report.error is not None:
                raise DecodeError(*report.error)
            slot, n = report.slot, report.count
            self.last_indices = self._ring.indices[slot][:n].copy()
            labels = torch.from_numpy(self._ring.labels[slot][:n].copy())
            images = torch.from_numpy(self._ring.images[slot][:n]).permute(0, 3, 1, 2)
            if self.copy:
                images = images.clone(memory_format=torch.channels_last)
                self._channel.send(("free", gen, slot))
            else:
                held = slot
            self._position = report.batch + 1
            yield images, labels

    def _next_report(self, gen: int) -> BatchReport:
        t0 = time.perf_counter()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            left = _remaining(deadline)
            msg = self._channel.recv(None if left is None else max(0.0, left))
            if msg is None:
                assert self.timeout is not None
                raise WorkerTimeoutError(self._channel.stalled(self.timeout))
            if msg[1] != gen:
                continue  # from an abandoned iteration
            if msg[0] == "failed":
                raise WorkerDiedError(f"the loader's producer failed:\n{msg[2]}")
            self.wait_time += time.perf_counter() - t0
            return msg[2]

    def close(self) -> None:
        """Stop the producer and release the ring. Tensors yielded without copy=True must not be used afterwards."""
        self._finalizer()

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        p = self.plan
        return (f"Loader({len(self.paths)} samples, batch_size={p.batch_size}, {len(self)} batches, "
                f"rank {p.rank}/{p.world_size}, workers={self.workers!r}, transform={self.transform})")

