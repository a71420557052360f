"""The fuzz harness in fuzz/ itself: its targets accept real images without a finding, their oracles do catch wrong
results, the seed builder and the input record agree, and fuzz/known_findings names only things that exist.

The targets run here as plain functions (no atheris, no sanitizer); fuzz/README.md says how to fuzz with them.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
import pytest

from conftest import CORPORA, subprocess_env

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
TARGETS = ("decode_image", "read_header", "decode_batch", "resample", "restart_index")


@pytest.fixture(scope="module")
def fuzz_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """fuzz/'s modules, imported with fuzz/known_findings applied to the environment as fuzz/run.py applies it."""
    sys.path.insert(0, str(FUZZ))
    saved = dict(os.environ)
    try:
        run = importlib.import_module("run")
        env: dict[str, str] = {}
        run.apply_known(run.known_findings(FUZZ / "known_findings"), env, tmp_path_factory.mktemp("known"))
        env.pop("UBSAN_OPTIONS", None)  # no sanitizer here
        os.environ.update(env)
        for name in ("_common", "seeds", *(f"fuzz_{t}" for t in TARGETS)):
            sys.modules.pop(name, None)
        modules = {name: importlib.import_module(name) for name in ("_common", "seeds", "run")}
        modules.update({t: importlib.import_module(f"fuzz_{t}") for t in TARGETS})
        yield modules
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sys.path.remove(str(FUZZ))


