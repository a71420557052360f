"""The native core against hostile input (issue 12, section 3): strided buffers, scan floods, huge and implausible
files, fork(), FIFOs, and out-of-range seeds. Each test reproduces one finding and checks the refusal by its message."""
from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import corpora_dir, encode_jpeg, photo_like, pil_rgb, subprocess_env
from ipu_cnn.data import DecodeError, EvalTransform, TrainTransform, decode_batch, decode_image, read_header
from ipu_cnn.data.decode import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SCAN_BLOCKS

MiB = 1 << 20

# --------------------------------------------------------------------------------------------------------------------
# Hand-built progressive JPEGs: any size, any scan script, no entropy-coded data. libjpeg warns once a scan ("premature
# end of data segment"), decodes zeros (mid grey) and still makes each scan's full pass over its components' blocks,
# which is what a scan flood exploits: a few bytes of SOS header buy a pass over up to millions of blocks.

Scan = tuple[tuple[int, ...], int, int, int, int]  # (component indices, Ss, Se, Ah, Al)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def progressive_jpeg(width: int, height: int, scans: list[Scan], sampling: tuple[tuple[int, int], ...]) -> bytes:
    """SOI, a flat quantisation table, SOF2 with one component per sampling (h, v), one-symbol Huffman tables, the
    scans (headers only), EOI."""
    out = b"\xff\xd8" + _segment(0xDB, b"\x00" + bytes([1] * 64))
    sof = struct.pack(">BHHB", 8, height, width, len(sampling))
    for c, (h, v) in enumerate(sampling):
        sof += bytes([c + 1, (h << 4) | v, 0])
    out += _segment(0xC2, sof)
    one_code = bytes([1] + [0] * 15) + b"\x00"  # a single symbol (0) of code length 1
    out += _segment(0xC4, b"\x00" + one_code) + _segment(0xC4, b"\x10" + one_code)
    for comps, ss, se, ah, al in scans:
        header = bytes([len(comps)]) + b"".join(bytes([c + 1, 0x00]) for c in comps)
        out += _segment(0xDA, header + bytes([ss, se, (ah << 4) | al]))
    return out + b"\xff\xd9"


def libjpeg_standard_script(components: int) -> list[Scan]:
    """The 10-scan progression libjpeg's jpeg_simple_progression writes for YCbCr (Pillow's progressive=True)."""
    assert components == 3
    return [((0, 1, 2), 0, 0, 0, 1), ((0,), 1, 5, 0, 2), ((2,), 1, 63, 0, 1), ((1,), 1, 63, 0, 1),
            ((0,), 6, 63, 0, 2), ((0,), 1, 63, 2, 1), ((0, 1, 2), 0, 0, 1, 0), ((2,), 1, 63, 1, 0),
            ((1,), 1, 63, 1, 0), ((0,), 1, 63, 1, 0)]


def flood_script(count: int) -> list[Scan]:
    """A valid progression of `count` scans of one component: the DC coefficient and then each AC coefficient on its
    own, each sent in 14 successive-approximation steps (first at Al=13, then refined one bit at a time)."""
    scans: list[Scan] = []
    for k in range(64):
        scans.append(((0,), k, k, 0, 13))
        scans.extend(((0,), k, k, a + 1, a) for a in range(12, -1, -1))
    assert count <= len(scans)
    return scans[:count]


def scan_tally(data: bytes) -> tuple[int, int]:
    """(scans, coefficient blocks over all scans) as the native core counts them, read from its refusal."""
    with pytest.raises(DecodeError) as e:
        decode_image(data, max_scan_blocks=1)
    m = re.search(r"whose (\d+) scans decode (\d+) coefficient blocks", e.value.reason)
    assert m, e.value.reason
    return int(m.group(1)), int(m.group(2))


def _photo_bytes(width: int = 96, height: int = 64, **save: object) -> bytes:
    return encode_jpeg(photo_like(width, height, seed=5), quality=90, **save)


