"""Checkpoint files: atomic writes, partial files, discovery of the newest, RNG state round trip."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from test_checkpoint_safety import complete_state

from ipu_cnn.train.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    remove_partials,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _state(step: int) -> dict:
    return {**complete_state(step), "format": CHECKPOINT_FORMAT, "weights": torch.full((3,), float(step))}


def test_names_sort_by_step(tmp_path) -> None:
    for epoch, step in [(0, 5), (1, 10), (0, 7)]:
        save_checkpoint(_state(step), tmp_path / checkpoint_name(epoch, step))
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path)] == [5, 7, 10]
    path, state = resolve_checkpoint(tmp_path)
    assert state["step"] == 10 and path.name == checkpoint_name(1, 10)
    assert checkpoint_name(3, 1200, "interrupted") == "checkpoint-epoch0003-step000001200-interrupted.pt"


def test_failed_write_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / checkpoint_name(0, 1)
    save_checkpoint(_state(1), target)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("ipu_cnn.train.checkpoint.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2), target)
    assert load_checkpoint(target)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_partials_are_ignored_and_removable(tmp_path) -> None:
    save_checkpoint(_state(3), tmp_path / checkpoint_name(0, 3))
    (tmp_path / ".tmp-abc.partial").write_bytes(b"half a checkpoint")
    assert len(list_checkpoints(tmp_path)) == 1
    assert remove_partials(tmp_path) == 1


def test_unreadable_newest_falls_back_to_the_previous(tmp_path) -> None:
    save_checkpoint(_state(3), tmp_path / checkpoint_name(0, 3))
    (tmp_path / checkpoint_name(0, 9)).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        path, state = resolve_checkpoint(tmp_path)
    assert state["step"] == 3


def test_foreign_files_are_rejected_with_a_hint(tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="use --weights"):
        load_checkpoint(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(empty)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        resolve_checkpoint(tmp_path / "missing")


def test_rng_state_round_trip() -> None:
    state = capture_rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == first
