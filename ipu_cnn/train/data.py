"""The one seam between the training application and the data layer: `create_loaders`.

Everything the app knows about datasets, transforms and the loader is here, through `ipu_cnn.data`'s public names
only. What comes back are `ipu_cnn.batch_sources.BatchSource`s: they iterate ``(images uint8 [B, 3, H, W]
channels_last, labels int64 [B])`` and have ``len``, ``set_epoch``, ``state_dict`` / ``load_state_dict`` and
``close``. Its inputs are typed and narrow: the data options (`DataSettings`), the batch sizes, the eval
preprocessing the model records, the device type and the shard.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ipu_cnn.batch_sources import BatchSource, HostBatches, RandomBatches
from ipu_cnn.models import EvalPreprocessing
from ipu_cnn.train.config import RunOptions

#: Classes of the generated and synthetic data when ``--num-classes`` is not given (ImageNet's, as Graphcore's).
RANDOM_DATA_CLASSES = 1000
#: CIFAR-10's image side: the default training and evaluation size of ``--data cifar10``.
CIFAR10_IMAGE_SIZE = 32
#: Zero pixels added on each side before CIFAR's random crop (torchvision RandomCrop(32, padding=4)).
CIFAR10_PADDING = 4


def default_image_size(data_mode: str) -> int | None:
    """The image side a data mode implies when ``--image-size`` is not given (None: the model's)."""
    return CIFAR10_IMAGE_SIZE if data_mode == "cifar10" else None


def default_eval_crop_pct(data_mode: str) -> float | None:
    """The eval centre-crop fraction a data mode implies when ``--eval-crop-pct`` is not given (None: the model's):
    1 for CIFAR-10, whose images are evaluated whole (recorded so that inference on a checkpoint does the same)."""
    return 1.0 if data_mode == "cifar10" else None


def _loader_class() -> Any:
    try:
        from ipu_cnn.data import Loader  # type: ignore[attr-defined]
    except ImportError as error:
        raise RuntimeError("this build of ipu_cnn has no ipu_cnn.data.Loader (the compiled JPEG loader), so it cannot "
                           "read image files: rebuild with `pip install .`, or use --data generated or synthetic") \
            from error
    return Loader


@dataclass(frozen=True)
class DataSettings:
    """The data options of a run (``--data`` and the options that shape what is read and how)."""

    mode: str
    data_path: str | None = None
    val_data_path: str | None = None
    num_classes: int | None = None
    demo_classes: int = 10
    demo_images_per_class: int = 100
    generated_samples: int = 4096
    workers: int | None = None
    prefetch: int = 2
    on_bad_sample: str = "raise"
    train_crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_prob: float = 0.5
    interpolation: str = "bilinear"
    seed: int = 0
    use_bbox_info: bool = False
    shard_mode: str = "random"
    shard_shuffle_buffer: int = 10_000
    shard_cache: str = "none"

    @classmethod
    def from_options(cls, options: RunOptions) -> DataSettings:
        o = options
        return cls(o.data, o.data_path, o.val_data_path, o.num_classes, o.demo_classes, o.demo_images_per_class,
                   o.generated_samples, o.dataloader_worker, o.dataloader_prefetch, o.on_bad_sample,
                   (float(o.train_crop_scale[0]), float(o.train_crop_scale[1])), o.flip_prob, o.interpolation, o.seed,
                   use_bbox_info=bool(o.use_bbox_info), shard_mode=o.shard_mode,
                   shard_shuffle_buffer=int(o.shard_shuffle_buffer), shard_cache=o.shard_cache)


#: ``(train source, validation source or None, num_classes, class_names)``
Loaders = tuple[BatchSource, BatchSource | None, int, list[str]]


def _datasets(data: DataSettings) -> tuple[Any, Any | None]:
    """Training and validation datasets (file indexes) for the file-based data modes."""
    mode = data.mode
    val: Any
    if mode == "demo":
        from ipu_cnn.data.generated import GeneratedImages

        per_class = int(data.demo_images_per_class)
        demo = GeneratedImages(num_classes=int(data.demo_classes), images_per_class=per_class,
                               val_images_per_class=max(1, per_class // 5), seed=0)
        return demo.train, demo.validation
    from ipu_cnn.data import datasets

    if mode == "imagenet":
        return (datasets.ImageNet(data.data_path, split="train"),
                datasets.ImageNet(data.data_path, split="validation"))
    if mode == "folder":
        val = datasets.ImageFolder(data.val_data_path) if data.val_data_path else None
        return datasets.ImageFolder(data.data_path), val
    if mode == "filelist":
        train = datasets.FileList(data.data_path)
        val = datasets.FileList(data.val_data_path, classes=train.classes) if data.val_data_path else None
        return train, val
    if mode == "shards":
        cache = None if data.shard_cache == "none" else data.shard_cache
        train = datasets.TarShards(data.data_path, mode=data.shard_mode, shuffle_buffer=data.shard_shuffle_buffer,
                                   cache=cache)
        # validation reads every sample once in order: random access, cached like the training shards
        val = datasets.TarShards(data.val_data_path, classes=train.classes, cache=cache) \
            if data.val_data_path else None
        return train, val
    raise ValueError(f"--data {mode!r} is not a file-based mode")


def create_loaders(data: DataSettings, *, batch_size: int, val_batch_size: int, eval: EvalPreprocessing,
                   device: torch.device, pin_memory: bool = False, rank: int = 0, world_size: int = 1,
                   train_image_size: int | None = None, train_eval_preprocessing: bool = False,
                   validation: bool = True) -> Loaders:
    """Build ``(train_source, val_source or None, num_classes, class_names)`` for ``data.mode``.

    Args:
        batch_size: samples of one training batch on this process (one optimizer step, or one IPU host call).
        val_batch_size: samples of one validation batch on this process.
        eval: the model's eval preprocessing (its image side is the training side too).
        device: where ``synthetic`` data is made (the backend's: the host for IPUs, which move data themselves).
        pin_memory: make host batches in pinned memory (the backend copies them asynchronously).
        rank, world_size: the data shard this process reads.
        train_image_size: side of the training images when it differs from the eval side (half-resolution training).
        train_eval_preprocessing: make the training images with the eval transform (resize + centre crop, no flip;
            the fine-tuning stage of half-resolution training), still in a shuffled, resumable epoch order.
        validation: build the validation source (a later training stage reuses the first one's).
    """
    mode = data.mode
    batch = int(batch_size)
    val_batch = int(val_batch_size)
    size = int(train_image_size or eval.image_size)
    seed = int(data.seed)
    cuda = pin_memory
    if mode in ("generated", "synthetic"):
        num_classes = int(data.num_classes or RANDOM_DATA_CLASSES)
        names = [str(i) for i in range(num_classes)]
        samples = int(data.generated_samples)
        if mode == "generated":
            from ipu_cnn.data.datasets import RandomImages

            train: Any = HostBatches(RandomImages(num_classes, size, samples, seed=seed), batch, seed=seed, rank=rank,
                                world_size=world_size, pin_memory=cuda)
            val: Any = HostBatches(RandomImages(num_classes, int(eval.image_size), max(1, samples // 10),
                                                seed=seed + 1), val_batch, shuffle=False, drop_last=False, rank=rank,
                                   world_size=world_size, pin_memory=cuda) if validation else None
            return train, val, num_classes, names
        steps = max(1, samples // (batch * world_size))
        train_d = RandomBatches(batch, size, num_classes, steps, device, seed=seed + rank)
        val_d = RandomBatches(val_batch, int(eval.image_size), num_classes, max(1, steps // 10), device,
                              seed=seed + 7919 + rank) if validation else None
        return train_d, val_d, num_classes, names

    from ipu_cnn.data import TrainTransform

    Loader = _loader_class()
    if mode == "cifar10":
        return _cifar10_loaders(data, Loader, batch, val_batch, eval, rank, world_size, cuda, size=size,
                                train_eval_preprocessing=train_eval_preprocessing, validation=validation)
    train_ds, val_ds = _datasets(data)
    num_classes = int(data.num_classes or len(train_ds.classes))
    if num_classes < len(train_ds.classes):
        raise ValueError(f"--num-classes {num_classes} is smaller than the dataset's {len(train_ds.classes)} classes")
    common: dict[str, Any] = {"seed": seed, "num_threads": data.workers, "prefetch": int(data.prefetch),
                              "rank": rank, "world_size": world_size, "on_error": data.on_bad_sample,
                              "pin_memory": cuda}
    train_tf: Any
    if train_eval_preprocessing:
        train_tf = dataclasses.replace(eval, image_size=size).eval_transform()
    else:
        train_tf = TrainTransform(size=size, scale=tuple(data.train_crop_scale), flip_prob=float(data.flip_prob),
                                  interpolation=data.interpolation, boxes=_bounding_boxes(data, train_ds))
    train = Loader(train_ds, batch, train_tf, shuffle=True, drop_last=True, **common)
    val = None
    if val_ds is not None and validation:
        val = Loader(val_ds, val_batch, eval.eval_transform(), shuffle=False, drop_last=False, **common)
    return train, val, num_classes, list(train_ds.classes)


def _bounding_boxes(data: DataSettings, train_ds: Any) -> Any:
    """``--use-bbox-info``: the boxes of DATA_PATH/imagenet_2012_bounding_boxes.csv by training sample (None when not
    asked). Only the training crop uses them, as in Graphcore's application."""
    if not data.use_bbox_info:
        return None
    import logging
    import os

    from ipu_cnn.data.bboxes import BBOX_FILE_NAME, BoundingBoxes

    boxes = BoundingBoxes.from_csv(os.path.join(str(data.data_path), BBOX_FILE_NAME), train_ds.paths)
    logging.getLogger("ipu_cnn.train").info("--use-bbox-info: %d of %d training images have boxes (%d boxes)",
                                            boxes.images_with_boxes, len(boxes), len(boxes.boxes))
    return boxes


def _cifar10_loaders(data: DataSettings, Loader: Any, batch: int, val_batch: int, eval: EvalPreprocessing,
                     rank: int, world_size: int, pin_memory: bool, *, size: int, train_eval_preprocessing: bool,
                     validation: bool) -> Loaders:
    """CIFAR-10 from its python batches (downloaded into the data path when missing): training = the pad-4 random crop
    + flip on the raw 32x32 pixels, resized to the image size when that is not 32; evaluation = the model's eval
    transform, which at CIFAR's default crop fraction of 1 is the raw image (resized likewise)."""
    from ipu_cnn.data.datasets import CIFAR10, default_cifar10_root
    from ipu_cnn.data.transforms import PadCropTransform

    root = data.data_path or default_cifar10_root()
    train_ds = CIFAR10(root, "train", download=True)
    val_ds = CIFAR10(root, "test", download=True)
    num_classes = int(data.num_classes or len(train_ds.classes))
    if num_classes < len(train_ds.classes):
        raise ValueError(f"--num-classes {num_classes} is smaller than the dataset's {len(train_ds.classes)} classes")
    common: dict[str, Any] = {"seed": int(data.seed), "num_threads": data.workers, "prefetch": int(data.prefetch),
                              "rank": rank, "world_size": world_size, "pin_memory": pin_memory}
    train_tf: Any
    if train_eval_preprocessing:  # a fine-tuning stage trains on the eval transform
        train_tf = dataclasses.replace(eval, image_size=size).eval_transform()
    else:
        train_tf = PadCropTransform(size=size, padding=CIFAR10_PADDING, flip_prob=float(data.flip_prob),
                                    interpolation=data.interpolation)
    train = Loader(train_ds, batch, train_tf, shuffle=True, drop_last=True, **common)
    val = Loader(val_ds, val_batch, eval.eval_transform(), shuffle=False, drop_last=False, **common) \
        if validation else None
    return train, val, num_classes, list(train_ds.classes)
