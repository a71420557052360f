"""Entry point of the inference application: pick the mode, parse its options, run it, turn our errors into one
line and an exit status (`ipu_cnn._cli.present_errors`, shared with training)."""
from __future__ import annotations

import sys
from typing import Sequence

from ipu_cnn import _cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run one invocation; returns the exit status (0 done, 1 predict skipped unreadable images, 2 an error)."""
    from ipu_cnn.inference.config import parse_options

    options = parse_options(sys.argv[1:] if argv is None else argv)
    threads = _cli.cpu_threads_per_process()
    if threads is not None and options.device in ("cpu", "auto"):
        import torch

        torch.set_num_threads(threads)

    def run() -> int:
        if options.mode == "predict":
            from ipu_cnn.inference.predict import run_predict

            return run_predict(options)
        if options.mode == "export":
            from ipu_cnn.inference.export import run_export

            run_export(options)
            return 0
        from ipu_cnn.inference.benchmark import run_benchmark

        run_benchmark(options)
        return 0

    return _cli.present_errors(run)
