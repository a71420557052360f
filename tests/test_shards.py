"""TarShards: WebDataset-layout tar shards read through a header index and native preads.

Shards are written here with Python's tarfile in the exact WebDataset layout (KEY.jpg + KEY.cls [+ KEY.json], members
of a sample consecutive), in the three tar dialects (ustar, GNU, pax); the references are tarfile itself, the
`webdataset` library, and the same images read as plain files by the same Loader.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import encode_jpeg, photo_like
from ipu_cnn import _C
from ipu_cnn.data import DecodeError, EvalTransform, Loader, TarShards, TrainTransform, decode_image
from ipu_cnn.data.datasets import FileDataset, expand_shards
from ipu_cnn.data.datasets import shards as shards_module
from ipu_cnn.data.datasets._tar import TarFormatError, scan_shard, split_key
from ipu_cnn.data.decode import ShardMember

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]], fmt: int = tarfile.GNU_FORMAT) -> None:
    """A tar shard holding each sample's members KEY.EXT consecutively, in the given order."""
    with tarfile.open(path, "w", format=fmt) as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = 1_700_000_000
                tf.addfile(info, io.BytesIO(data))


def make_samples(count: int, start: int = 0, classes: int = 5, prefix: str = "img") -> list[tuple[str, dict]]:
    """count JPEG samples with labels i % classes, sizes varying so crops differ."""
    out = []
    for i in range(start, start + count):
        jpg = encode_jpeg(photo_like(40 + 7 * (i % 9), 36 + 5 * (i % 7), seed=i), quality=90)
        out.append((f"{prefix}{i:05d}", {"jpg": jpg, "cls": str(i % classes).encode(),
                                         "json": f'{{"i": {i}}}'.encode()}))
    return out


@pytest.fixture()
def shard_set(tmp_path: Path) -> tuple[list[Path], list[tuple[str, dict]]]:
    """Four shards of 9 samples each, and the samples they hold in order."""
    paths, everything = [], []
    for s in range(4):
        samples = make_samples(9, start=9 * s)
        p = tmp_path / f"train-{s:06d}.tar"
        write_shard(p, samples)
        paths.append(p)
        everything.extend(samples)
    return paths, everything


def files_of(samples: list[tuple[str, dict]], folder: Path) -> FileDataset:
    """The same images as plain files, in the same order, as a dataset the Loader reads by path."""
    folder.mkdir(exist_ok=True)
    paths = []
    for key, members in samples:
        p = folder / f"{key}.jpg"
        p.write_bytes(members["jpg"])
        paths.append(str(p))
    labels = [int(m["cls"]) for _, m in samples]
    return FileDataset(paths, labels, [str(i) for i in range(max(labels) + 1)])


