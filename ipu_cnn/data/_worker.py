"""The producer's command loop, run by a thread of the training process or by the loader's child process.

Commands (consumer -> producer): ("start", generation, epoch, first_batch, free_slots), ("free", generation, slot),
("exit",). Messages back: ("ready", generation, BatchReport) and ("failed", generation, text). A new "start"
abandons the batches of the previous generation; stale "free" messages are ignored. The producer writes one slot at
a time and only slots it was given, so the consumer never reads a slot that is being written.
"""
from __future__ import annotations

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


def process_main(sock_fd: int, ring_fd: int) -> None:
    """Entry point of the loader's child process, given its end of the socket pair and the ring's descriptor."""
    from multiprocessing.connection import Connection

    from ipu_cnn.data._ring import SharedRing

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

