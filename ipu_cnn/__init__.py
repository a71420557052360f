"""ipu_cnn: train and run image CNNs from JPEG files, fed by a compiled region-decoding loader."""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os  # noqa: E402

from ipu_cnn import _core  # noqa: E402

# Imported from a source checkout (`python -m ...` in the repository root), this package has no compiled core beside
# it: use the one `pip install .` installed (see _core).
_core.attach_installed_core(_os.path.dirname(__file__), __version__)

from ipu_cnn._info import info  # noqa: E402

__all__ = ["__version__", "info"]


def __getattr__(name: str) -> object:
    if name == "_C":  # `from ipu_cnn import _C` before the submodule is imported: import it, or say how to build it
        import importlib

        try:
            return importlib.import_module("ipu_cnn._C")
        except ModuleNotFoundError as error:
            if error.name != "ipu_cnn._C":
                raise
            raise ImportError(_core.missing_core_message(_os.path.dirname(__file__)), name="ipu_cnn._C") from None
    raise AttributeError(f"module 'ipu_cnn' has no attribute {name!r}")
