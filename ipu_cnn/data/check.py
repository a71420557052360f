"""``python -m ipu_cnn.data.check PATH``: find what would break or skew training in an image dataset, before training.

PATH is a folder tree (``root/<class>/<image>``, or a flat folder) or WebDataset-layout tar shards (one or more
``.tar`` files, a glob such as ``'DIR/*.tar'``, a brace range such as ``'DIR/train-{000000..000127}.tar'``, or a folder
holding only shards). Every image is read once, in a thread pool: its header is checked by the native core (a full
decode with ``--full-decode``; a JPEG without an end-of-image marker is always decoded, as that is how a cut-off file
shows), and its SHA-256 is computed. The report:

- per-class image counts (the class folder, or for shards the class named in ``KEY.json``, else ``KEY.cls``);
- the size distribution: width, height, megapixels and file size percentiles;
- what the decoders will meet: progressive, CMYK/YCCK, grayscale, arithmetic-coded JPEGs, and non-JPEG files by format;
  and how many JPEGs carry a valid restart index (``pack`` adds one by default, so crops decode only their tiles);
- problems: truncated, undecodable or unreadable files, and for shards, samples without an image or a ``.cls``, a
  ``.cls`` that disagrees with the ``.json``'s label, and a shard that breaks off;
- duplicate files (identical bytes), grouped.

It is printed as a table and, with ``--json OUT``, written as JSON. The exit status is 1 when there are problems
(``--fail-on warnings`` also counts duplicates and non-JPEG, CMYK or progressive files; ``--fail-on never`` always
exits 0) and 2 when PATH cannot be read at all. This replaces Graphcore's ``validate_dataset.py``, which compared an
MD5 of the tree against a stored one: that tells whether a copy is complete, not whether training can read it.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ipu_cnn import _C
from ipu_cnn.data._image_check import ImageInfo, inspect_image
from ipu_cnn.data._parallel import ordered_map
from ipu_cnn.data.datasets import IMG_EXTENSIONS
from ipu_cnn.data.datasets._scan import scan_class_folder

__all__ = ["CheckReport", "check", "expand_shards", "main"]

#: Member extensions that hold an image in a shard (WebDataset's names for image data).
SHARD_IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "ppm", "pgm", "pbm", "bmp", "tif", "tiff", "webp", "gif"})
#: Percentiles of the size distribution.
PERCENTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)
#: The class of images that lie directly in PATH (a flat folder).
ROOT_CLASS = "."
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


class CheckError(RuntimeError):
    """PATH cannot be read at all (missing, empty, not a folder or shards); the message says what was expected."""


@dataclass
class _Item:
    """One image to check: where it is, its class, and (for shards) its bytes, or a problem found before reading."""

    name: str  # file path, or SHARD:KEY.ext
    cls: str
    data: bytes | None = None  # None: read `name` from disk
    problem: str = ""  # a structural problem found while reading a shard (no image member, no .cls ...)
    reason: str = ""
    is_sample: bool = True  # False for a shard that breaks off: a problem, but no sample to count


@dataclass
class _Checked:
    name: str
    cls: str
    size: int = 0
    sha256: str = ""
    info: ImageInfo | None = None
    problem: str = ""  # "truncated", "undecodable", "unreadable", "no image", "no label", "bad metadata", "bad shard"
    reason: str = ""
    is_sample: bool = True


@dataclass
class CheckReport:
    """What the check found; `to_dict` is the JSON it writes."""

    path: str
    kind: str  # "folder" or "shards"
    full_decode: bool
    files: int = 0
    bytes: int = 0
    classes: Counter = field(default_factory=Counter)  # class -> images checked (good or not)
    formats: Counter = field(default_factory=Counter)  # format -> images whose header was read
    progressive: int = 0
    cmyk: int = 0
    grayscale: int = 0
    arithmetic: int = 0
    restart_indexed: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    sizes: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def non_jpeg(self) -> int:
        return sum(n for fmt, n in self.formats.items() if fmt != "JPEG")

    @property
    def problem_counts(self) -> Counter:
        return Counter(p["problem"] for p in self.problems)

    @property
    def duplicate_files(self) -> int:
        """Files that repeat another one's bytes (a group of k identical files counts k - 1)."""
        return sum(len(g) - 1 for g in self.duplicates)

    def exit_code(self, fail_on: str = "errors") -> int:
        """1 when the report holds what `fail_on` counts ("errors": problems; "warnings": also duplicates and
        non-JPEG, CMYK or progressive files; "never"), else 0."""
        if fail_on == "never":
            return 0
        if self.problems:
            return 1
        if fail_on == "warnings" and (self.duplicates or self.non_jpeg or self.cmyk or self.progressive):
            return 1
        return 0

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path, "kind": self.kind, "full_decode": self.full_decode, "files": self.files,
            "bytes": self.bytes, "classes": dict(sorted(self.classes.items())), "formats": dict(self.formats),
            "non_jpeg": self.non_jpeg, "progressive": self.progressive, "cmyk": self.cmyk,
            "grayscale": self.grayscale, "arithmetic": self.arithmetic, "restart_indexed": self.restart_indexed,
            "problem_counts": dict(self.problem_counts), "problems": self.problems,
            "duplicate_files": self.duplicate_files, "duplicates": self.duplicates, "sizes": self.sizes,
            "libjpeg": _C.jpeg_version(),
        }

    def table(self) -> str:
        """The report as the command prints it."""
        lines = [f"dataset check of {self.path} ({self.kind}, {'full decode' if self.full_decode else 'headers'}, "
                 f"libjpeg {_C.jpeg_version()})",
                 f"  {self.files} images, {self.bytes / 1e6:.1f} MB, {len(self.classes)} "
                 f"class{'es' if len(self.classes) != 1 else ''}"]
        counts = sorted(self.classes.values())
        if counts:
            fewest = min(self.classes.items(), key=lambda kv: (kv[1], kv[0]))
            most = max(self.classes.items(), key=lambda kv: (kv[1], kv[0]))
            lines.append(f"  images per class: min {counts[0]} ({fewest[0]}), median {counts[len(counts) // 2]}, "
                         f"max {counts[-1]} ({most[0]})")
        if len(self.classes) <= 20:
            width = max(len(c) for c in self.classes) if self.classes else 5
            lines += ["", f"  {'class':<{width}}  images"] + [f"  {c:<{width}}  {n:6d}"
                                                              for c, n in sorted(self.classes.items())]
        if self.sizes:
            lines += ["", "  size         " + "".join(f"{'p' + str(p):>9}" for p in PERCENTILES)]
            for name, values in self.sizes.items():
                fmt = "{:9.2f}" if name == "megapixels" else "{:9.0f}"
                lines.append(f"  {name:<13}" + "".join(fmt.format(values[f"p{p}"]) for p in PERCENTILES))
        kinds = [("JPEG", self.formats.get("JPEG", 0)), ("non-JPEG", self.non_jpeg),
                 ("progressive JPEG", self.progressive), ("CMYK/YCCK", self.cmyk), ("grayscale", self.grayscale),
                 ("arithmetic-coded JPEG", self.arithmetic), ("restart-indexed JPEG", self.restart_indexed)]
        lines += ["", "  kind                    images"] + [f"  {k:<22} {n:7d}" for k, n in kinds]
        lines += [f"    {fmt:<20} {n:7d}" for fmt, n in sorted(self.formats.items()) if fmt != "JPEG"]
        lines += ["", f"  problems: {len(self.problems)}" + (
            " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.problem_counts.items())) + ")" if self.problems
            else "")]
        # grouped by reason, commonest first, with one file each: a dataset's thousands of bad files are a few kinds
        groups: dict[tuple[str, str], list[str]] = {}
        for p in self.problems:
            groups.setdefault((p["problem"], p["reason"]), []).append(p["file"])
        ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        shown = 12
        for (problem, reason), files in ranked[:shown]:
            example = files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more"
            lines.append(f"    {len(files):6d}  {problem}: {reason}  ({example})")
        if len(ranked) > shown:
            lines.append(f"    ... and {len(ranked) - shown} other reasons ({sum(len(f) for _, f in ranked[shown:])} "
                         f"files)")
        if self.problems:
            lines.append("    (--json OUT lists every file and its reason)")
        lines.append(f"  duplicate files: {self.duplicate_files} in {len(self.duplicates)} groups")
        for group in self.duplicates[:10]:
            lines.append("    " + " = ".join(group[:4]) + (f" (+{len(group) - 4})" if len(group) > 4 else ""))
        if len(self.duplicates) > 10:
            lines.append(f"    ... and {len(self.duplicates) - 10} more groups (--json OUT lists all)")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Finding the images