def epoch_batches(loader: Loader, epoch: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    loader.set_epoch(epoch)
    return [(x.numpy().copy(), y.numpy().copy(), loader.last_indices.copy()) for x, y in loader]


# --- patterns ------------------------------------------------------------------------------------------------------
def test_brace_ranges_lists_and_globs(tmp_path: Path) -> None:
    for i in range(12):
        (tmp_path / f"train-{i:06d}.tar").write_bytes(b"")
    (tmp_path / ".train-000000.tar.idx").write_bytes(b"")
    got = expand_shards(str(tmp_path / "train-{000002..000004}.tar"))
    assert got == [str(tmp_path / f"train-{i:06d}.tar") for i in (2, 3, 4)]
    assert expand_shards(str(tmp_path / "train-00000{1,9}.tar")) == [str(tmp_path / "train-000001.tar"),
                                                                     str(tmp_path / "train-000009.tar")]
    assert expand_shards(str(tmp_path / "train-*.tar")) == [str(tmp_path / f"train-{i:06d}.tar") for i in range(12)]
    assert expand_shards([tmp_path / "train-000011.tar", str(tmp_path / "train-{000000..000001}.tar")]) == [
        str(tmp_path / "train-000011.tar"), str(tmp_path / "train-000000.tar"), str(tmp_path / "train-000001.tar")]
    with pytest.raises(FileNotFoundError, match=r"train-000012\.tar does not exist"):
        expand_shards(str(tmp_path / "train-{000010..000012}.tar"))
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        expand_shards(str(tmp_path / "val-*.tar"))
    with pytest.raises(ValueError, match="runs backwards"):
        expand_shards(str(tmp_path / "train-{000004..000002}.tar"))


def test_split_key_follows_webdataset() -> None:
    assert split_key("dir/n0144_10026.JPEG") == ("dir/n0144_10026", "jpeg")
    assert split_key("a.b/c.seg.png") == ("a.b/c", "seg.png")
    assert split_key("noext") == ("noext", "")


# --- the header scan -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_scan_agrees_with_tarfile_on_every_dialect(tmp_path: Path, fmt: str) -> None:
    """Offsets and sizes match tarfile's, with names past 100 characters (GNU long names, pax paths, ustar prefix)
    and members above 8 GiB-free sizes; non-ASCII keys survive."""
    long_dir = "d" * 60 + "/" + "e" * 70  # needs the ustar prefix, a GNU long name or a pax path
    samples = make_samples(3) + [(f"{long_dir}/k{i}", {"jpg": encode_jpeg(photo_like(30, 20, seed=i)),
                                                       "cls": b"2"}) for i in range(2)]
    if fmt != "ustar":
        samples.append(("x" * 130 + "_é", {"jpg": b"\xff\xd8 not really", "cls": b" 4\n"}))
    p = tmp_path / "s.tar"
    write_shard(p, samples, FORMATS[fmt])
    scan = scan_shard(str(p))
    with tarfile.open(p) as tf:
        ref = {m.name: (m.offset_data, m.size) for m in tf.getmembers()}
    assert scan.keys == [k for k, _ in samples]
    assert [(o, n) for o, n in zip(scan.offsets, scan.lengths)] == [ref[f"{k}.jpg"] for k, _ in samples]
    assert scan.labels == [int(m["cls"]) for _, m in samples]
    assert scan.problems == [] and scan.truncated == ""


def test_scan_refuses_a_file_that_is_not_tar(tmp_path: Path) -> None:
    p = tmp_path / "bad.tar"
    p.write_bytes(encode_jpeg(photo_like(64, 64)) * 4)
    with pytest.raises(TarFormatError, match=r"bad\.tar: the tar header at byte 0 fails its checksum"):
        scan_shard(str(p))


# --- the dataset against the webdataset library and plain files -----------------------------------------------------
def test_webdataset_library_reads_the_same_samples(shard_set: tuple[list[Path], list]) -> None:
    wds = pytest.importorskip("webdataset")
    paths, samples = shard_set
    ds = TarShards([str(p) for p in paths])
    ref = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False))
    assert len(ref) == len(ds) == len(samples)
    for i, r in enumerate(ref):
        assert ds.key(i) == r["__key__"]
        assert int(ds.labels[i]) == int(r["cls"])
        assert ds.read(i) == r["jpg"]
        assert ds.metadata(i) == r["json"]
    assert ds.classes == ["0", "1", "2", "3", "4"]


def test_loader_over_shards_equals_loader_over_files(shard_set: tuple[list[Path], list], tmp_path: Path) -> None:
    """Same images, same order: the batches are bit-identical, train and eval."""
    paths, samples = shard_set
    shards = TarShards(str(paths[0].parent / "train-{000000..000003}.tar"))
    files = files_of(samples, tmp_path / "files")
    for transform in (TrainTransform(24), EvalTransform(24, resize_size=28)):
        with Loader(shards, 5, transform, seed=3, num_threads=2) as a, Loader(files, 5, transform, seed=3,
                                                                              num_threads=2) as b:
            for epoch in (0, 1):
                for (xa, ya, ia), (xb, yb, ib) in zip(epoch_batches(a, epoch), epoch_batches(b, epoch), strict=True):
                    np.testing.assert_array_equal(ia, ib)
                    np.testing.assert_array_equal(ya, yb)
                    np.testing.assert_array_equal(xa, xb)


