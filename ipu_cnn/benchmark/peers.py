"""The pipelines the benchmark times: ours, the bare region-decode floor, and the loaders people use today.

Each pipeline turns the in-memory JPEG bytes of a list of images into size x size RGB uint8 images (train: a random
resized crop then a random flip; eval: resize then centre crop), one pass over the list at a time. The peers run on
one thread, as a DataLoader worker runs them; ours and the floor take a thread count. Where a peer samples the train
crop itself it uses the same box our native sampler draws for that image (``ipu_cnn._C.sample_crop``), so every
pipeline resizes the same regions; torchvision v2 samples its own with ``v2.RandomResizedCrop``, as its users do (same
distribution, seeded per pass).

Optional peers (PyTurboJPEG, simplejpeg, OpenCV, torchvision, NVIDIA DALI) are skipped with a reason when they cannot
run here. pillow-simd is not a separate peer but a build of Pillow installed in its place: the Pillow rows name the
build they measured, and the "pillow-simd" entry only says whether it is installed.
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ipu_cnn import _C
from ipu_cnn.data import DecodeStats, EvalTransform, TrainTransform, decode_batch
from ipu_cnn.data.reference import open_rgb, pil_eval, pil_resize_box, pil_train

__all__ = ["MODES", "PIPELINES", "NativePrepared", "Pipeline", "Prepared", "Workload", "pillow_build", "restart_indexed", "select"]

#: The two workloads every pipeline runs.
MODES = ("train", "eval")


@dataclass(frozen=True)
class Workload:
    """What every pipeline is asked to produce: ``size`` x ``size`` images, filter, and the seed of the crops."""

    size: int = 224
    interpolation: str = "bilinear"
    seed: int = 0
    epoch: int = 0
    batch_size: int = 128

    @property
    def resize_size(self) -> int:
        """Eval's "resize the shorter side" target, timm's floor(size / crop_pct) with crop_pct 0.875 (256 for 224)."""
        return math.floor(self.size / 0.875)

    def transform(self, mode: str) -> TrainTransform | EvalTransform:
        """Our transform for ``mode``; peers take the same size, filter and (train) boxes."""
        if mode == "train":
            return TrainTransform(self.size, interpolation=self.interpolation)
        return EvalTransform(self.size, resize_size=self.resize_size, interpolation=self.interpolation)


@dataclass
class Prepared:
    """A pipeline made ready for one workload on a fixed list of images: ``run()`` is one timed pass over them."""

    process: Callable[[int], object]  # the whole work for image i
    count: int
    begin: Callable[[], None] = field(default=lambda: None)  # reset per-pass state (RNG seeds) before a pass

    def run(self, limit: int | None = None) -> None:
        """Process every image once (the first ``limit`` images when given, for warm-up)."""
        self.begin()
        process = self.process
        for i in range(self.count if limit is None else min(limit, self.count)):
            process(i)

    def failures(self) -> dict[int, str]:
        """Run one pass, catching per-image errors: position -> reason (also the pipeline's warm-up)."""
        self.begin()
        bad: dict[int, str] = {}
        for i in range(self.count):
            try:
                self.process(i)
            except Exception as e:  # noqa: BLE001 - a peer's failure on a file excludes the file, for every pipeline
                bad[i] = f"{type(e).__name__}: {e}"
        return bad


class Pipeline:
    """A named way to decode + crop + resize + flip, and whether it can run here."""

    name: str = ""  # the key --pipelines takes
    label: str = ""  # the row the table shows

    def unavailable(self) -> str | None:
        """Why this pipeline cannot run here, or None when it can."""
        return None

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> Prepared:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------------
# Ours and the floor


class NativePrepared(Prepared):
    """decode_batch over the images in batches of ``work.batch_size`` into one reused buffer."""

    def __init__(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int, decode_only: bool) -> None:
        self.blobs = list(blobs)
        self.transform = work.transform(mode)
        self.work = work
        self.threads = threads
        self.decode_only = decode_only
        n, b = len(self.blobs), max(1, work.batch_size)
        self.batches = [(self.blobs[s : s + b], np.arange(s, min(s + b, n), dtype=np.int64)) for s in range(0, n, b)]
        self.out = np.empty((min(b, max(n, 1)), work.size, work.size, 3), np.uint8)
        super().__init__(process=self._one, count=n)

    def _one(self, i: int) -> None:
        self._batch(self.blobs[i : i + 1], np.array([i], np.int64))

    def _batch(
        self, sources: list[bytes], indices: np.ndarray, on_error: str = "raise", stats: DecodeStats | None = None
    ) -> list[tuple[int, str, str]]:
        return decode_batch(
            sources, self.out[: len(sources)], self.transform, seed=self.work.seed, epoch=self.work.epoch,
            indices=indices, num_threads=self.threads, on_error=on_error, stats=stats, decode_only=self.decode_only,
        )

    def run(self, limit: int | None = None) -> None:
        done = 0
        for sources, indices in self.batches:
            if limit is not None and done >= limit:
                break
            self._batch(sources, indices)
            done += len(sources)

    def failures(self) -> dict[int, str]:
        bad: dict[int, str] = {}
        for sources, indices in self.batches:
            for pos, _name, reason in self._batch(sources, indices, on_error="report"):
                bad[int(indices[pos])] = reason
        return bad

    def stats(self) -> DecodeStats:
        """One pass that counts what was decoded, including the DCT scales used."""
        stats = DecodeStats()
        for sources, indices in self.batches:
            self._batch(sources, indices, stats=stats)
        return stats


class Ours(Pipeline):
    """``decode_batch``: region decode at the smallest fast DCT scale, antialiased resize and flip, fused in C++."""

    name, label = "ours", "ipu_cnn decode_batch (ours)"

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> NativePrepared:
        return NativePrepared(blobs, mode, work, threads, decode_only=False)


class Floor(Pipeline):
    """``decode_batch(..., decode_only=True)``: libjpeg decodes just the region each crop needs, at the DCT scale ours
    picks, and nothing is resized — the floor the whole pipeline approaches."""

    name, label = "floor", "floor: region decode only, no resize"

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> NativePrepared:
        return NativePrepared(blobs, mode, work, threads, decode_only=True)


_INDEXED: dict[int, tuple[bytes, bytes]] = {}  # id(original) -> (original, restart-indexed copy)


def restart_index_or_keep(blob: bytes) -> bytes:
    """`blob` as the packer writes it by default (``_C.add_restart_index``), or unchanged when the transcoder refuses
    it (the packer then keeps its original bytes)."""
    try:
        return bytes(_C.add_restart_index(blob))
    except ValueError:  # DecodeError: not transcodable, packed as is
        return blob


def restart_indexed(blobs: Sequence[bytes]) -> list[bytes]:
    """The bytes the packer writes for each image by default (``_C.add_restart_index``: a lossless
    transcode into ~64-pixel restart tiles and their offsets); an image it refuses keeps its original bytes, as in
    a pack. Transcoded once per image and kept, outside any timed pass."""
    out = []
    for blob in blobs:
        held = _INDEXED.get(id(blob))
        if held is None or held[0] is not blob:
            held = _INDEXED[id(blob)] = (blob, restart_index_or_keep(blob))
        out.append(held[1])
    return out


class OursRestartIndexed(Pipeline):
    """Ours on restart-indexed bytes (what ``pack`` writes by default): a region decode reads only the restart tiles
    its crop covers, so the rows above it and the columns beside it are never entropy-decoded. Same pixels as ours."""

    name, label = "ours-rst", "ipu_cnn decode_batch on restart-indexed bytes"

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> NativePrepared:
        return NativePrepared(restart_indexed(blobs), mode, work, threads, decode_only=False)


class FloorRestartIndexed(Pipeline):
    """The floor (region decode only, no resize) on restart-indexed bytes."""

    name, label = "floor-rst", "floor on restart-indexed bytes"

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> NativePrepared:
        return NativePrepared(restart_indexed(blobs), mode, work, threads, decode_only=True)


# ----------------------------------------------------------------------------------------------------------------------
# Pillow


def pillow_build() -> str:
    """"pillow-simd X" or "Pillow X": pillow-simd installs as PIL with a ".postN" version."""
    import PIL

    version = PIL.__version__
    return f"pillow-simd {version}" if ".post" in version else f"Pillow {version}"


def _box(work: Workload, native: _C.CropParams, width: int, height: int, i: int) -> tuple[tuple, bool]:
    """The source region ours turns into image i and its flip: the RandomResizedCrop box, or eval's centre window
    mapped back through the resize (``reference.eval_box``)."""
    return _C.sample_crop(native, width, height, work.seed, work.epoch, i)


class PillowPeer(Pipeline):
    """Pillow decode, then torchvision's PIL transforms as ``reference`` writes them: train crops the same
    RandomResizedCrop box, resizes it and flips (``pil_train``); eval resizes the shorter side to 256 then crops the
    centre 224 (``pil_eval``). At full DCT scale ours equals these bit for bit."""

    name = "pillow"

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"{pillow_build()}: crop + resize + flip / Resize + CenterCrop"

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> Prepared:
        size = work.size
        if mode == "train":
            native = work.transform("train").native()

            def process(i: int) -> np.ndarray:
                img = open_rgb(Image.open(io.BytesIO(blobs[i])))
                box, flip = _box(work, native, img.width, img.height, i)
                return pil_train(img, box, flip, size, work.interpolation)

            return Prepared(process, len(blobs))

        def process_eval(i: int) -> np.ndarray:
            return pil_eval(Image.open(io.BytesIO(blobs[i])), size, work.resize_size, work.interpolation)

        return Prepared(process_eval, len(blobs))


class PillowDraftPeer(Pipeline):
    """Pillow with ``draft()``: libjpeg DCT-scales the whole image (1/2, 1/4, 1/8) to the smallest size that keeps the
    box at least the output size, then resize(box) in the scaled image's coordinates (reading around the box); same
    boxes as ours."""

    name = "pillow-draft"

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"{pillow_build()} + draft() DCT scaling: resize(box) + flip"

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> Prepared:
        size = work.size
        native = work.transform(mode).native()

        def process(i: int) -> np.ndarray:
            img = Image.open(io.BytesIO(blobs[i]))
            width, height = img.size
            box, flip = _box(work, native, width, height, i)
            bw, bh = box[2] - box[0], box[3] - box[1]
            drafted = img.draft("RGB", (math.ceil(width * size / bw), math.ceil(height * size / bh)))
            scale = width / drafted[1][2] if drafted else 1.0
            scaled = (box[0] / scale, box[1] / scale, box[2] / scale, box[3] / scale)
            return pil_resize_box(open_rgb(img), scaled, flip, size, work.interpolation)

        return Prepared(process, len(blobs))


# ----------------------------------------------------------------------------------------------------------------------
# torchvision v2


class TorchvisionPeer(Pipeline):
    """``torchvision.io.decode_jpeg`` + ``v2.RandomResizedCrop(antialias=True)`` + ``v2.RandomHorizontalFlip``; eval
    ``v2.Resize(256, antialias=True)`` + ``v2.CenterCrop(224)``. Timed with ``torch.set_num_threads(1)``."""

    name, label = "torchvision", "torchvision v2: decode_jpeg + v2 transforms"

    def unavailable(self) -> str | None:
        try:
            import torchvision.io  # noqa: F401
            from torchvision.transforms import v2  # noqa: F401
        except ImportError as e:
            return f"torchvision v2 is not importable ({e})"
        return None

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> Prepared:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms import InterpolationMode, v2

        interp = InterpolationMode.BICUBIC if work.interpolation == "bicubic" else InterpolationMode.BILINEAR
        if mode == "train":
            transform = v2.Compose([
                v2.RandomResizedCrop(work.size, interpolation=interp, antialias=True),
                v2.RandomHorizontalFlip(),
            ])
        else:
            transform = v2.Compose([v2.Resize(work.resize_size, interpolation=interp, antialias=True),
                                    v2.CenterCrop(work.size)])
        # torchvision 0.29+ warns on every decode that TorchCodec supersedes its decoders; the call is still theirs.
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        # The encoded bytes as uint8 tensors, as torchvision.io.read_file gives them: part of reading, not timed.
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]

        def process(i: int) -> torch.Tensor:
            return transform(decode_jpeg(data[i], mode=ImageReadMode.RGB))

        def begin() -> None:  # v2.RandomResizedCrop / RandomHorizontalFlip draw from torch's global generator
            torch.manual_seed(work.seed)

        return Prepared(process, len(blobs), begin=begin)


