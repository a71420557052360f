"""Graceful stops: SIGTERM (preemption) and SIGINT (Ctrl-C) finish the current step, checkpoint, and exit cleanly."""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the training loop checks after each step; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            self.restore()
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = name
        print(f"received {name}: finishing the current step, then writing a checkpoint (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    def install(self) -> StopRequest:
        """Install the handlers (only possible from the main thread; elsewhere this does nothing)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()
