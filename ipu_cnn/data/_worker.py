"""The producer's command loop, run by a thread of the training process or by the loader's child process.

Commands (consumer -> producer): ("start", generation, epoch, first_batch, free_slots), ("free", generation, slot),
("exit",). Messages back: ("ready", generation, BatchReport) and ("failed", generation, text). A new "start"
abandons the batches of the previous generation; stale "free" messages are ignored. The producer writes one slot at
a time and only slots it was given, so the consumer never reads a slot that is being written.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable

from ipu_cnn.data._producer import Producer

Message = tuple[Any, ...]


def command_loop(producer: Producer, recv: Callable[[], Message], send: Callable[[Message], None]) -> None:
    pending: Message | None = None
    while True:
        msg = pending if pending is not None else recv()
        pending = None
        if msg[0] == "exit":
            return
        if msg[0] != "start":
            continue  # a stale "free"
        _, gen, epoch, first, slots = msg
        free: deque[int] = deque(slots)

        def next_free_slot() -> int | None:
            nonlocal pending
            while not free:
                m = recv()
                if m[0] == "free":
                    if m[1] == gen:
                        free.append(m[2])
                elif m[0] in ("start", "exit"):
                    pending = m
                    return None
            return free.popleft()

        try:
            producer.run(epoch, first, next_free_slot, lambda report: send(("ready", gen, report)))
        except Exception:  # report it to the consumer, whose next batch raises it; keep serving commands
            send(("failed", gen, traceback.format_exc()))


#: How often the worker process checks that the training process is still there (seconds).
_PARENT_POLL_S = 0.5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _parent_alive(parent_pid: int, first_ppid: int) -> bool:
    """Whether the training process still exists: this process has not been re-parented, and the pid answers."""
    if os.getppid() != first_ppid:
        return False
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user (the pid was reused): re-parenting above is the reliable sign
    return True


def die_with_parent(parent_pid: int, use_pdeathsig: bool) -> None:
    """End this process as soon as the training process ``parent_pid`` is gone, however it ended (SIGKILL included),
    even while a thread is blocked in a read that never returns; an orphaned worker would otherwise decode on forever.

    On Linux the kernel sends SIGKILL at the parent's death (PR_SET_PDEATHSIG), when ``use_pdeathsig``: the kernel
    ties that signal to the parent *thread* that started this process, so the loader asks for it only when it was
    built on the main thread (which lives as long as the process). Always, a daemon thread checks every
    _PARENT_POLL_S whether the parent is still there: the fallback for other threads and systems, and for a parent
    that died before the signal was armed.
    """
    first_ppid = os.getppid()
    if use_pdeathsig and sys.platform.startswith("linux") and first_ppid == parent_pid:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl here: the watchdog below still ends the process
    if not _parent_alive(parent_pid, first_ppid):
        os._exit(1)

    def watch() -> None:
        while _parent_alive(parent_pid, first_ppid):
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="ipu_cnn-parent-watch", daemon=True).start()


def process_main(sock_fd: int, ring_fd: int, parent_pid: int, use_pdeathsig: bool) -> None:
    """Entry point of the loader's child process, given its end of the socket pair, the ring's descriptor, and the
    training process to live no longer than."""
    from multiprocessing.connection import Connection

    from ipu_cnn.data._ring import SharedRing

    die_with_parent(parent_pid, use_pdeathsig)
    conn = Connection(sock_fd)
    ring = None
    try:
        kind, shape, paths, labels, transform, plan, num_threads = conn.recv()
        if kind != "init":
            raise RuntimeError(f"loader worker: expected 'init', got {kind!r}")
        ring = SharedRing(*shape, fd=ring_fd)
        producer = Producer(paths, labels, transform, plan, ring, num_threads)
        command_loop(producer, conn.recv, conn.send)
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass  # the training process went away: nothing left to do
    finally:
        if ring is not None:
            ring.close()
        conn.close()