def test_determinism_threads_process_mode_resume_and_ranks(shard_set: tuple[list[Path], list]) -> None:
    paths, _ = shard_set
    ds = TarShards([str(p) for p in paths])
    t = TrainTransform(20)
    with Loader(ds, 4, t, seed=7, num_threads=1) as one:
        ref = epoch_batches(one, 2)
    with Loader(ds, 4, t, seed=7, num_threads=3, workers="process") as proc:
        for (xa, ya, ia), (xb, yb, ib) in zip(ref, epoch_batches(proc, 2), strict=True):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(xa, xb)
    with Loader(ds, 4, t, seed=7, num_threads=2) as a:
        a.set_epoch(2)
        it = iter(a)
        for _ in range(3):
            next(it)
        state = a.state_dict()
    with Loader(ds, 4, t, seed=7, num_threads=2) as b:
        b.load_state_dict(state)
        rest = [(x.numpy().copy(), b.last_indices.copy()) for x, _ in b]
    assert len(rest) == len(ref) - 3
    for (x, i), (xr, _, ir) in zip(rest, ref[3:], strict=True):
        np.testing.assert_array_equal(i, ir)
        np.testing.assert_array_equal(x, xr)
    seen = []
    for rank in range(3):
        with Loader(ds, 4, EvalTransform(16), shuffle=False, drop_last=False, rank=rank, world_size=3) as r:
            seen.extend(int(i) for _ in r for i in r.last_indices)
    assert sorted(seen) == list(range(len(ds)))


