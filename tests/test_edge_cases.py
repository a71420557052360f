"""Every conformance / edge-case file in ../shared/corpora/edge_cases behaves as its MANIFEST says.

Files expected to decode must decode, full frames equal to Pillow's; files that need a decoder this libjpeg is not
(12-bit, arithmetic lossless, JPEG-LS, DNL) or that are damaged beyond leniency must raise a DecodeError naming the
file — never crash, hang or leak.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from conftest import corpora_dir
from ipu_cnn.data import DecodeError, DecodeStats, EvalTransform, TrainTransform, decode_batch, decode_image

pytestmark = pytest.mark.corpora

# Progressive files cut after their first few scans (no refinement scans): libjpeg's inter-block smoothing of such
# partially transmitted images changed between libjpeg-turbo 2.1.5 (linked here) and the 3.x that Pillow bundles, so
# they decode but are not bit-identical to Pillow. Complete progressive files are.
PARTIAL_PROGRESSIVE = "progressive.scan0"


def manifest() -> list[dict[str, str]]:
    root = corpora_dir("edge_cases")
    with open(root / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def expectation(row: dict[str, str]) -> str:
    """'decode', 'fail' or 'either' (damaged files that a lenient decoder may decode)."""
    exp = row["expected_behaviour"]
    if exp.startswith("decodes"):
        return "decode"
    if exp.startswith("damaged"):
        return "either"
    return "fail"  # truncated, headers only, 12-bit, lossless arithmetic, JPEG-LS, DNL: pick a clean error


def test_manifest_is_classified() -> None:
    kinds = [expectation(r) for r in manifest()]
    assert kinds.count("decode") >= 300 and kinds.count("fail") >= 100


def test_every_file_behaves_as_the_manifest_says() -> None:
    root = corpora_dir("edge_cases")
    unexpected = []
    for row in manifest():
        path = root / row["file"]
        kind = expectation(row)
        try:
            ours = decode_image(path)
        except DecodeError as e:
            assert e.source == str(path) and e.reason
            if kind == "decode":
                unexpected.append(f"{row['file']}: should decode, got {e.reason}")
            continue
        if kind == "fail":
            unexpected.append(f"{row['file']}: should fail cleanly, decoded {ours.shape}")
            continue
        assert ours.ndim == 3 and ours.shape[2] == 3
        if kind == "decode" and row["PIL_13.0_result"].startswith("ok") and PARTIAL_PROGRESSIVE not in row["file"]:
            with Image.open(path) as im:
                ref = np.asarray(im.convert("RGB"))
            if not np.array_equal(ours, ref):
                unexpected.append(f"{row['file']}: differs from Pillow (max {np.abs(ours.astype(int) - ref).max()})")
    assert not unexpected, "\n".join(unexpected)


def test_whole_corpus_in_batches_reports_exactly_the_bad_files() -> None:
    root = corpora_dir("edge_cases")
    rows = manifest()
    paths = [root / r["file"] for r in rows]
    must_fail = {str(root / r["file"]) for r in rows if expectation(r) == "fail"}
    must_decode = {str(root / r["file"]) for r in rows if expectation(r) == "decode"}
    for t in (TrainTransform(64), EvalTransform(64)):
        out = np.empty((len(paths), 64, 64, 3), np.uint8)
        stats = DecodeStats()
        failures = decode_batch(paths, out, t, on_error="report", num_threads=2, stats=stats)
        failed = {src for _, src, _ in failures}
        assert must_fail <= failed
        assert not (failed & must_decode), sorted(failed & must_decode)[:5]
        assert stats.non_jpeg >= 26  # lossless Huffman JPEGs that Pillow's newer libjpeg-turbo decodes, PNG renamed
        assert stats.warnings > 0
        for pos, _, reason in failures:
            assert reason and not out[pos].any()
