"""`python -m ipu_cnn.benchmark.parity`: does training on our loader reach the accuracy torchvision's pipeline does?

The same small recipe (a timm model with the device-side normaliser, SGD with Nesterov momentum, a cosine learning
rate per step, cross-entropy) trains twice per seed on the same generated JPEG files: fed by `ipu_cnn.data.Loader`
(TrainTransform; validated through EvalTransform) and by a ``torch.utils.data.DataLoader`` over
``torchvision.datasets.ImageFolder`` (Pillow + ``RandomResizedCrop(antialias=True)`` + ``RandomHorizontalFlip``;
validated through ``Resize`` + ``CenterCrop``), both built by ``ipu_cnn.benchmark.training``. Within a seed both runs
start from the same weights and see the same images; the crops, flips and batch order are each pipeline's own draws.
It prints each run's top-1 validation accuracy, each pipeline's mean and spread over the seeds, and the paired
difference. The two pipelines compute the same transforms bit for bit at full DCT scale (tests/test_eval_exact.py),
so the difference measures the random draws plus our DCT-scaled decoding of large crops, nothing systematic.

The defaults (resnet18 at 48 px, 6 epochs of 1,000 images, 3 seeds) take several minutes on two idle CPU cores; the
README's figures come from ``--image-size 64 --epochs 8``, 2.4 times the work.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ipu_cnn.benchmark.training import ours_loader, torchvision_loader, torchvision_transform

if TYPE_CHECKING:
    from ipu_cnn.data import GeneratedImages

__all__ = ["FEEDERS", "Recipe", "main", "run_parity", "train_and_validate"]

#: The two pipelines compared, in table order.
FEEDERS = ("ipu_cnn Loader", "torchvision DataLoader")


@dataclass(frozen=True)
class Recipe:
    """What both pipelines train with."""

    model: str = "resnet18"
    image_size: int = 48
    batch_size: int = 32
    epochs: int = 6
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-5
    crop_pct: float = 0.875
    threads: int = 1  # decoder threads / DataLoader worker processes


def _train_epoch(model: torch.nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device) -> int:
    """One pass over `batches`; returns the number of images seen."""
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    seen = 0
    for images, labels in batches:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(images), labels.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += images.shape[0]
    return seen


@torch.no_grad()
def _accuracy(model: torch.nn.Module, batches: Iterable, device: torch.device) -> tuple[float, int]:
    """Top-1 accuracy in percent over `batches`, and how many images it counted."""
    model.eval()
    correct = count = 0
    for images, labels in batches:
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        correct += int((model(images).argmax(1).cpu() == labels).sum())
        count += labels.shape[0]
    return 100.0 * correct / max(count, 1), count


def train_and_validate(feeder: str, data: GeneratedImages, recipe: Recipe, seed: int,
                       device: torch.device) -> tuple[float, int]:
    """Train `recipe.model` from the weights `seed` gives, fed by `feeder`; its validation accuracy (percent) through
    the same pipeline's eval transform, and the number of validation images."""
    from ipu_cnn.data import EvalTransform, TrainTransform
    from ipu_cnn.models import create_model

    torch.manual_seed(seed)  # the same initial weights for both feeders
    model = create_model(recipe.model, len(data.classes)).to(device).to(memory_format=torch.channels_last)
    size = recipe.image_size
    if feeder == FEEDERS[0]:
        train = ours_loader(data.train, TrainTransform(size), recipe.batch_size, recipe.threads, train=True, seed=seed)
        val = ours_loader(data.validation, EvalTransform(size, crop_pct=recipe.crop_pct), recipe.batch_size,
                          recipe.threads, train=False)
        loaders = (train, val)
        steps = len(train)

        def epoch_batches(epoch: int) -> Iterable:
            train.set_epoch(epoch)
            return train
    else:
        # Its workers seed torch (RandomResizedCrop, flips) from the loader's generator, which `seed` seeds.
        train_dl = torchvision_loader(Path(data.train.root), torchvision_transform(size, train=True),
                                      recipe.batch_size, recipe.threads, train=True, seed=seed)
        val = torchvision_loader(Path(data.validation.root),
                                 torchvision_transform(size, train=False, crop_pct=recipe.crop_pct),
                                 recipe.batch_size, recipe.threads, train=False)
        _check_same_images(data, train_dl.dataset, val.dataset)
        loaders = ()
        steps = len(train_dl)

        def epoch_batches(epoch: int) -> Iterable:
            return train_dl

    if steps == 0:
        raise ValueError(f"--batch-size {recipe.batch_size} is larger than the training split "
                         f"({len(data.train)} images): no full batch to train on")
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                                weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs * steps)
    try:
        for epoch in range(recipe.epochs):
            _train_epoch(model, epoch_batches(epoch), optimizer, scheduler, device)
        return _accuracy(model, val, device)
    finally:
        for loader in loaders:
            loader.close()


