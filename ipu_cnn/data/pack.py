"""``python -m ipu_cnn.data.pack SRC DST``: pack an image folder or a file list into WebDataset-layout tar shards.

Each sample becomes three consecutive members of a shard ``DST/PREFIX-000000.tar``: ``KEY.<ext>`` (the image),
``KEY.cls`` (the class index as decimal text) and ``KEY.json`` (its relative path, class name, size and geometry).
timm, webdataset, DALI and OpenCLIP read this layout; so does `ipu_cnn.data.TarShards`. Nothing is re-encoded (FFCV
re-encodes every JPEG at quality 90): a JPEG gets restart markers by a lossless coefficient-level transcode (the same
pixels in every decoder; ``csrc/restart_index.h``), which cuts each MCU row into tiles of ~64 pixels so that a crop
decodes only the tiles it covers (1.2x the file-based region-decode floor on one core for train, for ~2.5% more
bytes); ``--no-restart-index`` keeps every file's original bytes. Other formats are always stored as they are.

Samples and labels come from the dataset classes the loader uses (`ImageFolder`, `ImageNet` with ``--split``,
`FileList` for a list file), so class indices are ImageFolder's. The packer:

- plans first, deterministically: the sample order (a seeded permutation by default, so that a shard holds a mix of
  classes and streaming readers need only a small shuffle buffer; ``--order source`` keeps the dataset's order) and
  the shard of every sample, from the file sizes, before anything is read;
- reads and checks the files in a thread pool (the native header check releases the GIL) and writes each shard in
  order, to a temporary name renamed into place when complete;
- keeps a journal (``PREFIX.journal.jsonl``) of finished shards, so a rerun after an interruption verifies those
  (size and member count, ``--verify-hash`` adds the SHA-256) and writes only the rest; the plan
  (``PREFIX.plan.json``) makes sure the rerun packs the same thing;
- leaves out files that training could not read and lists them with the reason in ``PREFIX.bad.json``;
- ends with ``PREFIX.json``: classes, every shard with its sample count, size and SHA-256, and the totals.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ipu_cnn import _C
from ipu_cnn.data._image_check import ImageInfo, inspect_image
from ipu_cnn.data._parallel import ordered_map
from ipu_cnn.data._tar_writer import ShardWriter, count_members
from ipu_cnn.data.datasets import FileList, ImageFolder, ImageNet
from ipu_cnn.data.datasets.base import FileDataset
from ipu_cnn.data.decode import DEFAULT_MAX_FILE_BYTES

__all__ = ["PackError", "PackSummary", "pack", "sample_keys", "main"]

#: Layout version written into the plan and the manifest.
FORMAT_VERSION = 1
#: Default target shard size: ~1 GB, the size WebDataset's own tools and timm's recipes use.
DEFAULT_SHARD_SIZE = 1_000_000_000
#: The extension a member gets for each format Pillow names (JPEG keeps the file's own .jpg/.jpeg spelling).
_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff", "PPM": "ppm", "GIF": "gif"}
#: A tar header block; every member costs one, plus its data rounded up to blocks.
_BLOCK = 512
#: Estimated bytes of a sample's .cls and .json members with their headers, for planning.
_SIDE_MEMBERS = 4 * _BLOCK


class PackError(RuntimeError):
    """The packer cannot go on; the message names the file or flag and what to do."""


@dataclass
class PackSummary:
    """What a packing run did (also what ``PREFIX.json`` holds besides the shard list)."""

    samples: int = 0  # samples in the shards (all of them, including those of shards an earlier run wrote)
    bad: int = 0  # files left out (listed in PREFIX.bad.json)
    shards: int = 0
    shards_written: int = 0  # by this run
    shards_skipped: int = 0  # verified and kept from an earlier run
    bytes_read: int = 0  # source bytes this run read
    bytes_written: int = 0  # shard bytes this run wrote
    seconds: float = 0.0
    restart_indexed: int = 0  # JPEGs transcoded with restart markers (--restart-index)
    restart_kept: int = 0  # JPEGs kept as they were because the transcode failed or changed pixels
    manifest: str = ""
    bad_report: str = ""
    images_written: int = 0  # samples this run wrote
    files_read: int = 0  # files this run read and checked (packed or left out)

    @property
    def images_per_s(self) -> float:
        """Files read and checked per second of the whole run (scan, plan, read, check, write)."""
        return self.files_read / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """The summary line the command prints."""
        text = (f"packed {self.samples} images into {self.shards} shards ({self.shards_written} written now, "
                f"{self.shards_skipped} verified from an earlier run); this run: {self.files_read} files, "
                f"{self.bytes_read / 1e6:.1f} MB read, {self.bytes_written / 1e6:.1f} MB written in "
                f"{self.seconds:.1f} s = {self.images_per_s:.0f} images/s, {self.mb_per_s:.1f} MB/s")
        if self.restart_indexed or self.restart_kept:
            text += f"; restart-indexed {self.restart_indexed} JPEGs, kept {self.restart_kept} unchanged"
        text += f"; {self.bad} bad files left out" + (f" (listed in {self.bad_report})" if self.bad else "")
        return text + f"; manifest {self.manifest}"


@dataclass(frozen=True, slots=True)
class _Sample:
    """One planned sample: where it comes from and what the shard will call it."""

    index: int  # in the source dataset's order
    path: str
    relpath: str
    label: int
    size: int  # from stat, -1 when the file could not be stat'ed (it is then reported bad when read)
    mtime: int
    key: str


@dataclass
class _Result:
    """A sample after reading and checking: its bytes for the shard, or why it is left out."""

    sample: _Sample
    data: bytes = b""
    ext: str = ""
    info: ImageInfo | None = None
    problem: str = ""
    read: int = 0
    restart: str = ""  # "", "indexed" or the reason the original bytes were kept
    meta: dict[str, object] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------------
# Source and plan


def load_source(src: str, split: str | None = None) -> tuple[FileDataset, str]:
    """The dataset to pack and the folder relative paths are taken from: a list file (`FileList`), an ImageNet root
    with `split` (`ImageNet`), or a class-folder tree (`ImageFolder`)."""
    src = os.path.expanduser(src)
    if os.path.isfile(src):
        if split is not None:
            raise PackError(f"--split is for an ImageNet folder, but {src} is a file list; drop --split")
        ds: FileDataset = FileList(src)
        return ds, ds.root  # type: ignore[attr-defined]
    if split is not None:
        imagenet = ImageNet(src, split)
        return imagenet, imagenet.root
    folder = ImageFolder(src)
    if set(folder.classes) <= {"train", "val", "validation", "test"}:
        raise PackError(f"{src} looks like an ImageNet root (its class folders are {', '.join(folder.classes)}): "
                        f"pass --split train (or --split val), or give the split's folder as SRC")
    return folder, folder.root


def sample_keys(relpaths: Sequence[str]) -> list[str]:
    """A unique WebDataset key per relative path: the path without its extension, '/'-separated, with every other
    '.' made '_' (readers split a member name at the basename's first dot), and '-N' added on the rare clash
    (``a.b.jpg`` beside ``a_b.jpg``, or ``x.jpg`` beside ``x.png``). Depends only on the list, so it is stable."""
    keys: list[str] = []
    seen: set[str] = set()
    for rel in relpaths:
        stem = os.path.splitext(rel.replace(os.sep, "/"))[0]
        parts = [p.replace(".", "_") for p in stem.split("/") if p not in ("", ".")]
        key = "/".join(parts) or "_"
        if key in seen:
            n = 1
            while f"{key}-{n}" in seen:
                n += 1
            key = f"{key}-{n}"
        seen.add(key)
        keys.append(key)
    return keys


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, 0
    return (st.st_size if stat.S_ISREG(st.st_mode) else -1), int(st.st_mtime)


def _stat_all(paths: list[str], threads: int, progress: bool | None) -> list[tuple[int, int]]:
    """(size, mtime) of every file, in threads, 1024 paths a task (os.stat releases the GIL; on a network filesystem
    ImageNet's 1.28M stats take minutes, so they get a progress bar)."""
    from tqdm.auto import tqdm

    step = 1024
    chunks = [paths[i:i + step] for i in range(0, len(paths), step)]
    out: list[tuple[int, int]] = []
    with ThreadPoolExecutor(threads) as pool, tqdm(total=len(paths), unit="file", desc="sizing files", delay=1.0,
                                                    disable=None if progress is None else not progress) as bar:
        for part in ordered_map(pool, lambda chunk: [_stat(p) for p in chunk], chunks, window=2 * threads):
            out.extend(part)
            bar.update(len(part))
    return out


def _estimated_bytes(size: int) -> int:
    """What a sample adds to a shard: the image's header and data blocks plus its .cls and .json members."""
    return _BLOCK + -(-max(size, 0) // _BLOCK) * _BLOCK + _SIDE_MEMBERS


def plan_shards(sizes: Sequence[int], order: np.ndarray, shard_size: int) -> list[list[int]]:
    """Split `order` (sample indices) into consecutive shards of about `shard_size` bytes each (a shard takes
    samples until the next would pass the target; every shard holds at least one)."""
    shards: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order.tolist():
        cost = _estimated_bytes(sizes[i])
        if current and total + cost > shard_size:
            shards.append(current)
            current, total = [], 0
        current.append(i)
        total += cost
    if current:
        shards.append(current)
    return shards


def _plan_id(samples: Sequence[_Sample], options: dict[str, object]) -> str:
    """A digest of everything that decides the shards' content: the files (path, size, mtime, label) and options."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for s in samples:
        h.update(f"{s.relpath}\0{s.label}\0{s.size}\0{s.mtime}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# Reading and checking (runs in the thread pool)


def _read_file(path: str) -> bytes:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path} is not a regular file")
    if st.st_size > DEFAULT_MAX_FILE_BYTES:
        raise OSError(f"file of {st.st_size} bytes, above the limit of {DEFAULT_MAX_FILE_BYTES} bytes")
    with open(path, "rb") as f:
        return f.read()


def _member_ext(sample: _Sample, info: ImageInfo) -> str:
    """The image member's extension: the file's own (lower-cased) when it matches the format, else the format's."""
    own = os.path.splitext(sample.path)[1].lower().lstrip(".")
    if info.format == "JPEG":
        return own if own in ("jpg", "jpeg") else "jpg"
    fmt_ext = _FORMAT_EXT.get(info.format, info.format.lower() or own)
    return own if own == fmt_ext or (fmt_ext == "tiff" and own == "tif") else fmt_ext


def _restart_transcode(data: bytes, full_decode: bool) -> tuple[bytes, str]:
    """`data` with restart markers and offsets (``_C.add_restart_index``), or the original and why it was kept.
    With `full_decode` the transcoded pixels are compared with the original's, and kept only when identical."""
    try:
        out = bytes(_C.add_restart_index(data))  # type: ignore[attr-defined]
    except (ValueError, RuntimeError, MemoryError) as e:
        return data, f"transcode failed: {e}"
    if full_decode:
        from ipu_cnn.data.decode import DecodeError, decode_image

        try:
            same = np.array_equal(decode_image(data), decode_image(out))
        except DecodeError as e:
            return data, f"transcoded file does not decode: {e.reason}"
        if not same:
            return data, "transcoded pixels differ from the original's"
    return out, "indexed"


def _process(sample: _Sample, full_decode: bool, restart: bool) -> _Result:
    """Read one file and check it; never raises for a bad file (the result says why it is left out)."""
    try:
        data = _read_file(sample.path)
    except OSError as e:
        return _Result(sample, problem=f"cannot read: {e.strerror or e}")
    info = inspect_image(data, full_decode)
    if not info.ok:
        return _Result(sample, info=info, problem=f"{info.problem}: {info.reason}", read=len(data))
    result = _Result(sample, info=info, ext=_member_ext(sample, info), read=len(data))
    if restart and info.format == "JPEG":
        result.data, result.restart = _restart_transcode(data, full_decode)
    else:
        result.data = data
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Output folder, journal, manifest


def _prepare_dst(dst: str) -> None:
    """Create DST and prove it writable before any work, with an error that says what to fix."""
    try:
        os.makedirs(dst, exist_ok=True)
    except OSError as e:
        raise PackError(f"cannot create the output folder {dst}: {e.strerror or e}; give a DST in a writable "
                        f"place") from None
    probe = os.path.join(dst, f".pack-write-test-{os.getpid()}")
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
        os.unlink(probe)
    except OSError as e:
        raise PackError(f"cannot write in the output folder {dst}: {e.strerror or e}; fix its permissions or give "
                        f"another DST") from None


def _write_json(path: str, obj: object) -> None:
    """Write JSON atomically (temporary file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def _read_journal(path: str) -> dict[str, dict[str, object]]:
    """Finished shards by name from the journal; a torn last line (the run was killed while writing it) is ignored."""
    done: dict[str, dict[str, object]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "shard" in entry:
                    done[str(entry["shard"])] = entry
    except FileNotFoundError:
        pass
    return done


def _verify_shard(path: str, entry: dict[str, object], verify_hash: bool) -> str:
    """Why a shard an earlier run finished cannot be kept, or "" when it checks out."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return "missing"
    if size != entry.get("bytes"):
        return f"{size} bytes, the journal says {entry.get('bytes')}"
    try:
        members = count_members(path)
    except Exception as e:  # noqa: BLE001 - tarfile raises several types for a damaged archive
        return f"not a readable tar ({e})"
    if members != entry.get("members"):
        return f"{members} members, the journal says {entry.get('members')}"
    if verify_hash:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != entry.get("sha256"):
            return "SHA-256 differs from the journal's"
    return ""


def _remove_stale_temps(dst: str, prefix: str) -> None:
    """Temporary files of an interrupted run (hidden ``.PREFIX-NNNNNN.tar.tmp-PID``) are dropped before writing."""
    for name in os.listdir(dst):
        if name.startswith(f".{prefix}-") and ".tar.tmp-" in name:
            try:
                os.unlink(os.path.join(dst, name))
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------------------------------
# The packer


def pack(src: str, dst: str, *, prefix: str | None = None, split: str | None = None,
         shard_size: int = DEFAULT_SHARD_SIZE, order: str = "shuffle", seed: int = 0, threads: int | None = None,
         full_decode: bool = False, restart_index: bool = True, verify_hash: bool = False,
         overwrite: bool = False, progress: bool | None = None) -> PackSummary:
    """Pack the dataset at `src` into shards ``dst/PREFIX-NNNNNN.tar`` (see the module docstring); returns what it did.

    Raises `PackError` (a message naming the file or flag and the fix) when it cannot start; a bad image is never an
    error, it is left out and reported. Rerunning with the same arguments after an interruption resumes.
    """
    start = time.perf_counter()
    if shard_size < 1:
        raise PackError(f"--shard-size must be a positive number of bytes, got {shard_size}")
    if order not in ("shuffle", "source"):
        raise PackError(f"--order must be 'shuffle' or 'source', got {order!r}")
    if restart_index and not hasattr(_C, "add_restart_index"):
        raise PackError("--restart-index needs the native restart-marker transcoder (_C.add_restart_index), which "
                        "this build of ipu_cnn's core lacks: rebuild the core from a checkout that has it, or pack "
                        "without --restart-index")
    threads = threads or max(4, 2 * _C.available_cpus())
    prefix = prefix or ("val" if split in ("val", "validation") else "train")
    if "/" in prefix or os.sep in prefix or prefix.startswith("."):
        raise PackError(f"--prefix must be a plain file name start such as 'train', got {prefix!r}")
    dst = os.path.expanduser(dst)
    dataset, root = load_source(src, split)
    _prepare_dst(dst)

    relpaths = [os.path.relpath(p, root) for p in dataset.paths]
    keys = sample_keys(relpaths)
    labels = dataset.labels.tolist()
    stats = _stat_all(dataset.paths, threads, progress)
    samples = [_Sample(i, p, r, lab, size, mtime, k) for i, (p, r, lab, (size, mtime), k)
               in enumerate(zip(dataset.paths, relpaths, labels, stats, keys, strict=True))]
    permutation = (np.random.default_rng(seed).permutation(len(samples)) if order == "shuffle"
                   else np.arange(len(samples)))
    shards = plan_shards([s.size for s in samples], permutation, shard_size)
    names = [f"{prefix}-{i:06d}.tar" for i in range(len(shards))]
    options = {"version": FORMAT_VERSION, "prefix": prefix, "shard_size": shard_size, "order": order,
               "seed": seed if order == "shuffle" else None, "full_decode": full_decode, "restart_index": restart_index}
    plan_id = _plan_id(samples, options)

    with _dst_lock(dst, prefix):
        plan_path = os.path.join(dst, f"{prefix}.plan.json")
        journal_path = os.path.join(dst, f"{prefix}.journal.jsonl")
        _claim_dst(dst, prefix, plan_path, journal_path, plan_id, overwrite)
        planned = [{"name": n, "samples": len(s)} for n, s in zip(names, shards, strict=True)]
        _write_json(plan_path, {"plan_id": plan_id, "source": os.path.abspath(src), "root": os.path.abspath(root),
                                "options": options, "classes": dataset.classes, "samples": len(samples),
                                "shards": planned})
        _remove_stale_temps(dst, prefix)

        summary = PackSummary(shards=len(shards))
        journal = _read_journal(journal_path)
        todo: list[int] = []
        for i, name in enumerate(names):
            entry = journal.get(name)
            why = "not written" if entry is None else _verify_shard(os.path.join(dst, name), entry, verify_hash)
            if why:
                if entry is not None:
                    print(f"pack: rewriting {name}: {why}", file=sys.stderr)
                    journal.pop(name)
                todo.append(i)
            else:
                summary.shards_skipped += 1
        pending = set(todo)
        done_samples = sum(len(shards[i]) for i in range(len(shards)) if i not in pending)

        from tqdm.auto import tqdm

        bar = tqdm(total=len(samples), initial=done_samples, unit="img", desc=f"packing into {dst}", smoothing=0.05,
                   disable=None if progress is None else not progress)
        with ThreadPoolExecutor(threads) as pool, open(journal_path, "a", encoding="utf-8") as jf:
            todo_samples = (samples[j] for i in todo for j in shards[i])
            results = ordered_map(pool, lambda s: _process(s, full_decode, restart_index), todo_samples,
                                  window=4 * threads)
            try:
                for i in todo:
                    entry = _write_shard(os.path.join(dst, names[i]), len(shards[i]), results, dataset.classes,
                                         summary, bar)
                    jf.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    jf.flush()
                    os.fsync(jf.fileno())
                    journal[names[i]] = entry
                    summary.shards_written += 1
            finally:
                results.close()  # cancels the reads still queued when a shard fails or the run is interrupted
                bar.close()

        bad = [b for name in names for b in journal[name]["bad"]]  # type: ignore[union-attr]
        summary.bad = len(bad)
        summary.samples = sum(int(journal[name]["samples"]) for name in names)  # type: ignore[call-overload]
        summary.bad_report = os.path.join(dst, f"{prefix}.bad.json")
        summary.manifest = os.path.join(dst, f"{prefix}.json")
        summary.seconds = time.perf_counter() - start
        _write_json(summary.bad_report, bad)
        _write_json(summary.manifest, {
            "format": "webdataset", "version": FORMAT_VERSION, "plan_id": plan_id, "source": os.path.abspath(src),
            "classes": dataset.classes, "samples": summary.samples, "bad": summary.bad, "options": options,
            "shards": [{"name": n, "samples": journal[n]["samples"], "bytes": journal[n]["bytes"],
                        "sha256": journal[n]["sha256"]} for n in names],
        })
        return summary


@contextlib.contextmanager
def _dst_lock(dst: str, prefix: str) -> Iterator[None]:
    """Hold ``DST/.PREFIX.lock`` (an flock, released by the kernel if the process dies) for the run, so that two
    packers never write the same shards; a second one is refused with the reason."""
    path = os.path.join(dst, f".{prefix}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PackError(f"another packer is writing {prefix}-*.tar into {dst} (it holds {path}): wait for it to "
                            f"finish, or use another DST or --prefix") from None
        yield
    finally:
        os.close(fd)


def _claim_dst(dst: str, prefix: str, plan_path: str, journal_path: str, plan_id: str, overwrite: bool) -> None:
    """Refuse to mix two packings in one DST; with `overwrite`, clear the earlier packing's files first."""
    try:
        with open(plan_path, encoding="utf-8") as f:
            old = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, json.JSONDecodeError) as e:
        raise PackError(f"cannot read {plan_path} ({e}): remove it, or pack into another DST") from None
    if old.get("plan_id") == plan_id:
        return
    if not overwrite:
        raise PackError(f"{dst} holds shards of another packing ({plan_path} differs: other source files, sizes or "
                        f"options): pass --overwrite to replace them, or give another DST or --prefix")
    for shard in old.get("shards", []):
        try:
            os.unlink(os.path.join(dst, str(shard["name"])))
        except (OSError, KeyError, TypeError):
            pass
    for path in (journal_path, os.path.join(dst, f"{prefix}.json"), os.path.join(dst, f"{prefix}.bad.json")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _write_shard(path: str, count: int, results: Iterator[_Result], classes: list[str], summary: PackSummary,
                 bar: object) -> dict[str, object]:
    """Take the next `count` results and write the good ones into the shard at `path`; its journal entry."""
    bad: list[dict[str, object]] = []
    written = 0
    with ShardWriter(path) as writer:
        for _ in range(count):
            r = next(results)
            s = r.sample
            summary.bytes_read += r.read
            summary.files_read += 1
            if r.problem:
                bad.append({"file": s.path, "relpath": s.relpath, "key": s.key, "reason": r.problem})
            else:
                info = r.info
                assert info is not None
                meta: dict[str, object] = {"path": s.relpath, "class": classes[s.label], "label": s.label,
                                           "size": r.read, "format": info.format, "width": info.width,
                                           "height": info.height}
                if r.restart:
                    meta["restart_index"] = r.restart == "indexed"
                    if r.restart == "indexed":
                        summary.restart_indexed += 1
                    else:
                        summary.restart_kept += 1
                        meta["restart_kept_because"] = r.restart
                writer.add_sample([(f"{s.key}.{r.ext}", r.data), (f"{s.key}.cls", str(s.label).encode()),
                                   (f"{s.key}.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode())],
                                  s.mtime)
                written += 1
            update = getattr(bar, "update", None)
            if update is not None:
                update(1)
        writer.commit()
    summary.bytes_written += writer.size
    summary.images_written += written
    return {"shard": os.path.basename(path), "samples": written, "members": writer.members, "bytes": writer.size,
            "sha256": writer.sha256, "bad": bad}


# ----------------------------------------------------------------------------------------------------------------------
# Command line


def _size(text: str) -> int:
    """A byte count with an optional K/M/G/T suffix (powers of 1000; KiB/MiB/GiB for powers of 1024)."""
    units = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30,
             "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}
    t = text.strip().upper()
    num = t.rstrip("KMGTIB")
    try:
        value = float(num) * units[t[len(num):]]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 1GB, 500MB, 256MiB, 1e9)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the shard size must be positive, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ipu_cnn.data.pack",
        description="Pack an image folder (ImageFolder layout), an ImageNet root (--split) or a file list into "
                    "WebDataset-layout tar shards DST/PREFIX-000000.tar ..., keeping each file's bytes. Bad images are "
                    "left out and listed in DST/PREFIX.bad.json. Rerun the same command to resume.")
    p.add_argument("src", help="a folder of class folders, an ImageNet root with --split, or a path,label list file")
    p.add_argument("dst", help="output folder (created if needed)")
    p.add_argument("--split", choices=["train", "val", "validation"], default=None,
                   help="SRC is an ImageNet root (train/, val/): pack this split")
    p.add_argument("--prefix", default=None, help="shard name prefix (default: 'train', or 'val' for --split val)")
    p.add_argument("--shard-size", type=_size, default=DEFAULT_SHARD_SIZE,
                   help="target shard size, e.g. 1GB (default), 500MB, 256MiB")
    p.add_argument("--order", choices=["shuffle", "source"], default="shuffle",
                   help="sample order in the shards: a seeded permutation (default: mixes classes within a shard, "
                        "which streaming readers need) or the dataset's own order")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled order (default 0)")
    p.add_argument("--threads", type=int, default=None, help="reader threads (default: twice the CPUs, at least 4)")
    p.add_argument("--full-decode", action="store_true",
                   help="decode every image fully instead of checking headers (slower; finds corrupt scan data)")
    p.add_argument("--restart-index", action=argparse.BooleanOptionalAction, default=True,
                   help="add restart markers and their index to each JPEG by a lossless transcode (same pixels), so a "
                        "crop decodes only the tiles it covers; with --full-decode, the pixels are compared "
                        "(default on; --no-restart-index keeps the original bytes)")
    p.add_argument("--verify-hash", action="store_true",
                   help="on resume, check the SHA-256 of shards an earlier run finished (default: size and members)")
    p.add_argument("--overwrite", action="store_true", help="replace the shards of another packing found in DST")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = pack(args.src, args.dst, prefix=args.prefix, split=args.split, shard_size=args.shard_size,
                       order=args.order, seed=args.seed, threads=args.threads, full_decode=args.full_decode,
                       restart_index=args.restart_index, verify_hash=args.verify_hash, overwrite=args.overwrite,
                       progress=False if args.no_progress else None)
    except (PackError, OSError, ValueError) as e:
        print(f"pack: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pack: interrupted; finished shards are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