def expand_shards(patterns: Sequence[str]) -> list[str]:
    """Shard paths from patterns: brace ranges (``{000000..000127}``, zero padding kept), globs, plain paths."""
    paths: list[str] = []
    for pattern in patterns:
        for expanded in _expand_braces(os.path.expanduser(pattern)):
            if glob.has_magic(expanded):
                paths.extend(sorted(glob.glob(expanded)))
            else:
                paths.append(expanded)
    return paths


def _expand_braces(pattern: str) -> list[str]:
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
    out: list[str] = []
    for n in range(int(lo), int(hi) + 1):
        out.extend(_expand_braces(pattern[:m.start()] + str(n).zfill(width) + pattern[m.end():]))
    return out


def _folder_items(root: str) -> list[_Item]:
    files = scan_class_folder(root, IMG_EXTENSIONS)
    prefix = root.rstrip(os.sep) + os.sep
    items = []
    for path in files:
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)
        cls = rel.split(os.sep, 1)[0] if os.sep in rel else ROOT_CLASS
        items.append(_Item(path, cls))
    return items


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset's (key, extension) of a member name: the split is at the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (folder + "/" + stem if folder else stem), (ext if dot else "")


def _shard_items(shards: list[str]) -> Iterator[_Item]:
    """The samples of each shard, in order, with their image bytes; structural problems become items too."""
    for shard in shards:
        group_key: str | None = None
        members: dict[str, bytes] = {}
        try:
            with tarfile.open(shard, mode="r:") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    key, ext = _split_member(m.name)
                    if key != group_key and group_key is not None:
                        yield _shard_sample(shard, group_key, members)
                        members = {}
                    group_key = key
                    f = tar.extractfile(m)
                    members[ext.lower()] = f.read() if f is not None else b""
        except (tarfile.TarError, OSError, EOFError) as e:
            where = f"at sample {group_key!r}" if group_key is not None else "before its first sample"
            if group_key is not None and members:
                yield _shard_sample(shard, group_key, members)
            yield _Item(shard, "?", problem="bad shard", is_sample=False,
                        reason=f"the tar breaks off {where} ({type(e).__name__}: {e}); later samples are lost")
            continue
        if group_key is not None:
            yield _shard_sample(shard, group_key, members)


