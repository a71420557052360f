"""`python -m ipu_cnn.benchmark [FOLDER]`: host throughput of ours against the loaders people use, in one run.

With no folder it times photo-like JPEGs it generates once into the cache; with a folder (an ImageFolder tree or a flat
folder, e.g. ../shared/corpora/imagenet_sample) it times that folder's images. Files are read into memory first, for
every pipeline alike, so the disk is not measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ipu_cnn.benchmark.images import generated_folder, load_images
from ipu_cnn.benchmark.peers import PIPELINES, Workload, pillow_build, select
from ipu_cnn.benchmark.report import markdown, record
from ipu_cnn.benchmark.runner import measure

__all__ = ["main", "parse_threads"]

#: Generated images timed when no folder and no --images are given.
DEFAULT_GENERATED = 256
#: Files taken from a folder when --images is not given (spread evenly over it).
DEFAULT_FOLDER_LIMIT = 500


def parse_threads(text: str, cpus: int) -> list[int]:
    """``"all"`` -> 1, 2, 4, ... up to and including ``cpus``; else a comma list where ``all`` means ``cpus``."""
    if text.strip() == "all":
        counts = {cpus}
        k = 1
        while k < cpus:
            counts.add(k)
            k *= 2
        return sorted(counts)
    counts = set()
    for part in text.split(","):
        part = part.strip()
        try:
            k = cpus if part == "all" else int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--threads takes 'all' or a comma list of counts, got {text!r}") from None
        if k < 1:
            raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {k}")
        counts.add(k)
    return sorted(counts)


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(p.name for p in PIPELINES)
    parser = argparse.ArgumentParser(
        prog="python -m ipu_cnn.benchmark",
        description="Images/s of TrainTransform and EvalTransform with ours (ipu_cnn decode_batch) against the bare "
        "region-decode floor, Pillow (pillow-simd when that is the Pillow installed), Pillow + draft(), torchvision "
        "v2, simplejpeg + OpenCV, PyTurboJPEG and NVIDIA DALI's CPU pipeline (the last two when they load), each on "
        "one core, plus ours' thread scaling, in one run, in the Python it is launched from; prints a Markdown table "
        "of figures and ratios.",
        epilog="Ratios are only meaningful within one run; on a shared machine absolute figures vary from run to run.",
    )
    parser.add_argument("folder", nargs="?", type=Path,
                        help="folder of images (searched recursively); default: generated photo-like JPEGs")
    g = parser.add_argument_group("workload")
    g.add_argument("--size", type=int, default=224, help="output side (default 224; eval resizes to size/0.875)")
    g.add_argument("--interpolation", choices=("bilinear", "bicubic"), default="bilinear",
                   help="antialiased filter for every pipeline (default bilinear)")
    g.add_argument("--images", type=int, default=None,
                   help=f"number of images (default: {DEFAULT_GENERATED} generated, or up to {DEFAULT_FOLDER_LIMIT} "
                   "spread over the folder)")
    g.add_argument("--batch-size", type=int, default=128, help="decode_batch batch size for ours (default 128)")
    g.add_argument("--seed", type=int, default=0, help="seed of the crops and flips (default 0)")
    g = parser.add_argument_group("what to time")
    g.add_argument("--pipelines", default="all",
                   help=f"comma list among: {names} (default all; ours is always included)")
    g.add_argument("--threads", default="all",
                   help="thread counts for ours' scaling: a comma list (e.g. 1,2,4) or 'all' = 1, 2, 4, ... up to the "
                   "CPUs available (default)")
    g.add_argument("--repeat", type=int, default=5,
                   help="timed passes per configuration, interleaved; the table shows the fastest (default 5)")
    g.add_argument("--time-budget", type=float, default=170.0,
                   help="seconds of measuring after which no further round starts, at least 2 rounds always run "
                   "(default 170, so a default run stays near 3 minutes on a loaded machine; 0 = no limit)")
    g = parser.add_argument_group("output")
    g.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    g.add_argument("--generated-dir", type=Path, default=None,
                   help="where generated JPEGs are cached (default: <ipu_cnn cache>/benchmark-photos-v1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f"--size must be >= 1, got {args.size}")
    if args.images is not None and args.images < 1:
        parser.error(f"--images must be >= 1, got {args.images}")
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.time_budget < 0:
        parser.error(f"--time-budget must be >= 0, got {args.time_budget}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")

    import ipu_cnn

    facts = ipu_cnn.info()
    cpus_fact = facts.get("cpus_available")
    cpus = cpus_fact if isinstance(cpus_fact, int) and cpus_fact > 0 else (os.cpu_count() or 1)
    try:
        threads = parse_threads(args.threads, cpus)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    try:
        pipelines = select(None if args.pipelines == "all" else [s.strip() for s in args.pipelines.split(",") if s])
    except ValueError as e:
        parser.error(str(e))

    if args.folder is None:
        count = args.images or DEFAULT_GENERATED
        print(f"making/using {count} generated JPEGs ...", file=sys.stderr, flush=True)
        folder = generated_folder(count, args.generated_dir)
        paths = [folder / f"photo_{i:05d}.jpg" for i in range(count)]
        names, blobs = [os.fspath(p) for p in paths], [p.read_bytes() for p in paths]
        source = f"{count} generated photo-like JPEGs (~500x375, q90, 4:2:0) in {folder}"
    else:
        names, blobs = load_images(args.folder, args.images or DEFAULT_FOLDER_LIMIT)
        source = f"{len(blobs)} files from {args.folder}"

    work = Workload(size=args.size, interpolation=args.interpolation, seed=args.seed, batch_size=args.batch_size)
    setup: dict[str, object] = {
        "images": source,
        "workload": f"TrainTransform({args.size}) / EvalTransform({args.size}, resize_size={work.resize_size}), "
        f"{args.interpolation}, seed {args.seed}",
        "peers": f"one thread each ({pillow_build()}); ours: decode_batch, batch {args.batch_size}",
        "threads for ours": ", ".join(map(str, threads)),
    }
    results = measure(pipelines, names, blobs, work, threads, args.repeat, args.time_budget or None)
    report = markdown(results, pipelines, facts, setup)
    print(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record(results, pipelines, facts, setup), indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
