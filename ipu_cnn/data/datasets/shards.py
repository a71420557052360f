"""`TarShards`: a dataset read from WebDataset-layout tar shards, sample by sample, through a per-shard index.

A shard is a plain tar file whose consecutive members ``KEY.jpg`` (or ``.jpeg``, ``.png``, ...), ``KEY.cls`` (the class
index as text) and optionally ``KEY.json`` make one sample: the layout WebDataset, timm, OpenCLIP and DALI read. One
open shard serves thousands of samples, which is what a network filesystem or an object store needs: opening a file
per sample, not decoding, is what limits a loader there.

Random access comes from an index of each shard, built once by reading its tar headers (`_tar.scan_shard`, never the
images) and kept next to the shard as ``.NAME.idx`` when that folder is writable, else in the package's cache
folder; it records the shard's size and modification time and is rebuilt when either changes. The whole dataset's
index is a few numpy arrays (image offsets, lengths, labels, the keys as one byte blob): for 1.28M samples about
50 MB, loaded from 128 shard indexes in a fraction of a second (see the README's figures).

The samples are `ShardMember` sources ``(shard path, offset, length, key)``: the native core reads each with one
``pread`` from a descriptor its worker thread keeps open, so an epoch opens each shard once per thread, not once per
sample, and no Python runs per sample. The `Loader` takes a `TarShards` as it takes an `ImageFolder`, with the same
guarantees (batches keyed by (seed, epoch, index), rank sharding, mid-epoch resume, bad-sample report/replace); bad
samples are named ``shard.tar[KEY]``.

``mode="stream"`` keeps the index but changes the order to the one a single-pass reader of an object store produces:
shards shuffled per (seed, epoch), each rank taking whole shards, and samples passed through a bounded shuffle buffer
(see `ipu_cnn.data.sampling.stream_order`). ``cache="memory"`` copies the shards once into shared memory
(``/dev/shm``), one copy per machine that every process on it reads (see `ipu_cnn.data.datasets._shm`).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from ipu_cnn.data._cache import cache_dir, publish_file
from ipu_cnn.data.datasets._scan import progress_bar
from ipu_cnn.data.datasets._tar import ShardScan, TarFormatError, scan_shard
from ipu_cnn.data.datasets.base import LabelledSamples, PathLike
from ipu_cnn.data.decode import ShardMember

__all__ = ["ShardSources", "TarShards", "expand_shards", "load_shard_index"]

log = logging.getLogger("ipu_cnn.data")

#: Version of the index file format; an index of another version is rebuilt.
INDEX_VERSION = 1
#: Members longer than this cannot be indexed (lengths are held as uint32); the decoder refuses far smaller ones anyway.
_MAX_MEMBER = (1 << 32) - 1

_BRACE = re.compile(r"\{([^{}]*)\}")


def _expand_braces(pattern: str) -> list[str]:
    """Expand ``{000..127}`` ranges (zero-padded to the width of the first bound when it has a leading zero, or when
    both bounds are as wide) and ``{a,b,c}`` lists, left to right, as the shell and WebDataset do."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    head, body, tail = pattern[:m.start()], m.group(1), pattern[m.end():]
    ranged = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if ranged:
        lo_text, hi_text = ranged.groups()
        lo, hi = int(lo_text), int(hi_text)
        if hi < lo:
            raise ValueError(f"shard pattern {pattern!r}: the range {{{body}}} runs backwards; write {{{hi_text}.."
                             f"{lo_text}}}")
        width = len(lo_text) if lo_text.startswith("0") or len(lo_text) == len(hi_text) else 0
        items = [str(i).zfill(width) for i in range(lo, hi + 1)]
    elif "," in body:
        items = body.split(",")
    else:
        raise ValueError(f"shard pattern {pattern!r}: {{{body}}} is neither a range {{000000..000127}} nor a list "
                         "{a,b}")
    return [out for item in items for out in _expand_braces(head + item + tail)]