def _shard_sample(shard: str, key: str, members: dict[str, bytes]) -> _Item:
    images = [ext for ext in members if ext in SHARD_IMAGE_EXTS]
    cls = "?"
    problem = ""
    reason = ""
    meta: object = None
    if "json" in members:
        try:
            meta = json.loads(members["json"])
            if isinstance(meta, dict) and "class" in meta:
                cls = str(meta["class"])
        except (json.JSONDecodeError, UnicodeDecodeError):
            problem, reason = "bad metadata", f"{key}.json is not valid JSON"
    if "cls" not in members:
        problem, reason = "no label", f"sample {key!r} has no .cls member (members: {', '.join(sorted(members))})"
    else:
        text = members["cls"].decode("utf-8", "replace").strip()
        if not re.fullmatch(r"\d+", text):
            problem, reason = "no label", f"{key}.cls holds {text[:20]!r}, not a class index"
        elif isinstance(meta, dict) and isinstance(meta.get("label"), int) and meta["label"] != int(text):
            # the packer writes both; a tool that rewrote one of them would train on the wrong labels
            problem, reason = "bad metadata", f"{key}.cls says {text} but {key}.json says label {meta['label']}"
        elif cls == "?":
            cls = text
    if not images:
        problem, reason = "no image", (f"sample {key!r} has no image member (members: {', '.join(sorted(members))}; "
                                       f"expected one of .jpg .jpeg .png ...)")
        return _Item(f"{shard}:{key}", cls, problem=problem, reason=reason)
    name = f"{shard}:{key}.{images[0]}"
    if problem:
        return _Item(name, cls, problem=problem, reason=reason)
    return _Item(name, cls, data=members[images[0]])


# ----------------------------------------------------------------------------------------------------------------------
# Checking


def _check_item(item: _Item, full_decode: bool) -> _Checked:
    if item.problem:
        return _Checked(item.name, item.cls, problem=item.problem, reason=item.reason, is_sample=item.is_sample)
    data = item.data
    if data is None:
        try:
            with open(item.name, "rb") as f:
                data = f.read()
        except OSError as e:
            return _Checked(item.name, item.cls, problem="unreadable", reason=f"cannot read: {e.strerror or e}")
    info = inspect_image(data, full_decode)
    return _Checked(item.name, item.cls, size=len(data), sha256=hashlib.sha256(data).hexdigest(), info=info,
                    problem=info.problem, reason=info.reason)


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}


