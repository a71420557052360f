"""Smoke test of `python -m ipu_cnn.benchmark` on a few generated JPEGs, and checks that its peers do the same work.

Nothing here asserts on speed: a shared machine's timings are noise for a test. What is checked is that the report has
a row with figures for every mandatory pipeline, the thread-scaling and DCT-scale sections and every target, that the
JSON has the same figures, and that the peers resize the same boxes as ours (so the ratios compare like with like).
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ipu_cnn import _C
from ipu_cnn.benchmark import main
from ipu_cnn.benchmark.cli import parse_threads
from ipu_cnn.benchmark.images import generated_folder, photo_jpeg
from ipu_cnn.benchmark.peers import PIPELINES, Workload
from ipu_cnn.benchmark.report import TARGETS, check_targets
from ipu_cnn.benchmark.runner import BACK_TO_BACK, Measurement, Results, round_order
from ipu_cnn.data import EvalTransform, TrainTransform, decode_image, read_header
from ipu_cnn.data.reference import eval_box, pil_eval, pil_train

#: Rows every run must have (the peers whose libraries are the package's own dependencies).
MANDATORY = ("ours", "floor", "pillow", "pillow-draft", "torchvision")
NUMBER = r"[0-9][0-9,]*"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_folder(8, tmp_path_factory.mktemp("photos"))


def _row(report: str, label: str) -> str:
    rows = [line for line in report.splitlines() if line.startswith(f"| {label}")]
    assert rows, f"no table row for {label!r} in:\n{report}"
    return rows[0]


def test_cli_reports_every_pipeline(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "bench.json"
    assert main(["--images", "8", "--repeat", "1", "--batch-size", "4", "--threads", "1,2",
                 "--generated-dir", str(photos), "--json", str(out_json)]) == 0
    report = capsys.readouterr().out

    assert "jpeg_library" in report and "resampler_simd" in report and "cpus_available" in report
    labels = {p.name: p.label for p in PIPELINES}
    expected = list(MANDATORY)
    if importlib.util.find_spec("simplejpeg") and importlib.util.find_spec("cv2"):
        expected.append("simplejpeg-cv2")
    for name in expected:
        cells = [c.strip() for c in _row(report, labels[name]).strip("|").split("|")]
        assert re.fullmatch(NUMBER, cells[1]) and re.fullmatch(NUMBER, cells[2]), cells  # train, eval img/s
        assert re.fullmatch(r"[0-9.]+x", cells[3]) and re.fullmatch(r"[0-9.]+x", cells[4]), cells  # ratios
    assert "1.00x" in _row(report, labels["ours"])
    for name in ("turbojpeg", "dali", "pillow-simd"):  # optional: a row, or a "not run" line saying why
        assert labels[name] in report or f"not run: {name}:" in report

    assert "### Thread scaling" in report
    scaling_row = rf"^\| 2 +\| {NUMBER} +\| [0-9.]+x +\| [0-9.]+ +\| {NUMBER} +\| [0-9.]+x +\| [0-9.]+ +\|$"
    assert re.search(scaling_row, report, re.MULTILINE), report
    assert "### DCT scale used by ours" in report and re.search(r"^\| [1248]/8 ", report, re.MULTILINE)
    for t in TARGETS:
        row = (rf"^\| {re.escape(t.text)} +\| [0-9.]+x +\| ([0-9.]+x|–) +\| ([0-9.]+x / [0-9.]+x|–) +\| "
               r"(pass|FAIL|inconclusive|n/a \(set against stock Pillow)[^|]*\|$")
        assert re.search(row, report, re.MULTILINE), t.text

    data = json.loads(out_json.read_text())
    assert data["images"] == 8 and not data["excluded"]
    measured = {(m["pipeline"], m["mode"], m["threads"]) for m in data["measurements"]}
    for name in expected:
        assert {(name, "train", 1), (name, "eval", 1)} <= measured
    assert {("ours", "train", 2), ("ours", "eval", 2)} <= measured
    assert all(m["best_images_per_s"] > 0 and len(m["seconds"]) == 1 for m in data["measurements"])
    assert sum(data["dct_scales"]["train"].values()) == 8
    assert [t["target"] for t in data["targets"]] == [t.text for t in TARGETS]


def _floor_check(ours: list[float], floor: list[float], ours_cpu: list[float] | None = None):
    """The train floor target's check for passes of the given seconds (round r: ours[r] and floor[r])."""
    m = [Measurement("ours", "ours", "train", 1, 100, ours, ours_cpu or ours),
         Measurement("floor", "floor", "train", 1, 100, floor, floor)]
    results = Results(images=100, excluded={}, skipped={}, measurements=m, dct_scales={}, non_jpeg={}, rounds=len(ours))
    return next(c for c in check_targets(results) if c.target.startswith("train: whole pipeline"))