# ----------------------------------------------------------------------------------------------------------------------
# Full-frame libjpeg-turbo decoders + OpenCV


def _cv2_resizer(work: Workload) -> Callable[[np.ndarray, tuple, bool], np.ndarray]:
    """Crop the (rounded) box, cv2.resize it (INTER_AREA when shrinking both ways, else INTER_LINEAR or INTER_CUBIC),
    flip: what OpenCV-based loaders (albumentations-style) do."""
    import cv2

    size = work.size
    upscale = cv2.INTER_CUBIC if work.interpolation == "bicubic" else cv2.INTER_LINEAR

    def apply(pixels: np.ndarray, box: tuple, flip: bool) -> np.ndarray:
        left, top, right, bottom = (round(v) for v in box)
        region = pixels[top:bottom, left:right]
        shrink = region.shape[0] > size and region.shape[1] > size
        out = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA if shrink else upscale)
        return cv2.flip(out, 1) if flip else out

    return apply


def _full_frame_prepare(
    decode: Callable[[bytes], np.ndarray], blobs: Sequence[bytes], mode: str, work: Workload
) -> Prepared:
    resize = _cv2_resizer(work)
    native = work.transform(mode).native()

    def process(i: int) -> np.ndarray:
        pixels = decode(blobs[i])
        height, width = pixels.shape[:2]
        box, flip = _box(work, native, width, height, i)
        return resize(pixels, box, flip)

    return Prepared(process, len(blobs))


