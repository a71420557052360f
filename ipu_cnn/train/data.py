"""The one seam between the training application and the data layer: `create_loaders`.

Everything the app knows about datasets, transforms and the loader is here, through `ipu_cnn.data`'s public names
only. What comes back iterates ``(images uint8 [B, 3, H, W] channels_last, labels int64 [B])`` and has ``len``,
``set_epoch``, ``state_dict`` / ``load_state_dict`` and ``close``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from ipu_cnn.train._batches import DeviceBatches, HostBatches

#: Classes of the generated and synthetic data when ``--num-classes`` is not given (ImageNet's, as Graphcore's).
RANDOM_DATA_CLASSES = 1000


def _loader_class() -> Any:
    try:
        from ipu_cnn.data import Loader  # type: ignore[attr-defined]
    except ImportError as error:
        raise RuntimeError("this build of ipu_cnn has no ipu_cnn.data.Loader (the compiled JPEG loader), so it cannot "
                           "read image files: rebuild with `pip install .`, or use --data generated or synthetic") \
            from error
    return Loader


def _datasets(config: Mapping[str, Any]) -> tuple[Any, Any | None]:
    """Training and validation datasets (file indexes) for the file-based data modes."""
    mode = config["data"]
    val: Any
    if mode == "demo":
        from ipu_cnn.data.generated import GeneratedImages

        per_class = int(config["demo_images_per_class"])
        demo = GeneratedImages(num_classes=int(config["demo_classes"]), images_per_class=per_class,
                               val_images_per_class=max(1, per_class // 5), seed=0)
        return demo.train, demo.validation
    from ipu_cnn.data import datasets

    if mode == "imagenet":
        return (datasets.ImageNet(config["data_path"], split="train"),
                datasets.ImageNet(config["data_path"], split="validation"))
    if mode == "folder":
        val = datasets.ImageFolder(config["val_data_path"]) if config["val_data_path"] else None
        return datasets.ImageFolder(config["data_path"]), val
    if mode == "filelist":
        train = datasets.FileList(config["data_path"])
        val = datasets.FileList(config["val_data_path"], classes=train.classes) if config["val_data_path"] else None
        return train, val
    raise ValueError(f"--data {mode!r} is not a file-based mode")


def create_loaders(config: Mapping[str, Any], rank: int = 0,
                   world_size: int = 1) -> tuple[Iterable[Any], Iterable[Any] | None, int, list[str]]:
    """Build ``(train_loader, val_loader or None, num_classes, class_names)`` for ``config["data"]``.

    Needs the derived config keys ``image_size``, ``eval_crop_pct``, ``loader_batch_size`` (samples per optimizer
    step on this rank, or per host call on IPUs), ``validation_loader_batch_size`` and ``device``.
    """
    mode = config["data"]
    batch = int(config["loader_batch_size"])
    val_batch = int(config["validation_loader_batch_size"])
    size = int(config["image_size"])
    seed = int(config["seed"])
    cuda = config["device"] == "cuda"
    if mode in ("generated", "synthetic"):
        num_classes = int(config["num_classes"] or RANDOM_DATA_CLASSES)
        names = [str(i) for i in range(num_classes)]
        samples = int(config["generated_samples"])
        if mode == "generated":
            from ipu_cnn.data.datasets import RandomImages

            train: Any = HostBatches(RandomImages(num_classes, size, samples, seed=seed), batch, seed=seed, rank=rank,
                                world_size=world_size, pin_memory=cuda)
            val: Any = HostBatches(RandomImages(num_classes, size, max(1, samples // 10), seed=seed + 1), val_batch,
                              shuffle=False, drop_last=False, rank=rank, world_size=world_size, pin_memory=cuda)
            return train, val, num_classes, names
        device = torch.device("cuda" if cuda else "cpu")
        steps = max(1, samples // (batch * world_size))
        train_d = DeviceBatches(batch, size, num_classes, steps, device, seed=seed + rank)
        val_d = DeviceBatches(val_batch, size, num_classes, max(1, steps // 10), device, seed=seed + 7919 + rank)
        return train_d, val_d, num_classes, names

    from ipu_cnn.data import EvalTransform, TrainTransform

    Loader = _loader_class()
    train_ds, val_ds = _datasets(config)
    num_classes = int(config["num_classes"] or len(train_ds.classes))
    if num_classes < len(train_ds.classes):
        raise ValueError(f"--num-classes {num_classes} is smaller than the dataset's {len(train_ds.classes)} classes")
    common: dict[str, Any] = {"seed": seed, "num_threads": config["dataloader_worker"],
                              "prefetch": int(config["dataloader_prefetch"]), "rank": rank, "world_size": world_size,
                              "on_error": config["on_bad_sample"], "pin_memory": cuda}
    train_tf = TrainTransform(size=size, scale=tuple(config["train_crop_scale"]), flip_prob=float(config["flip_prob"]),
                              interpolation=config["interpolation"])
    train = Loader(train_ds, batch, train_tf, shuffle=True, drop_last=True, **common)
    val = None
    if val_ds is not None:
        eval_tf = EvalTransform(size=size, crop_pct=float(config["eval_crop_pct"]),
                                interpolation=config["interpolation"])
        val = Loader(val_ds, val_batch, eval_tf, shuffle=False, drop_last=False, **common)
    return train, val, num_classes, list(train_ds.classes)
