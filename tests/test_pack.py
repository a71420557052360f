"""`python -m ipu_cnn.data.pack`: folder -> WebDataset shards, read back with tarfile and the webdataset library.

The reference for "exactly the folder's samples" is `ImageFolder` (torchvision's order and labels) and the files'
own bytes; the shards are read with the stdlib tarfile and with webdataset itself, never with our own reader.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import corpora_dir, encode_jpeg, photo_like
from ipu_cnn import _C
from ipu_cnn.data import pack as pack_mod
from ipu_cnn.data._tar_writer import ShardWriter
from ipu_cnn.data.datasets import FileList, ImageFolder
from ipu_cnn.data.decode import decode_image
from ipu_cnn.data.pack import PackError, pack, plan_shards, sample_keys


def _png(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_like(w, h, seed)).save(buf, "PNG")
    return buf.getvalue()


def make_folder(root: Path, per_class: int = 6, classes: tuple[str, ...] = ("cat", "dog", "eel")) -> Path:
    """Class folders of distinct JPEGs (one per class a PNG, one in a subfolder, one with dots in its name)."""
    n = 0
    for c in classes:
        (root / c / "sub").mkdir(parents=True)
        for i in range(per_class):
            n += 1
            if i == 0:
                (root / c / f"{c}_{i}.png").write_bytes(_png(40 + n, 30 + n, n))
            elif i == 1:
                (root / c / "sub" / f"{c}.v{i}.jpeg").write_bytes(encode_jpeg(photo_like(50 + n, 40, n)))
            else:
                (root / c / f"{c}_{i}.JPG").write_bytes(encode_jpeg(photo_like(60 + n, 48 + n, n), quality=80))
    return root


def read_shards(shards: list[Path]) -> list[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per sample in shard order, grouping consecutive members by key as webdataset does."""
    out: list[tuple[str, dict[str, bytes]]] = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            for m in tar:
                key, _, ext = m.name.rpartition("/")[2].partition(".")
                key = m.name.rpartition("/")[0] + "/" + key if "/" in m.name else key
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                if not out or out[-1][0] != key:
                    out.append((key, {}))
                assert ext not in out[-1][1], f"member {m.name} repeated"
                out[-1][1][ext] = data
    return out


def shard_files(dst: Path, prefix: str = "train") -> list[Path]:
    return sorted(dst.glob(f"{prefix}-*.tar"))


def test_round_trip_gives_exactly_the_folders_samples_bytes_and_labels(tmp_path: Path) -> None:
    """With --no-restart-index every member is the original file, byte for byte."""
    src = make_folder(tmp_path / "src")
    summary = pack(str(src), str(tmp_path / "out"), shard_size=40_000, restart_index=False, progress=False)
    ref = ImageFolder(src)
    shards = shard_files(tmp_path / "out")
    assert summary.shards == len(shards) >= 3  # the small target size forces several shards
    samples = read_shards(shards)
    assert summary.samples == len(samples) == len(ref) and summary.bad == 0
    assert len({k for k, _ in samples}) == len(samples)
    got = {}
    for key, members in samples:
        image_ext = [e for e in members if e not in ("cls", "json")]
        assert sorted(members) == sorted(image_ext + ["cls", "json"]) and len(image_ext) == 1
        meta = json.loads(members["json"])
        assert int(members["cls"].decode()) == meta["label"]
        assert ref.classes[meta["label"]] == meta["class"]
        assert meta["size"] == len(members[image_ext[0]])
        got[meta["path"]] = (members[image_ext[0]], int(members["cls"]), image_ext[0])
    want = {os.path.relpath(p, src): (Path(p).read_bytes(), label) for p, label in ref.samples}
    assert {k: v[:2] for k, v in got.items()} == want
    # member extensions follow the real format; a JPEG keeps its own spelling, lower-cased
    assert {v[2] for k, v in got.items() if k.endswith(".png")} == {"png"}
    assert {v[2] for k, v in got.items() if k.endswith(".jpeg")} == {"jpeg"}
    assert {v[2] for k, v in got.items() if k.endswith(".JPG")} == {"jpg"}
    manifest = json.loads((tmp_path / "out" / "train.json").read_text())
    assert manifest["classes"] == ref.classes and manifest["samples"] == len(ref)
    assert [s["name"] for s in manifest["shards"]] == [p.name for p in shards]
    assert json.loads((tmp_path / "out" / "train.bad.json").read_text()) == []