class SimplejpegOpenCVPeer(Pipeline):
    """``simplejpeg.decode_jpeg`` (full frame, libjpeg-turbo) + crop + ``cv2.resize`` + flip; same boxes as ours."""

    name, label = "simplejpeg-cv2", "simplejpeg + OpenCV: crop + cv2.resize(AREA) + flip"

    def unavailable(self) -> str | None:
        try:
            import cv2  # noqa: F401
            import simplejpeg  # noqa: F401
        except ImportError as e:
            return f"{e.name} is not installed (pip install simplejpeg opencv-python-headless)"
        return None

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> Prepared:
        import simplejpeg

        return _full_frame_prepare(lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB"), blobs, mode, work)


class TurboJPEGPeer(Pipeline):
    """PyTurboJPEG ``TurboJPEG().decode`` (full frame, RGB) + crop + ``cv2.resize`` + flip; same boxes as ours."""

    name, label = "turbojpeg", "PyTurboJPEG + OpenCV: crop + cv2.resize(AREA) + flip"

    def unavailable(self) -> str | None:
        try:
            import cv2  # noqa: F401
            import turbojpeg
        except ImportError as e:
            return f"{e.name} is not installed (optional peer)"
        try:
            turbojpeg.TurboJPEG()
        except (RuntimeError, OSError, AttributeError) as e:
            version = str(getattr(turbojpeg, "__version__", "?"))
            first = str(e).splitlines()[0].rstrip(". ") if str(e) else type(e).__name__
            needs = "; PyTurboJPEG 2.x needs libturbojpeg >= 3.0 (the TurboJPEG 3 API)" if version[:1] >= "2" else ""
            return f"PyTurboJPEG {version} cannot load libturbojpeg: {first}{needs}"
        return None

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> Prepared:
        import turbojpeg

        jpeg = turbojpeg.TurboJPEG()
        return _full_frame_prepare(lambda b: jpeg.decode(b, pixel_format=turbojpeg.TJPF_RGB), blobs, mode, work)


# ----------------------------------------------------------------------------------------------------------------------
# NVIDIA DALI, CPU only


class DaliPrepared(Prepared):
    """A DALI pipeline fed the encoded bytes through ``external_source``, run one batch of ``work.batch_size`` at a
    time (DALI works on batches, as its loaders do); ``run()`` is one pass over the images."""

    def __init__(self, pipe: object, blobs: Sequence[bytes], batch_size: int) -> None:
        self.pipe = pipe
        self.arrays = [np.frombuffer(b, np.uint8) for b in blobs]
        self.batch_size = batch_size
        super().__init__(process=self._one, count=len(self.arrays))

    def _feed_run(self, chunk: list[np.ndarray]) -> list[np.ndarray]:
        # external_source takes a batch of any size up to the pipeline's: a short last batch is just shorter.
        self.pipe.feed_input("jpegs", chunk)  # type: ignore[attr-defined]
        (images,) = self.pipe.run()  # type: ignore[attr-defined]
        return [images.at(k) for k in range(len(chunk))]

    def _one(self, i: int) -> np.ndarray:
        return self._feed_run([self.arrays[i]])[0]

    def run(self, limit: int | None = None) -> None:
        n = self.count if limit is None else min(limit, self.count)
        for start in range(0, n, self.batch_size):
            self._feed_run(self.arrays[start : min(start + self.batch_size, n)])

    def failures(self) -> dict[int, str]:
        """Whole batches first; only a batch that fails is run again one image at a time, to name its images."""
        bad: dict[int, str] = {}
        for start in range(0, self.count, self.batch_size):
            stop = min(start + self.batch_size, self.count)
            try:
                self._feed_run(self.arrays[start:stop])
                continue
            except Exception:  # noqa: BLE001 - found again image by image below
                pass
            for i in range(start, stop):
                try:
                    self._one(i)
                except Exception as e:  # noqa: BLE001 - a failure on a file excludes the file, for every pipeline
                    bad[i] = f"{type(e).__name__}: {e}"
        return bad


class DaliPeer(Pipeline):
    """NVIDIA DALI's CPU pipeline (``device_id=None``, one thread): train ``fn.decoders.image_random_crop`` (its own
    RandomResizedCrop sampling, area 0.08-1, ratio 3/4-4/3, decoding only the crop) + ``fn.resize`` (antialiased) +
    ``fn.flip`` by a coin; eval ``fn.decoders.image`` + ``fn.resize(resize_shorter=256)`` + ``fn.crop(224)``. Optional:
    ``pip install nvidia-dali-cuda120`` (the CPU operators need no GPU)."""

    name, label = "dali", "NVIDIA DALI (CPU): decoders + fn.resize + flip / crop"

    def unavailable(self) -> str | None:
        try:
            import nvidia.dali  # noqa: F401
        except ImportError as e:
            missing = e.name or e
            return f"NVIDIA DALI is not installed ({missing}; pip install nvidia-dali-cuda120; CPU use needs no GPU)"
        except OSError as e:  # a broken install: its shared libraries do not load
            return f"NVIDIA DALI cannot load: {str(e).splitlines()[0]}"
        return None

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> Prepared:
        from nvidia.dali import fn, pipeline_def, types

        interp = types.INTERP_CUBIC if work.interpolation == "bicubic" else types.INTERP_LINEAR
        size, batch = work.size, max(1, min(work.batch_size, len(blobs)))

        @pipeline_def(batch_size=batch, num_threads=max(1, threads), device_id=None, seed=work.seed + 1,
                      prefetch_queue_depth=1)
        def graph():  # type: ignore[no-untyped-def]
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            if mode == "train":
                images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB,
                                                       random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3])
                images = fn.resize(images, resize_x=size, resize_y=size, interp_type=interp, antialias=True)
                return fn.flip(images, horizontal=fn.random.coin_flip())
            images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
            images = fn.resize(images, resize_shorter=work.resize_size, interp_type=interp, antialias=True)
            return fn.crop(images, crop=(size, size))

        pipe = graph()
        pipe.build()
        return DaliPrepared(pipe, blobs, batch)