def check(paths: str | Sequence[str], *, full_decode: bool = False, threads: int | None = None,
          progress: bool | None = None) -> CheckReport:
    """Check every image under `paths` (a folder, or shards: see the module docstring); never raises for a bad
    image (it is in the report), raises `CheckError` when there is nothing to check."""
    items_iter, total, kind, label = _items(paths)
    report = CheckReport(path=label, kind=kind, full_decode=full_decode)
    threads = threads or max(4, 2 * _C.available_cpus())
    by_hash: dict[str, list[str]] = {}
    widths: list[float] = []
    heights: list[float] = []
    sizes: list[float] = []
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(threads) as pool, tqdm(total=total, unit="img", desc=f"checking {label}",
                                                    disable=None if progress is None else not progress) as bar:
        for r in ordered_map(pool, lambda it: _check_item(it, full_decode), items_iter, window=4 * threads):
            if r.problem:
                report.problems.append({"file": r.name, "problem": r.problem, "reason": r.reason})
            if not r.is_sample:
                continue
            bar.update(1)
            report.files += 1
            report.classes[r.cls] += 1
            report.bytes += r.size
            if r.sha256:
                by_hash.setdefault(r.sha256, []).append(r.name)
                sizes.append(r.size)
            info = r.info
            if info is None or not info.format:
                continue
            report.formats[info.format] += 1
            report.progressive += info.format == "JPEG" and info.progressive
            report.arithmetic += info.format == "JPEG" and info.arithmetic
            report.restart_indexed += info.restart_indexed
            report.cmyk += info.cmyk
            report.grayscale += info.grayscale
            if info.width:
                widths.append(info.width)
                heights.append(info.height)
    report.duplicates = [names for names in by_hash.values() if len(names) > 1]
    if widths:
        report.sizes = {"width": _percentiles(widths), "height": _percentiles(heights),
                        "megapixels": _percentiles([w * h / 1e6 for w, h in zip(widths, heights, strict=True)]),
                        "file KB": _percentiles([s / 1e3 for s in sizes])}
    return report


def _items(paths: str | Sequence[str]) -> tuple[Iterator[_Item], int | None, str, str]:
    """The items to check, their number when known, the kind ("folder" or "shards") and a label for PATH."""
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    given = [os.path.expanduser(os.fspath(p)) for p in given]
    if not given:
        raise CheckError("no PATH given: name a folder of images or tar shards")
    if len(given) == 1 and os.path.isdir(given[0]):
        root = given[0]
        try:
            entries = os.listdir(root)
        except OSError as e:
            raise CheckError(f"cannot list {root}: {e.strerror or e}") from None
        tars = sorted(os.path.join(root, e) for e in entries if e.endswith(".tar"))
        if tars and not any(os.path.isdir(os.path.join(root, e)) for e in entries):
            return _shard_items(tars), None, "shards", root
        items = _folder_items(root)
        if not items:
            raise CheckError(f"no images in {root}: expected files ending in {', '.join(IMG_EXTENSIONS)} (any case) "
                             f"in it or its subfolders, or .tar shards")
        return iter(items), len(items), "folder", root
    shards = expand_shards(given)
    missing = [s for s in shards if not os.path.isfile(s)]
    if missing or not shards:
        what = ", ".join(missing[:5]) if missing else ", ".join(given)
        raise CheckError(f"no such shard or folder: {what}; PATH is a folder, or .tar shards (a list, a glob in quotes "
                         f"such as 'DIR/*.tar', or a range such as 'DIR/train-{{000000..000009}}.tar')")
    return _shard_items(shards), None, "shards", given[0] if len(given) == 1 else f"{len(shards)} shards"


# ----------------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ipu_cnn.data.check",
        description="Check every image of a dataset (a folder tree or WebDataset tar shards) for what breaks or skews "
                    "training: undecodable or truncated files, non-JPEG / CMYK / progressive / grayscale images, "
                    "duplicates, per-class counts and the size distribution. Exit status: 0 clean, 1 problems "
                    "(see --fail-on), 2 PATH unreadable.")
    p.add_argument("path", nargs="+", help="a folder, or .tar shards: files, a quoted glob, or a brace range")
    p.add_argument("--full-decode", action="store_true",
                   help="decode every image fully (finds corrupt scan data a header check cannot see; slower)")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the full report as JSON to OUT")
    p.add_argument("--threads", type=int, default=None, help="reader threads (default: twice the CPUs, at least 4)")
    p.add_argument("--fail-on", choices=["errors", "warnings", "never"], default="errors",
                   help="what makes the exit status 1: problems (default); also duplicates and non-JPEG, CMYK or "
                        "progressive files (warnings); nothing (never)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = check(args.path, full_decode=args.full_decode, threads=args.threads,
                       progress=False if args.no_progress else None)
    except (CheckError, OSError) as e:
        print(f"check: error: {e}", file=sys.stderr)
        return 2
    try:
        print(report.table(), flush=True)
    except BrokenPipeError:  # piped into `head`: the reader has seen enough; the JSON and the status still follow
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's final flush does not fail
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report.to_dict(), f, indent=1, ensure_ascii=False)
                f.write("\n")
        except OSError as e:
            print(f"check: error: cannot write the report to {args.json}: {e.strerror or e}", file=sys.stderr)
            return 2
    return report.exit_code(args.fail_on)


if __name__ == "__main__":
    sys.exit(main())
