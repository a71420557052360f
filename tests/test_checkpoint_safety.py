"""Checkpoint safety: crafted files cannot run code, corrupted tensors are refused by name, a full disk and an
unwritable folder are reported in words, incomplete checkpoints name what they lack, version-1 files still load.

Every entry point that reads a ``.pt`` is covered: `load_checkpoint` / ``--resume``, ``validate``, ``--weights`` in
training (`create_model`) and the inference application's model loading.
"""
from __future__ import annotations

import builtins
import errno
import os
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ipu_cnn._serialization import CHECKSUMS_KEY
from ipu_cnn.models import create_model
from ipu_cnn.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointWriteError,
    CorruptFileError,
    UnsafeFileError,
    capture_rng_state,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    prepare_checkpoint_dir,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def complete_state(step: int = 1) -> dict[str, Any]:
    """A checkpoint with every field the training application writes, from real (small) objects: a conv + BN
    network, SGD with momentum buffers after one step, a LambdaLR, this process's generator states."""
    torch.manual_seed(step)
    model = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 8, 3), bn1=nn.BatchNorm2d(8)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": None,
        "weight_average": {"strategy": "exponential", "decay": 0.9, "start_step": 0, "updates": step,
                           "model": model.state_dict()},
        "mixing": [{"generator": torch.Generator().manual_seed(1).get_state()}], "epoch": 0, "step": step,
        "epoch_step": step, "samples": 0x1234567 + step, "loader": [{"epoch": 0, "position": step}],
        "rng": [capture_rng_state()], "config": {"model": "test_resnet", "lr": 0.1, "run_dir": "/runs/x", "seed": 0},
        "metrics": {}, "model_name": "test_resnet", "num_classes": 4, "class_names": ["r", "g", "b", "y"],
        "image_size": 32, "eval": {"size": 32, "crop_pct": 0.875, "interpolation": "bilinear",
                                   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }


# -- crafted files -----------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this calls ``exec``, which creates the marker file: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """(a checkpoint-looking .pt whose unpickling would create `marker`, marker)."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "ckpts" / checkpoint_name(0, 5)
    path.parent.mkdir()
    torch.save({**complete_state(), "config": _Payload(marker)}, path)
    return path, marker


def test_the_crafted_file_really_runs_code_when_loaded_unsafely(crafted: tuple[Path, Path]) -> None:
    """The premise of the tests below: an unrestricted torch.load of the file runs its code."""
    path, marker = crafted
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_a_crafted_file(crafted: tuple[Path, Path]) -> None:
    path, marker = crafted
    with pytest.raises(UnsafeFileError, match=r"refused to load: unpickling it would call (builtins\.)?exec"):
        load_checkpoint(path)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        resolve_checkpoint(path)
    assert not marker.exists()


def test_resume_from_a_folder_stops_at_a_crafted_file(crafted: tuple[Path, Path]) -> None:
    """Unlike a corrupt newest file, a crafted one is not skipped for an older checkpoint: the folder needs a look."""
    path, marker = crafted
    save_checkpoint(complete_state(3), path.parent / checkpoint_name(0, 3))
    with pytest.raises(UnsafeFileError, match=str(path)):
        resolve_checkpoint(path.parent)
    assert not marker.exists()


