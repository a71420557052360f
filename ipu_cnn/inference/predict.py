"""Predict mode: classify image files and folders, top-k classes with names and probabilities per image.

Images are decoded with the model's eval transform by the native core (``decode_batch``: every file of a batch in
parallel, the GIL released, EXIF orientation applied by default), one batch ahead of the model. A file that cannot
be read is reported by path, with the reason, and skipped; the others are still predicted, and the exit status says
that something was skipped.
"""
from __future__ import annotations

import concurrent.futures
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ipu_cnn.backends import resolve_device_type
from ipu_cnn.data import decode_batch
from ipu_cnn.inference.benchmark import write_json
from ipu_cnn.inference.data import find_images
from ipu_cnn.inference.config import InferenceOptions
from ipu_cnn.inference.model import LoadedModel, ModelChoice, load_model
from ipu_cnn.inference.runner import Runner, create_runner


@dataclass(frozen=True)
class Prediction:
    """One image's top-k classes: ``(index, name, probability)``, most probable first."""

    path: str
    topk: list[tuple[int, str, float]]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "topk": [{"index": i, "name": n, "probability": p} for i, n, p in self.topk]}

    def format(self) -> str:
        return f"{self.path}: " + ", ".join(f"{n} [{i}] {p * 100:.1f} %" for i, n, p in self.topk)


@dataclass(frozen=True)
class Failure:
    """An image that could not be read, and why."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def decode_files(paths: Sequence[str], transform: Any, *, apply_exif_orientation: bool = True,
                 num_threads: int | None = None) -> tuple[torch.Tensor, list[int], list[tuple[int, Failure]]]:
    """Decode `paths` with `transform` into one uint8 ``[N, 3, H, W]`` channels_last batch of the readable ones.

    Returns the batch, the positions in `paths` it holds, and the others' positions and failures (path, reason).
    """
    h, w = transform.output_hw
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
    failures = decode_batch(list(paths), out, transform, on_error="report", num_threads=num_threads,
                            apply_exif_orientation=apply_exif_orientation)
    bad = {pos for pos, _name, _reason in failures}
    good = [i for i in range(len(paths)) if i not in bad]
    pixels = out if not bad else out[good]
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    return images, good, [(pos, Failure(str(paths[pos]), reason)) for pos, _name, reason in failures]


def top_classes(logits: torch.Tensor, class_names: Sequence[str], k: int) -> list[list[tuple[int, str, float]]]:
    """Per row of `logits`, the `k` most probable classes (softmax) as ``(index, name, probability)``."""
    probabilities = torch.softmax(logits.float(), dim=1)
    values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [[(int(i), class_names[int(i)], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
            for row_p, row_i in zip(values, indices)]


def predict_files(loaded: LoadedModel, runner: Runner, files: Sequence[str], *, topk: int = 5, batch_size: int = 32,
                  apply_exif_orientation: bool = True, num_threads: int | None = None
                  ) -> Iterator[list[Prediction | Failure]]:
    """Predict `files` in batches of `batch_size`; yields each batch's results in file order (a `Failure` in place
    of an unreadable file). The next batch is decoded while the model runs on this one."""
    transform = loaded.preprocessing.eval_transform()
    chunks = [list(files[i:i + batch_size]) for i in range(0, len(files), batch_size)]
    if not chunks:
        return

    def decode(chunk: list[str]) -> tuple[torch.Tensor, list[int], list[tuple[int, Failure]]]:
        return decode_files(chunk, transform, apply_exif_orientation=apply_exif_orientation, num_threads=num_threads)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipu_cnn-predict") as pool:
        pending = pool.submit(decode, chunks[0])
        for n, chunk in enumerate(chunks):
            images, good, failures = pending.result()
            if n + 1 < len(chunks):
                pending = pool.submit(decode, chunks[n + 1])
            results: list[Prediction | Failure | None] = [None] * len(chunk)
            for position, failure in failures:
                results[position] = failure
            if good:
                for position, top in zip(good, top_classes(runner(images), loaded.class_names, topk)):
                    results[position] = Prediction(chunk[position], top)
            yield [r for r in results if r is not None]


def _progress_bar(total: int, mode: str) -> Any:
    from tqdm import tqdm

    disable = {"auto": None, "bar": False, "none": True}[mode]
    return tqdm(total=total, unit="img", desc="predicting", file=sys.stderr, disable=disable, dynamic_ncols=True)


def run_predict(options: InferenceOptions) -> int:
    """Predict as `options` say; prints one line per image (or JSON) and returns the exit status: 0 when every
    image was read, 1 when some were reported and skipped."""
    paths = list(options.paths or [])
    files, missing = find_images(paths)
    failures: list[Failure] = [Failure(p, "no such file or folder") for p in missing]
    resolve_device_type(options.device)  # --device ipu without PopTorch fails here, before the model is built
    loaded = load_model(ModelChoice.from_options(options), default_weights=None)
    micro = int(options.micro_batch_size or 32)
    runner = create_runner(loaded.model, options, micro)
    json_target = options.json
    print(f"model: {loaded.describe()}", file=sys.stderr)
    for failure in failures:
        print(f"error: {failure.path}: {failure.reason}", file=sys.stderr)
    folders = any(os.path.isdir(p) for p in paths)
    bar = _progress_bar(len(files), (options.progress or "auto") if folders else "none")
    predictions: list[Prediction] = []
    try:
        for results in predict_files(loaded, runner, files, topk=int(options.topk or 5),
                                     batch_size=runner.host_batch or micro,
                                     apply_exif_orientation=options.exif_orientation is not False,
                                     num_threads=options.dataloader_worker):
            for result in results:
                if isinstance(result, Failure):
                    failures.append(result)
                    bar.write(f"error: {result.path}: {result.reason}", file=sys.stderr)
                else:
                    predictions.append(result)
                    if json_target != "-":
                        bar.write(result.format(), file=sys.stdout)
            bar.update(len(results))
    finally:
        bar.close()
        runner.close()
    if json_target is not None:
        write_json({"mode": "predict", "model": loaded.name, "weights": loaded.weights,
                    "num_classes": loaded.num_classes, "preprocessing": loaded.preprocessing.as_dict(),
                    "predictions": [p.as_dict() for p in predictions],
                    "errors": [f.as_dict() for f in failures]}, json_target)
    if not files and not failures:
        print("error: no images found under " + ", ".join(map(str, paths)), file=sys.stderr)
        return 1
    if failures:
        print(f"{len(predictions)} image(s) predicted, {len(failures)} skipped (reported above)", file=sys.stderr)
        return 1
    return 0
