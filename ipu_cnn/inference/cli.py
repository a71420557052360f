"""Entry point of the inference application: pick the mode, parse its options, run it, turn our errors into one
line and an exit status."""
from __future__ import annotations

import os
import sys
import traceback
from typing import Sequence

from ipu_cnn._cli import cpu_threads_per_process




def _raised_by_us(error: BaseException) -> bool:
    """True for errors raised in ipu_cnn's own code, whose messages say what to do: printed as one line. Errors from
    inside torch or other libraries keep their traceback (IPU_CNN_TRACEBACK=1 shows it for ours too)."""
    frames = traceback.extract_tb(error.__traceback__)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(package + os.sep)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one invocation; returns the exit status (0 done, 1 predict skipped unreadable images, 2 an error)."""
    from ipu_cnn.inference.config import parse_options

    options = parse_options(sys.argv[1:] if argv is None else argv)
    threads = cpu_threads_per_process()
    if threads is not None and options["device"] in ("cpu", "auto"):
        import torch

        torch.set_num_threads(threads)
    try:
        if options["mode"] == "predict":
            from ipu_cnn.inference.predict import run_predict

            return run_predict(options)
        if options["mode"] == "export":
            from ipu_cnn.inference.export import run_export

            run_export(options)
            return 0
        from ipu_cnn.inference.benchmark import run_benchmark

        run_benchmark(options)
        return 0
    except (RuntimeError, ValueError, OSError) as error:
        if not _raised_by_us(error) or os.environ.get("IPU_CNN_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