def test_train_resume_and_validate_refuse_a_crafted_file(crafted: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.train.__main__ import main as train_main
    from ipu_cnn.train.validate import main as validate_main

    path, marker = crafted
    status = train_main(["--data", "synthetic", "--model", "test_resnet", "--device", "cpu", "--output-dir",
                         str(tmp_path / "out"), "--resume", str(path), "--no-plot"])
    err = capsys.readouterr().err
    assert status == 2 and "refused to load" in err and str(path) in err and "Traceback" not in err
    assert validate_main(["--checkpoint", str(path)]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()


def test_weights_option_refuses_a_crafted_state_dict(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1), "extra": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=rf"--weights {path}: refused to load: unpickling it would call"):
        create_model("test_resnet", 4, weights=str(path))
    assert not marker.exists()
    truncated = tmp_path / "truncated.pth"
    torch.save({"conv1.weight": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(ValueError, match=rf"--weights '{truncated}': not a readable state dict or checkpoint"):
        create_model("test_resnet", 4, weights=str(truncated))


def test_inference_refuses_a_crafted_file(crafted: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.inference.cli import main as inference_main
    from ipu_cnn.inference.config import options_for
    from ipu_cnn.inference.model import ModelChoice, load_model

    path, marker = crafted
    with pytest.raises(ValueError, match="--weights .*refused to load"):
        load_model(ModelChoice.from_options(options_for("predict", weights=str(path))))
    plain = tmp_path / "plain.pth"  # not checkpoint-shaped: reaches the plain state dict path
    torch.save({"fc.weight": torch.zeros(4, 8), "extra": _Payload(marker)}, plain)
    status = inference_main(["predict", "x.jpg", "--weights", str(plain), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and "refused to load" in err and "Traceback" not in err
    assert not marker.exists()


def test_what_the_training_application_writes_loads_weights_only(tmp_path: Path) -> None:
    """A mid-epoch checkpoint with mixing, weight averaging and loader state: nothing in it needs more than a plain
    weights-only load (no allow-list), and it resumes."""
    from test_train_resume import _config, _loaders

    from ipu_cnn.train import train

    part = train(_config(tmp_path, "part", max_steps=3), loaders=_loaders())
    assert torch.serialization.get_unsafe_globals_in_checkpoint(part["checkpoint"]) == []
    state = torch.load(part["checkpoint"], weights_only=True)
    assert state["version"] == CHECKPOINT_VERSION and state["loader"][0] and state["mixing"][0]
    assert state["config"]["model"] == "test_resnet" and state["config"]["run_dir"] == str(tmp_path / "part")
    assert {path.split(".")[0] for path in state[CHECKSUMS_KEY]["tensors"]} == {
        "model", "optimizer", "weight_average", "rng", "mixing"}
    resumed = train(_config(tmp_path, "", resume=part["checkpoint"], max_steps=4), loaders=_loaders())
    assert resumed["step"] == 4


def test_save_refuses_what_a_weights_only_load_could_not_read(tmp_path: Path) -> None:
    state = complete_state()
    state["config"]["output"] = Path("/runs")
    with pytest.raises(TypeError, match=r"config\.output holds a pathlib[.\w]*Path"):
        save_checkpoint(state, tmp_path / checkpoint_name(0, 1))
    assert list(tmp_path.iterdir()) == []


# -- corruption --------------------------------------------------------------------------------------------------
def _member_data_offset(path: Path, member: zipfile.ZipInfo) -> int:
    """Where `member`'s bytes start in the file (stored, uncompressed, as torch.save writes them)."""
    with open(path, "rb") as f:
        f.seek(member.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return member.header_offset + 30 + name_len + extra_len


def _flip_bytes(path: Path, member_bytes: bytes, at: int, count: int = 64) -> None:
    """Invert `count` bytes, `at` bytes into the archive member whose contents are `member_bytes`, in place (the
    zip's own CRC is left stale, as bit rot would leave it)."""
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if archive.read(m) == member_bytes]
    assert len(members) == 1, "the member to corrupt is not unique"
    assert members[0].compress_type == zipfile.ZIP_STORED
    offset = _member_data_offset(path, members[0]) + at
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = bytes(b ^ 0xFF for b in data[offset:offset + count])
    path.write_bytes(bytes(data))


def test_a_flipped_tensor_is_refused_by_name(tmp_path: Path) -> None:
    state = complete_state()
    path = save_checkpoint(state, tmp_path / checkpoint_name(0, 1))
    weight = state["model"]["conv1.weight"]
    _flip_bytes(path, weight.numpy().tobytes(), at=128)
    silently = torch.load(path, weights_only=True)["model"]["conv1.weight"]  # what torch alone makes of it
    assert (silently != weight).sum() == 16  # 64 bytes: 16 float32 weights changed, and nothing said
    with pytest.raises(CorruptFileError, match=rf"checkpoint {path}: tensor model\.conv1\.weight fails its checksum; "
                                               "the file is corrupt"):
        load_checkpoint(path)


def test_a_flipped_optimizer_tensor_and_a_flipped_counter_are_refused(tmp_path: Path) -> None:
    state = complete_state()
    path = save_checkpoint(state, tmp_path / "a.pt")
    momentum = state["optimizer"]["state"][0]["momentum_buffer"]
    _flip_bytes(path, momentum.numpy().tobytes(), at=0, count=4)
    with pytest.raises(CorruptFileError, match=r"tensor optimizer\.state\.0\.momentum_buffer fails its checksum"):
        load_checkpoint(path)

    path = save_checkpoint(state, tmp_path / "b.pt")
    with zipfile.ZipFile(path) as archive:
        pickle_member = next(m for m in archive.infolist() if m.filename.endswith("data.pkl"))
        pickled = archive.read(pickle_member)
    samples = struct.pack("<i", state["samples"])  # a BININT in the pickle: a flip there changes a counter
    assert pickled.count(samples) == 1
    data = bytearray(path.read_bytes())
    at = _member_data_offset(path, pickle_member) + pickled.index(samples)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["samples"] == state["samples"] ^ 0x01  # silently off by one
    with pytest.raises(CorruptFileError, match="non-tensor fields .* fail their checksum; the file is corrupt"):
        load_checkpoint(path)


def test_resume_skips_a_corrupt_newest_checkpoint_and_weights_refuse_it(tmp_path: Path) -> None:
    old = save_checkpoint(complete_state(3), tmp_path / checkpoint_name(0, 3))
    newest_state = complete_state(5)
    newest = save_checkpoint(newest_state, tmp_path / checkpoint_name(0, 5))
    _flip_bytes(newest, newest_state["model"]["conv1.weight"].numpy().tobytes(), at=0)
    with pytest.warns(UserWarning, match=r"skipping unreadable checkpoint: .*model\.conv1\.weight fails its checksum"):
        path, state = resolve_checkpoint(tmp_path)
    assert path == old and state["step"] == 3
    with pytest.raises(ValueError, match=rf"--weights {newest}: tensor model\.conv1\.weight fails its checksum"):
        create_model("test_resnet", 4, weights=str(newest))


def test_inference_refuses_a_corrupt_checkpoint(tmp_path: Path) -> None:
    from ipu_cnn.inference.config import options_for
    from ipu_cnn.inference.model import ModelChoice, load_model

    state = complete_state()
    path = save_checkpoint(state, tmp_path / checkpoint_name(0, 1))
    _flip_bytes(path, state["model"]["bn1.running_var"].numpy().tobytes(), at=0, count=8)
    with pytest.raises(ValueError, match=r"--weights checkpoint .*tensor model\.bn1\.running_var fails its checksum"):
        load_model(ModelChoice.from_options(options_for("predict", weights=str(path))))


# -- fields --------------------------------------------------------------------------------------------------------
def test_missing_and_malformed_fields_are_named(tmp_path: Path) -> None:
    state = complete_state()
    del state["optimizer"], state["rng"]
    path = save_checkpoint(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} lacks the fields optimizer, rng, which every "):
        load_checkpoint(path)
    state = complete_state()
    state["step"], state["eval"] = "5", {"crop_pct": 0.875}
    path = save_checkpoint(state, tmp_path / "malformed.pt")
    with pytest.raises(CheckpointError, match=r"step is str, not int; eval\.interpolation is missing"):
        load_checkpoint(path)


def test_a_newer_format_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "newer.pt"
    torch.save({**complete_state(), "version": CHECKPOINT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match=f"format version {CHECKPOINT_VERSION + 1} is newer .* update ipu_cnn"):
        load_checkpoint(path)


def test_version_1_checkpoints_load_with_a_warning_and_restore(tmp_path: Path) -> None:
    """Version 1 (before checksums) kept NumPy's RNG state as an array; such files still resume."""
    state = {**complete_state(), "version": 1}
    state["rng"] = [{**state["rng"][0], "numpy": np.random.get_state()}]
    path = tmp_path / "v1.pt"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="format version 1, which carries no checksums: its tensors cannot be "
                                         "verified"):
        loaded = load_checkpoint(path)
    restore_rng_state(loaded["rng"][0])
    first = float(np.random.rand())
    restore_rng_state(state["rng"][0])
    assert float(np.random.rand()) == first
    torch.testing.assert_close(loaded["model"]["conv1.weight"], state["model"]["conv1.weight"], rtol=0, atol=0)


# -- full disk -----------------------------------------------------------------------------------------------------
class _FullDisk:
    """A file that takes `room` bytes, writes them, then fails as a full disk does."""

    def __init__(self, f: Any, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            self.f.write(bytes(memoryview(data).cast("B")[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size
        return self.f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def _fill_disk_on_partial_writes(monkeypatch: pytest.MonkeyPatch, after: int = 0, room: int = 4096) -> None:
    """From the (`after` + 1)-th checkpoint write on, the disk is full once `room` bytes are written."""
    real_fdopen, partial_writes = os.fdopen, []

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = real_fdopen(fd, *args, **kwargs)
        if ".tmp-" not in os.readlink(f"/proc/self/fd/{fd}"):
            return f
        partial_writes.append(fd)
        return _FullDisk(f, room) if len(partial_writes) > after else f

    monkeypatch.setattr(os, "fdopen", fdopen)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="tells checkpoint writes apart by /proc/self/fd")
def test_a_full_disk_names_the_device_and_the_intact_previous_checkpoint(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    first = save_checkpoint(complete_state(1), tmp_path / checkpoint_name(0, 1))
    before = first.read_bytes()
    _fill_disk_on_partial_writes(monkeypatch)
    target = tmp_path / checkpoint_name(0, 2)
    with pytest.raises(CheckpointWriteError) as raised:
        save_checkpoint(complete_state(2), target)
    message = str(raised.value)
    assert raised.value.errno == errno.ENOSPC and "enforce fail" not in message
    assert message.startswith("no space left on ") and "mounted at /" in message
    assert f"writing {target}; the previous checkpoint {first} is intact" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no partial file, no torn target
    assert first.read_bytes() == before and load_checkpoint(first)["step"] == 1

    with pytest.raises(CheckpointWriteError, match=f"no earlier checkpoint exists in {tmp_path / 'empty'}"):
        save_checkpoint(complete_state(1), tmp_path / "empty" / checkpoint_name(0, 1))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="tells checkpoint writes apart by /proc/self/fd")
def test_training_stops_on_a_full_disk_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("ipu_cnn.data.datasets", reason="needs ipu_cnn.data.datasets.RandomImages")
    from test_train_signals import ARGS

    from ipu_cnn.train.__main__ import main

    _fill_disk_on_partial_writes(monkeypatch, after=1)  # epoch 1's checkpoint is written, epoch 2's is not
    status = main([*ARGS, "--epoch", "2", "--output-dir", str(tmp_path), "--run-name", "run"])
    err = capsys.readouterr().err
    ckpts = tmp_path / "run" / "checkpoints"
    (first,) = list_checkpoints(ckpts)
    assert status == 2 and "Traceback" not in err and "enforce fail" not in err
    assert "error: no space left on " in err and f"the previous checkpoint {first} is intact" in err
    assert f"--resume {ckpts}" in err
    assert load_checkpoint(first)["epoch"] == 1 and not list(ckpts.glob(".tmp-*"))


# -- unwritable checkpoint folder ------------------------------------------------------------------------------
def test_a_folder_under_a_file_fails_at_start_up(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """What fails for root as for anyone: a checkpoint folder whose parent is a file. The run stops before it
    builds data or a model."""
    pytest.importorskip("ipu_cnn.data.datasets", reason="needs ipu_cnn.data.datasets.RandomImages")
    from test_train_signals import ARGS

    from ipu_cnn.train.__main__ import main

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    status = main([*ARGS, "--epoch", "1", "--output-dir", str(tmp_path), "--run-name", "run",
                   "--checkpoint-output-dir", str(blocker / "checkpoints")])
    captured = capsys.readouterr()
    assert status == 2 and "Traceback" not in captured.err
    assert f"cannot create the checkpoint folder {blocker / 'checkpoints'}: {blocker} is a file, not a folder; give " \
           "--checkpoint-output-dir a writable folder" in captured.err
    assert "training" not in captured.out  # stopped before the first step, not after an epoch


def test_a_read_only_file_system_fails_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only mount refuses root too; simulated here (mounting one needs privileges a test does not have)."""
    import tempfile

    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(CheckpointWriteError, match=rf"the checkpoint folder {tmp_path} is not writable \(Read-only "
                                                   r"file system\): .*--checkpoint-output-dir") as raised:
        prepare_checkpoint_dir(tmp_path)
    assert raised.value.errno == errno.EROFS


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores permission bits, so a 0o500 folder is writable for it")
def test_a_folder_without_write_permission_fails_the_probe(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CheckpointWriteError, match=rf"the checkpoint folder {folder} is not writable \(Permission "
                                                       r"denied\)"):
            prepare_checkpoint_dir(folder)
    finally:
        folder.chmod(0o700)


def test_the_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    assert prepare_checkpoint_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list((tmp_path / "a" / "b").iterdir()) == []


def test_rng_state_survives_a_weights_only_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(complete_state(), tmp_path / checkpoint_name(0, 1))
    captured = load_checkpoint(path)["rng"][0]
    restore_rng_state(captured)
    first = (float(np.random.rand()), float(torch.rand(())))
    restore_rng_state(captured)
    assert (float(np.random.rand()), float(torch.rand(()))) == first