def _check_same_images(data: GeneratedImages, train: object, val: object) -> None:
    """torchvision's ImageFolder must list the very files and labels ours does, or the comparison means nothing."""
    for ours, theirs in ((data.train, train), (data.validation, val)):
        samples = [(str(Path(p)), int(label)) for p, label in theirs.samples]  # type: ignore[attr-defined]
        if samples != [(str(Path(p)), int(label)) for p, label in zip(ours.paths, ours.labels)]:
            raise RuntimeError(f"torchvision's ImageFolder lists other files or labels than ours under {ours.root}")


def _mean_std(values: Sequence[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "-"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def run_parity(data: GeneratedImages, recipe: Recipe, seeds: Sequence[int],
               device: torch.device) -> dict[str, list[float]]:
    """Validation accuracy (percent) per feeder, one per seed in `seeds` order."""
    results: dict[str, list[float]] = {feeder: [] for feeder in FEEDERS}
    for seed in seeds:
        for feeder in FEEDERS:
            start = time.perf_counter()
            accuracy, count = train_and_validate(feeder, data, recipe, seed, device)
            results[feeder].append(accuracy)
            print(f"seed {seed}, {feeder}: {accuracy:.1f} % of {count} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    return results


def table(results: dict[str, list[float]], seeds: Sequence[int]) -> str:
    """The Markdown table: one row per seed, then the mean ± sample standard deviation over the seeds."""
    ours, theirs = results[FEEDERS[0]], results[FEEDERS[1]]
    diff = [a - b for a, b in zip(ours, theirs)]
    lines = [f"| seed | {FEEDERS[0]} top-1 % | {FEEDERS[1]} top-1 % | difference (points) |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {s} | {a:.1f} | {b:.1f} | {d:+.1f} |" for s, a, b, d in zip(seeds, ours, theirs, diff)]
    lines.append(f"| mean ± std | {_mean_std(ours)} | {_mean_std(theirs)} | {_mean_std(diff)} |")
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipu_cnn.benchmark.parity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    g = parser.add_argument_group("recipe (the same for both pipelines)")
    g.add_argument("--model", default=Recipe.model, help="timm model name (default %(default)s)")
    g.add_argument("--image-size", type=_positive, default=Recipe.image_size, help="default %(default)s px")
    g.add_argument("--batch-size", type=_positive, default=Recipe.batch_size, help="default %(default)s")
    g.add_argument("--epochs", type=_positive, default=Recipe.epochs, help="default %(default)s")
    g.add_argument("--lr", type=float, default=Recipe.lr, help="peak learning rate, cosine decay (default %(default)s)")
    g.add_argument("--seeds", type=_positive, default=3, help="seeds 0..N-1, each trains both pipelines (default 3)")
    g.add_argument("--threads", type=_positive, default=Recipe.threads,
                   help="decoder threads / DataLoader workers (default %(default)s)")
    g.add_argument("--device", default="cpu")
    d = parser.add_argument_group("data: the generated JPEG set (made once, cached)")
    d.add_argument("--root", type=Path, default=None, help="folder for the set (default: the user's cache)")
    d.add_argument("--classes", type=_positive, default=10, help="default %(default)s")
    d.add_argument("--images-per-class", type=_positive, default=100, help="training images per class (default 100)")
    d.add_argument("--val-images-per-class", type=_positive, default=50, help="default %(default)s")
    d.add_argument("--max-size", type=_positive, default=320, help="largest image side in px (default %(default)s)")
    args = parser.parse_args(argv)

    from ipu_cnn.data import GeneratedImages

    min_size = min(96, args.max_size)
    data = GeneratedImages(args.root, num_classes=args.classes, images_per_class=args.images_per_class,
                           val_images_per_class=args.val_images_per_class, min_size=min_size, max_size=args.max_size)
    recipe = Recipe(model=args.model, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
                    lr=args.lr, threads=args.threads)
    seeds = list(range(args.seeds))
    start = time.perf_counter()
    results = run_parity(data, recipe, seeds, torch.device(args.device))
    minutes = (time.perf_counter() - start) / 60
    epochs = f"{recipe.epochs} epoch{'s' if recipe.epochs > 1 else ''}"
    print(f"{recipe.model} at {recipe.image_size} px, {epochs} of {len(data.train)} generated JPEGs "
          f"({len(data.classes)} classes, sides {min_size}-{args.max_size} px), batch {recipe.batch_size}, SGD "
          f"lr {recipe.lr:g} cosine, on {args.device}; validated on {len(data.validation)} images "
          f"(crop_pct {recipe.crop_pct:g}: resize {math.floor(recipe.image_size / recipe.crop_pct)}, crop "
          f"{recipe.image_size}); {len(seeds)} seed(s), {minutes:.1f} min\n")
    print(table(results, seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