class PillowSimdNote(Pipeline):
    """pillow-simd is a build of Pillow installed in its place (same ``PIL`` package), so it cannot run beside it: when
    it is the Pillow installed, the Pillow rows measure it. This entry only says which is the case."""

    name, label = "pillow-simd", "pillow-simd"

    def unavailable(self) -> str | None:
        build = pillow_build()
        if build.startswith("pillow-simd"):
            return f"measured as the Pillow rows ({build} is the Pillow installed)"
        return (f"not installed ({build} is); pillow-simd replaces Pillow, so measure it from an environment where it "
                "is installed instead of pillow (the Pillow rows then measure it)")

    def prepare(self, blobs: Sequence[bytes], mode: str, work: Workload, threads: int = 1) -> Prepared:
        raise RuntimeError(self.unavailable())


#: Every pipeline, in table order.
PIPELINES: tuple[Pipeline, ...] = (
    Ours(), Floor(), OursRestartIndexed(), FloorRestartIndexed(), PillowPeer(), PillowDraftPeer(), TorchvisionPeer(), SimplejpegOpenCVPeer(), TurboJPEGPeer(),
    DaliPeer(), PillowSimdNote(),
)


def select(names: Sequence[str] | None) -> list[Pipeline]:
    """The pipelines named (all when None), in table order; ours is always included, as every ratio needs it."""
    known = {p.name: p for p in PIPELINES}
    if names is None:
        return list(PIPELINES)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown pipeline(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    wanted = set(names) | {"ours"}
    return [p for p in PIPELINES if p.name in wanted]
