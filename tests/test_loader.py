"""The loader: exactly-once sharding, determinism across threads/modes/resume, label alignment, bad data, cleanup."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ipu_cnn.data import (DecodeError, EvalTransform, FileList, ImageFolder, Loader, TrainTransform, WorkerDiedError,
                          make_generated_dataset)
from ipu_cnn.data.sampling import rank_batches
from conftest import subprocess_env
from test_decode_batch import decode_index, index_image

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def indexed_folder(tmp_path_factory: pytest.TempPathFactory) -> ImageFolder:
    """103 images in 5 class folders; each image's colour encodes its own position in the sorted dataset."""
    root = tmp_path_factory.mktemp("indexed_folder")
    n = 103
    # ImageFolder sorts by class then file name; class c holds samples i with i % NUM_CLASSES == c. Name files so
    # that the dataset index of a file is known: the index-th sample overall.
    per_class = [[i for i in range(n) if i % NUM_CLASSES == c] for c in range(NUM_CLASSES)]
    order = [i for c in range(NUM_CLASSES) for i in per_class[c]]
    for pos, i in enumerate(order):
        folder = root / f"class_{i % NUM_CLASSES}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i:04d}.jpg").write_bytes(index_image(pos, size=48))
    ds = ImageFolder(root)
    assert len(ds) == n
    return ds


def collect(loader: Loader) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [(x.numpy().copy(), y.numpy().copy(), loader.last_indices.copy()) for x, y in loader]


def test_batches_are_channels_last_uint8_views(indexed_folder: ImageFolder) -> None:
    with Loader(indexed_folder, 8, EvalTransform(32), shuffle=False, rank=0, world_size=1) as loader:
        x, y = next(iter(loader))
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert len(loader) == 103 // 8 and loader.num_samples == 96


def test_labels_and_images_stay_aligned(indexed_folder: ImageFolder) -> None:
    with Loader(indexed_folder, 7, TrainTransform(24), seed=5, rank=0, world_size=1, num_threads=2) as loader:
        seen = []
        for x, y in loader:
            idx = loader.last_indices
            assert [decode_index(img) for img in x.permute(0, 2, 3, 1).numpy()] == list(idx)
            assert np.array_equal(y.numpy(), indexed_folder.labels[idx])
            seen.extend(idx)
        assert len(seen) == len(set(seen)) == (103 // 7) * 7


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [True, False])
def test_exactly_once_across_ranks(indexed_folder: ImageFolder, world: int, drop_last: bool) -> None:
    per_rank = []
    for rank in range(world):
        with Loader(indexed_folder, 6, EvalTransform(16), seed=1, rank=rank, world_size=world,
                    drop_last=drop_last) as loader:
            batches = collect(loader)
            assert len(batches) == len(loader)
            per_rank.append(np.concatenate([b[2] for b in batches]) if batches else np.empty(0, np.int64))
            if drop_last:
                assert all(len(b[2]) == 6 for b in batches)
    everything = np.concatenate(per_rank)
    assert len(everything) == len(set(everything.tolist())), "no sample twice"
    if drop_last:
        assert len({len(r) for r in per_rank}) == 1, "every rank the same number of samples"
    else:
        assert sorted(everything.tolist()) == list(range(103)), "every sample exactly once, no padding"


def test_deterministic_across_threads_prefetch_and_modes(indexed_folder: ImageFolder) -> None:
    t = TrainTransform(32)
    with Loader(indexed_folder, 10, t, seed=9, rank=0, world_size=1, num_threads=1, prefetch=1) as a:
        ref = collect(a)
    for kwargs in ({"num_threads": 2, "prefetch": 3}, {"workers": "process", "num_threads": 2},
                   {"copy": True, "num_threads": 3}):
        with Loader(indexed_folder, 10, t, seed=9, rank=0, world_size=1, **kwargs) as b:
            got = collect(b)
        assert len(got) == len(ref)
        for (xa, ya, ia), (xb, yb, ib) in zip(ref, got):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb) and np.array_equal(ia, ib), kwargs


