"""Run logs: console lines in the Graphcore app's formats, a tqdm bar on terminals, JSONL + CSV metrics files, and
optional TensorBoard / wandb sinks.

Console lines (parsed by users' scripts, so their wording is fixed):
``... loss: 1.2345 ... throughput: 512.3 samples/sec`` per log interval and ``validation accuracy: 63.25 %`` per
validation. Only rank 0 writes anything; other ranks get a `RunLogger` with ``enabled=False``.
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any, Mapping, TextIO

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
#: Columns of metrics.csv; a record's missing fields are left empty.
CSV_COLUMNS = ("time", "split", "weights", "epoch", "step", "samples", "loss", "accuracy", "lr", "throughput",
               "data_wait")


def _use_bar(mode: str, stream: TextIO) -> bool:
    if mode == "bar":
        return True
    if mode == "lines":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """A tqdm bar over one epoch's steps on a terminal; nothing otherwise (the log lines carry the progress)."""

    def __init__(self, total: int, description: str, *, mode: str = "auto", enabled: bool = True,
                 initial: int = 0) -> None:
        self.bar: Any = None
        if enabled and _use_bar(mode, sys.stderr):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=description, unit="step", dynamic_ncols=True,
                            leave=False, file=sys.stderr)

    def update(self, steps: int = 1, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunLogger:
    """Writes metric records to the run folder (and TensorBoard/wandb when asked) and prints lines, on rank 0."""

    def __init__(self, run_dir: Path | None, *, enabled: bool = True, tensorboard: bool = False, wandb: bool = False,
                 wandb_project: str = "ipu_cnn", config: Mapping[str, Any] | None = None, append: bool = False) -> None:
        self.enabled = enabled and run_dir is not None
        self.run_dir = run_dir
        self._jsonl: IO[str] | None = None
        self._csv: Any = None
        self._csv_file: IO[str] | None = None
        self._tb: Any = None
        self._wandb: Any = None
        self.start = time.time()
        if not self.enabled:
            return
        assert run_dir is not None
        run_dir.mkdir(parents=True, exist_ok=True)
        mode = "a" if append else "w"
        self._jsonl = open(run_dir / METRICS_JSONL, mode, encoding="utf-8")
        csv_path = run_dir / METRICS_CSV
        new_csv = not (append and csv_path.exists())
        self._csv_file = open(csv_path, mode if not new_csv else "w", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if new_csv:
            self._csv.writeheader()
        if tensorboard:
            self._tb = self._open_tensorboard(run_dir)
        if wandb:
            self._wandb = self._open_wandb(run_dir, wandb_project, config)

    @staticmethod
    def _open_tensorboard(run_dir: Path) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("--tensorboard: the tensorboard package is not installed (pip install tensorboard); "
                          "continuing without it", stacklevel=3)
            return None
        return SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    @staticmethod
    def _open_wandb(run_dir: Path, project: str, config: Mapping[str, Any] | None) -> Any:
        try:
            import wandb  # type: ignore[import-not-found]
        except ImportError:
            warnings.warn("--wandb: the wandb package is not installed (pip install wandb); continuing without it",
                          stacklevel=3)
            return None
        kwargs: dict[str, Any] = {"project": project, "dir": str(run_dir), "name": run_dir.name,
                                  "config": dict(config or {})}
        try:
            return wandb.init(**kwargs)
        except Exception as error:  # not logged in, no network: keep the data, sync later with `wandb sync`
            warnings.warn(f"wandb online init failed ({error}); logging offline under {run_dir}", stacklevel=3)
            return wandb.init(mode="offline", **kwargs)

    def print(self, line: str) -> None:
        """Print a console line (rank 0 only), without breaking a tqdm bar."""
        if not self.enabled:
            return
        try:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stdout)
        except ImportError:
            print(line)
        sys.stdout.flush()

    def record(self, record: Mapping[str, Any]) -> None:
        """Append one metrics record to the JSONL and CSV files and the optional sinks."""
        if not self.enabled:
            return
        row = {"time": round(time.time() - self.start, 3), **record}
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        assert self._jsonl is not None and self._csv is not None and self._csv_file is not None
        self._jsonl.write(json.dumps(clean) + "\n")
        self._jsonl.flush()
        self._csv.writerow(clean)
        self._csv_file.flush()
        step = int(record.get("step", 0))
        prefix = str(record.get("split", "train"))
        if record.get("weights") not in (None, "trained"):
            prefix += f"_{record['weights']}"
        scalars = {f"{prefix}/{k}": v for k, v in record.items()
                   if k in ("loss", "accuracy", "lr", "throughput", "data_wait") and isinstance(v, (int, float))}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        for f in (self._jsonl, self._csv_file):
            if f is not None:
                f.close()
        self._jsonl = self._csv_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