def test_default_pack_is_restart_indexed_and_pixel_identical(tmp_path: Path) -> None:
    """The default pack transcodes each JPEG with a restart index (lossless: the same pixels) and stores other formats
    as they are; samples, labels and metadata are the folder's."""
    src = make_folder(tmp_path / "src")
    summary = pack(str(src), str(tmp_path / "out"), shard_size=40_000, progress=False)
    ref = {os.path.relpath(p, src): (Path(p).read_bytes(), label) for p, label in ImageFolder(src).samples}
    jpegs = sum(not r.lower().endswith(".png") for r in ref)
    assert summary.restart_indexed == jpegs and summary.restart_kept == 0 and summary.samples == len(ref)
    for _, members in read_shards(shard_files(tmp_path / "out")):
        meta = json.loads(members["json"])
        image = next(v for k, v in members.items() if k not in ("cls", "json"))
        original, label = ref.pop(meta["path"])
        assert int(members["cls"]) == label == meta["label"] and meta["size"] == len(original)
        if meta["path"].lower().endswith(".png"):
            assert image == original and "restart_index" not in meta
        else:
            assert meta["restart_index"] is True and _C.restart_index_info(image)[0] is not None
            assert np.array_equal(decode_image(image), decode_image(original)), meta["path"]
    assert not ref


def test_webdataset_reads_the_shards(tmp_path: Path) -> None:
    """webdataset reads the default (restart-indexed) shards: the same samples and labels, and its own decoder (Pillow)
    gives the originals' pixels."""
    wds = pytest.importorskip("webdataset")
    src = make_folder(tmp_path / "src")
    pack(str(src), str(tmp_path / "out"), shard_size=40_000, progress=False)
    urls = [str(p) for p in shard_files(tmp_path / "out")]
    ref = {os.path.relpath(p, src): (Path(p).read_bytes(), label) for p, label in ImageFolder(src).samples}
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        image = next(sample[e] for e in ("jpg", "jpeg", "png") if e in sample)
        seen[meta["path"]] = (image, int(sample["cls"]))
    assert seen.keys() == ref.keys()
    assert {k: v[1] for k, v in seen.items()} == {k: v[1] for k, v in ref.items()}
    # and its decoders turn the members into images and labels, the originals' pixels
    decoded = wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple(
        "jpg;jpeg;png", "cls", "json")
    n = 0
    for image, label, meta in decoded:
        assert image.shape == (meta["height"], meta["width"], 3) and label == meta["label"]
        original = np.asarray(Image.open(io.BytesIO(ref[meta["path"]][0])).convert("RGB"))
        assert np.array_equal(image, original), meta["path"]
        n += 1
    assert n == len(ref)


def test_file_list_source_and_labels(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=3)
    ref = ImageFolder(src)
    lines = [f"{os.path.relpath(p, src)},{ref.classes[label]}" for p, label in ref.samples]
    (src / "list.csv").write_text("path,label\n" + "\n".join(lines) + "\n")
    summary = pack(str(src / "list.csv"), str(tmp_path / "out"), progress=False)
    listed = FileList(src / "list.csv")
    samples = read_shards(shard_files(tmp_path / "out"))
    assert summary.samples == len(samples) == len(listed)
    got = {json.loads(m["json"])["path"]: int(m["cls"]) for _, m in samples}
    assert got == {os.path.relpath(p, src): label for p, label in listed.samples}