def test_set_epoch_changes_order_and_crops(indexed_folder: ImageFolder) -> None:
    with Loader(indexed_folder, 10, TrainTransform(32), seed=2, rank=0, world_size=1) as loader:
        loader.set_epoch(0)
        e0 = collect(loader)
        again = collect(loader)
        loader.set_epoch(1)
        e1 = collect(loader)
    assert all(np.array_equal(a[2], b[2]) and np.array_equal(a[0], b[0]) for a, b in zip(e0, again))
    assert not np.array_equal(np.concatenate([b[2] for b in e0]), np.concatenate([b[2] for b in e1]))
    with Loader(indexed_folder, 10, TrainTransform(32), shuffle=False, rank=0, world_size=1) as plain:
        assert np.array_equal(np.concatenate([b[2] for b in collect(plain)]), np.arange(100))


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_resume_mid_epoch_yields_the_remaining_batches(indexed_folder: ImageFolder, workers: str) -> None:
    t = TrainTransform(32)
    with Loader(indexed_folder, 8, t, seed=4, rank=0, world_size=1) as full:
        full.set_epoch(3)
        ref = collect(full)
        full.set_epoch(3)
        it = iter(full)
        for _ in range(5):
            next(it)
        state = full.state_dict()
    assert state["epoch"] == 3 and state["batch"] == 5
    with Loader(indexed_folder, 8, t, seed=4, rank=0, world_size=1, workers=workers, num_threads=1) as fresh:
        fresh.load_state_dict(state)
        fresh.set_epoch(3)  # what a training loop does on resume: keeps the pending position
        rest = collect(fresh)
    assert len(rest) == len(ref) - 5
    for (xa, ya, ia), (xb, yb, ib) in zip(ref[5:], rest):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb) and np.array_equal(ia, ib)
    with Loader(indexed_folder, 9, t, seed=4, rank=0, world_size=1) as other:
        with pytest.raises(ValueError, match="batch_size"):
            other.load_state_dict(state)


def test_slot_is_reused_only_after_the_next_request(indexed_folder: ImageFolder) -> None:
    with Loader(indexed_folder, 4, EvalTransform(16), shuffle=False, prefetch=1, rank=0, world_size=1) as loader:
        it = iter(loader)
        x0, _ = next(it)
        snapshot = x0.clone()
        time.sleep(0.3)  # the producer runs ahead meanwhile; it must not touch the slot we hold
        assert torch.equal(x0, snapshot)
        views = [x0] + [next(it)[0] for _ in range(5)]
        assert not torch.equal(views[0], snapshot), "zero-copy: the ring slot was recycled after we moved on"


@pytest.fixture()
def folder_with_bad_files(tmp_path: Path, indexed_folder: ImageFolder) -> FileList:
    """The indexed images plus a truncated file and a text file, listed in a FileList."""
    bad1 = tmp_path / "truncated.jpg"
    bad1.write_bytes(Path(indexed_folder.paths[0]).read_bytes()[:300])
    bad2 = tmp_path / "notes.jpg"
    bad2.write_text("not an image")
    rows = [f"{p},{lab}" for p, lab in zip(indexed_folder.paths[:30], indexed_folder.labels[:30])]
    rows.insert(7, f"{bad1},0")
    rows.insert(20, f"{bad2},1")
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(rows) + "\n")
    return FileList(listing)


