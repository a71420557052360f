"""Restart-indexed JPEGs (csrc/restart_index.*): the lossless transcode the packer applies, and the decoder's fast path
that starts a region decode at the restart interval holding its first row. The reference is always the original file
decoded by the normal path: pixels must be bit-identical, at every DCT scale the pipeline picks."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import corpora_dir, encode_jpeg, photo_like
from ipu_cnn import _C
from ipu_cnn.data import EvalTransform, TrainTransform
from ipu_cnn.data.decode import DecodeError

# Output sizes that make the pipeline pick every power-of-two DCT scale on ~500x375 photos (224: 8/8 and 4/8; 64 and
# 24: 2/8 and 1/8 for most crops).
TRAIN = [TrainTransform(224), TrainTransform(64), TrainTransform(24)]
EVAL = [EvalTransform(224), EvalTransform(64, resize_size=72), EvalTransform(16, resize_size=20)]


def _options(restart_index: bool = True, orientation: bool = False) -> "_C.DecodeOptions":
    o = _C.DecodeOptions()
    o.restart_index = restart_index
    o.apply_exif_orientation = orientation
    return o


def _transform(data: bytes, transform: TrainTransform | EvalTransform, index: int,
               options: "_C.DecodeOptions") -> tuple["_C.DecodeReport", np.ndarray]:
    h, w = transform.output_hw
    out = np.zeros((h, w, 3), np.uint8)
    report = _C.decode_transform(data, out, transform.native(), transform.filter, 7, 1, index, options)
    return report, out


def _assert_same_crops(original: bytes, indexed: bytes, name: str, indices: range, scales: set[int]) -> None:
    """Every train and eval transform on the indexed bytes (fast path on) equals the original's (normal path)."""
    for transform in TRAIN + EVAL:
        for i in indices if isinstance(transform, TrainTransform) else range(1):
            ref_report, ref = _transform(original, transform, i, _options())
            if ref_report.status != _C.Status.OK:
                continue
            got_report, got = _transform(indexed, transform, i, _options())
            assert got_report.status == _C.Status.OK, (name, got_report)
            assert got_report.scale_num == ref_report.scale_num
            scales.add(ref_report.scale_num)
            if not np.array_equal(got, ref):
                diff = np.abs(got.astype(int) - ref.astype(int))
                pytest.fail(f"{name}: {transform} index {i} at scale {ref_report.scale_num}/8 differs from the original "
                            f"in {int((diff > 0).sum())} values (max {int(diff.max())})")


def _full(data: bytes, orientation: bool = False) -> np.ndarray | None:
    report, pixels = _C.decode_full(data, _options(orientation=orientation))
    return pixels if report.status == _C.Status.OK else None


@pytest.mark.slow
def test_every_imagenet_photo_transcodes_losslessly_and_crops_bit_identically() -> None:
    files = sorted(p for p in corpora_dir("imagenet_sample").iterdir() if p.is_file())
    scales: set[int] = set()
    growth = []
    for k, path in enumerate(files):
        original = path.read_bytes()
        indexed = _C.add_restart_index(original)
        info, why = _C.restart_index_info(indexed)
        assert info is not None, f"{path.name}: {why}"
        growth.append(len(indexed) / len(original) - 1)
        assert np.array_equal(_full(indexed), _full(original)), path.name
        _assert_same_crops(original, indexed, path.name, range(k % 3, k % 3 + 2), scales)
    assert scales == {1, 2, 4, 8}, f"DCT scales exercised: {sorted(scales)}"
    assert len(growth) == len(files)


