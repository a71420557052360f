"""Hostile inputs on the Python side of the data path: every bad file is that file's DecodeError, nothing blocks on a
named pipe, the loader's worker process ends with its parent, and a stuck worker is reported instead of waited on.

Calls that would block forever if the code regressed run in a child process (or a thread) with a generous bound, so a
regression fails the test instead of hanging the suite.
"""
from __future__ import annotations

import errno
import io
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

import ipu_cnn.data.decode as decode_module
from conftest import subprocess_env
from ipu_cnn.data import (DecodeError, EvalTransform, FileList, ImageFolder, Loader, TrainTransform, WorkerDiedError,
                          WorkerTimeoutError, decode_batch, decode_image, read_header)
from ipu_cnn.data.reference import open_rgb
from test_decode_batch import index_image

#: Generous bound on anything that must finish rather than hang (liveness, not speed).
LIVENESS_S = 120

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc (Linux)")


# --- crafted files ----------------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, extra: bytes = b"", pixels: bool = True) -> bytes:
    """An RGB PNG; without pixels only its header chunk (enough for Pillow to open it and read the size)."""
    body = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + extra
    if pixels:
        rows = b"".join(b"\x00" + bytes(range(width * 3)) for _ in range(height))
        body += _png_chunk(b"IDAT", zlib.compress(rows))
    return b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b"")


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(12 * 10 * 3, dtype=np.uint8).reshape(10, 12, 3)).convert("P").save(buf, "GIF")
    return buf.getvalue()


#: name -> (file contents, None when both calls must succeed, else a regex the reason of both must match).
CRAFTED: dict[str, tuple[bytes, str | None]] = {
    # 20000 x 20000 pixels: above Pillow's bomb limit, so Image.open itself refuses it.
    "bomb.png": (_png(20000, 20000, pixels=False), r"DecompressionBombError"),
    # An eXIf chunk that is not TIFF: Pillow raises SyntaxError when asked for the EXIF; it is metadata, ignored.
    "bad_exif.png": (_png(8, 6, _png_chunk(b"eXIf", b"garbage, not a TIFF header")), None),
    # An IM header with a mode Pillow does not know: KeyError from getbands(), ValueError from convert().
    "weird_mode.im": (b"Image type: weird\r\nName: x\r\nImage size (x*y): 4*4\r\n\x1a".ljust(512, b"\0"),
                      r"not a JPEG file.*Pillow"),
    "palette.gif": (_gif(), None),
    "empty.jpg": (b"", r"empty file"),
    "random.jpg": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
                   r"not an image format Pillow can read"),
}


def _outcomes(source: object) -> list[DecodeError | object]:
    """What decode_image (full frame, train and eval with EXIF orientation) and read_header give for source: the
    result, or the DecodeError. Any other exception escapes and fails the test."""
    calls: list[Callable[[], object]] = [
        lambda: decode_image(source),  # type: ignore[arg-type]
        lambda: decode_image(source, TrainTransform(16), index=3),  # type: ignore[arg-type]
        lambda: decode_image(source, EvalTransform(16), apply_exif_orientation=True),  # type: ignore[arg-type]
        lambda: read_header(source),  # type: ignore[arg-type]
    ]
    out: list[DecodeError | object] = []
    for call in calls:
        try:
            out.append(call())
        except DecodeError as e:
            out.append(e)
    return out


@pytest.mark.parametrize("name", sorted(CRAFTED))
@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_decode_image_and_read_header_agree_on_crafted_files(name: str, as_bytes: bool, tmp_path: Path) -> None:
    data, reason = CRAFTED[name]
    path = tmp_path / name
    path.write_bytes(data)
    source: object = data if as_bytes else path
    label = "<in-memory image" if as_bytes else str(path)
    outcomes = _outcomes(source)
    if reason is None:
        full, train, eval_, header = outcomes
        assert not any(isinstance(o, DecodeError) for o in outcomes), outcomes
        reference = np.asarray(open_rgb(data))
        assert np.array_equal(full, reference)  # type: ignore[arg-type]
        assert train.shape == eval_.shape == (16, 16, 3)  # type: ignore[attr-defined]
        assert header[:2] == (reference.shape[1], reference.shape[0])  # type: ignore[index]
        assert header.orientation == 1  # type: ignore[attr-defined]
    else:
        for o in outcomes:
            assert isinstance(o, DecodeError), outcomes
            assert str(o).startswith(label) and re.search(reason, o.reason), str(o)