def test_bad_samples_raise_by_default(folder_with_bad_files: FileList) -> None:
    with Loader(folder_with_bad_files, 8, EvalTransform(16), shuffle=False, rank=0, world_size=1) as loader:
        with pytest.raises(DecodeError, match=r"truncated\.jpg: Premature end of JPEG file"):
            collect(loader)


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_bad_samples_replaced_deterministically_and_reported(folder_with_bad_files: FileList, workers: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    kwargs = dict(shuffle=False, rank=0, world_size=1, drop_last=False, on_error="replace", workers=workers)
    with Loader(folder_with_bad_files, 8, EvalTransform(16), **kwargs) as loader:
        batches = collect(loader)
        again = collect(loader)
        bad = loader.bad_samples
    assert sorted((i, Path(p).name) for i, p, _ in bad) == [(7, "truncated.jpg"), (20, "notes.jpg")]
    indices = np.concatenate([b[2] for b in batches])
    assert len(indices) == 32 and 7 not in indices and 20 not in indices
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2]) for a, b in zip(batches, again))
    for x, y, idx in batches:  # the substitutes' labels travel with them
        assert np.array_equal(y, folder_with_bad_files.labels[idx])
    if workers == "thread":
        assert sum("truncated.jpg" in r.message for r in caplog.records) == 1, "each bad path logged once"


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_each_bad_file_reported_once_and_substitutes_are_good(tmp_path: Path, indexed_folder: ImageFolder,
                                                              workers: str) -> None:
    """Half the files bad: substitutes are drawn among bad files too, yet each bad file is listed once per epoch and
    every delivered sample is a good one."""
    rows, bad_indices = [], set()
    for i, (p, lab) in enumerate(zip(indexed_folder.paths[:40], indexed_folder.labels[:40])):
        if i % 2:
            bad = tmp_path / f"bad_{i:02d}.jpg"
            bad.write_bytes(Path(p).read_bytes()[:200])
            p, _ = str(bad), bad_indices.add(i)
        rows.append(f"{p},{lab}")
    listing = tmp_path / "half_bad.csv"
    listing.write_text("\n".join(rows) + "\n")
    kwargs = dict(shuffle=True, seed=3, rank=0, world_size=1, drop_last=False, on_error="replace", workers=workers)
    with Loader(FileList(listing), 8, EvalTransform(16), **kwargs) as loader:
        for epoch in range(2):
            loader.set_epoch(epoch)
            indices = np.concatenate([b[2] for b in collect(loader)])
            reported = [i for i, _, _ in loader.bad_samples]
            assert sorted(reported) == sorted(bad_indices), "each bad file exactly once"
            assert len(indices) == 40 and not set(indices.tolist()) & bad_indices, "substitutes are good samples"


def test_worker_process_death_raises_quickly(indexed_folder: ImageFolder) -> None:
    loader = Loader(indexed_folder, 4, EvalTransform(16), workers="process", rank=0, world_size=1, prefetch=1)
    try:
        it = iter(loader)
        next(it)
        loader._channel.proc.kill()
        # Liveness, not speed: iterate in a thread and require the error rather than a hang (generous bound).
        outcome: list[BaseException] = []

        def drain() -> None:
            try:
                for _ in it:
                    pass
            except BaseException as e:  # noqa: BLE001 - handed to the assertion below
                outcome.append(e)

        runner = threading.Thread(target=drain, daemon=True)
        runner.start()
        runner.join(timeout=60)
        assert not runner.is_alive(), "iteration hung after the worker process died"
        assert len(outcome) == 1 and isinstance(outcome[0], WorkerDiedError), outcome
        assert "worker process died" in str(outcome[0])
    finally:
        loader.close()


def _shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _mapped_shm_entries() -> set[str]:
    """Names in /dev/shm that some living process still maps (another program's semaphores, not a leak of ours)."""
    mapped: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as maps:
                mapped.update(line.rsplit("/dev/shm/", 1)[1].split(" ")[0].strip()
                              for line in maps if "/dev/shm/" in line)
        except OSError:  # the process ended, or is not ours to read
            continue
    return mapped


def _orphaned_shm_entries(before: set[str]) -> set[str]:
    """Entries created since ``before`` that no living process maps: what a dead loader would have leaked.

    Other programs on the machine (another test run, a DataLoader) create named semaphores in /dev/shm at any time;
    those are mapped by their creator, so only unmapped newcomers count.
    """
    return _shm_entries() - before - _mapped_shm_entries()


