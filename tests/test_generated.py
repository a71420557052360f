"""The generated dataset: deterministic real JPEGs with varied encodings, made once, safe under concurrent makers."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.synchronize
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, JpegImagePlugin

from ipu_cnn.data.datasets import ImageFolder
from ipu_cnn.data.generated import (
    MANIFEST_NAME,
    GeneratedImages,
    GeneratedSpec,
    default_generated_root,
    make_generated_dataset,
)
from ipu_cnn.data.generated import dataset as generated

# Small images and few of them keep every test well under a second of generation.
SMALL: dict[str, Any] = dict(num_classes=3, images_per_class=4, seed=1, val_images_per_class=2, min_size=32,
                             max_size=80)


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mtimes_of(root: Path) -> dict[str, int]:
    """Modification times in ns of everything under root, folders included."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_layout_and_manifest(tmp_path: Path) -> None:
    root = make_generated_dataset(tmp_path / "g", **SMALL)
    assert root == tmp_path / "g"
    spec = GeneratedSpec(**SMALL)
    assert spec.class_names == ["000_disc", "001_triangle", "002_square"]
    train = ImageFolder(root / "train")
    val = ImageFolder(root / "validation")
    assert train.classes == val.classes == spec.class_names
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert val.labels.tolist() == [0, 0, 1, 1, 2, 2]
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["spec"] == {**SMALL} and manifest["counts"] == {"train": 4, "validation": 2}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".g.tmp")]  # no staging folder left


def test_deterministic_bytes(tmp_path: Path) -> None:
    a = files_of(make_generated_dataset(tmp_path / "a", **SMALL))
    b = files_of(make_generated_dataset(tmp_path / "b", **SMALL))
    assert len(a) == 3 * (4 + 2) + 2 and a == b
    other = files_of(make_generated_dataset(tmp_path / "c", **{**SMALL, "seed": 2}))
    assert other.keys() == a.keys()
    images = [k for k in a if k.endswith(".jpg")]
    assert all(other[k] != a[k] for k in images)
    assert len({a[k] for k in images}) == len(images)  # no two images alike


def test_real_jpegs_with_varied_encodings(tmp_path: Path) -> None:
    params: dict[str, Any] = dict(num_classes=4, images_per_class=8, seed=3, val_images_per_class=2, min_size=40,
                                  max_size=120)
    root = make_generated_dataset(tmp_path / "g", **params)
    modes, samplings, progressive, orientations = set(), set(), set(), set()
    for path in ImageFolder(root / "train").paths + ImageFolder(root / "validation").paths:
        with Image.open(path) as im:
            assert im.format == "JPEG"
            im.load()  # decodes fully: a truncated or corrupt file raises here
            modes.add(im.mode)
            if im.mode == "RGB":
                samplings.add(JpegImagePlugin.get_sampling(im))
            progressive.add(bool(im.info.get("progressive")))
            w, h = im.size
            assert 40 <= min(w, h) and max(w, h) <= 120
            orientations.add((w > h) - (w < h))
    assert modes == {"RGB", "L"}
    assert samplings == {0, 1, 2}  # 4:4:4, 4:2:2, 4:2:0
    assert progressive == {True, False}
    assert {-1, 1} <= orientations  # portrait and landscape


def test_rerun_does_not_regenerate(tmp_path: Path) -> None:
    root = make_generated_dataset(tmp_path / "g", **SMALL)
    before = mtimes_of(root)
    assert make_generated_dataset(tmp_path / "g", **SMALL) == root
    assert mtimes_of(root) == before


def test_incomplete_set_is_made_again(tmp_path: Path) -> None:
    root = make_generated_dataset(tmp_path / "g", **SMALL)
    reference = files_of(root)
    victim = root / "train" / "001_triangle" / "train_00002.jpg"
    victim.unlink()
    (root / MANIFEST_NAME).unlink()
    make_generated_dataset(root, **SMALL)
    assert files_of(root) == reference
    # Manifest present but a file missing: the count check catches it.
    victim.unlink()
    make_generated_dataset(root, **SMALL)
    assert files_of(root) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == [".g.lock", "g"]  # trash and staging folders removed
    # A crashed maker's staging folder is cleared by the next maker.
    crashed = tmp_path / ".g.tmp-crashed"
    (crashed / "train").mkdir(parents=True)
    (root / MANIFEST_NAME).unlink()
    make_generated_dataset(root, **SMALL)
    assert not crashed.exists() and files_of(root) == reference
    assert oct(root.stat().st_mode & 0o777) == oct(0o755)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    (foreign / "photos").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not empty and holds no generated dataset.*new or empty folder"):
        make_generated_dataset(foreign, **SMALL)
    assert (foreign / "photos").is_dir()
    root = make_generated_dataset(tmp_path / "g", **SMALL)
    with pytest.raises(ValueError, match="holds a generated dataset with other parameters"):
        make_generated_dataset(root, **{**SMALL, "seed": 9})
    empty = tmp_path / "empty"
    empty.mkdir()
    assert files_of(make_generated_dataset(empty, **SMALL)) == files_of(root)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        GeneratedSpec(num_classes=1)
    with pytest.raises(ValueError, match="min_size <= max_size"):
        GeneratedSpec(min_size=200, max_size=100)


def test_generated_images_in_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPU_CNN_CACHE", str(tmp_path / "cache"))
    data = GeneratedImages(**SMALL)
    spec = GeneratedSpec(**SMALL)
    assert data.root == default_generated_root(spec) == tmp_path / "cache" / "generated" / spec.folder_name()
    assert spec.digest() in data.root.name
    assert len(data.train) == 12 and len(data.validation) == 6
    assert data.split("val").paths == data.validation.paths
    assert data.classes == data.train.classes == spec.class_names
    with pytest.raises(ValueError, match="unknown split 'test'"):
        data.split("test")
    # Other parameters get their own folder; the same ones reuse it.
    assert GeneratedImages(**{**SMALL, "seed": 5}).root != data.root
    assert GeneratedImages(**SMALL).root == data.root


def test_publish_loser_discards_its_copy(tmp_path: Path) -> None:
    target = make_generated_dataset(tmp_path / "g", **SMALL)
    staging = tmp_path / ".g.tmp-other"
    staging.mkdir()
    generated._write_set(GeneratedSpec(**SMALL), staging, False)
    before = mtimes_of(target)
    assert generated._KIND.publish(staging, target) is False
    assert not staging.exists() and mtimes_of(target) == before


def _make_after_barrier(barrier: multiprocessing.synchronize.Barrier, root: str, params: dict[str, Any]) -> None:
    """Child process: start at the same moment as the others, then make the set."""
    barrier.wait(timeout=60)
    make_generated_dataset(root, **params)


def test_concurrent_makers_end_with_one_complete_set(tmp_path: Path) -> None:
    params: dict[str, Any] = dict(num_classes=3, images_per_class=10, seed=4, val_images_per_class=3, min_size=48,
                                  max_size=160)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    root = tmp_path / "shared" / "g"
    procs = [ctx.Process(target=_make_after_barrier, args=(barrier, str(root), params)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    reference = files_of(make_generated_dataset(tmp_path / "ref", **params))
    assert files_of(root) == reference
    assert sorted(os.listdir(root.parent)) == [".g.lock", "g"]  # the waiting maker left no copy behind
