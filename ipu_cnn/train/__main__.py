"""``python -m ipu_cnn.train``: train a CNN (see ``--help``); with no arguments, the demo run.

Under ``torchrun --nproc-per-node N`` every process runs this; rank 0 logs and checkpoints.
"""
from __future__ import annotations

from typing import Sequence

from ipu_cnn import _cli


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, train, and return the exit status (0 also after a SIGTERM/SIGINT checkpoint)."""
    from ipu_cnn.train.config import parse_config

    try:
        options = parse_config(argv)
    except SystemExit as stop:  # our config errors carry their message; argparse's have printed theirs already
        return _cli.config_error_status(stop)
    threads = _cli.cpu_threads_per_process()
    if threads is not None and options.device in ("cpu", "auto"):
        import torch

        torch.set_num_threads(threads)
    from ipu_cnn.train.run import train

    def run() -> int:
        train(options)
        return 0

    return _cli.present_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
