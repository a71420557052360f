"""``python -m ipu_cnn.train.validate --checkpoint FILE|DIR``: validate one checkpoint, or every one in a folder.

The checkpoint carries what is needed (model, classes, image size, eval crop, the run's data options); data and
device options given here override the run's, e.g. to validate on another copy of the dataset or on another device.
Prints ``validation accuracy: X %`` per checkpoint, as training does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ipu_cnn.train.checkpoint import list_checkpoints, load_checkpoint

_OVERRIDABLE = ("data", "data_path", "val_data_path", "device", "validation_batch_size", "dataloader_worker")


def _checkpoints(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            found = list_checkpoints(path / "checkpoints")
        if found:
            return found
        raise SystemExit(f"--checkpoint {path}: no checkpoint-*.pt files in the folder (or its checkpoints/)")
    raise SystemExit(f"--checkpoint {path}: no such file or folder")


def validate_checkpoint(path: Path, overrides: dict[str, Any], averaged: bool = False) -> dict[str, Any]:
    """Validate checkpoint `path`; returns its top-1 accuracy (%), loss and sample count."""
    from ipu_cnn.backends import DistContext, create_backend, resolve_device_type
    from ipu_cnn.models import create_model
    from ipu_cnn.train.config import Config
    from ipu_cnn.train.data import create_loaders
    from ipu_cnn.train.engine import evaluate

    state = load_checkpoint(path)
    config = Config(state["config"])
    for key, value in overrides.items():
        if value is not None:
            config[key] = value
    config["device"] = resolve_device_type(config["device"] if config["device"] != "ipu" or "device" in overrides
                                           else "ipu")
    val_micro = int(config.get("validation_batch_size") or config["micro_batch_size"])
    config["validation_loader_batch_size"] = val_micro
    config["loader_batch_size"] = int(config["micro_batch_size"])
    config["image_size"] = int(state["image_size"])
    config["eval_crop_pct"] = float(state["eval"]["crop_pct"])
    dist = DistContext()
    _, val_loader, num_classes, _ = create_loaders(config, 0, 1)
    if val_loader is None:
        raise SystemExit(f"{path}: its run has no validation data; give --data-path / --val-data-path")
    if num_classes != state["num_classes"]:
        raise SystemExit(f"{path}: the model has {state['num_classes']} classes but this data has {num_classes}")
    model = create_model(state["model_name"], state["num_classes"], mean=tuple(state["eval"]["mean"]),
                         std=tuple(state["eval"]["std"]), channels_last=config["device"] != "ipu")
    weights = state["model"]
    if averaged:
        if not state.get("weight_average"):
            raise SystemExit(f"{path}: the run kept no averaged weights (--weight-avg-strategy none)")
        weights = state["weight_average"]["model"]
    model.model.load_state_dict(weights)
    backend = create_backend(config, dist)
    placed = backend.prepare_model(model) if config["device"] == "ipu" else model.to(backend.device)
    result = evaluate(backend, placed, val_loader, dist)
    close = getattr(val_loader, "close", None)
    if close is not None:
        close()
    return {"checkpoint": str(path), "accuracy": result.accuracy, "loss": result.loss, "count": result.count,
            "epoch": state["epoch"], "step": state["step"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipu_cnn.train.validate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file, or a folder: every checkpoint in it")
    parser.add_argument("--averaged", action="store_true", help="validate the averaged weights the run kept")
    g = parser.add_argument_group("overrides of the run's options")
    g.add_argument("--data", default=None, help="data mode (default: the run's)")
    g.add_argument("--data-path", default=None, help="dataset root or list (default: the run's)")
    g.add_argument("--val-data-path", default=None, help="validation folder or list (default: the run's)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "ipu"), default=None, help="default: the run's")
    g.add_argument("--validation-batch-size", type=int, default=None, help="default: the run's")
    g.add_argument("--dataloader-worker", "--dataloader-workers", dest="dataloader_worker", type=int, default=None,
                   help="loader threads")
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in _OVERRIDABLE if getattr(args, k) is not None}
    results = []
    for path in _checkpoints(Path(args.checkpoint).expanduser()):
        try:
            r = validate_checkpoint(path, overrides, averaged=args.averaged)
        except (ValueError, RuntimeError, FileNotFoundError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            return 2
        results.append(r)
        print(f"{path.name}: validation accuracy: {r['accuracy']:.2f} % (loss {r['loss']:.4f}, {r['count']} images, "
              f"epoch {r['epoch']}, step {r['step']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
