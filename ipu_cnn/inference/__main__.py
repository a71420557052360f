"""``python -m ipu_cnn.inference [benchmark|predict|export] ...``; see ``--help`` of each mode."""
from __future__ import annotations

from ipu_cnn.inference.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
