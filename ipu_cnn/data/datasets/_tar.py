"""Scanning a tar shard's headers into its samples: where each image's bytes lie, its label, its key.

A tar file is a chain of 512-byte headers, each followed by its member's data padded to 512 bytes, so the offsets of
every member are found by reading the headers alone: one ``pread`` per member (the header and the block after it, which
holds a ``.cls`` member's few bytes), never the images. Handled: POSIX ustar (with its 155-byte name prefix), GNU
long names (``L`` members) and base-256 sizes, pax extended headers (``x``: ``path`` and ``size`` records). This is
several times faster than iterating the stdlib ``tarfile`` (which builds a TarInfo per member and seeks through
Python file objects); the tests check both agree.

The WebDataset layout groups consecutive members by key: a member name splits at the first dot of its base name into
key and extension (``dir/n0144_10026.JPEG`` -> key ``dir/n0144_10026``, extension ``jpeg``, lower-cased), so every
member of one sample shares a key and they follow each other in the archive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ShardScan", "TarFormatError", "scan_shard", "split_key"]

#: Member extensions that hold a sample's image, in the order one is chosen when a sample has several.
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff", "gif")
_IMAGE_RANK = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}

_BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")  # regular file, old-style regular file, contiguous file


class TarFormatError(ValueError):
    """A shard is not a readable tar archive (a header fails its checksum, or a size field is not a number)."""


def split_key(name: str) -> tuple[str, str]:
    """(key, lower-cased extension) of a member name, split at the first dot of its base name, as WebDataset does."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1:].lower()


@dataclass
class ShardScan:
    """The samples of one shard, in archive order, and what was wrong with the ones left out.

    ``offsets`` / ``lengths``: where each sample's image bytes lie in the shard; ``labels``: the ``.cls`` values;
    ``keys``: the sample keys; ``json_offsets`` / ``json_lengths``: the ``.json`` member, -1 / 0 when absent.
    ``problems``: ``(key, reason)`` of samples that could not be indexed (no image, no ``.cls``, a ``.cls`` that is
    not an integer); ``truncated``: why the shard looks cut short, or "" (its samples inside the file are kept; a
    sample whose image runs past the end is kept too, and its read reports the truncation as a bad sample).
    """

    offsets: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    json_offsets: list[int] = field(default_factory=list)
    json_lengths: list[int] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    truncated: str = ""


def _number(field_bytes: bytes, what: str, at: int, path: str) -> int:
    """A tar numeric field: octal text, or GNU base-256 (first byte's high bit set) for values octal cannot hold."""
    if field_bytes and field_bytes[0] & 0x80:
        value = int.from_bytes(bytes([field_bytes[0] & 0x7F]) + field_bytes[1:], "big")
        return value - (1 << (8 * len(field_bytes) - 1)) if field_bytes[0] & 0x40 else value
    text = field_bytes.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"{path}: the tar header at byte {at} has a {what} field {text!r} that is not a number: "
                             "not a tar archive, or corrupt there") from None


