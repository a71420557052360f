#!/usr/bin/env python3
"""Fuzz target: ``read_header`` on arbitrary bytes (the native header and EXIF parser, and Pillow's for non-JPEG).

Oracle: an ImageHeader with positive width and height (check "header-size"), 1 to 10 components (libjpeg's
limit), orientation 1..8 (check "orientation-range") and a format name, or a DecodeError (read_header raises no
other error for bad bytes); every contiguous source form of the same bytes gives the same answer, and a
non-contiguous one (the "strided" and "reversed" forms) is refused, whatever its bytes, with a DecodeError saying it
must be a C-contiguous buffer.

    python fuzz/fuzz_read_header.py CORPUS_DIR [SEED_DIR] -max_total_time=60     # see fuzz/README.md
"""
from __future__ import annotations

from _common import (CONTIGUITY_REFUSAL, SKIP_CHECKS, SOURCE_FORMS, Knobs, as_source, fuzz_main, instrumented,
                     noncontiguous)

with instrumented():
    from ipu_cnn.data import DecodeError, ImageHeader, read_header


def header_or_error(source: object) -> ImageHeader | str:
    try:
        return read_header(source)
    except DecodeError as e:
        return f"error: {e.reason}"


def one_input(data: bytes) -> None:
    form = Knobs(data).choice(tuple(f for f in SOURCE_FORMS if f != "bytes") or ("bytes",))
    plain = header_or_error(data)
    if isinstance(plain, ImageHeader):
        h = plain
        assert isinstance(h.width, int) and isinstance(h.height, int), h
        assert (h.width >= 1 and h.height >= 1) or "header-size" in SKIP_CHECKS, h
        assert isinstance(h.components, int) and 1 <= h.components <= 10, h
        assert isinstance(h.orientation, int), h
        assert 1 <= h.orientation <= 8 or "orientation-range" in SKIP_CHECKS, h
        assert isinstance(h.format, str) and h.format and isinstance(h.progressive, bool), h
    source = as_source(data, form)
    other = header_or_error(source)
    if noncontiguous(source):
        assert isinstance(other, str) and CONTIGUITY_REFUSAL in other, f"read_header as {form}: {other}, not refused"
    elif isinstance(plain, ImageHeader) or isinstance(other, ImageHeader):
        assert other == plain, f"read_header of the same bytes: {plain} as bytes, {other} as {form}"


if __name__ == "__main__":
    fuzz_main(one_input)
