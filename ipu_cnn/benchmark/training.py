"""`python -m ipu_cnn.benchmark.training`: a training loop fed by our loader vs by a torchvision DataLoader.

The same loop (timm model with the device-side normaliser, SGD, channels_last, CPU or CUDA) runs twice over the demo
JPEG set: fed by `ipu_cnn.data.Loader` (TrainTransform, ``--threads`` decoder threads) and by
``torch.utils.data.DataLoader`` over ``torchvision.datasets.ImageFolder`` with Pillow + ``RandomResizedCrop`` +
``RandomHorizontalFlip`` + ``PILToTensor`` (``--threads`` worker processes). It reports images/s and the fraction of
each step spent waiting for the next batch (time inside ``next()``), the data-stall figure.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Sequence

import torch


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

    import torchvision
    from torchvision.transforms import v2

    from ipu_cnn.data import GeneratedImages, Loader, TrainTransform
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
            loader = Loader(train, args.batch_size, TrainTransform(args.image_size), num_threads=args.threads,
                            rank=0, world_size=1)

            def epoch_of(e: int, loader: Loader = loader) -> Iterable:
                loader.set_epoch(e)
                return iter(loader)

            results[feeder] = _loop(model, _forever(epoch_of), args.steps, args.warmup, device)
            loader.close()
        else:
            tf = v2.Compose([v2.RandomResizedCrop(args.image_size, antialias=True), v2.RandomHorizontalFlip(),
                             v2.PILToTensor()])
            ds = torchvision.datasets.ImageFolder(str(train.root), transform=tf)
            dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                             num_workers=args.threads, persistent_workers=True,
                                             pin_memory=device.type == "cuda")
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
