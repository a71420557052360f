"""decode_batch: buffer contract, ordering, determinism across threads and batches, bad-source policies."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import encode_jpeg
from ipu_cnn.data import DecodeError, DecodeStats, EvalTransform, TrainTransform, decode_batch, decode_image


def index_image(i: int, size: int = 80) -> bytes:
    """A flat colour that encodes i (three base-6 digits, levels 20..245): survives JPEG, crop and resize."""
    levels = 20 + 45 * np.array([(i // 36) % 6, (i // 6) % 6, i % 6])
    return encode_jpeg(np.broadcast_to(levels.astype(np.uint8), (size + i % 7, size, 3)).copy(), quality=95,
                       subsampling=0)


def decode_index(slot: np.ndarray) -> int:
    digits = np.round((slot.reshape(-1, 3).mean(0) - 20) / 45).astype(int)
    return int(digits[0] * 36 + digits[1] * 6 + digits[2])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("indexed")
    paths = []
    for i in range(150):
        p = root / f"{i:03d}.jpg"
        p.write_bytes(index_image(i))
        paths.append(p)
    return paths


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_slots_follow_sources_order(indexed: list[Path], threads: int) -> None:
    rng = np.random.default_rng(threads)
    order = rng.permutation(len(indexed))
    out = np.empty((len(order), 32, 32, 3), np.uint8)
    decode_batch([indexed[i] for i in order], out, TrainTransform(32), indices=order, num_threads=threads)
    assert [decode_index(s) for s in out] == list(order)


def test_results_independent_of_threads_and_batch_composition(photo_files: list[Path]) -> None:
    t = TrainTransform(64)
    n = len(photo_files)
    ref = np.empty((n, 64, 64, 3), np.uint8)
    decode_batch(photo_files, ref, t, seed=3, epoch=1, num_threads=1)
    for threads in (2, 3, 8):
        out = np.empty_like(ref)
        decode_batch(photo_files, out, t, seed=3, epoch=1, num_threads=threads)
        assert np.array_equal(out, ref)
    # The same samples in another order and split into other batches: each sample's pixels are unchanged.
    perm = np.random.default_rng(0).permutation(n)
    for part in np.array_split(perm, 3):
        out = np.empty((len(part), 64, 64, 3), np.uint8)
        decode_batch([photo_files[i] for i in part], out, t, seed=3, epoch=1, indices=part)
        assert np.array_equal(out, ref[part])
    # And one sample alone through decode_image.
    assert np.array_equal(decode_image(photo_files[4], t, seed=3, epoch=1, index=4), ref[4])
    # A new epoch draws new crops.
    out = np.empty_like(ref)
    decode_batch(photo_files, out, t, seed=3, epoch=2)
    assert not np.array_equal(out, ref)


@pytest.mark.parametrize("bad,match", [
    (np.empty((4, 32, 32, 3), np.float32), "dtype uint8"),
    (np.empty((3, 32, 32, 3), np.uint8), r"shape \(4, 32, 32, 3\).*got dtype uint8, shape \(3, 32, 32, 3\)"),
    (np.empty((4, 32, 33, 3), np.uint8), r"shape \(4, 32, 32, 3\)"),
    (np.empty((4, 32, 32, 4), np.uint8), r"shape \(4, 32, 32, 3\)"),
    (np.empty((4, 32, 32, 3), np.uint8)[:, :, :, :], None),
    (np.empty((4, 32, 64, 3), np.uint8)[:, :, ::2], "C-contiguous"),
    (np.empty((4 * 32 * 32 * 3,), np.uint8), r"shape \(4, 32, 32, 3\)"),
    ([[0]], "numpy uint8 array"),
])
def test_out_buffer_is_checked_not_copied(photo_files: list[Path], bad, match) -> None:
    if match is None:
        decode_batch(photo_files[:4], bad, EvalTransform(32))
        return
    with pytest.raises(ValueError, match=match):
        decode_batch(photo_files[:4], bad, EvalTransform(32))


def test_read_only_buffer_is_refused(photo_files: list[Path]) -> None:
    out = np.empty((2, 32, 32, 3), np.uint8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        decode_batch(photo_files[:2], out, EvalTransform(32))


def test_bad_sources_raise_after_the_batch_or_are_reported(photo_files: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(photo_files[0].read_bytes()[:500])
    missing = tmp_path / "missing.jpg"
    sources = [photo_files[0], bad, photo_files[1], missing, photo_files[2]]
    t = EvalTransform(48)
    out = np.full((5, 48, 48, 3), 7, np.uint8)
    with pytest.raises(DecodeError, match=r"bad\.jpg: Premature end of JPEG file.*1 more bad source") as info:
        decode_batch(sources, out, t)
    assert info.value.source == str(bad)
    good = np.empty((3, 48, 48, 3), np.uint8)
    decode_batch([photo_files[0], photo_files[1], photo_files[2]], good, t)
    assert np.array_equal(out[[0, 2, 4]], good), "the rest of the batch is decoded before raising"

    out[:] = 7
    stats = DecodeStats()
    failures = decode_batch(sources, out, t, on_error="report", stats=stats)
    assert [(pos, src) for pos, src, _ in failures] == [(1, str(bad)), (3, str(missing))]
    assert "Premature end" in failures[0][2] and "No such file" in failures[1][2]
    assert not out[[1, 3]].any(), "bad slots are zero-filled"
    assert np.array_equal(out[[0, 2, 4]], good)
    assert (stats.images, stats.errors) == (3, 2)

    with pytest.raises(ValueError, match="on_error"):
        decode_batch(sources, out, t, on_error="skip")


def test_non_jpeg_in_a_batch_uses_pillow_with_the_same_crop(photo_files: list[Path], tmp_path: Path) -> None:
    with Image.open(photo_files[3]) as im:
        pixels = np.asarray(im.convert("RGB"))
    png = tmp_path / "really_a_png.JPEG"
    Image.fromarray(pixels).save(png, "PNG")
    t = TrainTransform(64)
    out = np.empty((2, 64, 64, 3), np.uint8)
    stats = DecodeStats()
    decode_batch([photo_files[3], png], out, t, indices=[3, 3], stats=stats, dct_scaling=False)
    assert stats.non_jpeg == 1
    # Same sample index, same pixels (JPEG region decode at full scale vs Pillow's full decode): within 1.
    assert np.abs(out[0].astype(int) - out[1].astype(int)).max() <= 1


def test_bytes_sources_and_stats(photo_files: list[Path]) -> None:
    datas = [p.read_bytes() for p in photo_files]
    a = np.empty((len(datas), 64, 64, 3), np.uint8)
    b = np.empty_like(a)
    stats = DecodeStats()
    decode_batch(datas, a, EvalTransform(64), stats=stats)
    decode_batch(photo_files, b, EvalTransform(64))
    assert np.array_equal(a, b)
    assert stats.images == len(datas) and stats.errors == 0
    assert sum(stats.dct_scales.values()) == len(datas)
    assert set(stats.dct_scales) <= {1, 2, 4, 8}
    assert stats.dct_scales[8] < len(datas), "a 64 px eval of 500x375 photos must use a reduced DCT scale"


def test_empty_batch_and_bad_arguments(photo_files: list[Path]) -> None:
    assert decode_batch([], np.empty((0, 8, 8, 3), np.uint8), EvalTransform(8)) == []
    out = np.empty((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="indices"):
        decode_batch(photo_files[:2], out, EvalTransform(8), indices=[1, 2, 3])
    with pytest.raises(ValueError, match="num_threads"):
        decode_batch(photo_files[:2], out, EvalTransform(8), num_threads=0)
    with pytest.raises(TypeError, match="path or a bytes-like"):
        decode_batch([photo_files[0], 42], out, EvalTransform(8))
    with pytest.raises(TypeError, match="TrainTransform or EvalTransform"):
        decode_batch(photo_files[:2], out, "train")


def test_grayscale_batch_is_rgb(tmp_path: Path) -> None:
    data = encode_jpeg(np.full((50, 60, 3), 90, np.uint8), "L", quality=95)
    out = np.empty((1, 16, 16, 3), np.uint8)
    decode_batch([io.BytesIO(data).getvalue()], out, EvalTransform(16))
    assert np.abs(out.astype(int) - 90).max() <= 1