def expand_shards(spec: PathLike | Sequence[PathLike]) -> list[str]:
    """The shard paths a pattern or list names, in order: brace ranges ``DIR/train-{000000..000127}.tar`` and lists
    ``{a,b}``, globs ``DIR/*.tar`` (sorted; our own ``.idx`` files never match), or a list of any of these.

    Raises FileNotFoundError naming what matched nothing, or the first named shard that does not exist.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise ValueError("no shards given: pass a pattern such as 'DIR/train-{000000..000127}.tar' or a list of paths")
    paths: list[str] = []
    for item in items:
        text = os.path.expanduser(os.fspath(item))
        for expanded in _expand_braces(text):
            if glob.has_magic(expanded):
                found = sorted(p for p in glob.glob(expanded) if not p.endswith(".idx"))
                if not found:
                    raise FileNotFoundError(f"no shard matches {expanded!r} (from {text!r}); check the folder and the "
                                            "pattern, e.g. 'DIR/train-{000000..000127}.tar' or 'DIR/train-*.tar'")
                paths.extend(found)
            else:
                paths.append(expanded)
    for p in paths:
        if not os.path.isfile(p):
            what = "does not exist" if not os.path.exists(p) else "is not a regular file"
            raise FileNotFoundError(f"shard {p} {what} (from {spec!r}); check the path or the range in the pattern")
    return paths


# --- per-shard index files ----------------------------------------------------------------------------------------
def _identity(path: str) -> tuple[int, int]:
    """What tells a changed shard: its size and modification time (ns)."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _index_locations(path: str) -> list[Path]:
    """Where a shard's index may live: beside it (hidden), then in the cache folder under a hash of its real path."""
    p = Path(os.path.abspath(path))
    digest = hashlib.sha1(os.path.realpath(path).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return [p.with_name(f".{p.name}.idx"), cache_dir() / "shard_index" / f"{digest}-{p.name}.idx"]


#: First bytes of an index file; then _HEADER_FIELDS uint64 (version, the shard's size and mtime_ns, samples, key
#: blob, problems and truncation text bytes), the _ARRAYS as int64 [samples] each, then the three byte strings.
_MAGIC = b"IPUSHIDX"
_HEADER_FIELDS = 7
_ARRAYS = ("offsets", "lengths", "labels", "key_ends", "json_offsets", "json_lengths")
_BYTES = ("key_blob", "problems", "truncated")


def _encode_index(arrays: dict[str, np.ndarray]) -> bytes:
    """An index as the bytes of its file: one header and the arrays back to back, so loading is one read and views."""
    n = len(arrays["offsets"])
    meta = arrays["meta"]
    header = np.array([meta[0], meta[1], meta[2], n, *(len(arrays[k]) for k in _BYTES)], dtype=np.uint64)
    parts = [_MAGIC, header.tobytes()]
    parts += [np.ascontiguousarray(arrays[k], dtype=np.int64).tobytes() for k in _ARRAYS]
    parts += [np.ascontiguousarray(arrays[k], dtype=np.uint8).tobytes() for k in _BYTES]
    return b"".join(parts)


def _read_index(location: Path, identity: tuple[int, int]) -> dict[str, np.ndarray] | None:
    """The arrays of an index file if it exists, is ours, is whole and matches the shard's identity; else None."""
    try:
        with open(location, "rb") as f:
            data = f.read()
    except OSError:
        return None  # absent or unreadable: rebuilt
    top = len(_MAGIC) + 8 * _HEADER_FIELDS
    if len(data) < top or not data.startswith(_MAGIC):
        return None
    version, size, mtime, n, *lengths = np.frombuffer(data, np.uint64, _HEADER_FIELDS, len(_MAGIC)).tolist()
    if version != INDEX_VERSION or (size, mtime) != identity or len(data) != top + 8 * n * len(_ARRAYS) + sum(lengths):
        return None
    out = {"meta": np.array([version, size, mtime], dtype=np.int64)}
    at = top
    for k in _ARRAYS:
        out[k] = np.frombuffer(data, np.int64, n, at)
        at += 8 * n
    for k, length in zip(_BYTES, lengths, strict=True):
        out[k] = np.frombuffer(data, np.uint8, length, at)
        at += length
    return out


def _scan_to_arrays(scan: ShardScan, identity: tuple[int, int]) -> dict[str, np.ndarray]:
    """A scan as the arrays an index file holds."""
    keys = [k.encode("utf-8", "surrogateescape") for k in scan.keys]
    problems = "\n".join(f"{k}\t{r}" for k, r in scan.problems)
    return {
        "meta": np.array([INDEX_VERSION, identity[0], identity[1]], dtype=np.int64),
        "offsets": np.array(scan.offsets, dtype=np.int64),
        "lengths": np.array(scan.lengths, dtype=np.int64),
        "labels": np.array(scan.labels, dtype=np.int64),
        "key_blob": np.frombuffer(b"".join(keys), dtype=np.uint8),
        "key_ends": np.cumsum([len(k) for k in keys], dtype=np.int64),
        "json_offsets": np.array(scan.json_offsets, dtype=np.int64),
        "json_lengths": np.array(scan.json_lengths, dtype=np.int64),
        "problems": np.frombuffer(problems.encode("utf-8", "surrogateescape"), dtype=np.uint8),
        "truncated": np.frombuffer(scan.truncated.encode(), dtype=np.uint8),
    }


def _index_size(location: Path, identity: tuple[int, int]) -> tuple[int, int] | None:
    """(samples, key blob bytes) from the header of a valid index file of the shard, else None (one small read)."""
    try:
        with open(location, "rb") as f:
            head = f.read(len(_MAGIC) + 8 * _HEADER_FIELDS)
            total = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(head) < len(_MAGIC) + 8 * _HEADER_FIELDS or not head.startswith(_MAGIC):
        return None
    version, size, mtime, n, *lengths = np.frombuffer(head, np.uint64, _HEADER_FIELDS, len(_MAGIC)).tolist()
    if version != INDEX_VERSION or (size, mtime) != identity or total != len(head) + 8 * n * len(_ARRAYS) + sum(lengths):
        return None
    return n, lengths[0]


def load_shard_index(path: str, *, rebuild: bool = False) -> dict[str, np.ndarray]:
    """The index arrays of one shard: read from its index file when that matches the shard, else built by scanning
    the shard's headers and saved (beside the shard when its folder is writable, else in the cache folder)."""
    identity = _identity(path)
    locations = _index_locations(path)
    if not rebuild:
        for location in locations:
            found = _read_index(location, identity)
            if found is not None:
                return found
    try:
        arrays = _scan_to_arrays(scan_shard(path), identity)
    except TarFormatError:
        raise
    except OSError as e:
        raise OSError(f"cannot read shard {path}: {e.strerror or e}") from None
    data = _encode_index(arrays)
    for location in locations:
        try:
            location.parent.mkdir(parents=True, exist_ok=True)
            publish_file(location, data)
            break
        except OSError:
            continue  # not writable here: try the next place; an index that cannot be saved is rebuilt next time
    return arrays


# --- the dataset --------------------------------------------------------------------------------------------------
class ShardSources(Sequence[ShardMember]):
    """The samples of a set of shards as `ShardMember` sources, made on demand from compact arrays (the loader indexes
    it like a list of paths; it pickles small, for the loader's worker process)."""

    def __init__(self, shards: list[str], starts: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 key_blob: bytes | np.ndarray, key_ends: np.ndarray) -> None:
        self.shards = shards
        self.starts = starts  # first sample of each shard, and the total at the end
        self.offsets = offsets
        self.lengths = lengths
        self.key_blob = np.frombuffer(key_blob, np.uint8) if isinstance(key_blob, bytes) else key_blob  # keys, joined
        self.key_ends = key_ends

    def __len__(self) -> int:
        return len(self.offsets)

    def shard_of(self, index: int) -> int:
        """Which shard (position in `shards`) holds sample index."""
        return int(np.searchsorted(self.starts, index, side="right")) - 1

    def key(self, index: int) -> str:
        """The WebDataset key of sample index."""
        begin = int(self.key_ends[index - 1]) if index > 0 else 0
        return self.key_blob[begin:int(self.key_ends[index])].tobytes().decode("utf-8", "surrogateescape")

    @overload
    def __getitem__(self, index: int) -> ShardMember: ...

    @overload
    def __getitem__(self, index: slice) -> list[ShardMember]: ...

    def __getitem__(self, index: int | slice) -> ShardMember | list[ShardMember]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {index} is out of range for {len(self)} samples")
        return ShardMember(self.shards[self.shard_of(i)], int(self.offsets[i]), int(self.lengths[i]), self.key(i))

    def __iter__(self) -> Iterator[ShardMember]:
        return (self[i] for i in range(len(self)))


class TarShards(LabelledSamples):
    """Images in WebDataset-layout tar shards, labelled by their ``.cls`` members, in shard then archive order.

    Args:
        shards: a pattern (``DIR/train-{000000..000127}.tar``, ``DIR/*.tar``) or a list of patterns and paths.
        classes: class names in label order, or their number; default ``"0"``.. up to the largest label found.
        mode: ``"random"`` (default): any order the loader's sampler draws; ``"stream"``: the order a single-pass
            reader produces (shards shuffled per (seed, epoch), whole shards per rank, a bounded shuffle buffer).
        shuffle_buffer: samples held by the stream mode's shuffle buffer (ignored in random mode).
        cache: None, or ``"memory"``: copy the shards once into ``/dev/shm`` (one copy per machine, shared by every
            process that asks for the same shards) and read them from there.
        errors: what to do with samples the index cannot hold (no image member, no ``.cls``, a ``.cls`` that is not a
            class index): ``"raise"`` (default) a ValueError naming each shard and key, or ``"skip"`` them with a
            warning (they are listed in `skipped`). A truncated shard keeps every sample before the cut, warns, and
            leaves the cut sample to fail its read (a bad sample named ``shard[KEY]``).
        rebuild_index: scan every shard again even where a matching index file exists.
        progress: show a progress bar while indexing: True, False or None (auto).
    """

    def __init__(self, shards: PathLike | Sequence[PathLike], *, classes: Sequence[str] | int | None = None,
                 mode: str = "random", shuffle_buffer: int = 10_000, cache: str | None = None,
                 errors: str = "raise", rebuild_index: bool = False, progress: bool | None = None) -> None:
        if mode not in ("random", "stream"):
            raise ValueError(f"mode must be 'random' or 'stream', got {mode!r}")
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        if cache not in (None, "memory"):
            raise ValueError(f"cache must be None or 'memory', got {cache!r}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1 sample, got {shuffle_buffer}")
        self.pattern = shards
        self.shards: list[str] = expand_shards(shards)
        self.mode = mode
        self.shuffle_buffer = int(shuffle_buffer)
        self.skipped: list[tuple[str, str, str]] = []  # (shard, key, reason)
        self.truncated: list[tuple[str, str]] = []  # (shard, why)
        self._index(rebuild_index, progress, errors)
        self._classes = self._class_names(classes)
        self._class_to_idx = {name: i for i, name in enumerate(self._classes)}
        self.memory_cache: Any = None
        if cache == "memory":
            from ipu_cnn.data.datasets._shm import SharedShardCopy

            self.memory_cache = SharedShardCopy(self.shards)
            self.sources.shards = self.memory_cache.paths

    def _index(self, rebuild: bool, progress: bool | None, errors: str) -> None:
        """Load (or build) every shard's index and join them into the dataset's arrays."""
        from ipu_cnn import _C

        _C.drop_cached_files()  # a shard may have been rewritten since a thread opened it
        # Two passes, so that memory peaks at the final arrays plus one shard's index: the sizes (from each index
        # file's header, building the missing ones), then the arrays, copied into place.
        found: list[tuple[Path | None, dict[str, np.ndarray] | None, int, int]] = []
        bar = progress_bar(2 * len(self.shards), "indexing shards", progress)
        try:
            for shard in self.shards:
                identity = _identity(shard)
                for location in [] if rebuild else _index_locations(shard):
                    size = _index_size(location, identity)
                    if size is not None:
                        found.append((location, None, *size))
                        break
                else:
                    a = load_shard_index(shard, rebuild=True)
                    found.append((None, a, len(a["offsets"]), len(a["key_blob"])))
                if bar is not None:
                    bar.update(1)
            total = sum(n for _, _, n, _ in found)
            blob_total = sum(b for _, _, _, b in found)
            starts = np.zeros(len(found) + 1, dtype=np.int64)
            offsets = np.empty(total, np.int64)
            lengths = np.empty(total, np.uint32)
            label_array = np.empty(total, np.int64)
            key_ends = np.empty(total, np.uint32 if blob_total < 1 << 32 else np.int64)
            blob = np.empty(blob_total, np.uint8)
            at = blob_at = 0
            for i, (shard, (location, arrays, n, blob_len)) in enumerate(zip(self.shards, found, strict=True)):
                a = arrays if location is None else _read_index(location, _identity(shard))
                if a is None or len(a["offsets"]) != n or len(a["key_blob"]) != blob_len:
                    raise RuntimeError(f"shard {shard} or its index changed while the dataset was being indexed; "
                                       "build the dataset again")
                self._note_problems(shard, a)
                if n and int(a["lengths"].max()) > _MAX_MEMBER:
                    raise ValueError(f"shard {shard} has an image member over 4 GiB: not an image a loader can use")
                offsets[at:at + n] = a["offsets"]
                lengths[at:at + n] = a["lengths"]
                label_array[at:at + n] = a["labels"]
                key_ends[at:at + n] = a["key_ends"] + blob_at
                blob[blob_at:blob_at + blob_len] = a["key_blob"]
                at += n
                blob_at += blob_len
                starts[i + 1] = at
                del a
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if self.skipped:
            shown = "; ".join(f"{s}[{k}]: {r}" for s, k, r in self.skipped[:5])
            more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            if errors == "raise":
                raise ValueError(f"{len(self.skipped)} sample(s) cannot be indexed: {shown}{more}; fix the shards, or "
                                 "pass errors='skip' to leave them out")
            log.warning("skipped %d sample(s) that cannot be indexed: %s%s", len(self.skipped), shown, more)
        if starts[-1] == 0:
            raise ValueError(f"the shards {self.pattern!r} hold no samples (members KEY.jpg + KEY.cls, WebDataset "
                             "layout)")
        self.samples_per_shard = np.diff(starts)
        label_array.flags.writeable = False
        self._labels = label_array
        self.sources = ShardSources(list(self.shards), starts, offsets, lengths, blob, key_ends)

    def _note_problems(self, shard: str, a: dict[str, np.ndarray]) -> None:
        """Record what a shard's index says was left out, and warn when the shard is truncated."""
        problems = bytes(a["problems"]).decode("utf-8", "surrogateescape")
        for line in problems.splitlines() if problems else []:
            key, _, reason = line.partition("\t")
            self.skipped.append((shard, key, reason))
        truncated = bytes(a["truncated"]).decode()
        if truncated:
            self.truncated.append((shard, truncated))
            log.warning("shard %s is truncated (%s): the samples before the cut are kept", shard, truncated)

    def _class_names(self, classes: Sequence[str] | int | None) -> list[str]:
        """The class names: given, or "0".. up to the largest label; every label must be below their number."""
        top = int(self._labels.max()) + 1
        if classes is None:
            return [str(i) for i in range(top)]
        names = [str(i) for i in range(int(classes))] if isinstance(classes, int) else [str(c) for c in classes]
        if top > len(names):
            i = int(np.argmax(self._labels))
            raise ValueError(f"label {top - 1} of {self.sources[i].name} is out of range for {len(names)} classes: "
                             f"labels must be in 0..{len(names) - 1}")
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got duplicates in {names[:20]}")
        return names

    # --- what the loader and the applications use ------------------------------------------------------------------
    @property
    def stream_plan(self) -> tuple[tuple[int, ...], int] | None:
        """For ``mode="stream"``: (samples per shard, shuffle buffer), what the loader's sampler needs; else None."""
        if self.mode != "stream":
            return None
        return tuple(int(c) for c in self.samples_per_shard), self.shuffle_buffer

    def key(self, index: int) -> str:
        """The WebDataset key of sample index."""
        return self.sources.key(index)

    def metadata(self, index: int) -> bytes | None:
        """The raw bytes of sample index's ``.json`` member, or None when it has none (read from the shard)."""
        shard = self.sources.shard_of(index)
        a = load_shard_index(self.shards[shard])
        local = index - int(self.sources.starts[shard])
        offset, length = int(a["json_offsets"][local]), int(a["json_lengths"][local])
        if offset < 0:
            return None
        with open(self.sources.shards[shard], "rb") as f:
            return os.pread(f.fileno(), length, offset)

    def read(self, index: int) -> bytes:
        """The stored bytes of sample index's image (one pread; for checks and tests, not the loader's path)."""
        m = self.sources[index]
        with open(m.path, "rb") as f:
            return os.pread(f.fileno(), m.length, m.offset)

    def close(self) -> None:
        """Release the shared-memory copy (``cache="memory"``), if this was its last user on the machine."""
        if self.memory_cache is not None:
            self.memory_cache.close()

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> tuple[ShardMember, int]:
        """The ``(ShardMember, label)`` of sample index (negative indices count from the end)."""
        return self.sources[index], int(self._labels[index])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self.shards)} shards, {len(self)} samples, {len(self._classes)} classes, "
                f"mode={self.mode!r})")