def test_one_open_per_shard_and_thread(shard_set: tuple[list[Path], list], tmp_path: Path) -> None:
    """An epoch over shards opens each shard at most once per thread; over files, once per sample. Run in a fresh
    process, whose thread pool holds only the threads this loader asks for (this one's may hold more from earlier
    tests, and any idle worker may take a sample)."""
    import json
    import subprocess
    import sys

    from conftest import subprocess_env

    paths, samples = shard_set
    files_of(samples, tmp_path / "files")
    script = f"""
import json
from ipu_cnn import _C
from ipu_cnn.data import Loader, TarShards, TrainTransform
from ipu_cnn.data.datasets import FileDataset
shards = TarShards({[str(p) for p in paths]!r})
files = FileDataset({[str(tmp_path / "files" / f"{k}.jpg") for k, _ in samples]!r}, [0] * {len(samples)}, ["0"])
out = {{}}
for name, ds in (("shards", shards), ("files", files)):
    _C.reset_io_stats()
    with Loader(ds, 6, TrainTransform(16), num_threads=2) as loader:
        n = sum(len(y) for _, y in loader)
    out[name] = dict(_C.io_stats(), images=n)
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["shards"]["images"] == stats["files"]["images"] == 36
    assert 1 <= stats["shards"]["opens"] <= len(paths) * 2 < 36
    assert stats["shards"]["bytes"] == stats["files"]["bytes"] == sum(len(m["jpg"]) for _, m in samples)
    assert stats["files"]["opens"] == 36


def test_dataset_pickles_and_indexes_like_a_list(shard_set: tuple[list[Path], list]) -> None:
    paths, samples = shard_set
    ds = TarShards([str(p) for p in paths])
    copy = pickle.loads(pickle.dumps(ds.sources))
    assert copy[-1] == ds.sources[len(ds) - 1] == ds[-1][0]
    assert ds[10][0].key == samples[10][0] and ds[10][1] == int(samples[10][1]["cls"])
    assert [m.key for m in ds.sources[3:6]] == [k for k, _ in samples[3:6]]
    with pytest.raises(IndexError, match="out of range"):
        ds.sources[len(ds)]


def test_png_member_goes_through_pillow(tmp_path: Path) -> None:
    from PIL import Image

    pixels = photo_like(33, 21, seed=5)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    write_shard(tmp_path / "p.tar", [("a", {"png": buf.getvalue(), "cls": b"0"})])
    ds = TarShards(str(tmp_path / "p.tar"))
    got = decode_image(ds[0][0], EvalTransform(16, resize_size=16))
    ref = decode_image(buf.getvalue(), EvalTransform(16, resize_size=16))
    np.testing.assert_array_equal(got, ref)


# --- the index cache -----------------------------------------------------------------------------------------------
def test_index_is_cached_beside_the_shard_and_rebuilt_when_it_changes(tmp_path: Path) -> None:
    p = tmp_path / "a.tar"
    write_shard(p, make_samples(3))
    TarShards(str(p))
    index = tmp_path / ".a.tar.idx"
    assert index.is_file()
    before = index.stat().st_mtime_ns
    assert TarShards(str(p)).key(2) == "img00002"
    assert index.stat().st_mtime_ns == before  # read, not rebuilt
    write_shard(p, make_samples(5, start=10))  # the same name, other content
    ds = TarShards(str(p))
    assert len(ds) == 5 and ds.key(0) == "img00010"
    assert decode_image(ds[4][0], EvalTransform(8)).shape == (8, 8, 3)


def test_index_goes_to_the_cache_dir_when_the_folder_is_not_writable(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "shards" / "a.tar"
    p.parent.mkdir()
    write_shard(p, make_samples(2))
    monkeypatch.setenv("IPU_CNN_CACHE", str(tmp_path / "cache"))
    real_publish = shards_module.publish_file

    def publish(target: Path, data: bytes) -> None:
        if target.parent == p.parent:
            raise PermissionError(13, "Permission denied")
        real_publish(target, data)

    monkeypatch.setattr(shards_module, "publish_file", publish)
    assert len(TarShards(str(p))) == 2
    assert not (p.parent / ".a.tar.idx").exists()
    assert len(list((tmp_path / "cache" / "shard_index").glob("*-a.tar.idx"))) == 1


def test_a_generated_index_loads_compactly(tmp_path: Path) -> None:
    """A generated index (ImageNet-like keys) loads whole, and holds under 47 bytes a sample: 1.28M samples in well
    under 100 MB (the README gives the load time measured by the benchmark)."""
    from ipu_cnn.benchmark.shards import generate_index, index_bytes

    ds = TarShards(generate_index(tmp_path, 30_011, 7))
    assert len(ds) == 30_011 and ds.sources.shard_of(30_010) == 6
    assert ds.key(30_010).endswith("_30010") and ds.sources[4288].offset == 512
    assert index_bytes(ds) / len(ds) < 47


# --- bad shards ----------------------------------------------------------------------------------------------------
def test_missing_cls_names_shard_and_key_and_skip_keeps_the_rest(tmp_path: Path) -> None:
    samples = make_samples(4)
    del samples[1][1]["cls"]
    samples[2][1]["cls"] = b"cat"
    write_shard(tmp_path / "a.tar", samples)
    with pytest.raises(ValueError, match=r"a\.tar\[img00001\]: no \.cls member.*a\.tar\[img00002\]: its \.cls member "
                                         r"holds 'cat'.*errors='skip'"):
        TarShards(str(tmp_path / "a.tar"))
    ds = TarShards(str(tmp_path / "a.tar"), errors="skip")
    assert [ds.key(i) for i in range(len(ds))] == ["img00000", "img00003"]
    assert [(Path(s).name, k) for s, k, _ in ds.skipped] == [("a.tar", "img00001"), ("a.tar", "img00002")]


def test_member_that_is_not_an_image_is_a_bad_sample_named_by_key(tmp_path: Path) -> None:
    samples = make_samples(6)
    samples[4][1]["jpg"] = b"this is not an image at all" * 20
    samples.insert(2, ("notes", {"txt": b"hello", "cls": b"1"}))  # a sample with no image member
    write_shard(tmp_path / "a.tar", samples)
    with pytest.raises(ValueError, match=r"a\.tar\[notes\]: no image member \(found \.txt, \.cls"):
        TarShards(str(tmp_path / "a.tar"))
    ds = TarShards(str(tmp_path / "a.tar"), errors="skip")
    assert len(ds) == 6
    with Loader(ds, 6, EvalTransform(16), shuffle=False, on_error="raise") as loader:
        with pytest.raises(DecodeError, match=r"a\.tar\[img00004\]: .*not an image format Pillow can read"):
            next(iter(loader))
    with Loader(ds, 6, EvalTransform(16), shuffle=False, on_error="replace") as loader:
        batches = list(loader)
    assert [(i, Path(s).name) for i, s, _ in loader.bad_samples] == [(4, "a.tar[img00004]")]
    assert len(batches) == 1 and 4 not in loader.last_indices


def test_truncated_shard_keeps_every_sample_before_the_cut(tmp_path: Path) -> None:
    """Cut inside the last image: with its .cls written first the sample is indexed and its read reports the cut;
    with the .cls after the image (the usual order) the sample has no label: an index error naming shard and key."""
    samples = [(k, {"cls": m["cls"], "jpg": m["jpg"]}) for k, m in make_samples(5)]
    p = tmp_path / "a.tar"
    write_shard(p, samples)
    last = TarShards(str(p))[4][0]
    with open(p, "r+b") as f:
        f.truncate(last.offset + last.length // 2)  # cut inside the last image
    ds = TarShards(str(p))
    assert ds.truncated and "a.tar" in ds.truncated[0][0]
    assert len(ds) == 5
    with Loader(ds, 5, EvalTransform(16), shuffle=False, on_error="replace") as loader:
        list(loader)
    assert [(i, Path(s).name) for i, s, _ in loader.bad_samples] == [(4, "a.tar[img00004]")]
    assert "truncated" in loader.bad_samples[0][2]
    with pytest.raises(DecodeError, match=r"a\.tar\[img00004\]: member at bytes .* lies past the end of the shard"):
        decode_image(ds[4][0], EvalTransform(16))
    for i in range(4):
        ref = decode_image(samples[i][1]["jpg"], EvalTransform(16))
        np.testing.assert_array_equal(decode_image(ds[i][0], EvalTransform(16)), ref)

    write_shard(p, make_samples(5))  # jpg before cls
    last = TarShards(str(p))[4][0]
    with open(p, "r+b") as f:
        f.truncate(last.offset + last.length // 2)
    with pytest.raises(ValueError, match=r"a\.tar\[img00004\]: cut off by the end of the shard, which is truncated "
                                         r"\(member img00004\.jpg ends at byte"):
        TarShards(str(p))
    ds = TarShards(str(p), errors="skip")
    assert [ds.key(i) for i in range(len(ds))] == [f"img{i:05d}" for i in range(4)]


# --- the native member read ----------------------------------------------------------------------------------------
def test_native_member_source_reads_a_range_under_the_limits(tmp_path: Path) -> None:
    jpg = encode_jpeg(photo_like(50, 40, seed=2))
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"x" * 1000 + jpg + b"y" * 77)
    opts = _C.DecodeOptions()
    report, pixels = _C.decode_full((str(blob), 1000, len(jpg)), opts)
    ref_report, ref = _C.decode_full(jpg, opts)
    assert report.status == _C.Status.OK and ref_report.status == _C.Status.OK
    np.testing.assert_array_equal(pixels, ref)
    opts.max_file_bytes = len(jpg) - 1
    report, _ = _C.decode_full((str(blob), 1000, len(jpg)), opts)
    assert "member of" in report.reason and "above the limit" in report.reason
    report, _ = _C.decode_full((str(tmp_path), 0, 10), _C.DecodeOptions())
    assert "is a directory, not a shard file" in report.reason
    report, _ = _C.decode_full((str(blob), 2000, len(jpg)), _C.DecodeOptions())
    assert "lies past the end of the shard" in report.reason
    with pytest.raises(TypeError, match=r"\(path: str, offset: int, length: int\)"):
        _C.decode_full((str(blob), "a", 1), _C.DecodeOptions())
    with pytest.raises(ValueError, match="offset and length must be >= 0"):
        _C.decode_full((str(blob), -1, 1), _C.DecodeOptions())


def test_cached_descriptors_are_dropped_when_asked(tmp_path: Path) -> None:
    """A thread keeps a shard open; after drop_cached_files (done by every TarShards build) it reads the new file."""
    p = tmp_path / "a.tar"
    a, b = encode_jpeg(photo_like(32, 32, seed=1)), encode_jpeg(photo_like(32, 32, seed=2))
    p.write_bytes(a)
    member = ShardMember(str(p), 0, len(a), "k")
    first = decode_image(member, EvalTransform(8))
    tmp = tmp_path / "new"
    tmp.write_bytes(b + b"\0" * max(0, len(a) - len(b)))
    os.replace(tmp, p)  # a new inode under the same name, as an atomic re-pack leaves it
    member = ShardMember(str(p), 0, len(b), "k")
    _C.drop_cached_files()
    np.testing.assert_array_equal(decode_image(member, EvalTransform(8)), decode_image(b, EvalTransform(8)))
    assert not np.array_equal(first, decode_image(b, EvalTransform(8)))
    assert torch.from_numpy(first).shape == (8, 8, 3)


# --- the applications ----------------------------------------------------------------------------------------------
def test_training_app_reads_shards_with_a_validation_split(tmp_path: Path) -> None:
    from ipu_cnn.models import EvalPreprocessing, model_spec
    from ipu_cnn.train.config import parse_config
    from ipu_cnn.train.data import DataSettings, create_loaders

    for s in range(2):
        write_shard(tmp_path / f"train-{s:06d}.tar", make_samples(12, start=12 * s))
    write_shard(tmp_path / "val-000000.tar", make_samples(7, start=100, classes=3))
    pattern = str(tmp_path / "train-{000000..000001}.tar")
    options = parse_config(["--data", "shards", "--data-path", pattern, "--val-data-path",
                            str(tmp_path / "val-*.tar")])
    data = DataSettings.from_options(options)
    assert (data.mode, data.data_path) == ("shards", pattern)
    eval_pre = EvalPreprocessing.resolve(model_spec("resnet18"), image_size=16)
    train, val, num_classes, names = create_loaders(data, batch_size=4, val_batch_size=4, eval=eval_pre,
                                                    device=torch.device("cpu"))
    try:
        assert (num_classes, names) == (5, ["0", "1", "2", "3", "4"])
        assert len(train) == 6 and len(val) == 2
        labels = torch.cat([y for _, y in val]).tolist()
        assert labels == [i % 3 for i in range(100, 107)]
    finally:
        train.close()
        val.close()
    with pytest.raises(SystemExit, match="--data shards needs --data-path"):
        parse_config(["--data", "shards"])


def test_training_app_streams_shards_from_one_memory_copy(tmp_path: Path) -> None:
    """--shard-mode stream and --shard-cache memory reach TarShards: each epoch reads every sample once, in whole
    shards, from a copy in shared memory that outlives the deleted originals."""
    from ipu_cnn.models import EvalPreprocessing, model_spec
    from ipu_cnn.train.config import parse_config
    from ipu_cnn.train.data import DataSettings, create_loaders

    for s in range(3):
        write_shard(tmp_path / f"train-{s:06d}.tar", make_samples(8, start=8 * s))
    options = parse_config(["--data", "shards", "--data-path", str(tmp_path / "train-*.tar"), "--shard-mode",
                            "stream", "--shard-shuffle-buffer", "5", "--shard-cache", "memory"])
    data = DataSettings.from_options(options)
    eval_pre = EvalPreprocessing.resolve(model_spec("resnet18"), image_size=16)
    train, _, _, _ = create_loaders(data, batch_size=4, val_batch_size=4, eval=eval_pre, device=torch.device("cpu"),
                                    validation=False)
    try:
        for shard in tmp_path.glob("train-*.tar"):
            shard.unlink()  # served from the memory copy from now on
        for epoch in range(2):
            train.set_epoch(epoch)
            labels = sorted(torch.cat([y for _, y in train]).tolist())
            assert labels == sorted(i % 5 for i in range(24))
    finally:
        train.close()
    with pytest.raises(SystemExit, match="--shard-mode and --shard-cache apply to --data shards"):
        parse_config(["--data", "demo", "--shard-mode", "stream"])


def test_inference_benchmark_reads_shards(tmp_path: Path) -> None:
    from ipu_cnn.inference.config import parse_options
    from ipu_cnn.inference.data import benchmark_source
    from ipu_cnn.models import EvalPreprocessing, model_spec

    write_shard(tmp_path / "val-000000.tar", make_samples(10))
    pattern = str(tmp_path / "val-{000000..000000}.tar")
    options = parse_options(["--data", "shards", "--data-path", pattern])
    assert (options.data, options.data_path) == ("shards", pattern)
    with pytest.raises(SystemExit, match="--data shards needs --data-path"):
        parse_options(["--data", "shards"])
    source = benchmark_source("shards", 4, EvalPreprocessing.resolve(model_spec("resnet18"), image_size=16),
                              torch.device("cpu"), data_path=pattern)
    try:
        images = [x for x, _ in source]
        assert len(images) == 2 and images[0].shape == (4, 3, 16, 16)
    finally:
        source.close()


# --- stream mode ---------------------------------------------------------------------------------------------------
def test_stream_order_reads_whole_shards_through_a_bounded_buffer() -> None:
    from ipu_cnn.data.sampling import assign_shards, num_stream_batches, stream_batches, stream_order

    sizes = (10, 7, 10, 3, 10, 9)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    shard_of = np.repeat(np.arange(len(sizes)), sizes)
    assert assign_shards(sizes, 2) == [[0, 3, 4], [1, 2, 5]]  # 23 and 26 samples: whole shards, balanced
    orders = [stream_order(sizes, 4, seed=1, epoch=3, shuffle=True, rank=r, world_size=2) for r in range(2)]
    assert sorted(np.concatenate(orders).tolist()) == list(range(sum(sizes)))  # every sample once across ranks
    for rank, (order, mine) in enumerate(zip(orders, assign_shards(sizes, 2), strict=True)):
        assert set(shard_of[order].tolist()) == set(mine)
        # the shards are read whole in the epoch's shuffled order; with a buffer of 4 the i-th sample out is among the
        # first i + 4 read, and a sample waits in the buffer for a bounded number of draws only in expectation
        shard_order = [mine[i] for i in np.random.default_rng([1, 3, rank, 0x5A4D]).permutation(len(mine))]
        stream = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shard_order])
        entered = {int(x): i for i, x in enumerate(stream)}
        assert all(entered[int(x)] < i + 4 for i, x in enumerate(order))
        assert not np.array_equal(order, stream)
    again = stream_order(sizes, 4, seed=1, epoch=3, shuffle=True, rank=0, world_size=2)
    np.testing.assert_array_equal(orders[0], again)
    assert not np.array_equal(orders[0], stream_order(sizes, 4, seed=1, epoch=4, shuffle=True, rank=0, world_size=2))
    np.testing.assert_array_equal(stream_order(sizes, 4, 1, 3, False, 1, 2),
                                  np.concatenate([np.arange(starts[s], starts[s + 1]) for s in (1, 2, 5)]))
    for r in range(2):
        assert len(stream_batches(sizes, 4, 5, 0, 0, True, r, 2, True)) == num_stream_batches(sizes, 5, r, 2, True) == 4
    assert num_stream_batches(sizes, 5, 1, 2, False) == 6
    with pytest.raises(ValueError, match="6 shards for 7 ranks"):
        assign_shards(sizes, 7)


def test_stream_mode_through_the_loader_is_deterministic_and_resumable(shard_set: tuple[list[Path], list]) -> None:
    paths, _ = shard_set
    ds = TarShards([str(p) for p in paths], mode="stream", shuffle_buffer=5)
    t = TrainTransform(16)
    with Loader(ds, 4, t, seed=2, num_threads=2, rank=1, world_size=2) as a:
        ref = epoch_batches(a, 1)
        a.set_epoch(1)
        it = iter(a)
        next(it)
        next(it)
        state = a.state_dict()
    assert state["stream_buffer"] == 5
    shard_of = np.repeat(np.arange(4), 9)
    assert set(shard_of[np.concatenate([i for _, _, i in ref])].tolist()) in ({1, 3}, {0, 2})
    with Loader(ds, 4, t, seed=2, num_threads=1, rank=1, world_size=2, workers="process") as b:
        b.load_state_dict(state)
        rest = [(x.numpy().copy(), b.last_indices.copy()) for x, _ in b]
    assert len(rest) == len(ref) - 2
    for (x, i), (xr, _, ir) in zip(rest, ref[2:], strict=True):
        np.testing.assert_array_equal(i, ir)
        np.testing.assert_array_equal(x, xr)
    random_mode = TarShards([str(p) for p in paths])
    with Loader(random_mode, 4, t, seed=2, rank=1, world_size=2) as c:
        with pytest.raises(ValueError, match="stream_buffer"):
            c.load_state_dict(state)


# --- the shared-memory copy ----------------------------------------------------------------------------------------
def test_memory_cache_is_one_shared_copy_deleted_by_its_last_user(shard_set: tuple[list[Path], list], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ipu_cnn.data.datasets import _shm

    paths, _ = shard_set
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(_shm, "SHM_ROOT", shm)
    stale = shm / "ipu_cnn-shards-0123456789abcdef01234567"
    stale.mkdir()
    (stale / "000000-x.tar").write_bytes(b"left by a process that died")
    (shm / f"{stale.name}.lock").write_bytes(b"")
    plain = TarShards([str(p) for p in paths])
    with Loader(plain, 6, TrainTransform(16), seed=4) as loader:
        ref = epoch_batches(loader, 1)
    first = TarShards([str(p) for p in paths], cache="memory")
    second = TarShards([str(p) for p in paths], cache="memory")
    assert not stale.exists()  # no one held it: swept
    copies = sorted(shm.glob("ipu_cnn-shards-*/*"))
    assert len(copies) == len(paths)  # one copy for both datasets
    assert first.sources.shards == second.sources.shards == [str(c) for c in copies]
    assert [c.read_bytes() for c in copies] == [p.read_bytes() for p in paths]
    saved = {p: p.read_bytes() for p in paths}
    for p in paths:
        p.unlink()  # from now on only the copy can be read
    try:
        with Loader(first, 6, TrainTransform(16), seed=4, workers="process") as loader:
            for (x, _, i), (xr, _, ir) in zip(epoch_batches(loader, 1), ref, strict=True):
                np.testing.assert_array_equal(i, ir)
                np.testing.assert_array_equal(x, xr)
        first.close()
        assert all(c.exists() for c in copies)  # second still holds it
        second.close()
        assert not any(shm.iterdir())
    finally:
        for p, data in saved.items():
            p.write_bytes(data)


def test_memory_cache_refuses_shards_that_do_not_fit(shard_set: tuple[list[Path], list], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ipu_cnn.data.datasets import _shm

    paths, _ = shard_set
    monkeypatch.setattr(_shm, "SHM_ROOT", tmp_path)
    real = os.statvfs(tmp_path)

    class Tiny:
        f_bavail, f_frsize = 1, real.f_frsize

    monkeypatch.setattr(_shm.os, "statvfs", lambda _: Tiny)
    with pytest.raises(ValueError, match=r"cache='memory': the shards need .* GiB more in .* but only .* GiB is free; "
                                         r"use cache=None"):
        TarShards([str(p) for p in paths], cache="memory")
    assert not list(tmp_path.glob("ipu_cnn-shards-*"))  # nothing left behind


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm (Linux shared memory)")
def test_memory_cache_in_dev_shm(shard_set: tuple[list[Path], list]) -> None:
    paths, samples = shard_set
    ds = TarShards([str(p) for p in paths], cache="memory")
    try:
        assert all(s.startswith("/dev/shm/ipu_cnn-shards-") for s in ds.sources.shards)
        assert ds.read(17) == samples[17][1]["jpg"]
        folder = Path(ds.sources.shards[0]).parent
    finally:
        ds.close()
    assert not folder.exists()


# --- the benchmark -------------------------------------------------------------------------------------------------
def test_files_vs_shards_benchmark_reports_every_configuration(tmp_path: Path) -> None:
    from ipu_cnn.benchmark.shards import run

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(16):
        (folder / f"im{i:03d}.jpg").write_bytes(encode_jpeg(photo_like(64, 48, seed=i)))
    report = run(folder, 16, 4, 1, image_size=32)
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| warm") or
            line.startswith("| cold")]
    assert len(rows) == 12 and {r[2].strip() for r in rows} == {"files", "shards", "shards-rst"}
    total = sum((folder / f"im{i:03d}.jpg").stat().st_size for i in range(16))
    indexed = sum(len(_C.add_restart_index((folder / f"im{i:03d}.jpg").read_bytes())) for i in range(16))
    for cache, threads, source, img_s, _, cpu, mib, opens in (map(str.strip, r) for r in rows):
        assert float(img_s) > 0 and float(cpu) >= 0
        # one epoch reads every image once: the restart-indexed copies in shards-rst
        assert abs(float(mib) - (indexed if source == "shards-rst" else total) / 2**20) < 0.05
        if source == "files":
            assert int(opens) == 16
        else:
            assert 1 <= int(opens) <= 8 * int(threads)  # 8 shards of the 16 images, at most once per thread
    assert "posix_fadvise" in report
