"""`python -m ipu_cnn [--version]`: print what this installation is made of."""
from __future__ import annotations

import argparse

from ipu_cnn._info import format_info, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ipu_cnn",
        description="ipu_cnn diagnostics. Applications: python -m ipu_cnn.train, python -m ipu_cnn.inference, "
        "python -m ipu_cnn.benchmark.",
    )
    parser.add_argument("--version", action="store_true", help="print versions, the linked libjpeg and SIMD path")
    parser.parse_args(argv)
    facts = info()
    print(format_info(facts))
    # Without the compiled core nothing else runs: a non-zero status, so that scripts and CI notice.
    return 1 if facts["resampler_simd"] is None else 0


if __name__ == "__main__":
    raise SystemExit(main())
