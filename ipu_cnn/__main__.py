"""`python -m ipu_cnn [--version]`: print what this installation is made of."""
from __future__ import annotations

import argparse

from ipu_cnn._info import format_info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ipu_cnn",
        description="ipu_cnn diagnostics. Applications: python -m ipu_cnn.train, python -m ipu_cnn.inference, "
        "python -m ipu_cnn.benchmark.",
    )
    parser.add_argument("--version", action="store_true", help="print versions, the linked libjpeg and SIMD path")
    parser.parse_args(argv)
    # The report is the answer, also without a compiled core (its "core" line then says how to get one).
    print(format_info())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