def _checksum_ok(header: bytes) -> bool:
    """Whether the header's checksum field matches its bytes (summed with the field itself as spaces; signed sums, as
    some old tars wrote, are accepted as tarfile does)."""
    text = header[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(text, 8)
    except ValueError:
        return False
    unsigned = sum(header) - sum(header[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    signed = sum(np.frombuffer(header[:148] + b" " * 8 + header[156:], dtype=np.int8).tolist())
    return stored == signed


def _pax_records(data: bytes) -> dict[str, str]:
    """The ``LENGTH key=value\\n`` records of a pax extended header."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1:pos + length - 1]  # without the trailing newline
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class _Sample:
    """The members of one key met so far."""

    __slots__ = ("key", "image", "image_rank", "cls", "cls_error", "json", "others")

    def __init__(self, key: str) -> None:
        self.key = key
        self.image: tuple[int, int] | None = None
        self.image_rank = len(IMAGE_EXTENSIONS)
        self.cls: int | None = None
        self.cls_error = ""
        self.json: tuple[int, int] | None = None
        self.others: list[str] = []


def _finish(sample: _Sample, scan: ShardScan, last: bool = False) -> None:
    """Add a sample to the scan, or its problem when it lacks an image or a label (for the last sample of a truncated
    shard: that the end of the shard cut it off)."""
    if last and scan.truncated and (sample.image is None or sample.cls is None):
        scan.problems.append((sample.key, f"cut off by the end of the shard, which is truncated ({scan.truncated}); "
                                          "re-copy or re-pack it"))
        return
    if sample.image is None:
        found = ", ".join(sample.others) or "nothing else"
        scan.problems.append((sample.key, f"no image member (found {found}; an image is KEY.jpg, .jpeg, .png, "
                                          f"...)"))
        return
    if sample.cls is None:
        scan.problems.append((sample.key, sample.cls_error or "no .cls member (KEY.cls holds the class index as "
                                                              "text)"))
        return
    scan.offsets.append(sample.image[0])
    scan.lengths.append(sample.image[1])
    scan.labels.append(sample.cls)
    scan.keys.append(sample.key)
    scan.json_offsets.append(sample.json[0] if sample.json else -1)
    scan.json_lengths.append(sample.json[1] if sample.json else 0)


def scan_shard(path: str) -> ShardScan:
    """Index the samples of the tar shard at path from its headers (see the module docstring).

    Raises TarFormatError when a header is corrupt (checksum or size field), OSError when the file cannot be read.
    A shard cut short keeps every sample that precedes the cut and says so in ``truncated``.
    """
    scan = ShardScan()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        file_size = os.fstat(fd).st_size
        pos = 0
        long_name: str | None = None
        pax: dict[str, str] = {}
        current: _Sample | None = None
        while pos + _BLOCK <= file_size:
            chunk = os.pread(fd, 2 * _BLOCK, pos)
            header = chunk[:_BLOCK]
            if header.count(0) == _BLOCK:  # the end-of-archive marker
                break
            if not _checksum_ok(header):
                raise TarFormatError(f"{path}: the tar header at byte {pos} fails its checksum: not a tar archive, or "
                                     "corrupt from there on (re-pack or re-download the shard)")
            size = _number(header[124:136], "size", pos, path)
            kind = header[156:157]
            data_at = pos + _BLOCK
            after = data_at + (size + _BLOCK - 1) // _BLOCK * _BLOCK
            if kind in (b"L", b"x", b"g", b"K"):
                data = chunk[_BLOCK:_BLOCK + size] if size <= _BLOCK else os.pread(fd, size, data_at)
                if len(data) < size:
                    scan.truncated = f"the archive ends inside an extended header at byte {pos}"
                    break
                if kind == b"L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                elif kind == b"x":
                    pax = _pax_records(data)
                pos = after
                continue
            if "size" in pax:
                size = int(pax["size"])
                after = data_at + (size + _BLOCK - 1) // _BLOCK * _BLOCK
            if long_name is not None:
                name = long_name
            elif "path" in pax:
                name = pax["path"]
            else:
                name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if header[257:263] == b"ustar\0":  # POSIX ustar: a name may continue in the prefix field
                    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    if prefix:
                        name = f"{prefix}/{name}"
            long_name, pax = None, {}
            pos = after
            if kind not in _REGULAR:
                continue  # directories, links, devices: not sample members
            key, ext = split_key(name)
            if current is None or current.key != key:
                if current is not None:
                    _finish(current, scan)
                current = _Sample(key)
            cut = data_at + size > file_size
            if cut:
                scan.truncated = (f"member {name} ends at byte {data_at + size} but the file has only {file_size} "
                                  "bytes")
            rank = _IMAGE_RANK.get(ext)
            if rank is None:
                current.others.append(f".{ext}" if ext else name)
            if rank is not None:
                if rank < current.image_rank:
                    current.image, current.image_rank = (data_at, size), rank
            elif ext == "cls":
                data = chunk[_BLOCK:_BLOCK + size] if size <= _BLOCK else os.pread(fd, min(size, 4096), data_at)
                text = data.decode("ascii", "replace").strip()
                if cut:
                    current.cls_error = f"its .cls member is cut off by the end of the shard ({scan.truncated})"
                elif text.lstrip("-").isdigit() and int(text) >= 0:
                    current.cls = int(text)
                else:
                    current.cls_error = f"its .cls member holds {text[:40]!r}, not a class index (a non-negative integer)"
            elif ext == "json":
                current.json = (data_at, size)
        else:
            if pos < file_size:
                scan.truncated = f"the archive ends inside a header at byte {pos} (file of {file_size} bytes)"
        if current is not None:
            _finish(current, scan, last=True)
    finally:
        os.close(fd)
    return scan