@pytest.fixture(scope="module")
def seed_dir(fuzz_modules: dict[str, ModuleType], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seeds")
    fuzz_modules["seeds"].build(out, imagenet=10, corpora=CORPORA)
    return out


def seed_inputs(folder: Path, limit: int) -> list[bytes]:
    files = sorted(folder.iterdir())
    step = max(1, len(files) // limit)
    return [f.read_bytes()[:65536] for f in files[::step][:limit]]  # fuzz/run.py's -max_len


@pytest.mark.parametrize("target", TARGETS)
def test_seeds_pass_every_target(fuzz_modules: dict[str, ModuleType], seed_dir: Path, target: str) -> None:
    inputs = seed_inputs(seed_dir / target, 80)
    assert len(inputs) >= 7  # the generated seeds at least, with or without the corpora
    for data in inputs:
        fuzz_modules[target].one_input(data)  # raises on a finding


def test_seed_builder_uses_the_corpora_when_present(fuzz_modules: dict[str, ModuleType], seed_dir: Path) -> None:
    if not (CORPORA / "edge_cases").is_dir():
        pytest.skip(f"needs the test corpora at {CORPORA}")
    links = [p for p in (seed_dir / "decode_image").iterdir() if p.is_symlink()]
    assert len(links) > 400 and all(Path(os.readlink(p)).is_relative_to(CORPORA.resolve()) for p in links)


def test_decode_image_oracle_catches_a_wrong_shape(fuzz_modules: dict[str, ModuleType], seed_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = fuzz_modules["decode_image"]
    real = target.decode_image
    monkeypatch.setattr(target, "decode_image", lambda *a, **k: real(*a, **k)[:, 1:])
    gen = sorted((seed_dir / "decode_image").glob("gen_*"))
    with pytest.raises(AssertionError):
        for f in gen:  # at least one draws a transform or a full decode whose shape is now wrong
            target.one_input(f.read_bytes())


def test_decode_batch_oracle_catches_a_slot_that_differs(fuzz_modules: dict[str, ModuleType], seed_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = fuzz_modules["decode_batch"]
    if "batch-equals-single" in fuzz_modules["_common"].SKIP_CHECKS:
        monkeypatch.setattr(target, "SKIP_CHECKS", frozenset())
    real = target.decode_image
    monkeypatch.setattr(target, "decode_image", lambda *a, **k: real(*a, **k) ^ 1)
    data = fuzz_modules["seeds"].generated_jpegs()["baseline_420"]
    with pytest.raises(AssertionError, match="differs from decode_image"):
        target.one_input(data)


def test_resample_oracle_catches_resamplers_that_disagree(fuzz_modules: dict[str, ModuleType], seed_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = fuzz_modules["resample"]
    native = target._C
    real = native.resize

    class NativeWithBrokenScalar:
        def __getattr__(self, name: str) -> object:
            return getattr(native, name)

        @staticmethod
        def resize(px: np.ndarray, box: list, w: int, h: int, f: int, flip: bool, scalar: bool) -> np.ndarray:
            out = real(px, box, w, h, f, flip, scalar)
            if scalar:
                out[0, 0, 0] ^= 1
            return out

    monkeypatch.setattr(target, "_C", NativeWithBrokenScalar())
    common = fuzz_modules["_common"]
    rec = common.Record(500, 375, 8, 8, 0, 16, 16, 1, 0, 2, (0.0, 0.0, 16.0, 16.0),
                        (0.08, 1.0, 3 / 4, 4 / 3, 0.5, 0.875))
    with pytest.raises(AssertionError, match="!= resize|differ"):
        target.one_input(common.pack_record(rec, bytes(range(256)) * 3))


def test_resample_oracle_catches_the_old_geometry(fuzz_modules: dict[str, ModuleType],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """transform_pixels computed as before torchvision's geometry (a Pillow-semantics resize of the sampled box of the
    whole image, the filter reading past the box) is caught, for Train and for Eval."""
    target = fuzz_modules["resample"]
    native = target._C

    class NativeWithOldGeometry:
        def __getattr__(self, name: str) -> object:
            return getattr(native, name)

        @staticmethod
        def transform_pixels(px: np.ndarray, out: np.ndarray, crop: object, f: int, seed: int, epoch: int,
                             index: int) -> None:
            h, w = px.shape[:2]
            box, flip = native.sample_crop(crop, w, h, seed, epoch, index)
            out[...] = native.resize(px, list(box), out.shape[1], out.shape[0], f, flip, False)

    monkeypatch.setattr(target, "_C", NativeWithOldGeometry())
    common = fuzz_modules["_common"]
    pixels = np.random.default_rng(5).integers(0, 256, 64 * 64 * 3, np.uint8).tobytes()
    train = common.Record(500, 375, 24, 24, 0, 64, 48, 1, 0, 2, (0.0, 0.0, 16.0, 16.0),
                          (0.08, 0.5, 3 / 4, 4 / 3, 0.5, 0.875))
    evaluate = train._replace(out_w=31, out_h=20, flags=common.EVAL, resize=(40, 0))
    for rec in (train, evaluate):
        with pytest.raises(AssertionError, match="Pillow reference"):
            target.one_input(common.pack_record(rec, pixels))
    monkeypatch.setattr(target, "_C", native)
    for rec in (train, evaluate):
        target.one_input(common.pack_record(rec, pixels))  # the real core passes


@pytest.mark.parametrize("target_name", ["decode_image", "read_header", "decode_batch"])
def test_oracles_demand_the_contiguity_refusal(fuzz_modules: dict[str, ModuleType], target_name: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With only non-contiguous forms drawn, the real API passes (it refuses them as the oracles require), and an API
    that copied such a source instead of refusing it is caught."""
    target = fuzz_modules[target_name]
    monkeypatch.setattr(target, "SOURCE_FORMS", ("strided", "reversed"))
    data = fuzz_modules["seeds"].generated_jpegs()["baseline_420"]
    inputs = [data + bytes([i]) for i in range(12)]  # the trailing byte varies the drawn options
    for one in inputs:
        target.one_input(one)
    name = target_name  # each target imports the function it is named after
    real = getattr(target, name)

    def copying(source: object, *args: object, **kwargs: object) -> object:
        if name == "decode_batch":
            source = [np.ascontiguousarray(s) if isinstance(s, np.ndarray) else s for s in source]  # type: ignore
        elif isinstance(source, np.ndarray):
            source = np.ascontiguousarray(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(target, name, copying)
    with pytest.raises(AssertionError, match="instead of refusing|not refused"):
        for one in inputs:  # decode_image: at least one draws options under which the copy decodes
            target.one_input(one)


def test_record_round_trip_and_knobs_replay(fuzz_modules: dict[str, ModuleType]) -> None:
    common = fuzz_modules["_common"]
    rec = common.Record(640, 480, 224, 3, common.EVAL | common.FLIP, 33, 64, 2**32 - 1, 7, 123456,
                        (0.5, -1.0, float("inf"), 3.25), (0.08, 1.0, 0.75, 4 / 3, 0.5, 0.875), (300, 2**32 - 1))
    parsed, rest = common.parse_record(common.pack_record(rec, b"pixels"))
    assert parsed == rec and rest == b"pixels"
    assert common.parse_record(b"")[0].width == 1  # short inputs are zero-padded, sizes clamped to >= 1
    assert common.parse_record(b"")[0].resize == (0, 0)  # no resize_size: crop_pct
    a, b = common.Knobs(b"same input"), common.Knobs(b"same input")
    assert [a.int(0, 10**9) for _ in range(5)] == [b.int(0, 10**9) for _ in range(5)]


@pytest.mark.parametrize("form", ["bytes", "bytearray", "memoryview", "ndarray", "strided", "reversed", "path"])
def test_every_source_form_holds_the_same_bytes(fuzz_modules: dict[str, ModuleType], form: str) -> None:
    data = bytes(range(7, 250))
    src = fuzz_modules["_common"].as_source(data, form)
    got = Path(src).read_bytes() if form == "path" else np.asarray(memoryview(np.asarray(src))).tobytes()
    assert got == data
    if form in ("strided", "reversed"):
        assert not np.asarray(src).flags.c_contiguous


def test_known_findings_name_real_forms_checks_and_exceptions(fuzz_modules: dict[str, ModuleType]) -> None:
    entries = fuzz_modules["run"].known_findings(FUZZ / "known_findings")
    sources = "".join((FUZZ / f"fuzz_{t}.py").read_text() for t in TARGETS)
    for kind, arg in entries:
        if kind == "skip-form":
            assert arg in fuzz_modules["_common"].ALL_SOURCE_FORMS, arg
        elif kind == "skip-check":
            assert f'"{arg}" in SKIP_CHECKS' in sources or f'"{arg}" not in SKIP_CHECKS' in sources, arg
        elif kind == "tolerate":
            module, _, cls = arg.rpartition(".")
            assert issubclass(getattr(importlib.import_module(module), cls), BaseException), arg
        elif kind == "libfuzzer":
            assert arg.startswith("-") and "=" in arg, arg
        else:
            assert kind == "ubsan" and ":" in arg, (kind, arg)


def test_short_fuzz_run_reports_its_figures(tmp_path: Path) -> None:
    """fuzz/run.py end to end for a few seconds against whatever ipu_cnn this process imports (needs atheris)."""
    pytest.importorskip("atheris", reason="the fuzz run needs atheris (pip install atheris)")
    proc = subprocess.run([sys.executable, str(FUZZ / "run.py"), "--seconds", "3", "--targets", "read_header,resample",
                           "--imagenet", "0", "--workdir", str(tmp_path)], capture_output=True, text=True,
                          env=subprocess_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.endswith(" ok")}
    assert set(rows) == {"read_header", "resample"}
    assert all(int(r[2]) > 0 and int(r[4]) > 0 for r in rows.values()), rows  # executions and coverage


def test_restart_index_oracle_catches_a_fast_path_that_differs(fuzz_modules: dict[str, ModuleType],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    target = fuzz_modules["restart_index"]
    native = target._C

    class NativeWithBrokenFastPath:
        def __getattr__(self, name: str) -> object:
            return getattr(native, name)

        @staticmethod
        def decode_transform(source: object, out: np.ndarray, *args: object) -> object:
            report = native.decode_transform(source, out, *args)
            if args[-1].restart_index:
                out[0, 0, 0] ^= 1
            return report

    monkeypatch.setattr(target, "_C", NativeWithBrokenFastPath())
    with pytest.raises(AssertionError, match="fast path differs"):
        for data in fuzz_modules["seeds"].generated_jpegs().values():  # at least one reaches a clean fast decode
            target.one_input(data)
