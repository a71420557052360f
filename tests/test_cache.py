"""The cache's publishing, apart from the generated dataset: kinds of folder kept apart, files published whole.

The generated dataset's tests (tests/test_generated.py) cover `make_folder` end to end: staging, manifest, atomic
rename, concurrent makers, crash leftovers. These cover what a second user of the mechanism relies on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ipu_cnn.data import _cache
from ipu_cnn.data._cache import MANIFEST_NAME, FolderKind, make_folder, publish_file

A = FolderKind(format="test.a", tag_name=".made_a", maker="tests.a", what="set of kind A")
B = FolderKind(format="test.b", tag_name=".made_b", maker="tests.b", what="set of kind B")


def _make(target: Path, kind: FolderKind, payload: bytes = b"x") -> Path:
    """Make `target` as a one-file folder of `kind`; complete when its manifest is the kind's and the file is there."""
    return make_folder(target, kind, is_complete=lambda root: kind.read_manifest(root) is not None
                       and (root / "data.bin").is_file(),
                       write=lambda staging: (staging / "data.bin").write_bytes(payload), manifest={"n": 1})


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IPU_CNN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.cache_dir() == tmp_path / "xdg" / "ipu_cnn"
    monkeypatch.setenv("IPU_CNN_CACHE", str(tmp_path / "explicit"))
    assert _cache.cache_dir() == tmp_path / "explicit"


def test_folder_holds_tag_content_and_manifest(tmp_path: Path) -> None:
    root = _make(tmp_path / "a", A, b"payload")
    assert sorted(p.name for p in root.iterdir()) == [".made_a", "data.bin", MANIFEST_NAME]
    assert (root / ".made_a").read_text() == "made by tests.a; safe to delete\n"
    assert (root / "data.bin").read_bytes() == b"payload"
    assert A.read_manifest(root) == {"format": "test.a", "n": 1}
    assert B.read_manifest(root) is None  # another kind's manifest is no manifest of B's


def test_another_kinds_folder_is_never_overwritten(tmp_path: Path) -> None:
    root = _make(tmp_path / "shared", A)
    with pytest.raises(FileExistsError, match=r"not empty and holds no set of kind B \(no manifest.json\)"):
        _make(root, B)
    assert (root / ".made_a").is_file() and A.read_manifest(root) is not None


def test_publish_file_is_whole_or_absent(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    publish_file(target, b"first")
    publish_file(target, b"second")  # an existing file is replaced, atomically
    assert target.read_bytes() == b"second"

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")  # after the bytes were written to the temporary file

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_cache.os, "replace", failing_replace)
        with pytest.raises(OSError, match="disk gone"):
            publish_file(tmp_path / "g.bin", b"never")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no partial file, no temporary left behind
