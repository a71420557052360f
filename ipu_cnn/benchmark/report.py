"""Turning a run's measurements into the Markdown report and the JSON record, and checking the targets.

Every ratio divides two figures of the same run, never a figure of another run: the tables' the fastest pass of each,
the one-core targets' the median over the rounds of the ratio within each round. The targets are those of the native
engine's issue, set for ``../shared/corpora/imagenet_sample`` on one core.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ipu_cnn.benchmark.peers import MODES, Pipeline, pillow_build
from ipu_cnn.benchmark.runner import Results

__all__ = ["TARGETS", "Target", "TargetCheck", "check_targets", "markdown", "record"]

Key = tuple[str, str, int]  # (pipeline, mode, threads)


@dataclass(frozen=True)
class Target:
    """``numerator`` images/s at least ``minimum`` times ``denominator`` images/s."""

    text: str
    numerator: Key
    denominator: Key
    minimum: float


TARGETS: tuple[Target, ...] = (
    Target("train: whole pipeline >= 0.92x the region-decode floor", ("ours", "train", 1), ("floor", "train", 1), 0.92),
    Target("eval: whole pipeline >= 0.92x the region-decode floor", ("ours", "eval", 1), ("floor", "eval", 1), 0.92),
    Target("train on restart-indexed bytes >= 1.1x the file-based region-decode floor", ("ours-rst", "train", 1),
           ("floor", "train", 1), 1.1),
    Target("train >= 1.7x Pillow", ("ours", "train", 1), ("pillow", "train", 1), 1.7),
    Target("train >= 1.5x torchvision v2", ("ours", "train", 1), ("torchvision", "train", 1), 1.5),
    Target("eval >= 2.0x Pillow", ("ours", "eval", 1), ("pillow", "eval", 1), 2.0),
    Target("eval >= 1.4x torchvision v2", ("ours", "eval", 1), ("torchvision", "eval", 1), 1.4),
    Target("train: 2 threads >= 1.6x one thread", ("ours", "train", 2), ("ours", "train", 1), 1.6),
    Target("eval: 2 threads >= 1.6x one thread", ("ours", "eval", 2), ("ours", "eval", 1), 1.6),
)


def _rate(results: Results, key: Key, cpu: bool = False) -> float | None:
    """Images/s of the fastest pass, or with ``cpu`` images per CPU-second."""
    m = results.get(*key)
    if m is None or not m.seconds:
        return None
    rate = m.best_cpu if cpu else m.best
    return None if math.isnan(rate) else rate


def _ratio(results: Results, numerator: Key, denominator: Key, cpu: bool = False) -> float | None:
    num, den = _rate(results, numerator, cpu), _rate(results, denominator, cpu)
    return num / den if num and den else None


def _round_ratio(results: Results, numerator: Key, denominator: Key, cpu: bool = False) -> float | None:
    """The median over rounds of the two pipelines' images/s ratio within each round (the denominator's pass time over
    the numerator's; by wall clock, or with ``cpu`` by CPU time). Both ran in every round, in shuffled order, so a
    round's ratio compares two passes made under the same conditions, and the median discards the rounds a burst of
    other load hit one of them."""
    num, den = results.get(*numerator), results.get(*denominator)
    if num is None or den is None:
        return None
    a, b = (num.cpu_seconds, den.cpu_seconds) if cpu else (num.seconds, den.seconds)
    ratios = [d / n for n, d in zip(a, b) if n > 0 and d > 0]
    return statistics.median(ratios) if ratios else None


@dataclass(frozen=True)
class TargetCheck:
    """A target's measured ratios and verdict.

    One-thread targets are checked as the issue that set them states its bar: the median over the interleaved rounds
    of the per-round ratio, which must reach the minimum both by wall clock and by CPU time (on a loaded machine wall
    clock favours the faster pipeline, whose shorter passes more often run undisturbed, and CPU time corrects for
    that). The ratios of the fastest passes (the table's figures) are reported beside it. Thread-scaling targets
    compare the fastest passes, and are "inconclusive" when the multi-threaded passes did not get their cores (other
    processes held them), since the figure then says nothing about the code. "n/a": a figure the target needs was not
    measured, or the target was set against stock Pillow and this run's Pillow is pillow-simd (its ratios are still
    given).
    """

    target: str
    minimum: float
    ratio: float | None  # fastest passes, from wall-clock images/s
    status: str  # "pass", "FAIL", "inconclusive" or "n/a"
    note: str = ""
    ratio_cpu: float | None = None  # fastest passes, from images per CPU-second (one-thread targets only)
    round_ratio: float | None = None  # median of the per-round ratios by wall clock (one-thread targets only)
    round_ratio_cpu: float | None = None  # the same by CPU time


def check_targets(results: Results, pillow: str | None = None) -> list[TargetCheck]:
    """Every target of TARGETS checked against this run's figures; ``pillow`` names the Pillow build the Pillow rows
    measured (``pillow_build()`` when not given). The minimums against the Pillow peer were set against stock Pillow,
    so they are not judged when that build is pillow-simd."""
    pillow = pillow or pillow_build()
    simd = pillow.startswith("pillow-simd")
    checks: list[TargetCheck] = []
    for t in TARGETS:
        num, den = _rate(results, t.numerator), _rate(results, t.denominator)
        if num is None or den is None:
            pipeline, mode, threads = t.numerator if num is None else t.denominator
            checks.append(TargetCheck(t.text, t.minimum, None, "n/a", f"{pipeline} {mode} at {threads} thread(s) not "
                                      "measured"))
            continue
        ratio = num / den
        if t.numerator[2] == t.denominator[2] == 1:
            ratio_cpu = _ratio(results, t.numerator, t.denominator, cpu=True)
            rounds = _round_ratio(results, t.numerator, t.denominator)
            rounds_cpu = _round_ratio(results, t.numerator, t.denominator, cpu=True)
            measured = {k: v for k, v in (("wall clock", rounds), ("CPU time", rounds_cpu)) if v is not None}
            reached = [k for k, v in measured.items() if v >= t.minimum]
            status = "pass" if measured and len(reached) == len(measured) else "FAIL"
            note = f"(reached by {reached[0]} only)" if status == "FAIL" and reached else ""
            if simd and t.denominator[0] == "pillow":
                status, note = "n/a", f"(set against stock Pillow; this run's Pillow is {pillow})"
            checks.append(TargetCheck(t.text, t.minimum, ratio, status, note, ratio_cpu, rounds, rounds_cpu))
            continue
        m = results.get(*t.numerator)
        threads = t.numerator[2]
        if m is not None and m.cores_busy < 0.9 * threads:
            checks.append(TargetCheck(t.text, t.minimum, ratio, "inconclusive",
                                      f"(only {m.cores_busy:.2f} of {threads} cores were free)"))
            continue
        checks.append(TargetCheck(t.text, t.minimum, ratio, "pass" if ratio >= t.minimum else "FAIL"))
    return checks


def _fmt_rate(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:,.0f}"


def _fmt_ratio(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) or v == 0 else f"{v:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def markdown(
    results: Results, pipelines: Sequence[Pipeline], facts: dict[str, object], setup: dict[str, object]
) -> str:
    """The report: environment, the comparison table, thread scaling, DCT scales, targets, and what was left out."""
    out: list[str] = ["## Host pipeline throughput", ""]
    out += [f"- {k}: {v}" for k, v in facts.items()]
    out += [f"- {k}: {v}" for k, v in setup.items()]
    timed = (
        f"- images timed: {results.images}; each figure is the fastest of {results.rounds} interleaved passes over all "
        f"of them (median in the JSON); measured in {results.seconds_total:.0f} s"
    )
    before, after = results.load_average
    load = (f"- 1-minute load average {before:.1f} before, {after:.1f} after, on {facts.get('cpus_available')} CPUs "
            "(other work on the machine slows passes and caps thread scaling)")
    out += [timed, load, ""]

    for cpu in (False, True):
        rows = []
        for p in pipelines:
            if p.name in results.skipped:
                continue
            rates = {mode: _rate(results, (p.name, mode, 1), cpu) for mode in MODES}
            ratios = {mode: _ratio(results, ("ours", mode, 1), (p.name, mode, 1), cpu) for mode in MODES}
            rows.append([p.label, _fmt_rate(rates["train"]), _fmt_rate(rates["eval"]),
                         _fmt_ratio(ratios["train"]), _fmt_ratio(ratios["eval"])])
        if not cpu:
            out += ["### One core (images/s, wall clock; ratio = ours ÷ it)", ""]
            out += _table(["pipeline", "train img/s", "eval img/s", "ours ÷ it, train", "ours ÷ it, eval"], rows)
            if results.skipped:
                out += [""] + [f"- not run: {name}: {why}" for name, why in results.skipped.items()]
        else:
            title = ("### Cross-check: one core by CPU time (images per CPU-second; unaffected by other processes "
                     "taking the core)")
            out += ["", title, ""]
            out += _table(["pipeline", "train img/CPU-s", "eval img/CPU-s", "ours ÷ it, train", "ours ÷ it, eval"],
                          rows)

    threads = sorted({m.threads for m in results.measurements if m.pipeline == "ours"})
    rows = []
    for k in threads:
        cells = [str(k)]
        for mode in MODES:
            m = results.get("ours", mode, k)
            cells += [_fmt_rate(_rate(results, ("ours", mode, k))),
                      _fmt_ratio(_ratio(results, ("ours", mode, k), ("ours", mode, 1))),
                      "–" if m is None or not m.seconds else f"{m.cores_busy:.2f}"]
        rows.append(cells)
    out += ["", "### Thread scaling, ours (decode_batch num_threads=k; cores busy = process CPU time / wall time)", ""]
    out += _table(["threads", "train img/s", "train speed-up", "train cores busy", "eval img/s", "eval speed-up",
                   "eval cores busy"], rows)

    scales = sorted({s for mode in MODES for s in results.dct_scales.get(mode, {})})
    rows = []
    for s in scales:
        cells = [f"{s}/8"]
        for mode in MODES:
            hist = results.dct_scales.get(mode, {})
            total = sum(hist.values()) or 1
            n = hist.get(s, 0)
            cells.append(f"{n} ({100 * n / total:.0f}%)")
        rows.append(cells)
    out += ["", "### DCT scale used by ours (images)", ""]
    out += _table(["scale", "train", "eval"], rows)
    non_jpeg = {mode: n for mode, n in results.non_jpeg.items() if n}
    if non_jpeg:
        out += ["", f"- decoded through the Pillow fallback (not JPEG): {non_jpeg}"]

    out += ["", "### Targets (set for imagenet_sample, one core)", ""]
    out += _table(["target", "fastest, wall clock", "fastest, CPU time", "median of rounds, wall / CPU", "result"],
                  [[c.target, _fmt_ratio(c.ratio), _fmt_ratio(c.ratio_cpu),
                    f"{_fmt_ratio(c.round_ratio)} / {_fmt_ratio(c.round_ratio_cpu)}" if c.round_ratio else "–",
                    f"{c.status} {c.note}".strip()]
                   for c in check_targets(results)])
    out += ["", f"One-core targets are judged on the median over the {results.rounds} interleaved rounds of each round's "
            "ratio (ours and the floors run back to back within a round), which must reach the minimum by wall clock "
            "and by CPU time; the fastest passes' ratios are the table's. Thread scaling compares the fastest passes "
            "and needs the cores free."]
    if results.excluded:
        out += ["", f"### Files left out for every pipeline ({len(results.excluded)})", ""]
        out += [f"- {name}: {why}" for name, why in results.excluded.items()]
    return "\n".join(out) + "\n"


def record(results: Results, pipelines: Sequence[Pipeline], facts: dict[str, object], setup: dict[str, object]
           ) -> dict[str, object]:
    """All figures of the run, for --json."""
    return {
        "info": facts,
        "setup": {**setup, "rounds": results.rounds, "statistic": "best (fastest pass); median also given"},
        "images": results.images,
        "pipelines": {p.name: p.label for p in pipelines},
        "skipped": results.skipped,
        "excluded": results.excluded,
        "measurements": [m.as_dict() for m in results.measurements],
        "ratios_ours_over": {
            p.name: {mode: _ratio(results, ("ours", mode, 1), (p.name, mode, 1)) for mode in MODES}
            for p in pipelines if p.name not in results.skipped
        },
        "ratios_ours_over_by_cpu_time": {
            p.name: {mode: _ratio(results, ("ours", mode, 1), (p.name, mode, 1), cpu=True) for mode in MODES}
            for p in pipelines if p.name not in results.skipped
        },
        "dct_scales": {mode: {f"{k}/8": v for k, v in hist.items()} for mode, hist in results.dct_scales.items()},
        "non_jpeg": results.non_jpeg,
        "targets": [asdict(c) for c in check_targets(results)],
        "seconds_total": results.seconds_total,
        "load_average_1min": {"before": results.load_average[0], "after": results.load_average[1]},
    }
