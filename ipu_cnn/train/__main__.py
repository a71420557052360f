"""``python -m ipu_cnn.train``: train a CNN (see ``--help``); with no arguments, the demo run.

Under ``torchrun --nproc-per-node N`` every process runs this; rank 0 logs and checkpoints.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Sequence

from ipu_cnn._cli import cpu_threads_per_process


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, train, and return the exit status (0 also after a SIGTERM/SIGINT checkpoint)."""
    from ipu_cnn.train.config import parse_config

    try:
        config = parse_config(argv)
    except SystemExit as stop:  # our config errors carry their message; argparse's have printed theirs already
        if not isinstance(stop.code, str):
            raise
        print(f"error: {stop.code}", file=sys.stderr)
        return 2
    threads = cpu_threads_per_process()
    if threads is not None and config["device"] in ("cpu", "auto"):
        import torch

        torch.set_num_threads(threads)
    from ipu_cnn.train.run import train

    try:
        train(config)
    except (RuntimeError, ValueError, OSError) as error:
        if not _raised_by_us(error) or os.environ.get("IPU_CNN_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _raised_by_us(error: BaseException) -> bool:
    """True for errors raised by ipu_cnn's own code, whose messages say what to do: printed as one line. Errors
    from inside torch or other libraries keep their traceback (IPU_CNN_TRACEBACK=1 shows it for ours too)."""
    frames = traceback.extract_tb(error.__traceback__)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(package + os.sep)


if __name__ == "__main__":
    raise SystemExit(main())
