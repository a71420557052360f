"""What a bug report needs: versions of the package, torch, the linked JPEG library, and the SIMD path in use."""
from __future__ import annotations

import platform
import sys


def info() -> dict[str, object]:
    """Return the versions and build facts of this installation (importing nothing heavy beyond torch). Without a
    loadable compiled core (a source checkout before `pip install .`) the core's facts are None and "core" says why."""
    from ipu_cnn import __version__

    facts: dict[str, object] = {
        "ipu_cnn": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
    }
    try:
        from ipu_cnn import _C
    except ImportError as error:  # a bug report is most needed when the install is broken: say why, do not fail
        facts.update(jpeg_library=None, libjpeg_turbo=None, resampler_simd=None, cpus_available=None,
                     core=f"not loadable: {error}")
    else:
        facts.update(jpeg_library=_C.jpeg_version(), libjpeg_turbo=_C.is_libjpeg_turbo(),
                     resampler_simd=_C.simd_path(), cpus_available=_C.available_cpus(), core=_C.__file__)
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["cuda_available"] = torch.cuda.is_available()
    except ImportError:  # torch is a dependency, but info() must still work in a broken environment
        facts["torch"] = None
    try:
        import poptorch  # type: ignore[import-not-found]

        facts["poptorch"] = getattr(poptorch, "__version__", "unknown")
    except ImportError:
        facts["poptorch"] = None
    return facts


def format_info(facts: dict[str, object] | None = None) -> str:
    """Render info() as aligned `key: value` lines."""
    facts = info() if facts is None else facts
    width = max(len(k) for k in facts)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in facts.items())
