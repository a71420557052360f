"""pytest-benchmark suites: host throughput of ours against the region-decode floor and the peers, thread scaling, and
the resampler alone on the SIMD path the process runs (test_resample.py).

Run them explicitly (the project's ``addopts`` disable benchmarks, and ``testpaths`` leaves this folder out of a plain
``pytest``)::

    pytest benchmarks/ --benchmark-enable                      # all groups
    pytest benchmarks/ --benchmark-enable -k train             # train only
    pytest benchmarks/                                         # smoke: every pipeline runs one pass, nothing timed

Input: ``../shared/corpora/imagenet_sample`` (seen from the project root) when present, else photo-like JPEGs generated
into the cache (``ipu_cnn.benchmark.images``). Files are read into memory first; a file any pipeline cannot decode is
left out for all of them. Every benchmark round is one pass over all the images, so pytest-benchmark's times are per
pass; the terminal summary converts them to images/s and prints ours ÷ each peer (fastest rounds, same session).
pytest-benchmark runs one benchmark after another, so a machine whose load changes skews these ratios more than those of
``python -m ipu_cnn.benchmark``, which interleaves every pipeline's passes round by round: prefer it for the figures.
Environment: ``IPU_CNN_BENCH_IMAGES`` (default 500), ``IPU_CNN_BENCH_ROUNDS`` (default 5), ``IPU_CNN_BENCH_FOLDER``
(another folder of images), ``IPU_CNN_BENCH_INTERPOLATION`` (bilinear or bicubic).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ipu_cnn.benchmark.images import generated_folder, load_images
from ipu_cnn.benchmark.peers import MODES, PIPELINES, Pipeline, Prepared, Workload
from ipu_cnn.benchmark.runner import one_thread_peers

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "imagenet_sample"
IMAGES = int(os.environ.get("IPU_CNN_BENCH_IMAGES", "500"))
ROUNDS = int(os.environ.get("IPU_CNN_BENCH_ROUNDS", "5"))


@dataclass
class Corpus:
    """The in-memory files every benchmark of the session runs on."""

    source: str
    blobs: list[bytes]
    excluded: dict[str, str] = field(default_factory=dict)


@dataclass
class _Record:
    group: str
    pipeline: str
    label: str
    threads: int
    images: int
    best_seconds: float


_RECORDS: list[_Record] = []
_CORPORA: list[Corpus] = []  # the session's corpus, once made, for the summary


@pytest.fixture(scope="session")
def work() -> Workload:
    """The workload of every benchmark: 224x224 output, the crops of seed 0."""
    return Workload(size=224, interpolation=os.environ.get("IPU_CNN_BENCH_INTERPOLATION", "bilinear"))


@pytest.fixture(scope="session", autouse=True)
def _peers_on_one_thread() -> Iterator[None]:
    with one_thread_peers():
        yield


@pytest.fixture(scope="session")
def corpus(work: Workload) -> Corpus:
    """The images, with the files any available pipeline fails on left out (that pass also warms every pipeline)."""
    folder = os.environ.get("IPU_CNN_BENCH_FOLDER")
    if folder:
        names, blobs = load_images(folder, IMAGES)
        source = f"{len(blobs)} files from {folder}"
    elif CORPUS.is_dir():
        names, blobs = load_images(CORPUS, IMAGES)
        source = f"{len(blobs)} files from {CORPUS}"
    else:
        gen = generated_folder(IMAGES)
        paths = [gen / f"photo_{i:05d}.jpg" for i in range(IMAGES)]
        names, blobs = [os.fspath(p) for p in paths], [p.read_bytes() for p in paths]
        source = f"{IMAGES} generated JPEGs ({CORPUS} is absent)"
    bad: dict[int, str] = {}
    for p in PIPELINES:
        if p.unavailable() is None:
            for mode in MODES:
                for pos, reason in p.prepare(blobs, mode, work, 1).failures().items():
                    bad.setdefault(pos, f"{p.name} ({mode}): {reason}")
    kept = [b for i, b in enumerate(blobs) if i not in bad]
    if not kept:
        pytest.skip(f"no image of {source} decodes in every pipeline")
    corpus = Corpus(source, kept, {names[i]: why for i, why in sorted(bad.items())})
    _CORPORA.append(corpus)
    return corpus


class Throughput:
    """What a benchmark test does: pick a pipeline (skipping with the reason when it cannot run here), time passes of
    it over the corpus in a group, and keep the fastest round for the ratio summary."""

    def __init__(self, benchmark, corpus: Corpus, work: Workload) -> None:
        self.benchmark, self.corpus, self.work = benchmark, corpus, work

    def pipeline(self, name: str) -> Pipeline:
        p = next(p for p in PIPELINES if p.name == name)
        reason = p.unavailable()
        if reason is not None:
            pytest.skip(reason)
        return p

    def time(self, group: str, pipeline: Pipeline, mode: str, threads: int = 1) -> None:
        prepared: Prepared = pipeline.prepare(self.corpus.blobs, mode, self.work, threads)
        bm, images = self.benchmark, len(self.corpus.blobs)
        bm.group = group
        bm.extra_info.update(images=images, source=self.corpus.source, pipeline=pipeline.label, threads=threads)
        bm.pedantic(prepared.run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
        if bm.enabled and bm.stats is not None:
            best = float(bm.stats.stats.min)
            bm.extra_info["images_per_s"] = images / best
            _RECORDS.append(_Record(group, pipeline.name, pipeline.label, threads, images, best))


@pytest.fixture
def throughput(benchmark, corpus: Corpus, work: Workload) -> Throughput:
    """The benchmark fixture bound to the session's corpus and workload."""
    return Throughput(benchmark, corpus, work)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Images/s per benchmark, per group, with ours ÷ each peer (one-core groups) or the speed-up over one thread
    (thread-scaling groups), from the fastest round of each benchmark of this session."""
    if not _RECORDS:
        return
    tr = terminalreporter
    tr.section("images/s and ratios (fastest round of each; same session)")
    for corpus in _CORPORA:
        tr.write_line(f"input: {corpus.source}, {len(corpus.blobs)} timed; left out for every pipeline: "
                      f"{', '.join(f'{k} ({v})' for k, v in corpus.excluded.items()) or 'none'}")
    for group in dict.fromkeys(r.group for r in _RECORDS):
        rows = [r for r in _RECORDS if r.group == group]
        scaling = len({r.threads for r in rows}) > 1
        base = next((r for r in rows if r.pipeline == "ours" and r.threads == 1), None)
        tr.write_line(f"{group}:")
        for r in rows:
            name = f"{r.label}, {r.threads} thread(s)" if scaling else r.label
            note = ""
            if base is not None and scaling:
                note = f"  speed-up {base.best_seconds / r.best_seconds:5.2f}x"
            elif base is not None:
                note = f"  ours ÷ it {r.best_seconds / base.best_seconds:5.2f}x"
            tr.write_line(f"  {name:<64} {r.images / r.best_seconds:8.0f} img/s{note}")