def test_one_core_targets_are_judged_on_the_median_of_the_round_ratios() -> None:
    # Ours at 0.90x of the floor in rounds 1-3; in rounds 4 and 5 other load slowed the floor's passes but not ours,
    # and ours' fastest pass (1.00 s, round 4) against the floor's (0.99 s) reads 0.99x: the fastest passes pass,
    # the rounds' median (0.90x) does not.
    check = _floor_check(ours=[1.10, 1.10, 1.10, 1.00, 1.05], floor=[0.99, 0.99, 0.99, 1.00, 1.20])
    assert check.ratio == pytest.approx(0.99 / 1.00)
    assert check.round_ratio == pytest.approx(0.90)  # median of 0.9, 0.9, 0.9, 1.0, 1.14
    assert check.status == "FAIL"
    # The same with the per-round ratios at 0.95x: passes, though the fastest passes alone (0.93x) would not.
    check = _floor_check(ours=[1.00, 1.00, 1.00, 1.00, 1.00], floor=[0.95, 0.95, 0.95, 0.93, 1.30])
    assert check.ratio == pytest.approx(0.93) and check.round_ratio == pytest.approx(0.95)
    assert check.status == "pass"
    # CPU time must reach it too (here the wall clock does, CPU time does not).
    check = _floor_check(ours=[1.00] * 3, floor=[0.95] * 3, ours_cpu=[1.10] * 3)
    assert check.round_ratio == pytest.approx(0.95) and check.round_ratio_cpu == pytest.approx(0.95 / 1.10)
    assert check.status == "FAIL" and "wall clock only" in check.note


def test_pillow_targets_are_not_judged_against_pillow_simd() -> None:
    """The Pillow targets were set against stock Pillow; run where pillow-simd is installed (the Pillow rows then
    measure it), they give their ratios but no verdict, and say why. The other targets are judged as always."""
    def passes(name: str, mode: str, seconds: float) -> Measurement:
        return Measurement(name, name, mode, 1, 100, [seconds] * 3, [seconds] * 3)

    m = [passes("ours", "train", 1.0), passes("ours", "eval", 1.0), passes("floor", "train", 0.95),
         passes("pillow", "train", 1.5), passes("pillow", "eval", 1.5)]  # 1.5x Pillow: under 1.7x and 2.0x
    results = Results(images=100, excluded={}, skipped={}, measurements=m, dct_scales={}, non_jpeg={}, rounds=3)
    for build, verdict in (("Pillow 13.0.0", "FAIL"), ("pillow-simd 12.1.1.post0", "n/a")):
        checks = {c.target: c for c in check_targets(results, pillow=build)}
        for text in ("train >= 1.7x Pillow", "eval >= 2.0x Pillow"):
            assert checks[text].status == verdict and checks[text].ratio == pytest.approx(1.5)
            assert checks[text].round_ratio == pytest.approx(1.5)
            assert ("pillow-simd 12.1.1.post0" in checks[text].note) == (verdict == "n/a")
        assert checks["train: whole pipeline >= 0.92x the region-decode floor"].status == "pass"


def test_rounds_time_ours_and_the_floors_back_to_back() -> None:
    """Each round times every job once; ours and the floors on one thread for one workload run one right after the
    other (the per-round ratios the floor targets are judged on then compare passes seconds apart, not a round apart),
    each of them first in turn; the groups' order changes from round to round."""
    keys = [(p, mode, t) for mode in ("train", "eval") for p, t in [
        ("ours", 1), ("ours", 2), ("floor", 1), ("ours-rst", 1), ("floor-rst", 1), ("pillow", 1), ("torchvision", 1)]]
    rng = np.random.default_rng(0)
    rounds = [round_order(keys, rng, r) for r in range(8)]
    firsts: dict[str, list[str]] = {"train": [], "eval": []}
    for order in rounds:
        assert sorted(order) == list(range(len(keys)))  # every job exactly once
        for mode in ("train", "eval"):
            at = [i for i, j in enumerate(order) if keys[j][0] in BACK_TO_BACK and keys[j][1:] == (mode, 1)]
            assert at == list(range(at[0], at[0] + 4)), (mode, [keys[j] for j in order])  # adjacent
            firsts[mode].append(keys[order[at[0]]][0])
    for mode in ("train", "eval"):
        assert sorted(firsts[mode]) == sorted(BACK_TO_BACK * 2)  # each first twice in 8 rounds
    assert len({tuple(o) for o in rounds}) == len(rounds)  # the groups are shuffled afresh every round
    # Ours on 2 threads is timed on its own: the one-core comparison does not include it.
    two = keys.index(("ours", "train", 2))
    assert any(abs(o.index(two) - o.index(keys.index(("ours", "train", 1)))) > 1 for o in rounds)


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--pipelines", "ours,nonesuch"])
    assert "unknown pipeline(s) nonesuch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--threads", "two"])
    assert "--threads takes 'all' or a comma list" in capsys.readouterr().err


