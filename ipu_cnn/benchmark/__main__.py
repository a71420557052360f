"""`python -m ipu_cnn.benchmark`: see ipu_cnn.benchmark.cli."""
from __future__ import annotations

from ipu_cnn.benchmark.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
