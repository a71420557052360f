"""ipu_cnn: train and run image CNNs from JPEG files, fed by a compiled region-decoding loader."""
from __future__ import annotations

__version__ = "0.1.0"

from ipu_cnn._info import info  # noqa: E402

__all__ = ["__version__", "info"]