def test_parse_threads() -> None:
    assert parse_threads("all", 1) == [1]
    assert parse_threads("all", 2) == [1, 2]
    assert parse_threads("all", 6) == [1, 2, 4, 6]
    assert parse_threads("1,all,2", 8) == [1, 2, 8]


def test_generated_photos_are_deterministic_jpegs(photos: Path) -> None:
    data = (photos / "photo_00003.jpg").read_bytes()
    assert data == photo_jpeg(3)
    header = read_header(data)
    assert header.format == "JPEG" and header.components == 3 and not header.progressive
    assert {header.width, header.height} <= {500, 375, 333}


def _peer(name: str, mode: str, blobs: list[bytes]):
    p = next(p for p in PIPELINES if p.name == name)
    if p.unavailable():
        pytest.skip(p.unavailable())
    return p.prepare(blobs, mode, Workload(), 1)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_peers_resize_the_same_boxes_as_ours(photos: Path, mode: str) -> None:
    """Pillow (with and without draft) and simplejpeg + OpenCV work on the box ours draws for each image, so their
    output is ours up to filter and DCT-scale differences; a wrong box or a missed flip would differ by far more. In
    eval, torchvision v2's tensor Resize + CenterCrop is the same geometry too."""
    blobs = [(photos / f"photo_{i:05d}.jpg").read_bytes() for i in range(8)]
    transform = Workload().transform(mode)
    limits = {"pillow": 1.0, "pillow-draft": 4.0, "simplejpeg-cv2": 6.0} | ({"torchvision": 1.0} if mode == "eval" else {})
    for name, limit in limits.items():
        prepared = _peer(name, mode, blobs)
        for i in range(len(blobs)):
            ours = decode_image(blobs[i], transform, index=i).astype(np.float32)
            theirs = prepared.process(i)
            theirs = np.asarray(theirs.permute(1, 2, 0) if name == "torchvision" else theirs, dtype=np.float32)
            assert theirs.shape == ours.shape == (224, 224, 3)
            assert np.abs(theirs - ours).mean() < limit, (name, i)


def test_dali_peer_does_the_same_work(photos: Path) -> None:
    """NVIDIA DALI's CPU pipeline (optional; skipped with the reason when not installed): eval is the same Resize(256)
    + CenterCrop(224) geometry as ours (its own antialiased filter, so close, not equal; its crop rounds a half-pixel
    centre offset up where torchvision rounds it to even, so the window may sit one column over: compared at the best
    of those shifts, inside a 2-pixel border); train samples its own crops, so only the output's shape and type are
    checked; a pass over more images than one batch (with a short last batch) returns every image."""
    blobs = [(photos / f"photo_{i:05d}.jpg").read_bytes() for i in range(8)]
    prepared = _peer("dali", "eval", blobs)
    for i in range(len(blobs)):
        ours = decode_image(blobs[i], Workload().transform("eval"), index=i).astype(np.float32)
        theirs = np.asarray(prepared.process(i), dtype=np.float32)
        assert theirs.shape == ours.shape == (224, 224, 3)
        diffs = [np.abs(np.roll(theirs, dx, 1) - ours)[2:-2, 2:-2].mean() for dx in (-1, 0, 1)]
        assert min(diffs) < 2.0, (i, diffs)
    train = next(p for p in PIPELINES if p.name == "dali").prepare(blobs, "train", Workload(batch_size=3), 1)
    assert train.failures() == {}
    train.run()
    image = np.asarray(train.process(5))
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8 and image.std() > 5


def test_dali_peer_says_why_it_cannot_run() -> None:
    p = next(p for p in PIPELINES if p.name == "dali")
    if importlib.util.find_spec("nvidia") and importlib.util.find_spec("nvidia.dali"):
        pytest.skip("NVIDIA DALI is installed here")
    assert "pip install nvidia-dali-cuda120" in str(p.unavailable())


def test_reference_matches_ours_without_dct_scaling(photos: Path) -> None:
    """reference.pil_train / pil_eval are the Pillow form of our semantics: equal to ours at full DCT scale."""
    for i in range(4):
        data = (photos / f"photo_{i:05d}.jpg").read_bytes()
        header = read_header(data)
        train = TrainTransform()
        box, flip = _C.sample_crop(train.native(), header.width, header.height, 0, 0, i)
        assert np.array_equal(pil_train(data, box, flip, 224), decode_image(data, train, index=i, dct_scaling=False))
        evaluation = EvalTransform()
        ours = decode_image(data, evaluation, dct_scaling=False)
        assert np.array_equal(pil_eval(data, 224, evaluation.resize), ours)
        assert _C.sample_crop(evaluation.native(), header.width, header.height, 0, 0, i)[0] == eval_box(
            header.width, header.height, 224, 256)
