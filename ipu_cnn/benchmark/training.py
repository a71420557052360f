"""`python -m ipu_cnn.benchmark.training`: a training loop fed by our loader vs by a torchvision DataLoader.

The same loop (timm model with the device-side normaliser, SGD, channels_last, CPU or CUDA) runs twice over the demo
JPEG set: fed by `ipu_cnn.data.Loader` (TrainTransform, ``--threads`` decoder threads) and by
``torch.utils.data.DataLoader`` over ``torchvision.datasets.ImageFolder`` with Pillow + ``RandomResizedCrop`` +
``RandomHorizontalFlip`` + ``PILToTensor`` (``--threads`` worker processes). It reports images/s and the fraction of
each step spent waiting for the next batch (time inside ``next()``), the data-stall figure.

The two pipelines are built by `ours_loader` and `torchvision_loader` (with `torchvision_transform`), which
``ipu_cnn.benchmark.parity`` uses too.
"""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ipu_cnn.data import ImageFolder, Loader
    from ipu_cnn.data.transforms import Transform


def ours_loader(split: "ImageFolder", transform: "Transform", batch_size: int, threads: int, *, train: bool,
                seed: int = 0) -> "Loader":
    """Our pipeline: `Loader` over `split` with `threads` decoder threads; training batches are shuffled (from `seed`)
    and full, evaluation batches cover every sample once in order."""
    from ipu_cnn.data import Loader

    return Loader(split, batch_size, transform, shuffle=train, drop_last=train, seed=seed, num_threads=threads,
                  rank=0, world_size=1)


def torchvision_transform(image_size: int, *, train: bool, crop_pct: float = 0.875) -> Any:
    """torchvision's usual PIL pipeline to uint8 tensors: ``RandomResizedCrop(antialias=True)`` +
    ``RandomHorizontalFlip`` for training, ``Resize(floor(size / crop_pct))`` + ``CenterCrop(size)`` (timm's eval)
    otherwise."""
    from torchvision.transforms import v2

    if train:
        steps = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.Resize(math.floor(image_size / crop_pct), antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose([*steps, v2.PILToTensor()])


def torchvision_loader(root: Path, transform: Any, batch_size: int, workers: int, *, train: bool, seed: int = 0,
                       pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The peer: ``DataLoader`` over ``torchvision.datasets.ImageFolder(root)`` (Pillow decoding) with `workers`
    worker processes; training batches are shuffled (from `seed`) and full, evaluation batches cover every sample."""
    import torchvision

    dataset = torchvision.datasets.ImageFolder(str(root), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train,
                                       num_workers=workers, persistent_workers=workers > 0, pin_memory=pin_memory,
                                       generator=torch.Generator().manual_seed(seed))


def _loop(model: torch.nn.Module, batches: Iterable, steps: int, warmup: int,
          device: torch.device) -> tuple[float, float]:
    """Images/s and the data-wait fraction over `steps` steps after `warmup` steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    it = iter(batches)
    wait = 0.0
    seen = 0
    t_start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_start, wait, seen = time.perf_counter(), 0.0, 0
        t0 = time.perf_counter()
        images, labels = next(it)
        wait += time.perf_counter() - t0
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        loss = loss_fn(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t_start
    return seen / total, wait / total


def _forever(make: Callable[[int], Iterable]) -> Iterable:
    epoch = 0
    while True:
        yield from make(epoch)
        epoch += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipu_cnn.benchmark.training", description=__doc__)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="decoder threads / DataLoader workers (default 1)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from ipu_cnn.data import GeneratedImages, TrainTransform
    from ipu_cnn.models import create_model

    device = torch.device(args.device)
    data = GeneratedImages()
    train = data.train
    torch.manual_seed(0)
    results = {}
    for feeder in ("ipu_cnn Loader", "torchvision DataLoader"):
        model = create_model(args.model, len(train.classes)).to(device)
        model.train()
        if feeder == "ipu_cnn Loader":
            loader = ours_loader(train, TrainTransform(args.image_size), args.batch_size, args.threads, train=True)

            def epoch_of(e: int, loader: Loader = loader) -> Iterable:
                loader.set_epoch(e)
                return iter(loader)

            results[feeder] = _loop(model, _forever(epoch_of), args.steps, args.warmup, device)
            loader.close()
        else:
            dl = torchvision_loader(train.root, torchvision_transform(args.image_size, train=True), args.batch_size,
                                    args.threads, train=True, pin_memory=device.type == "cuda")
            results[feeder] = _loop(model, _forever(lambda e: iter(dl)), args.steps, args.warmup, device)
    print(f"{args.model} at {args.image_size} px, batch {args.batch_size}, {args.threads} data thread(s)/worker(s), "
          f"{args.steps} steps on {device}\n")
    print("| fed by | images/s | waiting for data |")
    print("| --- | --- | --- |")
    for feeder, (rate, wait) in results.items():
        print(f"| {feeder} | {rate:.1f} | {100 * wait:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