def test_a_directory_is_refused_by_both(tmp_path: Path) -> None:
    for o in _outcomes(tmp_path):
        assert isinstance(o, DecodeError) and o.source == str(tmp_path) and "is a directory" in o.reason, o


# --- 1. a Pillow-path failure is one sample's, never the batch's ------------------------------------------------------

@pytest.fixture(scope="module")
def wide_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """17,000,000 x 1 pixels: under the pixel limit and decodable by Pillow, but too wide for the resampler."""
    path = tmp_path_factory.mktemp("wide") / "wide.png"
    Image.new("L", (17_000_000, 1)).save(path)
    return path


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("good")
    paths = []
    for i in range(12):
        paths.append(root / f"{i:02d}.jpg")
        paths[-1].write_bytes(index_image(i, size=32))
    png = root / "12.png"
    Image.fromarray(np.full((40, 30, 3), 99, np.uint8)).save(png)
    return paths + [png]


def test_pillow_path_resize_failure_is_reported_per_sample(wide_png: Path, good_files: list[Path]) -> None:
    """A 17,000,000 x 1 PNG: its train crop is cut out before resizing, so it decodes; its eval resize (shorter side
    to 16 px: 272 million columns) cannot be done. Either way nothing escapes a batch: the failure is that sample's."""
    sources = [good_files[0], wide_png, good_files[-1]]
    out = np.full((3, 16, 16, 3), 7, np.uint8)
    assert decode_batch(sources, out, TrainTransform(16), on_error="report", seed=1) == []
    assert np.array_equal(out[1], decode_image(wide_png, TrainTransform(16), seed=1, index=1))
    failures = decode_batch(sources, out, EvalTransform(16), on_error="report")
    assert [(pos, src) for pos, src, _ in failures] == [(1, str(wide_png))]
    assert "17000000x1" in failures[0][2] and "cannot be cropped and resized" in failures[0][2], failures
    assert not out[1].any(), "the bad slot is zero-filled"
    for pos in (0, 2):  # the rest of the batch is decoded as if alone
        assert np.array_equal(out[pos], decode_image(sources[pos], EvalTransform(16)))
    with pytest.raises(DecodeError, match=re.escape(str(wide_png))):
        decode_batch(sources, out, EvalTransform(16), on_error="raise")
    with pytest.raises(DecodeError, match="cannot be cropped and resized"):
        decode_image(wide_png, EvalTransform(16))


@pytest.mark.parametrize("where", ["pillow", "resize"])
@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("boom"), KeyError("mode"), ZeroDivisionError("x")],
                         ids=lambda e: type(e).__name__)
