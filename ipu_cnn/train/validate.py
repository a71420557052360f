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
    from ipu_cnn.backends.feeder import DeviceFeeder
    from ipu_cnn.models import EvalPreprocessing, ModelShape, create_model, model_spec
    from ipu_cnn.train.config import options_from_record
    from ipu_cnn.train.data import DataSettings, create_loaders
    from ipu_cnn.train.engine import evaluate
    from ipu_cnn.train.plan import ipu_settings, plan_batches

    state = load_checkpoint(path)
    options = options_from_record(state.get("options") or state["config"])
    if overrides:
        options = options.replace(**overrides)
    # the device the run resolved (not its "auto"), unless one is given here
    device = resolve_device_type(overrides.get("device") or state["config"].get("device") or options.device)
    val_batch = plan_batches(options, device, 1, check_processes=False).validation_loader_batch_size
    eval_pre = EvalPreprocessing.resolve(model_spec(state["model_name"]), image_size=int(state["image_size"]),
                                         crop_pct=float(state["eval"]["crop_pct"]),
                                         interpolation=options.interpolation, saved=state["eval"])
    dist = DistContext()
    backend = create_backend(device, dist, precision=options.precision, half_dtype=options.half_dtype,
                             ipu=ipu_settings(options), eval_batch_size=val_batch)
    _, val_loader, num_classes, _ = create_loaders(DataSettings.from_options(options),
                                                   batch_size=options.micro_batch_size, val_batch_size=val_batch,
                                                   eval=eval_pre, device=backend.device,
                                                   pin_memory=backend.pin_memory)
    if val_loader is None:
        raise SystemExit(f"{path}: its run has no validation data; give --data-path / --val-data-path")
    if num_classes != state["num_classes"]:
        raise SystemExit(f"{path}: the model has {state['num_classes']} classes but this data has {num_classes}")
    model = create_model(state["model_name"], state["num_classes"], mean=eval_pre.mean, std=eval_pre.std,
                         channels_last=backend.channels_last,
                         shape=ModelShape.from_record(state.get("model_shape") or state.get("options")))
    weights = state["model"]
    if averaged:
        if not state.get("weight_average"):
            raise SystemExit(f"{path}: the run kept no averaged weights (--weight-avg-strategy none)")
        weights = state["weight_average"]["model"]
    model.model.load_state_dict(weights)
    placed = backend.prepare_model(model, training=False)
    try:
        result = evaluate(backend, placed, DeviceFeeder(val_loader, backend), dist)
    finally:
        val_loader.close()
        backend.close()
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