# --------------------------------------------------------------------------------------------------------------------
# 1. Only C-contiguous byte buffers: the decoder reads size bytes from the start pointer.

def test_strided_buffers_are_refused_not_read_out_of_bounds() -> None:
    data = _photo_bytes()
    a = np.frombuffer(data, np.uint8).copy()
    reversed_view, broadcast = a[::-1], np.broadcast_to(a, (200_000, a.size))
    for source, transform in ((reversed_view, None), (broadcast, TrainTransform(96)), (memoryview(a)[::2], None)):
        with pytest.raises(DecodeError, match=r"must be a C-contiguous buffer of bytes .*strides .*"
                                              r"np\.ascontiguousarray"):
            decode_image(source, transform)
        with pytest.raises(DecodeError, match="C-contiguous"):
            read_header(source)
    out = np.empty((2, 32, 32, 3), np.uint8)
    for on_error in ("raise", "report"):  # a caller's mistake, not a bad image: refused for the whole call
        with pytest.raises(ValueError, match=r"sources\[1\] must be a C-contiguous buffer of bytes"):
            decode_batch([data, reversed_view], out, EvalTransform(32), on_error=on_error)


def test_wider_items_are_refused_with_the_fix() -> None:
    data = _photo_bytes()
    words = np.frombuffer(data[: len(data) // 4 * 4], np.uint32)
    with pytest.raises(DecodeError, match=r"format 'I', itemsize 4.*a\.tobytes\(\)"):
        decode_image(words)


def test_every_contiguous_byte_buffer_still_decodes() -> None:
    data = _photo_bytes()
    ref = decode_image(data)
    a = np.frombuffer(data, np.uint8)
    padded = np.frombuffer(b"xx" + data, np.uint8)[2:]  # contiguous, starting inside a larger buffer
    for source in (bytearray(data), memoryview(data), a, a.reshape(1, -1), padded, np.ascontiguousarray(a[::-1][::-1]),
                   a.view(np.int8)):
        assert np.array_equal(decode_image(source), ref)
    out = np.empty((2, 32, 32, 3), np.uint8)
    decode_batch([padded, memoryview(data)], out, EvalTransform(32))
    assert np.array_equal(out[0], out[1])


def test_whole_image_mode_writes_only_an_output_of_the_image_size() -> None:
    """Crop mode 0 (the whole image, unresized) used to write the image's pixels into an out buffer sized from
    out_w x out_h: a heap overflow when the image was larger. Now the sizes must match, and a mode outside the enum
    is refused when set."""
    from ipu_cnn import _C

    data = _photo_bytes()
    info = read_header(data)
    crop = _C.CropParams()
    crop.mode = 0
    for w, h in ((16, 16), (0, 0), (info.width + 1, info.height)):
        crop.out_w, crop.out_h = w, h
        out = np.zeros((h, w, 3), np.uint8)
        report = _C.decode_transform(data, out, crop, 1, 0, 0, 0, _C.DecodeOptions())
        assert report.status == _C.Status.ERROR and "needs an output of the image's size" in report.reason
    crop.out_w, crop.out_h = info.width, info.height
    out = np.zeros((info.height, info.width, 3), np.uint8)
    assert _C.decode_transform(data, out, crop, 1, 0, 0, 0, _C.DecodeOptions()).status == _C.Status.OK
    assert np.array_equal(out, decode_image(data))
    for bad in (-1, 4, 7):
        with pytest.raises(ValueError, match="CropParams.mode must be 0"):
            crop.mode = bad


# --------------------------------------------------------------------------------------------------------------------
# 2. Scan floods: bounded by the coefficient blocks all scans decode, refused from the scan headers before libjpeg
# allocates the coefficient buffer.

@pytest.mark.parametrize("width, scans, sampling", [(13000, 499, ((1, 1),)), (13000, 499, ((2, 2), (1, 1), (1, 1))),
                                                    (10000, 100, ((1, 1),))])
def test_scan_flood_is_refused_for_full_frame_crop_and_batch(width: int, scans: int,
                                                             sampling: tuple[tuple[int, int], ...]) -> None:
    # 13000 x 13000 is under the pixel limit; on the previous core the 5 KB file took ~10 s a crop and ~1 GB, the
    # 1 KB 100-scan one seconds.
    data = progressive_jpeg(width, width, flood_script(scans), sampling)
    assert len(data) < 6000 and width * width <= DEFAULT_MAX_PIXELS
    pattern = (rf"JPEG of {width}x{width} whose {scans} scans decode \d+ coefficient blocks \([\d.]+ full passes\), "
               rf"above the limit of {DEFAULT_MAX_SCAN_BLOCKS} \(scan-flood guard; raise max_scan_blocks")
    for transform in (None, TrainTransform(224), EvalTransform(224)):
        with pytest.raises(DecodeError, match=pattern):
            decode_image(data, transform)
    out = np.empty((2, 32, 32, 3), np.uint8)
    failures = decode_batch([data, _photo_bytes()], out, TrainTransform(32), on_error="report")
    assert [(pos, bool(re.search(pattern, reason))) for pos, _name, reason in failures] == [(0, True)]
    assert not out[0].any() and out[1].any()


def test_scan_flood_is_refused_before_the_coefficient_buffer_exists(tmp_path: Path) -> None:
    """Memory as the witness (tests never time): the flood's 13000 x 13000 4:4:4 coefficient buffer is 1 GB."""
    data = progressive_jpeg(13000, 13000, flood_script(499), ((1, 1), (1, 1), (1, 1)))
    (tmp_path / "flood.jpg").write_bytes(data)
    code = textwrap.dedent("""
        import resource, sys
        from ipu_cnn.data import DecodeError, TrainTransform, decode_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for transform in (None, TrainTransform(224)):
            try:
                decode_image(sys.argv[1], transform)
                sys.exit("decoded")
            except DecodeError as e:
                assert "scan-flood guard" in e.reason, e.reason
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "flood.jpg")], capture_output=True, text=True,
                         cwd=tmp_path, env=subprocess_env(), timeout=300)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.split()[-1]) < 64, f"peak RSS grew by {run.stdout.strip()} MiB"


def test_scan_budget_is_exact_configurable_and_liftable() -> None:
    data = progressive_jpeg(512, 512, flood_script(100), ((1, 1),))
    scans, blocks = scan_tally(data)
    assert (scans, blocks) == (100, 100 * 64 * 64)
    assert decode_image(data, max_scan_blocks=blocks).shape == (512, 512, 3)
    with pytest.raises(DecodeError, match=f"100 scans decode {blocks} coefficient blocks .*limit of {blocks - 1}"):
        decode_image(data, TrainTransform(64), max_scan_blocks=blocks - 1)
    flood = progressive_jpeg(2000, 2000, flood_script(499), ((1, 1),))
    grey = decode_image(flood, EvalTransform(32), max_scan_blocks=None)  # None lifts the budget
    assert np.abs(grey.astype(int) - 128).max() <= 1
    out = np.empty((1, 16, 16, 3), np.uint8)
    with pytest.raises(DecodeError, match="limit of 1000 "):
        decode_batch([data], out, EvalTransform(16), max_scan_blocks=1000)
    for bad in (0, -5, 2**63, 1.5):
        with pytest.raises(ValueError, match="max_scan_blocks must be a positive integer .* or None"):
            decode_image(data, max_scan_blocks=bad)


def test_scan_count_cap_is_read_from_the_scan_headers() -> None:
    data = progressive_jpeg(64, 64, flood_script(600), ((1, 1),))
    with pytest.raises(DecodeError, match="progressive JPEG with 600 scans: more than 500 scans refused"):
        decode_image(data)
    assert decode_image(data, max_scans=600).shape == (64, 64, 3)


def test_scan_headers_inside_metadata_are_not_counted() -> None:
    """An EXIF thumbnail is a JPEG inside APP1: its scans are skipped with the segment, as libjpeg skips them."""
    data = progressive_jpeg(64, 64, libjpeg_standard_script(3), ((2, 2), (1, 1), (1, 1)))
    thumbnail = progressive_jpeg(8, 8, flood_script(400), ((1, 1),))
    with_app1 = data[:2] + _segment(0xE1, b"Exif\x00\x00" + thumbnail) + data[2:]
    # 4:2:0 at 64 x 64: 64 Y + 16 Cb + 16 Cr blocks; two DC scans over all 96, four Y scans, two each of Cb and Cr.
    assert scan_tally(with_app1) == scan_tally(data) == (10, 2 * 96 + 4 * 64 + 4 * 16)


def test_largest_standard_progressive_images_fit_the_default_budget() -> None:
    """The usual 10-scan script at 4:4:4 (the most blocks per pixel) on the largest frame the pixel limit allows, and
    on 6000 x 4000: counted from the headers alone, nothing decoded."""
    for width, height in ((16384, DEFAULT_MAX_PIXELS // 16384), (6000, 4000)):
        data = progressive_jpeg(width, height, libjpeg_standard_script(3), ((1, 1), (1, 1), (1, 1)))
        scans, blocks = scan_tally(data)
        pass_blocks = 3 * -(-width // 8) * -(-height // 8)
        assert scans == 10 and blocks == pass_blocks * 14 // 3  # 2 DC passes + 8 single-component AC scans
        assert blocks <= DEFAULT_MAX_SCAN_BLOCKS, (width, height, blocks)


def test_large_progressive_photo_decodes_under_the_default_limits() -> None:
    small = photo_like(600, 400, seed=3)
    big = np.asarray(Image.fromarray(small).resize((6000, 4000), Image.BILINEAR))
    data = encode_jpeg(big, quality=90, progressive=True, subsampling=0)
    assert scan_tally(data)[0] == 10
    crop = decode_image(data, TrainTransform(224), index=7)
    assert crop.shape == (224, 224, 3) and crop.std() > 5
    ref = pil_rgb(data)
    full = decode_image(data)
    assert np.array_equal(full, ref)


def test_every_multi_scan_corpus_file_fits_the_default_budget() -> None:
    root = corpora_dir("edge_cases")
    counted = 0
    for path in sorted(root.iterdir()):
        try:
            if not read_header(path).progressive:
                continue
            decode_image(path, max_scan_blocks=1)
        except DecodeError as e:
            m = re.search(r"whose (\d+) scans decode (\d+) coefficient blocks", e.reason)
            if m:
                counted += 1
                assert int(m.group(2)) <= DEFAULT_MAX_SCAN_BLOCKS and int(m.group(1)) <= 500, path.name
    assert counted >= 50, "the corpus has over a hundred progressive files"


# --------------------------------------------------------------------------------------------------------------------
# 3. Files: capped in size, and read header first when large.

def _sparse(path: Path, head: bytes, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def test_file_above_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    path = _sparse(tmp_path / "huge.jpg", _photo_bytes(), 6 << 30)
    cap = r"file of 6144\.0 MiB \(6442450944 bytes\) is above the limit of 1024\.0 MiB \(raise max_file_bytes"
    for transform in (None, TrainTransform(64)):
        with pytest.raises(DecodeError, match=cap):
            decode_image(path, transform)
    with pytest.raises(DecodeError, match=cap):
        read_header(path)
    out = np.empty((2, 16, 16, 3), np.uint8)
    failures = decode_batch([path, path], out, EvalTransform(16), on_error="report")
    assert [pos for pos, _n, reason in failures if re.search(cap, reason)] == [0, 1]


def test_file_size_cap_is_configurable(tmp_path: Path) -> None:
    data = _photo_bytes()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    with pytest.raises(DecodeError, match=rf"\({len(data)} bytes\) is above the limit"):
        decode_image(path, max_file_bytes=len(data) - 1)
    assert np.array_equal(decode_image(path, max_file_bytes=len(data)), decode_image(data))
    assert read_header(path, max_file_bytes=None).width == 96
    with pytest.raises(ValueError, match="max_file_bytes must be a positive integer"):
        read_header(path, max_file_bytes=0)


def test_file_far_larger_than_its_frame_is_refused_after_the_header(tmp_path: Path) -> None:
    data = _photo_bytes(64, 64)
    bound = 16 * 64 * 64 * 3 + 16 * MiB
    too_big = _sparse(tmp_path / "padded.jpg", data, bound + 1)
    reason = (r"file of 16\.2 MiB is far larger than its 64x64 3-component JPEG frame can need \(at most 16\.2 MiB: "
              r"16 bytes a sample plus 16\.0 MiB of metadata\); refused before reading it")
    with pytest.raises(DecodeError, match=reason):
        decode_image(too_big)
    out = np.empty((1, 16, 16, 3), np.uint8)
    assert re.search(reason, decode_batch([too_big], out, EvalTransform(16), on_error="report")[0][2])
    # At the bound the file is read whole; libjpeg stops at the end-of-image marker and ignores the padding.
    at_bound = _sparse(tmp_path / "at_bound.jpg", data, bound)
    assert np.array_equal(decode_image(at_bound), decode_image(data))


def test_large_file_without_a_frame_header_is_refused(tmp_path: Path) -> None:
    no_frame = _sparse(tmp_path / "no_frame.jpg", b"\xff\xd8\xff\xfe\x00\x04ab", 40 * MiB)
    with pytest.raises(DecodeError, match=r"JPEG file of 40\.0 MiB with no frame header in its first 16\.0 MiB"):
        decode_image(no_frame)


def test_large_non_jpeg_file_goes_to_pillow(tmp_path: Path) -> None:
    """Not a JPEG: the native core reads only the first part, to say so; Pillow then judges the file."""
    png = io.BytesIO()
    Image.fromarray(photo_like(40, 30, seed=2)).save(png, "PNG")
    path = _sparse(tmp_path / "named.jpg", png.getvalue(), 20 * MiB)
    assert np.array_equal(decode_image(path), photo_like(40, 30, seed=2))


# --------------------------------------------------------------------------------------------------------------------
# 4. fork(): a child gets a thread pool of its own.

FORK_CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from ipu_cnn.data import EvalTransform, decode_batch

    sources = [open(p, "rb").read() for p in sys.argv[1:]]
    ref = np.empty((len(sources), 32, 32, 3), np.uint8)
    decode_batch(sources, ref, EvalTransform(32), num_threads=2)  # the parent's pool now has a worker

    def child(depth):
        out = np.zeros_like(ref)
        decode_batch(sources, out, EvalTransform(32), num_threads=2)
        if not np.array_equal(out, ref):
            os._exit(3)
        if depth:  # and a grandchild, forked from a child that has used its own pool
            pid = os.fork()
            if pid == 0:
                child(depth - 1)
            os._exit(wait(pid))
        os._exit(0)

    def wait(pid):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("child hung in decode_batch after fork")
        return 5

    pid = os.fork()
    if pid == 0:
        child(1)
    sys.exit(wait(pid))
""")


def test_decode_batch_in_a_forked_child_does_not_hang(photo_files: list[Path], tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", FORK_CHILD, *map(str, photo_files[:6])], capture_output=True,
                         text=True, cwd=tmp_path, env=subprocess_env(), timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr


# --------------------------------------------------------------------------------------------------------------------
# 5. A FIFO (or any non-regular file) is refused without blocking.

def _without_hanging(fifo: Path, fn: object) -> object:
    """Run fn() in a thread; should it block in open(), unblock it by opening the FIFO's write end, then fail."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()  # type: ignore[operator]
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(30)
        pytest.fail("reading a FIFO blocked")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]


def test_fifo_is_refused_per_sample_without_blocking(tmp_path: Path, photo_files: list[Path]) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    out = np.empty((2, 16, 16, 3), np.uint8)
    failures = _without_hanging(fifo, lambda: decode_batch([str(fifo), photo_files[0]], out, EvalTransform(16),
                                                           on_error="report"))
    assert failures == [(0, str(fifo), "is a FIFO (named pipe), not an image file (only regular files are read)")]
    assert out[1].any()
    with pytest.raises(DecodeError, match="is a FIFO"):
        _without_hanging(fifo, lambda: read_header(fifo))
    directory = tmp_path / "dir.jpg"
    directory.mkdir()
    with pytest.raises(DecodeError, match="is a directory, not an image file"):
        decode_image(directory)
    if os.path.exists("/dev/zero"):
        with pytest.raises(DecodeError, match="is a character device"):
            decode_image("/dev/zero")


# --------------------------------------------------------------------------------------------------------------------
# 6. Seeds, epochs and indices: [0, 2**64), said in one line.

def _one_line_error(exc: type[BaseException], pattern: str, fn: object) -> None:
    with pytest.raises(exc, match=pattern) as e:
        fn()  # type: ignore[operator]
    assert "\n" not in str(e.value) and len(str(e.value)) < 160, str(e.value)


def test_out_of_range_seed_epoch_and_indices_say_so_in_one_line(photo_files: list[Path]) -> None:
    out = np.empty((2, 16, 16, 3), np.uint8)
    t = TrainTransform(16)
    two = photo_files[:2]
    cases = [
        (lambda: decode_batch(two, out, t, seed=-1), r"^seed must be an integer in \[0, 2\*\*64\), got -1$"),
        (lambda: decode_batch(two, out, t, seed=2**64), r"^seed must be .*got 18446744073709551616$"),
        (lambda: decode_batch(two, out, t, epoch=-3), r"^epoch must be an integer in \[0, 2\*\*64\), got -3$"),
        (lambda: decode_batch(two, out, t, seed=1.5), r"^seed must be an integer .* got 1\.5$"),
        (lambda: decode_batch(two, out, t, indices=[0, -1]), r"^indices\[1\] must be an integer .* got -1$"),
        (lambda: decode_batch(two, out, t, indices=np.array([-7, 0])), r"^indices\[0\] must be .* got -7$"),
        (lambda: decode_batch(two, out, t, indices=[2**64, 0]), r"^indices\[0\] must be .* got 18446744073709551616$"),
        (lambda: decode_batch(two, out, t, indices=[-1, 2**63]), r"^indices\[0\] must be .* got -1$"),
        (lambda: decode_batch(two, out, t, indices=np.array([0.0, 1.0])),
         r"^indices must be integers in \[0, 2\*\*64\), got an array of float64$"),
        (lambda: decode_image(photo_files[0], t, index=-1), r"^index must be an integer in \[0, 2\*\*64\), got -1$"),
        (lambda: decode_image(photo_files[0], t, seed=2**64), r"^seed must be .*got 18446744073709551616$"),
        (lambda: decode_image(photo_files[0], None, epoch=-1), r"^epoch must be .*got -1$"),
    ]
    for fn, pattern in cases:
        _one_line_error(ValueError, pattern, fn)


def test_the_whole_uint64_range_is_accepted_and_consistent(photo_files: list[Path]) -> None:
    top = 2**64 - 1
    t = TrainTransform(32)
    out = np.empty((2, 32, 32, 3), np.uint8)
    decode_batch(photo_files[:2], out, t, seed=top, epoch=top, indices=[top, 2**63])
    assert np.array_equal(out[0], decode_image(photo_files[0], t, seed=top, epoch=top, index=top))
    assert np.array_equal(out[1], decode_image(photo_files[1], t, seed=top, epoch=top, index=2**63))
    decode_batch(photo_files[:2], out, t, indices=np.array([top, 3], np.uint64))
    assert np.array_equal(out[1], decode_image(photo_files[1], t, index=3))


# -- a decoder keeps nothing from the image before (fuzz finding: leftover quantization / Huffman tables) --------------

def _without_segments(jpeg: bytes, marker: int) -> bytes:
    """The JPEG with every marker segment of type `marker` (e.g. 0xDB, DQT) before the first scan removed."""
    out, p = bytearray(jpeg[:2]), 2
    while p + 4 <= len(jpeg) and jpeg[p] == 0xFF:
        code, length = jpeg[p + 1], struct.unpack(">H", jpeg[p + 2:p + 4])[0]
        if code == 0xDA:  # the scan and everything after it stay
            break
        if code != marker:
            out += jpeg[p:p + 2 + length]
        p += 2 + length
    return bytes(out + jpeg[p:])


@pytest.mark.parametrize("marker, what", [(0xDB, "quantization"), (0xC4, "Huffman")])
def test_a_decoder_keeps_no_tables_from_the_previous_image(marker: int, what: str) -> None:
    """A JPEG whose tables are missing decodes (or fails) the same whatever the thread decoded before: alone and right
    after a complete JPEG, as a single image and inside a batch on one thread."""
    complete = encode_jpeg(photo_like(64, 48, seed=9), quality=75, optimize=True)  # its own Huffman tables
    stripped = _without_segments(complete, marker)
    assert len(stripped) < len(complete), f"the test JPEG has {what} tables to remove"

    def outcome(run: "callable") -> str:
        try:
            return f"ok {int(np.asarray(run()).sum())}"
        except DecodeError as e:
            return f"error {e.reason}"

    code = textwrap.dedent(f"""
        from ipu_cnn.data import DecodeError, decode_image
        try:
            print("ok", int(decode_image({stripped!r}).sum()))
        except DecodeError as e:
            print("error", e.reason)
    """)
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env=subprocess_env(), cwd=Path(__file__).parent, check=True).stdout.strip()
    for _ in range(2):
        decode_image(complete)
        assert outcome(lambda: decode_image(stripped)) == fresh
    out = np.zeros((2, 32, 32, 3), np.uint8)
    failures = decode_batch([complete, stripped], out, EvalTransform(32, resize_size=36), num_threads=1,
                            on_error="report")
    if fresh.startswith("error"):
        assert [pos for pos, _, _ in failures] == [1], failures
    else:
        assert failures == []


# -- transform parameters at their extremes (fuzz findings) ------------------------------------------------------------

def test_extreme_train_ratios_sample_a_valid_crop(tmp_path: Path) -> None:
    """An aspect ratio far beyond any image (1e40) is compared before any integer cast (no undefined behaviour) and
    falls back to torchvision's centre crop; where that fallback would be empty (a 1-pixel-high image, a narrow ratio
    range) the crop keeps one pixel instead of failing every decode."""
    jpeg = encode_jpeg(photo_like(120, 80, seed=3), quality=90)
    assert decode_image(jpeg, TrainTransform(32, ratio=(1e40, 1e40))).shape == (32, 32, 3)
    one = tmp_path / "one.png"
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(one)
    assert (decode_image(one, TrainTransform(8, ratio=(0.1, 0.4))) == 200).all()
    thin = tmp_path / "thin.png"
    Image.fromarray(np.full((1, 40, 3), 90, np.uint8)).save(thin)
    assert (decode_image(thin, TrainTransform(8, ratio=(0.1, 0.4)), seed=2) == 90).all()


@pytest.mark.parametrize("kwargs", [dict(resize_size=2**31), dict(resize_size=(8, 2**25)), dict(crop_pct=1e-300),
                                    dict(crop_pct=5e-324)])
def test_eval_resizes_beyond_the_resampler_are_refused_when_built(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="EvalTransform: .*(limit|beyond any size)"):
        EvalTransform(4, **kwargs)