def test_any_exception_of_one_sample_is_that_samples_error(where: str, error: Exception, good_files: list[Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    if where == "pillow":
        monkeypatch.setattr(Image.Image, "convert", fail)
    else:
        monkeypatch.setattr(decode_module._C, "transform_pixels", fail)
    png = good_files[-1]
    out = np.zeros((2, 16, 16, 3), np.uint8)
    failures = decode_batch([good_files[0], png], out, EvalTransform(16), on_error="report")
    assert [(pos, src) for pos, src, _ in failures] == [(1, str(png))]
    assert type(error).__name__ in failures[0][2], failures
    with pytest.raises(DecodeError, match=type(error).__name__):
        decode_image(png, EvalTransform(16))


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupts_are_not_swallowed_as_bad_samples(interrupt: type[BaseException], good_files: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise interrupt()

    monkeypatch.setattr(Image.Image, "convert", fail)
    with pytest.raises(interrupt):
        decode_batch([good_files[-1]], np.zeros((1, 16, 16, 3), np.uint8), EvalTransform(16), on_error="report")
    with pytest.raises(interrupt):
        decode_image(good_files[-1])


def _file_list(tmp_path: Path, paths: list[Path]) -> FileList:
    listing = tmp_path / "list.csv"
    listing.write_text("".join(f"{p},{i % 3}\n" for i, p in enumerate(paths)))
    return FileList(listing)


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_loader_replaces_a_sample_the_pillow_path_cannot_resize(workers: str, wide_png: Path, good_files: list[Path],
                                                                tmp_path: Path) -> None:
    paths = good_files[:5] + [wide_png] + good_files[5:]
    ds = _file_list(tmp_path, paths)
    kwargs = dict(shuffle=False, drop_last=False, rank=0, world_size=1, workers=workers)
    with Loader(ds, 4, EvalTransform(16), on_error="replace", **kwargs) as loader:  # type: ignore[arg-type]
        seen = [loader.last_indices.copy() for _ in loader]
        bad = loader.bad_samples
    assert sum(len(s) for s in seen) == len(paths) and 5 not in np.concatenate(seen)
    assert [(i, p) for i, p, _ in bad] == [(5, str(wide_png))] and "cannot be cropped" in bad[0][2]
    with Loader(ds, 4, EvalTransform(16), **kwargs) as loader:  # type: ignore[arg-type]
        with pytest.raises(DecodeError, match=re.escape(str(wide_png)) + ".*cannot be cropped"):
            for _ in loader:
                pass


# --- 3. named pipes (and other non-regular files) are refused, never opened for a blocking read -----------------------

@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe called like an image. Afterwards, anything still blocked opening it is released (a writer opens
    and closes it), so a regression leaves no stuck process behind."""
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    yield path
    for _ in range(64):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no reader left
                break
            raise
        os.close(fd)


def _run_python(code: str, cwd: Path, timeout: float = LIVENESS_S) -> str:
    """Run code in a fresh interpreter; its stdout. Fails (does not hang) when it does not finish within timeout."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, env=subprocess_env())
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"did not finish within {timeout} s (blocked?); stderr so far: {e.stderr!r}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_decode_image_and_read_header_refuse_a_fifo_without_blocking(fifo: Path, tmp_path: Path) -> None:
    out = _run_python(f"""
        from ipu_cnn.data import DecodeError, TrainTransform, decode_image, read_header
        for call in (lambda p: decode_image(p), lambda p: decode_image(p, TrainTransform(16)), read_header):
            try:
                call({str(fifo)!r})
                print("decoded")
            except DecodeError as e:
                print(e)
    """, tmp_path)
    lines = out.splitlines()
    assert lines == [f"{fifo}: is a FIFO (named pipe), not an image file (only regular files are read)"] * 3, out


def test_pillow_path_open_refuses_a_fifo_swapped_in_after_the_check(fifo: Path, tmp_path: Path) -> None:
    """The Pillow path checks the descriptor it opened, not only the path beforehand: a FIFO put in place between the
    check and the open (simulated by skipping the path check) is still refused, and the open does not block."""
    out = _run_python(f"""
        import ipu_cnn.data.decode as d
        d._check_regular_file = lambda path, name: None
        try:
            d._pil_decode({str(fifo)!r}, None, False, "pipe", "not a JPEG file")
            print("decoded")
        except d.DecodeError as e:
            print(e.reason)
    """, tmp_path)
    assert out.strip() == "is a FIFO (named pipe), not an image file (only regular files are read)", out


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_loader_replaces_a_fifo_without_blocking(workers: str, fifo: Path, good_files: list[Path],
                                                 tmp_path: Path) -> None:
    ds = _file_list(tmp_path, good_files[:3] + [fifo] + good_files[3:8])
    out = _run_python(f"""
        import os
        from ipu_cnn.data import FileList, Loader, EvalTransform
        loader = Loader(FileList({str(ds.path)!r}), 3, EvalTransform(16), shuffle=False, drop_last=False, rank=0,
                        world_size=1, on_error="replace", workers={workers!r}, timeout=10)
        try:
            n = sum(len(y) for _, y in loader)
        except Exception as e:
            print(type(e).__name__, e, flush=True)
            os._exit(0)  # a producer blocked for good cannot be closed: leave at once, with the error printed
        print(n, loader.bad_samples)
        loader.close()
    """, tmp_path)
    assert out.startswith("9 [(3, ") and "named pipe" in out, out


# --- 4. the worker process ends with the training process -------------------------------------------------------------

def _alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie waiting to be reaped by init is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in (b"Z", b"X")


def _wait_until(predicate: Callable[[], bool], bound: float = LIVENESS_S) -> bool:
    event = threading.Event()
    for _ in range(int(bound / 0.1)):
        if predicate():
            return True
        event.wait(0.1)
    return predicate()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    for i in range(40):
        folder = root / f"class_{i % 2}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i:03d}.jpg").write_bytes(index_image(i, size=24))
    return root


@needs_proc
@pytest.mark.parametrize("built_on", ["main thread", "other thread"])
def test_worker_process_exits_when_its_parent_is_killed(built_on: str, image_folder: Path, tmp_path: Path) -> None:
    """The parent forks a child that keeps the parent's end of the socket open, so the worker never sees the
    connection close: only its own check of the parent can end it. Built on another thread (which then exits), the
    worker must outlive that thread yet still end with the process."""
    script = textwrap.dedent(f"""
        import os, sys, threading, time
        from ipu_cnn.data import ImageFolder, Loader, EvalTransform
        made = {{}}

        def build():
            loader = Loader(ImageFolder({str(image_folder)!r}), 2, EvalTransform(16), workers="process", rank=0,
                            world_size=1, prefetch=1, shuffle=False)
            it = iter(loader)
            next(it)  # the worker is up (and has armed its parent check)
            made["loader"], made["it"] = loader, it

        if {built_on!r} == "main thread":
            build()
        else:
            t = threading.Thread(target=build)
            t.start()
            t.join()
        loader = made["loader"]
        n = 1 + sum(1 for _ in made["it"])  # the worker outlived the thread that started it
        assert n == len(loader) and loader._channel.proc.poll() is None, (n, len(loader))
        iter(loader)  # a new epoch starts: the worker fills the ring, then waits on the socket
        holder = os.fork()
        if holder == 0:
            time.sleep({3 * LIVENESS_S})  # outlasts the test's wait; the test kills it
            os._exit(0)
        print(loader._channel.proc.pid, holder, flush=True)
        time.sleep({LIVENESS_S})
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path, env=subprocess_env())
    worker = holder = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, parent.communicate(timeout=LIVENESS_S)[1]
        worker, holder = (int(v) for v in line.split())
        assert _alive(worker) and _alive(holder)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=LIVENESS_S)
        assert _wait_until(lambda: not _alive(worker)), "the worker process outlived its killed parent"
        assert _alive(holder), "the socket's other end was still open, so only the parent check ended the worker"
    finally:
        for pid in (holder, worker):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()


# --- 5. a stuck producer is reported after the timeout; connection errors are reported as themselves ------------------

def _drain_in_thread(it: Iterator[object]) -> BaseException | None:
    """Iterate to the end in a thread; the exception it ended with. Fails the test if it is still waiting after the
    liveness bound."""
    outcome: list[BaseException] = []

    def drain() -> None:
        try:
            for _ in it:
                pass
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            outcome.append(e)

    runner = threading.Thread(target=drain, daemon=True)
    runner.start()
    runner.join(timeout=LIVENESS_S)
    assert not runner.is_alive(), "iteration still waiting: the timeout did not fire"
    return outcome[0] if outcome else None


@needs_proc
def test_a_stopped_worker_times_out_and_is_named_stopped(image_folder: Path) -> None:
    loader = Loader(ImageFolder(image_folder), 2, EvalTransform(16), workers="process", rank=0, world_size=1,
                    prefetch=1, timeout=2)
    pid = loader._channel.proc.pid
    try:
        it = iter(loader)
        next(it)
        os.kill(pid, signal.SIGSTOP)
        error = _drain_in_thread(it)
        assert isinstance(error, WorkerTimeoutError), error
        assert isinstance(error, WorkerDiedError), "callers that catch WorkerDiedError catch this too"
        text = str(error)
        assert f"pid {pid}" in text and "not delivered a batch for 2 s" in text and "stopped" in text, text
        assert f"kill -CONT {pid}" in text
    finally:
        os.kill(pid, signal.SIGCONT)
        loader.close()


def test_a_stuck_producer_thread_times_out(image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ipu_cnn.data._producer as producer

    release = threading.Event()
    real = producer.decode_batch
    calls = []

    def stuck_after_first(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) > 1:
            release.wait(LIVENESS_S)  # a read that never returns, until the test lets it go
        return real(*args, **kwargs)

    monkeypatch.setattr(producer, "decode_batch", stuck_after_first)
    loader = Loader(ImageFolder(image_folder), 2, EvalTransform(16), rank=0, world_size=1, timeout=1.5)
    try:
        it = iter(loader)
        next(it)
        error = _drain_in_thread(it)
        assert isinstance(error, WorkerTimeoutError), error
        assert "producer thread has not delivered a batch for 1.5 s; it is alive" in str(error), str(error)
    finally:
        release.set()
        loader.close()


@pytest.mark.parametrize("timeout", [None, 600])
def test_worker_death_is_still_reported_at_once(timeout: float | None, image_folder: Path) -> None:
    loader = Loader(ImageFolder(image_folder), 2, EvalTransform(16), workers="process", rank=0, world_size=1,
                    prefetch=1, timeout=timeout)
    try:
        it = iter(loader)
        next(it)
        loader._channel.proc.kill()
        error = _drain_in_thread(it)
        assert isinstance(error, WorkerDiedError) and not isinstance(error, WorkerTimeoutError), error
        assert "worker process died (exit code -9)" in str(error)
    finally:
        loader.close()


def test_an_oserror_while_waiting_is_reported_as_itself(image_folder: Path) -> None:
    loader = Loader(ImageFolder(image_folder), 2, EvalTransform(16), workers="process", rank=0, world_size=1,
                    prefetch=1)
    channel = loader._channel
    try:
        it = iter(loader)
        next(it)
        cause = OSError(errno.EIO, "Input/output error")

        def broken_poll(timeout: float) -> bool:
            raise cause

        channel.conn.poll = broken_poll  # type: ignore[method-assign]
        error = _drain_in_thread(it)
        assert isinstance(error, WorkerDiedError), error
        text = str(error)
        assert "OSError: [Errno 5] Input/output error" in text and "exit code" not in text, text
        assert f"pid {channel.proc.pid}" in text and "it is alive" in text, text
        assert error.__cause__ is cause
    finally:
        del channel.conn.poll  # the real poll again, so close() can talk to the worker
        loader.close()


def test_timeout_must_be_positive_or_none(image_folder: Path) -> None:
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="timeout must be a number of seconds > 0, or None"):
            Loader(ImageFolder(image_folder), 2, EvalTransform(16), rank=0, world_size=1, timeout=bad)
    with Loader(ImageFolder(image_folder), 2, EvalTransform(16), rank=0, world_size=1, timeout=None) as loader:
        assert loader.timeout is None and len(list(loader)) == len(loader)


# -- findings of the fuzz run (fuzz/known_findings, now fixed) ---------------------------------------------------------

def test_a_format_pillow_only_identifies_has_no_header_to_read() -> None:
    """Pillow's identify-only stubs (HDF5 here) open with size 0x0: read_header refuses them as decode_image does,
    instead of promising an image of no size."""
    hdf5 = b"\x89HDF\r\n\x1a\n" + bytes(8)
    with pytest.raises(DecodeError, match="identifies it as HDF5 but cannot decode it"):
        read_header(hdf5)
    with pytest.raises(DecodeError):
        decode_image(hdf5)


def test_a_header_claiming_gigabytes_allocates_only_what_the_file_holds(tmp_path: Path) -> None:
    """A 21-byte file that Pillow takes for a GBR brush with a 4 GB comment: read from a path, Pillow gets the file's
    bytes from memory, so under a 3 GB address-space limit the outcome is a DecodeError or a header, never a
    MemoryError from a read(4 GB) of a file object."""
    brush = tmp_path / "b.gbr"
    brush.write_bytes(bytes.fromhex("ff01000a00000001000000010002000500000001" "04"))
    out = _run_python(f"""
        import resource
        from ipu_cnn.data import DecodeError, decode_image, read_header
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        for call in (read_header, decode_image):
            try:
                call({str(brush)!r})
                print("ok")
            except DecodeError:
                print("DecodeError")
    """, tmp_path)
    assert out.split() in (["DecodeError", "DecodeError"], ["ok", "DecodeError"], ["ok", "ok"]), out