def test_edge_cases_transcode_or_refuse_with_a_reason() -> None:
    """Every conformance / edge-case file either transcodes into bytes that decode exactly as the original (full frame,
    EXIF orientation applied, train crops) or is refused with a DecodeError that says why; none crashes."""
    files = sorted(p for p in corpora_dir("edge_cases").iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    transcoded = refused = 0
    scales: set[int] = set()
    for path in files:
        original = path.read_bytes()
        try:
            indexed = _C.add_restart_index(original)
        except DecodeError as e:
            assert e.reason.startswith("cannot add a restart index: ") and len(e.reason) > 30, (path.name, e.reason)
            refused += 1
            continue
        transcoded += 1
        ref = _full(original, orientation=True)
        assert ref is not None, f"{path.name}: transcoded, but the original does not decode"
        assert np.array_equal(_full(indexed, orientation=True), ref), path.name
        _assert_same_crops(original, indexed, path.name, range(2), scales)
    assert transcoded > 100 and refused > 10, (transcoded, refused)


def _photo(mode: str = "RGB", **save: object) -> bytes:
    pixels = photo_like(333, 517, seed=3)
    if mode == "L":
        pixels = pixels[..., 0].copy()
    elif mode == "CMYK":
        pixels = np.concatenate([pixels, pixels[..., :1]], axis=2)
    return encode_jpeg(pixels, mode, quality=90, **save)


@pytest.mark.parametrize("kind", ["420", "444", "422", "progressive", "grayscale", "optimized", "cmyk"])
def test_synthetic_kinds_are_bit_identical(kind: str) -> None:
    save = {"420": {"subsampling": 2}, "444": {"subsampling": 0}, "422": {"subsampling": 1},
            "progressive": {"progressive": True}, "grayscale": {}, "optimized": {"optimize": True},
            "cmyk": {}}[kind]
    mode = {"grayscale": "L", "cmyk": "CMYK"}.get(kind, "RGB")
    original = _photo(mode, **save)
    indexed = _C.add_restart_index(original)
    info, why = _C.restart_index_info(indexed)
    assert info is not None, why
    per_row, rows = -(-333 // info["mcu_width"]), -(-517 // info["mcu_height"])
    # Tiles: the widest divisor of the MCU row that is at most 64 pixels wide (21 MCUs of 16: 3; 42 of 8: 7).
    widest = max(k for k in range(1, per_row + 1) if per_row % k == 0 and k * info["mcu_width"] <= 64)
    assert info["restart_interval"] == widest and info["tile_width"] == widest * info["mcu_width"]
    assert info["mcu_rows"] == rows and info["tiles_per_row"] == per_row // widest
    assert info["intervals"] == rows * (per_row // widest)
    assert not _C.read_header(indexed)[1]["progressive"]
    assert np.array_equal(_full(indexed), _full(original))
    _assert_same_crops(original, indexed, kind, range(12), set())


def _assert_fast_path_avoids_the_damage(indexed: bytes, damaged: bytes, transform: EvalTransform) -> None:
    """The normal path trips on the damage (a warning or an error); the fast path decodes the crop without one, and
    gives the undamaged file's pixels: it never read the damaged intervals."""
    _, clean = _transform(indexed, transform, 0, _options())
    slow_report, _ = _transform(damaged, transform, 0, _options(restart_index=False))
    fast_report, fast = _transform(damaged, transform, 0, _options())
    assert slow_report.warnings > 0 or slow_report.status != _C.Status.OK
    assert fast_report.status == _C.Status.OK and fast_report.warnings == 0
    assert np.array_equal(fast, clean)


def test_fast_path_skips_the_rows_above() -> None:
    """Garbage in the first restart interval's data: the normal path decodes through it (a corrupt-data warning),
    the fast path never reads it for a crop further down, and gives the same pixels as the clean file."""
    indexed = _C.add_restart_index(_photo(subsampling=2))
    info, _ = _C.restart_index_info(indexed)
    damaged = bytearray(indexed)
    start = info["scan_start"]
    damaged[start + 2:start + info["offsets"][1] - 4] = b"\x55" * (info["offsets"][1] - 6)
    # rows 40%-60% down: far below the first MCU row
    _assert_fast_path_avoids_the_damage(indexed, bytes(damaged), EvalTransform(64, resize_size=(320, 72)))


def test_fast_path_skips_the_tiles_beside_the_crop() -> None:
    """Garbage in the first and last tile of every MCU row: the normal path Huffman-decodes whole rows and trips on it,
    the fast path reads only the tiles a crop in the middle columns covers, and gives the clean file's pixels."""
    indexed = _C.add_restart_index(_photo(subsampling=2))  # 333 wide: 21 MCUs of 16, tiles of 3 MCUs (48 px)
    info, _ = _C.restart_index_info(indexed)
    tiles, offsets, start = info["tiles_per_row"], info["offsets"], info["scan_start"]
    assert tiles == 7 and info["tile_width"] == 48
    damaged = bytearray(indexed)
    for row in range(info["mcu_rows"]):
        for tile in (0, tiles - 1):
            i = row * tiles + tile
            end = start + offsets[i + 1] - 2 if i + 1 < len(offsets) else start + info["scan_bytes"]
            damaged[start + offsets[i] + 2:end - 2] = b"\x55" * (end - 2 - start - offsets[i] - 2)
    # columns 40%-60% across: pixels 133-200 of 333
    _assert_fast_path_avoids_the_damage(indexed, bytes(damaged), EvalTransform(64, resize_size=(72, 320)))


@pytest.mark.parametrize(("width", "subsampling", "tile_width", "want"), [
    (500, 2, 64, 4),    # 32 MCUs of 16: 4 fit in 64 px
    (500, 0, 64, 7),    # 63 MCUs of 8: 7 (56 px), the widest divisor within 64
    (376, 0, 64, 47),   # 47 MCUs of 8, prime: one-MCU tiles would cost ~15% in size, so whole rows
    (376, 0, 400, 47),  # wider than the row: whole rows
    (184, 0, 64, 23),   # 23 MCUs, prime: whole rows (184 px > 2 x 64)
    (120, 0, 64, 5),    # 15 MCUs of 8: 5 (40 px) is the widest within 64 and more than half of it
    (144, 2, 32, 1),    # 9 MCUs of 16: one MCU (16 px) is exactly half of 32, still narrow enough
    (144, 2, 40, 3),    # one MCU (16 px) is under half of 40; the next divisor, 3 (48 px), is within twice 40
    (500, 2, 0, 32),    # tile_width 0: one interval per MCU row, the first layout
])
def test_tile_width_policy(width: int, subsampling: int, tile_width: int, want: int) -> None:
    original = encode_jpeg(photo_like(width, 40, seed=1), quality=85, subsampling=subsampling)
    indexed = _C.add_restart_index(original, tile_width=tile_width)
    info, why = _C.restart_index_info(indexed)
    assert info is not None, why
    per_row = -(-width // info["mcu_width"])
    assert info["restart_interval"] == want and info["tiles_per_row"] == per_row // want
    assert np.array_equal(_full(indexed), _full(original))
    _assert_same_crops(original, indexed, f"{width}-{tile_width}", range(4), set())


@pytest.mark.parametrize("subsampling", [0, 1, 2])
def test_one_mcu_tiles_put_a_tile_edge_at_every_crop_edge(subsampling: int) -> None:
    """With one-MCU tiles a tile boundary lies next to every region edge, at every DCT scale: many crops, every
    chroma layout (4:4:4, 4:2:2, 4:2:0), still the original's pixels."""
    original = _photo(subsampling=subsampling)
    indexed = _C.add_restart_index(original, tile_width=8)
    info, _ = _C.restart_index_info(indexed)
    assert info["restart_interval"] == 1
    _assert_same_crops(original, indexed, f"one-MCU tiles {subsampling}", range(40), set())


def test_compact_offsets_and_the_wide_fallback() -> None:
    """Version 2 stores each row's first offset and u16 distances between tiles; an image with a tile over 64 KiB
    (noise at quality 100, 4096-pixel tiles) gets version 1's u32 offsets. Both decode exactly; the offsets the two
    report are the restart markers' places either way."""
    compact = _C.add_restart_index(_photo(subsampling=2))
    info, _ = _C.restart_index_info(compact)
    assert info["version"] == 2
    rows, tiles = info["mcu_rows"], info["tiles_per_row"]
    assert info["segment_bytes"] == 4 + 22 + 4 * rows + 2 * rows * (tiles - 1) + 4
    noise = np.random.default_rng(0).integers(0, 256, (24, 8192, 3), dtype=np.uint8)
    original = encode_jpeg(noise, quality=100, subsampling=0)
    for tile_width, version in ((4096, 1), (64, 2)):
        indexed = _C.add_restart_index(original, tile_width=tile_width)
        info, why = _C.restart_index_info(indexed)
        assert info is not None and info["version"] == version, (tile_width, why)
        offsets = info["offsets"]
        assert version == 2 or max(np.diff(offsets)) > 0xFFFF
        start = info["scan_start"]
        assert all(indexed[start + o - 2] == 0xFF and indexed[start + o - 1] == 0xD0 + (i - 1) % 8
                   for i, o in enumerate(offsets) if i)
        assert np.array_equal(_full(indexed), _full(original))
        _assert_same_crops(original, indexed, f"noise {tile_width}", range(4), set())


def test_row_layout_still_decodes_by_the_fast_path() -> None:
    """Files indexed one interval per MCU row (tile_width 0, what the first packer wrote) stay valid and exact."""
    original = _photo(subsampling=2)
    indexed = _C.add_restart_index(original, tile_width=0)
    info, _ = _C.restart_index_info(indexed)
    assert info["tiles_per_row"] == 1 and info["intervals"] == info["mcu_rows"]
    _assert_same_crops(original, indexed, "rows", range(12), set())


def test_already_indexed_input_comes_back_unchanged() -> None:
    indexed = _C.add_restart_index(_photo())
    assert _C.add_restart_index(indexed) == indexed


def test_markers_and_metadata_are_kept() -> None:
    im = Image.fromarray(photo_like(200, 150))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85, exif=exif, icc_profile=b"\0" * 300, comment=b"kept")
    indexed = _C.add_restart_index(buf.getvalue())
    again = Image.open(io.BytesIO(indexed))
    assert again.getexif()[0x0112] == 6
    assert again.info.get("icc_profile") == b"\0" * 300
    assert again.info.get("comment") == b"kept"
    assert _C.read_header(indexed, True)[1]["orientation"] == 6
    # Other decoders read the file as a plain baseline JPEG.
    assert np.array_equal(np.asarray(again.convert("RGB")), np.asarray(Image.open(buf).convert("RGB")))


def _segment(data: bytes) -> tuple[int, int]:
    info, why = _C.restart_index_info(data)
    assert info is not None, why
    return info["segment_offset"], info["segment_bytes"]


@pytest.mark.parametrize("damage", ["checksum", "offset", "version", "stale-scan", "truncated", "two-segments"])
def test_damaged_or_stale_index_is_ignored(damage: str) -> None:
    original = _photo()
    indexed = bytearray(_C.add_restart_index(original))
    pos, size = _segment(bytes(indexed))
    info, _ = _C.restart_index_info(bytes(indexed))
    expect = {"checksum": "checksum", "offset": "checksum", "version": "version", "stale-scan": "RST marker",
              "truncated": "EOI", "two-segments": "more than one"}[damage]
    if damage == "checksum":
        indexed[pos + size - 1] ^= 1
    elif damage == "offset":
        indexed[pos + 4 + 22 + 4 * 3 + 3] ^= 4  # interval 3's offset
    elif damage == "version":
        indexed[pos + 4 + 8] = 3
    elif damage == "stale-scan":
        # Another tool re-encoded the scan but kept our APP10: an RST marker is no longer where the index says.
        marker = info["scan_start"] + info["offsets"][5] - 1
        indexed[marker] = 0xD0 + (indexed[marker] - 0xD0 + 1) % 8
    elif damage == "truncated":
        indexed = indexed[:-100]
    else:
        indexed[pos:pos] = indexed[pos:pos + size]
    damaged = bytes(indexed)
    got, why = _C.restart_index_info(damaged)
    assert got is None and expect in why, why
    if damage in ("checksum", "offset", "version", "two-segments"):
        # The index is ignored, the file still decodes as the original by the normal path.
        assert np.array_equal(_full(damaged), _full(original))
        _assert_same_crops(original, damaged, damage, range(6), set())
    elif damage == "truncated":
        report, _ = _transform(damaged, TrainTransform(224), 0, _options())
        assert report.status == _C.Status.ERROR and "end" in report.reason.lower()


def test_refusals_name_the_reason() -> None:
    with pytest.raises(DecodeError, match="cannot add a restart index: not a JPEG"):
        _C.add_restart_index(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(DecodeError, match="cannot add a restart index: empty"):
        _C.add_restart_index(b"")
    truncated = _photo()[:3000]
    with pytest.raises(DecodeError, match="cannot add a restart index: .*(corrupt|end)"):
        _C.add_restart_index(truncated)
    with pytest.raises(TypeError, match="not a path"):
        _C.add_restart_index("photo.jpg")
    assert _C.restart_index_info(_photo()) == (None, "no restart index segment")


def test_size_overhead_is_small() -> None:
    """Markers cost 2 bytes per tile plus byte padding and a DC restart; optimised Huffman tables more than pay for it
    on files written with the standard tables (Pillow's default)."""
    original = _photo()
    indexed = _C.add_restart_index(original)
    plain = _C.add_restart_index(original, optimize_coding=False)
    assert len(indexed) < len(original) < len(plain) < len(original) * 1.05
    assert struct.unpack(">H", indexed[2:4])  # a well-formed first segment