@pytest.mark.parametrize("ending", ["normal", "exception", "sigkill"])
@pytest.mark.parametrize("workers", ["thread", "process"])
def test_nothing_left_in_dev_shm(indexed_folder: ImageFolder, ending: str, workers: str, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys, time
        from ipu_cnn.data import ImageFolder, Loader, EvalTransform
        loader = Loader(ImageFolder({str(Path(indexed_folder.paths[0]).parents[1])!r}), 4, EvalTransform(16),
                        workers={workers!r}, rank=0, world_size=1)
        it = iter(loader)
        next(it)
        print("running", flush=True)
        if {ending!r} == "exception":
            raise RuntimeError("boom mid-epoch")
        if {ending!r} == "sigkill":
            time.sleep(60)
    """)
    before = _shm_entries()
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=subprocess_env())
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "running"
    if ending == "sigkill":
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(0.5)  # a worker child notices its parent is gone and exits
    assert _orphaned_shm_entries(before) == set()
    assert proc.returncode == {"normal": 0, "exception": 1, "sigkill": -9}[ending]


@pytest.mark.slow
def test_memory_is_bounded_over_epochs(tmp_path: Path) -> None:
    """RSS after 5 epochs over 2,000 generated JPEGs grows < 10% over RSS after epoch 1."""
    root = make_generated_dataset(tmp_path / "gen", num_classes=10, images_per_class=200, seed=0,
                                  val_images_per_class=1, min_size=64, max_size=200)
    ds = ImageFolder(root / "train")
    assert len(ds) == 2000

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    with Loader(ds, 64, TrainTransform(64), rank=0, world_size=1) as loader:
        sizes = []
        for epoch in range(5):
            loader.set_epoch(epoch)
            for _ in loader:
                pass
            sizes.append(rss())
    assert sizes[-1] < 1.10 * sizes[0], sizes


def test_rank_batches_plan() -> None:
    for n, b, w in [(10, 3, 1), (10, 3, 3), (7, 2, 2), (100, 7, 4)]:
        for drop_last in (True, False):
            plans = [rank_batches(n, b, 0, 0, True, r, w, drop_last) for r in range(w)]
            flat = [i for p in plans for batch in p for i in batch]
            assert len(flat) == len(set(flat))
            if not drop_last:
                assert sorted(flat) == list(range(n))


def test_bad_arguments(indexed_folder: ImageFolder) -> None:
    with pytest.raises(ValueError, match="on_error"):
        Loader(indexed_folder, 4, EvalTransform(16), on_error="skip")
    with pytest.raises(ValueError, match="workers"):
        Loader(indexed_folder, 4, EvalTransform(16), workers="fork")
    with pytest.raises(ValueError, match="both rank and world_size"):
        Loader(indexed_folder, 4, EvalTransform(16), rank=0)
    with pytest.raises(TypeError, match="dataset of image files"):
        Loader(object(), 4, EvalTransform(16))


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_decode_limits_reach_every_sample(indexed_folder: ImageFolder, workers: str) -> None:
    """decode_limits are the decoder's guards for every sample, in both worker modes: 48x48 images pass the default
    pixel limit and fail a limit of 2,000 pixels, with the limit named; an unknown limit is refused."""
    kwargs = dict(shuffle=False, drop_last=False, workers=workers, rank=0, world_size=1)
    with Loader(indexed_folder, 8, EvalTransform(16), **kwargs) as loader:
        assert next(iter(loader))[0].shape == (8, 3, 16, 16)
    with Loader(indexed_folder, 8, EvalTransform(16), decode_limits={"max_pixels": 2000}, **kwargs) as loader:
        with pytest.raises(DecodeError, match="above the limit of 2000"):
            next(iter(loader))
    with pytest.raises(ValueError, match="decode_limits: unknown max_width"):
        Loader(indexed_folder, 8, EvalTransform(16), decode_limits={"max_width": 10}, **kwargs)
