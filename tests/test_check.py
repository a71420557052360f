"""`python -m ipu_cnn.data.check`: exact counts on generated folders with known defects, shards, and the corpora."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import corpora_dir, encode_jpeg, photo_like
from ipu_cnn.data import check as check_mod
from ipu_cnn.data.check import CheckError, check, expand_shards
from ipu_cnn.data.decode import decode_image
from ipu_cnn.data.pack import pack


def make_defective(root: Path) -> Path:
    """Two classes: 'good' holds 3 clean RGB JPEGs; 'mixed' holds one of each defect (7 files)."""
    (root / "good").mkdir(parents=True)
    (root / "mixed" / "deep").mkdir(parents=True)
    clean = [encode_jpeg(photo_like(120 + 10 * i, 80 + 20 * i, i), quality=85) for i in range(3)]
    for i, data in enumerate(clean):
        (root / "good" / f"g{i}.jpg").write_bytes(data)
    full = encode_jpeg(photo_like(200, 150, 10))
    (root / "mixed" / "truncated.jpg").write_bytes(full[: len(full) * 2 // 3])
    png = io.BytesIO()
    Image.fromarray(photo_like(64, 32, 11)).save(png, "PNG")
    (root / "mixed" / "image.png").write_bytes(png.getvalue())
    (root / "mixed" / "gray.jpg").write_bytes(encode_jpeg(photo_like(90, 70, 12), "L"))
    (root / "mixed" / "deep" / "progressive.jpeg").write_bytes(
        encode_jpeg(photo_like(160, 120, 13), progressive=True))
    (root / "mixed" / "copy_of_g1.JPG").write_bytes(clean[1])
    (root / "mixed" / "readme.jpg").write_text("not an image at all\n")
    (root / "mixed" / "cmyk.jpg").write_bytes(encode_jpeg(photo_like(48, 48, 14), "CMYK"))
    (root / "mixed" / "notes.txt").write_text("not an image extension: not listed")
    return root


def test_exact_counts_on_a_folder_with_known_defects(tmp_path: Path) -> None:
    root = make_defective(tmp_path / "ds")
    r = check(str(root), progress=False)
    assert r.kind == "folder" and r.files == 10
    assert dict(r.classes) == {"good": 3, "mixed": 7}
    assert dict(r.formats) == {"JPEG": 8, "PNG": 1}  # the text file has no format
    assert r.non_jpeg == 1 and r.progressive == 1 and r.cmyk == 1 and r.grayscale == 1 and r.arithmetic == 0
    assert dict(r.problem_counts) == {"truncated": 1, "undecodable": 1}
    problems = {Path(p["file"]).name: p for p in r.problems}
    assert set(problems) == {"truncated.jpg", "readme.jpg"}
    assert problems["truncated.jpg"]["reason"] == "Premature end of JPEG file"
    assert "not a JPEG" in problems["readme.jpg"]["reason"]
    assert [sorted(Path(f).name for f in g) for g in r.duplicates] == [["copy_of_g1.JPG", "g1.jpg"]]
    assert r.duplicate_files == 1
    assert r.exit_code() == 1 and r.exit_code("never") == 0
    # the size distribution of the 9 images whose header was read, against the known sizes
    widths = [120, 130, 140, 200, 64, 90, 160, 130, 48]
    assert r.sizes["width"]["p0"] == 48 and r.sizes["width"]["p100"] == 200
    assert r.sizes["width"]["p50"] == pytest.approx(float(np.percentile(widths, 50)))
    heights = [80, 100, 120, 150, 32, 70, 120, 100, 48]
    mp = [w * h / 1e6 for w, h in zip(widths, heights, strict=True)]
    assert r.sizes["megapixels"]["p95"] == pytest.approx(float(np.percentile(mp, 95)))


def test_full_decode_adds_what_headers_cannot_see(tmp_path: Path) -> None:
    root = make_defective(tmp_path / "ds")
    data = bytearray(encode_jpeg(photo_like(128, 96, 5)))
    data[data.index(b"\xff\xc0") + 12] = 3  # an undefined quantisation table: found only when decoding starts
    (root / "good" / "bad_table.jpg").write_bytes(bytes(data))
    assert dict(check(str(root), progress=False).problem_counts) == {"truncated": 1, "undecodable": 1}
    r = check(str(root), full_decode=True, progress=False)
    assert dict(r.problem_counts) == {"truncated": 1, "undecodable": 2}
    assert any(p["reason"] == "Quantization table 0x03 was not defined" for p in r.problems)


def test_clean_folder_exits_zero_and_warnings_policy(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        (root / "a" / f"{i}.jpg").write_bytes(encode_jpeg(photo_like(50, 40, i)))
    r = check(str(root), progress=False)
    assert not r.problems and r.exit_code() == 0 and r.exit_code("warnings") == 0
    (root / "a" / "dup.jpg").write_bytes((root / "a" / "0.jpg").read_bytes())
    r = check(str(root), progress=False)
    assert r.exit_code() == 0 and r.exit_code("warnings") == 1


def test_shards_give_the_same_counts_as_the_folder(tmp_path: Path) -> None:
    root = make_defective(tmp_path / "ds")
    # The original bytes (a restart-indexed pack makes the progressive file baseline).
    summary = pack(str(root), str(tmp_path / "shards"), shard_size=20_000, restart_index=False, progress=False)
    assert summary.bad == 2 and summary.samples == 8
    shards = sorted((tmp_path / "shards").glob("train-*.tar"))
    pattern = str(tmp_path / "shards" / f"train-{{000000..{len(shards) - 1:06d}}}.tar")
    for spec in ([pattern], [str(tmp_path / "shards" / "*.tar")], [str(p) for p in shards],
                 str(tmp_path / "shards")):
        r = check(spec, progress=False)
        assert r.kind == "shards" and r.files == 8 and not r.problems
        assert dict(r.classes) == {"good": 3, "mixed": 5}
        assert dict(r.formats) == {"JPEG": 7, "PNG": 1}
        assert (r.progressive, r.cmyk, r.grayscale, r.duplicate_files) == (1, 1, 1, 1)
        assert r.restart_indexed == 0


def test_restart_indexed_shards_are_counted(tmp_path: Path) -> None:
    """A default pack restart-indexes its JPEGs; the check counts them (the folder has none) and reports the rest as
    for the folder, the progressive file now baseline."""
    root = make_defective(tmp_path / "ds")
    summary = pack(str(root), str(tmp_path / "shards"), shard_size=20_000, progress=False)
    folder = check(str(root), progress=False)
    shards = check(str(tmp_path / "shards"), progress=False)
    assert folder.restart_indexed == 0 and folder.progressive == 1
    assert shards.restart_indexed == summary.restart_indexed > 0
    assert shards.progressive == 0 and shards.files == folder.files - 2  # the two bad files are not packed
    assert shards.to_dict()["restart_indexed"] == shards.restart_indexed
    assert "restart-indexed JPEG" in shards.table()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_shard_defects_are_named_by_shard_and_key(tmp_path: Path) -> None:
    jpeg = encode_jpeg(photo_like(40, 30, 1))
    shard = tmp_path / "s-000000.tar"
    write_tar(shard, [("k0.jpg", jpeg), ("k0.cls", b"0"),
                      ("k1.jpg", jpeg[:-100] + b"\x00" * 10), ("k1.cls", b"1"),  # truncated: no EOI
                      ("k2.jpg", encode_jpeg(photo_like(40, 30, 2))),  # no .cls
                      ("k3.txt", b"hello"), ("k3.cls", b"0"),  # no image member
                      ("k4.jpg", encode_jpeg(photo_like(40, 30, 3))), ("k4.cls", b"cat"),  # label not an index
                      ("k5.jpg", jpeg), ("k5.cls", b"2"), ("k5.json", b'{"label": 3, "class": "c"}'),  # disagree
                      ("k6.jpg", jpeg), ("k6.cls", b"3"), ("k6.json", b'{"label": 3, "class": "c"}'),  # agree
                      ("k7.jpg", jpeg), ("k7.cls", b"1"), ("k7.json", b"{not json")])
    r = check([str(shard)], progress=False)
    got = {(p["file"], p["problem"]) for p in r.problems}
    assert got == {(f"{shard}:k1.jpg", "truncated"), (f"{shard}:k2.jpg", "no label"), (f"{shard}:k3", "no image"),
                   (f"{shard}:k4.jpg", "no label"), (f"{shard}:k5.jpg", "bad metadata"),
                   (f"{shard}:k7.jpg", "bad metadata")}
    assert r.files == 8 and r.exit_code() == 1 and r.classes["c"] == 2
    k5 = {p["reason"] for p in r.problems if p["file"].endswith("k5.jpg")}
    assert k5 == {"k5.cls says 2 but k5.json says label 3"}
    # a shard cut short: what came before the cut is checked, the cut itself is a problem naming the shard
    whole = tmp_path / "whole.tar"
    write_tar(whole, [("a.jpg", jpeg), ("a.cls", b"0"), ("b.jpg", jpeg), ("b.cls", b"0"), ("c.jpg", jpeg),
                      ("c.cls", b"0")])
    cut = tmp_path / "cut.tar"
    b_data = 512 + -(-len(jpeg) // 512) * 512 + 2 * 512 + 512  # a.jpg (header, data), a.cls (header, data), b's header
    cut.write_bytes(whole.read_bytes()[: b_data + len(jpeg) // 2])  # inside b.jpg's data
    r = check([str(cut)], progress=False)
    assert r.files == 1 and [p["problem"] for p in r.problems] == ["bad shard"]
    assert r.problems[0]["file"] == str(cut) and "later samples are lost" in r.problems[0]["reason"]


def test_expand_shards_braces_and_globs(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"t-{i:06d}.tar").write_bytes(b"")
    assert expand_shards([str(tmp_path / "t-{000000..000002}.tar")]) == [str(tmp_path / f"t-{i:06d}.tar")
                                                                          for i in range(3)]
    assert expand_shards([str(tmp_path / "t-*.tar")]) == [str(tmp_path / f"t-{i:06d}.tar") for i in range(3)]
    assert expand_shards(["x{8..10}"]) == ["x8", "x9", "x10"]


def test_nothing_to_check_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckError, match="no such shard or folder"):
        check([str(tmp_path / "missing-{000000..000001}.tar")], progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckError, match="no images in"):
        check(str(tmp_path / "empty"), progress=False)
    assert check_mod.main([str(tmp_path / "nothing_here"), "--no-progress"]) == 2
    assert "check: error:" in capsys.readouterr().err


def test_cli_table_json_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_defective(tmp_path / "ds")
    out = tmp_path / "report.json"
    assert check_mod.main([str(root), "--json", str(out), "--no-progress"]) == 1
    table = capsys.readouterr().out
    assert "10 images" in table and "problems: 2 (truncated 1, undecodable 1)" in table
    assert "duplicate files: 1 in 1 groups" in table and "progressive JPEG" in table
    report = json.loads(out.read_text())
    assert report["files"] == 10 and report["classes"] == {"good": 3, "mixed": 7}
    assert report["non_jpeg"] == 1 and report["cmyk"] == 1 and len(report["problems"]) == 2
    assert check_mod.main([str(root), "--fail-on", "never", "--no-progress"]) == 0
    shutil.rmtree(root / "mixed")
    assert check_mod.main([str(root), "--no-progress"]) == 0
    assert check_mod.main([str(root), "--fail-on", "warnings", "--no-progress"]) == 0


@pytest.mark.corpora
def test_check_on_the_corpora_agrees_with_the_loaders_decoder_and_pillow(tmp_path: Path) -> None:
    root = corpora_dir("edge_cases").parent
    r = check(str(root), progress=False)
    flagged = {p["file"] for p in r.problems}
    assert r.files == sum(r.classes.values()) and set(r.classes) == {"edge_cases", "imagenet_sample"}
    assert r.classes["imagenet_sample"] == 500
    from ipu_cnn.data.datasets import ImageFolder

    for path in ImageFolder(root).paths:
        try:
            decode_image(path)
            decodes = True
        except ValueError:
            decodes = False
        assert decodes == (path not in flagged), path
    # the size distribution, against Pillow's sizes (100 ImageNet photos, linked into a one-class folder)
    sample = sorted((root / "imagenet_sample").iterdir())[:100]
    sub = tmp_path / "sub" / "c"
    sub.mkdir(parents=True)
    for p in sample:
        (sub / p.name).symlink_to(p)
    r_sub = check(str(tmp_path / "sub"), progress=False)
    w = [Image.open(p).width for p in sample]
    assert r_sub.sizes["width"]["p50"] == pytest.approx(float(np.percentile(w, 50)))
    assert r_sub.formats == {"JPEG": 100} and not r_sub.problems


def test_module_runs_as_a_command(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = make_defective(tmp_path / "ds")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, "-m", "ipu_cnn.data.check", str(root), "--no-progress", "--json",
                          str(tmp_path / "r.json")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "problems: 2 (truncated 1, undecodable 1)" in run.stdout
    assert json.loads((tmp_path / "r.json").read_text())["files"] == 10
