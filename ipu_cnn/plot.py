"""``python -m ipu_cnn.plot RUN_DIR``: draw a run's loss, accuracy, learning rate and throughput against steps.

Reads ``RUN_DIR/metrics.jsonl`` (written by ``python -m ipu_cnn.train``) and writes ``RUN_DIR/metrics.png`` (or
``--output``). Training and validation curves share the loss and accuracy panels; averaged-weights validation is a
third curve when the run kept one.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (a missing or empty file is a `FileNotFoundError` / `ValueError`)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file; give the run folder that python -m ipu_cnn.train printed")
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path}:{number}: not a JSON line") from None
            # the last line of a killed run may be cut short: ignore it
    if not records:
        raise ValueError(f"{path}: no records yet")
    return records


def _series(records: list[dict[str, Any]], split: str, key: str, weights: str | None = None) -> tuple[list, list]:
    xs, ys = [], []
    for r in records:
        if r.get("split") != split or (weights is not None and r.get("weights", "trained") != weights):
            continue
        value = r.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(r.get("step", 0))
            ys.append(value)
    return xs, ys


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the four-panel plot of `run_dir`'s metrics to `output` (default ``run_dir/metrics.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    out = Path(output) if output else run_dir / PLOT_FILE
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    panels = [(axes[0][0], "loss", "loss"), (axes[0][1], "accuracy", "top-1 accuracy (%)"),
              (axes[1][0], "lr", "learning rate"), (axes[1][1], "throughput", "throughput (samples/s)")]
    for ax, key, label in panels:
        xs, ys = _series(records, "train", key)
        if xs:
            ax.plot(xs, ys, label="train", color="tab:blue")
        if key in ("loss", "accuracy"):
            for weights, style in (("trained", "o-"), ("averaged", "s--")):
                vx, vy = _series(records, "validation", key, weights)
                if vx:
                    ax.plot(vx, vy, style, label="validation" if weights == "trained" else "validation (averaged)",
                            color="tab:orange" if weights == "trained" else "tab:green", markersize=4)
            ax.legend(loc="best", fontsize="small")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
    fig.suptitle(run_dir.name, fontsize="medium")
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipu_cnn.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder of python -m ipu_cnn.train (holding metrics.jsonl)")
    parser.add_argument("--output", "-o", default=None, help="PNG path (default: RUN_DIR/metrics.png)")
    args = parser.parse_args(argv)
    try:
        path = plot_run(args.run_dir, args.output)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