def test_order_source_keeps_the_dataset_order_and_shuffle_is_a_seeded_permutation(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    ref = [os.path.relpath(p, src) for p in ImageFolder(src).paths]
    pack(str(src), str(tmp_path / "a"), order="source", progress=False)
    pack(str(src), str(tmp_path / "b"), seed=1, progress=False)
    pack(str(src), str(tmp_path / "c"), seed=1, progress=False)
    order = lambda d: [json.loads(m["json"])["path"] for _, m in read_shards(shard_files(tmp_path / d))]  # noqa: E731
    assert order("a") == ref
    assert sorted(order("b")) == sorted(ref) and order("b") != ref
    want = [ref[i] for i in np.random.default_rng(1).permutation(len(ref))]
    assert order("b") == want
    # the same input and options give the same bytes
    b_bytes = [p.read_bytes() for p in shard_files(tmp_path / "b")]
    assert b_bytes == [p.read_bytes() for p in shard_files(tmp_path / "c")]


def test_bad_images_are_reported_not_packed(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=3)
    good = encode_jpeg(photo_like(64, 48, 99))
    (src / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (src / "dog" / "notes.jpg").write_text("this is a text file, not an image\n")
    (src / "eel" / "empty.jpg").write_bytes(b"")
    summary = pack(str(src), str(tmp_path / "out"), progress=False)
    assert summary.bad == 3 and summary.samples == len(ImageFolder(src)) - 3
    bad = {Path(b["file"]).name: b for b in json.loads((tmp_path / "out" / "train.bad.json").read_text())}
    assert set(bad) == {"truncated.jpg", "notes.jpg", "empty.jpg"}
    assert bad["truncated.jpg"]["reason"] == "truncated: Premature end of JPEG file"
    assert bad["notes.jpg"]["reason"].startswith("undecodable: ") and "not a JPEG" in bad["notes.jpg"]["reason"]
    assert "empty file" in bad["empty.jpg"]["reason"]
    paths = {json.loads(m["json"])["path"] for _, m in read_shards(shard_files(tmp_path / "out"))}
    assert not any(p.endswith(("truncated.jpg", "notes.jpg", "empty.jpg")) for p in paths)
    assert "3 bad files left out" in summary.describe()


def undefined_quant_table_jpeg() -> bytes:
    """A JPEG whose header reads fine but whose first component names quantisation table 3, which is not defined:
    only starting the decompression finds that (libjpeg: "Quantization table 0x03 was not defined")."""
    data = bytearray(encode_jpeg(photo_like(128, 96, 5)))
    sof = data.index(b"\xff\xc0")
    data[sof + 12] = 3  # SOF0: marker, length, precision, height, width, count, then (id, sampling, table) each
    return bytes(data)


def test_full_decode_finds_damage_a_header_check_cannot_see(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=2)
    (src / "cat" / "bad_table.jpg").write_bytes(undefined_quant_table_jpeg())
    header_only = pack(str(src), str(tmp_path / "a"), progress=False)
    assert header_only.bad == 0 and header_only.samples == 7
    full = pack(str(src), str(tmp_path / "b"), full_decode=True, progress=False)
    bad = json.loads((tmp_path / "b" / "train.bad.json").read_text())
    assert full.bad == 1 and full.samples == 6
    assert Path(bad[0]["file"]).name == "bad_table.jpg"
    assert bad[0]["reason"] == "undecodable: Quantization table 0x03 was not defined"


def test_interrupted_run_resumes_and_ends_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_folder(tmp_path / "src", per_class=8)
    straight = pack(str(src), str(tmp_path / "ref"), shard_size=30_000, progress=False)
    assert straight.shards >= 4
    first = json.loads((tmp_path / "ref" / "train.json").read_text())["shards"][0]["samples"]
    out = tmp_path / "out"
    real_add = ShardWriter.add_sample
    calls = {"n": 0}

    def add_then_interrupt(self: ShardWriter, members: list[tuple[str, bytes]], mtime: int = 0) -> None:
        calls["n"] += 1
        if calls["n"] == first + 2:  # in the middle of the second shard
            raise KeyboardInterrupt
        real_add(self, members, mtime)

    monkeypatch.setattr(ShardWriter, "add_sample", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pack(str(src), str(out), shard_size=30_000, progress=False)
    monkeypatch.setattr(ShardWriter, "add_sample", real_add)
    finished = shard_files(out)
    assert 1 <= len(finished) < straight.shards
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # the interrupted shard's temp file was removed
    # a run killed outright leaves its temp file: the next run removes it
    (out / ".train-000003.tar.tmp-999999").write_bytes(b"partial")
    mtimes = {p.name: p.stat().st_mtime_ns for p in finished}
    resumed = pack(str(src), str(out), shard_size=30_000, progress=False)
    assert resumed.shards_skipped == len(finished)
    assert resumed.shards_written == straight.shards - len(finished)
    assert resumed.samples == straight.samples
    assert {p.name: p.stat().st_mtime_ns for p in finished} == mtimes  # kept, not rewritten
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    assert [p.read_bytes() for p in shard_files(out)] == [p.read_bytes() for p in shard_files(tmp_path / "ref")]
    # a damaged finished shard is found on the next run and written again
    victim = shard_files(out)[0]
    victim.write_bytes(victim.read_bytes()[:1000])
    again = pack(str(src), str(out), shard_size=30_000, progress=False)
    assert again.shards_written == 1 and again.shards_skipped == straight.shards - 1
    assert [p.read_bytes() for p in shard_files(out)] == [p.read_bytes() for p in shard_files(tmp_path / "ref")]


def test_verify_hash_finds_a_same_size_change(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=2)
    out = tmp_path / "out"
    pack(str(src), str(out), progress=False)
    shard = shard_files(out)[0]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # inside the first image's data: same size, same members
    shard.write_bytes(bytes(data))
    assert pack(str(src), str(out), progress=False).shards_written == 0
    assert pack(str(src), str(out), verify_hash=True, progress=False).shards_written == 1


def test_another_packing_in_dst_is_refused_unless_overwrite(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=2)
    out = tmp_path / "out"
    pack(str(src), str(out), shard_size=20_000, progress=False)
    with pytest.raises(PackError, match="another packing.*--overwrite"):
        pack(str(src), str(out), shard_size=10**9, progress=False)
    summary = pack(str(src), str(out), shard_size=10**9, overwrite=True, progress=False)
    assert summary.shards == 1 and [p.name for p in shard_files(out)] == ["train-000000.tar"]


def test_unwritable_dst_is_a_clear_error(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(PackError, match=r"cannot create the output folder .*a_file/out"):
        pack(str(src), str(blocker / "out"), progress=False)
    assert pack_mod.main([str(src), str(blocker / "out"), "--no-progress"]) == 2


def test_read_only_dst_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders: permissions cannot be tested as root")
    src = make_folder(tmp_path / "src", per_class=1)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PackError, match="cannot write in the output folder"):
            pack(str(src), str(ro), progress=False)
    finally:
        ro.chmod(0o755)


def test_imagenet_root_needs_a_split(tmp_path: Path) -> None:
    make_folder(tmp_path / "root" / "train", per_class=2)
    make_folder(tmp_path / "root" / "val", per_class=1)
    with pytest.raises(PackError, match="--split train"):
        pack(str(tmp_path / "root"), str(tmp_path / "out"), progress=False)
    summary = pack(str(tmp_path / "root"), str(tmp_path / "out"), split="val", progress=False)
    assert summary.samples == 3 and shard_files(tmp_path / "out", "val")


def test_sample_keys_are_unique_and_dot_free() -> None:
    rels = ["a/x.jpg", "a/x.png", "a/x_1.jpg", "a/b.c.jpg", "a/b_c.jpg", "d.e/f.jpg", "./g.jpg", "a/x-1.jpg"]
    keys = sample_keys(rels)
    assert len(set(keys)) == len(keys)
    assert all("." not in k for k in keys)
    assert keys[:2] == ["a/x", "a/x-1"] and keys[3] == "a/b_c" and keys[4] == "a/b_c-1" and keys[6] == "g"
    assert keys[7] == "a/x-1-1"


def test_plan_shards_respects_the_target_size() -> None:
    sizes = [1000] * 10
    shards = plan_shards(sizes, np.arange(10), 3 * (512 + 1024 + 4 * 512))
    assert [len(s) for s in shards] == [3, 3, 3, 1] and sum(shards, []) == list(range(10))
    assert plan_shards([10**9], np.arange(1), 1000) == [[0]]  # a sample bigger than the target still gets a shard


def test_cli_packs_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_folder(tmp_path / "src", per_class=2)
    assert pack_mod.main([str(src), str(tmp_path / "out"), "--shard-size", "20KB", "--prefix", "part",
                          "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "packed 6 images into" in out and "images/s" in out and "MB/s" in out
    assert shard_files(tmp_path / "out", "part")
    with pytest.raises(SystemExit):
        pack_mod.main([str(src), str(tmp_path / "out"), "--shard-size", "lots"])


def test_restart_index_without_native_support_is_a_clear_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_folder(tmp_path / "src", per_class=1)
    monkeypatch.delattr(_C, "add_restart_index", raising=False)
    with pytest.raises(PackError, match=r"--restart-index needs .*add_restart_index.*pack without --restart-index"):
        pack(str(src), str(tmp_path / "out"), restart_index=True, progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_restart_index_is_lossless_and_webdataset_readable(tmp_path: Path) -> None:
    if not hasattr(_C, "add_restart_index"):
        pytest.skip("this build of the native core has no add_restart_index (the restart-index transcoder)")
    wds = pytest.importorskip("webdataset")
    src = make_folder(tmp_path / "src", per_class=3)
    summary = pack(str(src), str(tmp_path / "out"), restart_index=True, full_decode=True, progress=False)
    ref = {os.path.relpath(p, src): p for p in ImageFolder(src).paths}
    jpegs = [r for r in ref if not r.endswith(".png")]
    assert summary.restart_indexed + summary.restart_kept == len(jpegs) and summary.bad == 0
    urls = [str(p) for p in shard_files(tmp_path / "out")]
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        ext = next(e for e in ("jpg", "jpeg", "png") if e in sample)
        original = Path(ref[meta["path"]]).read_bytes()
        if ext == "png":
            assert sample[ext] == original and "restart_index" not in meta
        else:
            assert np.array_equal(decode_image(sample[ext]), decode_image(original)), meta["path"]


@pytest.mark.corpora
def test_pack_the_corpora_keeps_every_decodable_file(tmp_path: Path) -> None:
    root = corpora_dir("imagenet_sample").parent
    summary = pack(str(root), str(tmp_path / "out"), shard_size=20_000_000, progress=False)
    ref = ImageFolder(root)
    bad = {b["file"] for b in json.loads((tmp_path / "out" / "train.bad.json").read_text())}
    assert summary.samples + summary.bad == len(ref)
    for path in ref.paths:  # the loader's own decoder is the reference: packed iff it decodes
        try:
            decode_image(path)
            assert path not in bad, path
        except ValueError:
            assert path in bad, path
    packed = {json.loads(m["json"])["path"]: m for _, m in read_shards(shard_files(tmp_path / "out"))}
    assert len(packed) == summary.samples
    indexed = 0
    for rel, members in list(packed.items())[:50]:
        image = next(v for k, v in members.items() if k not in ("cls", "json"))
        if json.loads(members["json"]).get("restart_index"):  # transcoded losslessly: the same pixels
            assert np.array_equal(decode_image(image), decode_image(root / rel)), rel
            indexed += 1
        else:
            assert image == (root / rel).read_bytes()
    assert indexed > 25


def _add_comment(data: bytes) -> bytes:
    """A stand-in for the native transcoder with the same contract (bytes in, same pixels out, other bytes): a COM
    segment after SOI. It exercises the packer's side of --restart-index on a core that lacks the real one."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    body = b"restart index stand-in"
    return data[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


def test_restart_index_plumbing_with_a_stand_in_transcoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_folder(tmp_path / "src", per_class=2)
    monkeypatch.setattr(_C, "add_restart_index", _add_comment, raising=False)
    summary = pack(str(src), str(tmp_path / "out"), restart_index=True, progress=False)
    ref = {os.path.relpath(p, src): Path(p).read_bytes() for p in ImageFolder(src).paths}
    assert summary.restart_indexed == sum(not r.endswith(".png") for r in ref) and summary.restart_kept == 0
    for _, members in read_shards(shard_files(tmp_path / "out")):
        meta = json.loads(members["json"])
        image = next(v for k, v in members.items() if k not in ("cls", "json"))
        if meta["format"] == "JPEG":
            assert image == _add_comment(ref[meta["path"]]) and meta["restart_index"] is True
            assert meta["size"] == len(ref[meta["path"]])  # the original file's size
        else:
            assert image == ref[meta["path"]] and "restart_index" not in meta


def test_restart_index_keeps_the_original_when_the_transcode_changes_pixels(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_folder(tmp_path / "src", per_class=2)
    other = encode_jpeg(photo_like(64, 64, 123))
    monkeypatch.setattr(_C, "add_restart_index", lambda data: other, raising=False)
    summary = pack(str(src), str(tmp_path / "out"), restart_index=True, full_decode=True, progress=False)
    assert summary.restart_indexed == 0 and summary.restart_kept == 3 and summary.bad == 0  # 3 JPEGs, 3 PNGs
    ref = {os.path.relpath(p, src): Path(p).read_bytes() for p in ImageFolder(src).paths}
    for _, members in read_shards(shard_files(tmp_path / "out")):
        meta = json.loads(members["json"])
        image = next(v for k, v in members.items() if k not in ("cls", "json"))
        assert image == ref[meta["path"]]
        if meta["format"] == "JPEG":
            assert meta["restart_index"] is False and "differ" in meta["restart_kept_because"]


def test_shard_writer_output_is_what_tarfile_writes(tmp_path: Path) -> None:
    """Our one-write-per-sample tar layout and direct ustar headers against the stdlib's writer (pax for a non-ASCII
    and a 124-character name)."""
    members = [("k/a.jpg", b"\xff\xd8" + bytes(range(256)) * 3), ("k/a.cls", b"7"), ("k/a.json", b"{}"),
               ("ünï/cödé.jpg", b"x" * 513), ("ünï/cödé.cls", b"0"), ("l" * 120 + ".jpg", b"y" * 512)]
    with ShardWriter(str(tmp_path / "ours.tar")) as w:
        w.add_sample(members[:3], 1_700_000_000)
        w.add_sample(members[3:5], 1_700_000_000)
        w.add(*members[5], 1_700_000_000)
        w.commit()
    with tarfile.open(tmp_path / "ref.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 1_700_000_000, 0o444, "", ""
            tar.addfile(info, io.BytesIO(data))
    ours = (tmp_path / "ours.tar").read_bytes()
    with tarfile.open(tmp_path / "ours.tar") as tar:  # tarfile checks every header's checksum as it reads
        got = [(m.name, m.size, m.mtime, m.mode, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    assert got == [(n, len(d), 1_700_000_000, 0o444, d) for n, d in members]
    # byte for byte where this Python's tarfile leaves a regular file's device fields empty (newer releases do;
    # older ones write zeros there: both are valid, ours never depends on the Python version)
    if tarfile.TarInfo("x").tobuf(tarfile.PAX_FORMAT)[329:345] == bytes(16):
        assert ours == (tmp_path / "ref.tar").read_bytes()
    assert w.size == len(ours) and w.members == 6 and w.sha256 == hashlib.sha256(ours).hexdigest()
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_a_second_packer_on_the_same_dst_is_refused(tmp_path: Path) -> None:
    import fcntl

    src = make_folder(tmp_path / "src", per_class=1)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".train.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running packer holds it
        with pytest.raises(PackError, match=r"another packer is writing train-\*\.tar into"):
            pack(str(src), str(out), progress=False)
    assert pack(str(src), str(out), progress=False).samples == 3  # free again once the holder is gone


@pytest.mark.slow
def test_a_killed_packer_process_resumes_to_the_same_shards(tmp_path: Path) -> None:
    """SIGKILL (no cleanup at all) while shards are being written, then the same command again."""
    import signal
    import subprocess
    import sys
    import time

    src = make_folder(tmp_path / "src", per_class=40)
    args = ["--shard-size", "6KB", "--threads", "1", "--no-progress"]  # about one sample per shard: many fsyncs
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ref = subprocess.run([sys.executable, "-m", "ipu_cnn.data.pack", str(src), str(tmp_path / "ref"), *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ipu_cnn.data.pack", str(src), str(out), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "train.journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 5:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_mid_run = proc.returncode == -signal.SIGKILL
    written_before = len(shard_files(out))
    resumed = subprocess.run([sys.executable, "-m", "ipu_cnn.data.pack", str(src), str(out), *args], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [p.read_bytes() for p in shard_files(out)] == [p.read_bytes() for p in shard_files(tmp_path / "ref")]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    if killed_mid_run:  # (else the first run ended before the kill landed; the rerun must match all the same)
        assert 5 <= written_before < len(shard_files(out))
        match = re.search(r"(\d+) verified from an earlier run", resumed.stdout)
        assert match is not None, resumed.stdout
        verified = int(match.group(1))
        # a shard renamed into place just before the kill, but not yet in the journal, is written again
        assert verified in (written_before - 1, written_before)


def test_a_file_that_cannot_be_read_is_reported(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=2)
    (src / "cat" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # listed by the scan, unreadable
    summary = pack(str(src), str(tmp_path / "out"), progress=False)
    bad = json.loads((tmp_path / "out" / "train.bad.json").read_text())
    assert summary.bad == 1 and summary.samples == 6
    assert Path(bad[0]["file"]).name == "gone.jpg" and bad[0]["reason"] == "cannot read: No such file or directory"
