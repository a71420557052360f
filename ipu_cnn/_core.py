"""Find the compiled core (``ipu_cnn._C``) when this package is imported from a source checkout.

``python -m ...`` puts the working directory first on ``sys.path``, so a user who typed the README's commands in the
root of a clone imports the checkout's ``ipu_cnn/`` — Python files only — instead of the copy ``pip install .`` put in
site-packages, which holds the compiled core. Rather than failing there, the source package loads the installed
copy's core, and says so plainly when that core was built from C++ sources other than this checkout's ``csrc/``
(a rebuild is then one ``pip install .`` away). A core built in place (``ipu_cnn/_C*.so`` next to this file) always
wins; an installed package never looks further than itself.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

_NAME = "ipu_cnn._C"
#: The C++ sources whose digest the build records (CMakeLists.txt computes the same digest: keep the two in step).
_SOURCE_SUFFIXES = (".cpp", ".h")


def _core_files(package_dir: Path) -> list[Path]:
    return [package_dir / f"_C{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if (package_dir / f"_C{suffix}").is_file()]


def source_digest(csrc: Path) -> str | None:
    """SHA-256 over the per-file SHA-256 hex digests of ``csrc/*.cpp|*.h`` in file-name order; None without csrc/."""
    if not csrc.is_dir():
        return None
    files = sorted(p for p in csrc.iterdir() if p.suffix in _SOURCE_SUFFIXES and p.is_file())
    joined = "".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
    return hashlib.sha256(joined.encode()).hexdigest()


def _installed_core(own_dir: Path) -> Path | None:
    """The compiled core of another ``ipu_cnn`` package on ``sys.path`` (the installed copy)."""
    for entry in sys.path:
        candidate = Path(entry or os.getcwd()).expanduser().resolve() / "ipu_cnn"
        if candidate == own_dir or not candidate.is_dir():
            continue
        files = _core_files(candidate)
        if files:
            return files[0]
    return None


def _installed_version(package_dir: Path) -> str | None:
    try:
        for line in (package_dir / "__init__.py").read_text().splitlines():
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    except OSError:
        pass
    return None


def attach_installed_core(package_dir: str, version: str) -> ModuleType | None:
    """Make ``ipu_cnn._C`` importable for the package at `package_dir`; returns the module loaded from the installed
    copy, or None when nothing had to be done (a core lives beside the package) or no installed copy exists (the
    import of ``ipu_cnn._C`` then fails with the message of `missing_core_message`)."""
    own_dir = Path(package_dir).resolve()
    if _NAME in sys.modules or _core_files(own_dir):
        return None
    path = _installed_core(own_dir)
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location(_NAME, path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NAME]
        raise
    _warn_if_stale(own_dir, path, module, version)
    return module


def _warn_if_stale(own_dir: Path, core: Path, module: ModuleType, version: str) -> None:
    installed = _installed_version(core.parent)
    reasons = []
    if installed is not None and installed != version:
        reasons.append(f"it is version {installed}, this checkout is {version}")
    ours = source_digest(own_dir.parent / "csrc")
    built = getattr(module, "source_digest", lambda: None)()
    if ours is not None and built is not None and ours != built:
        reasons.append("it was built from other C++ sources than this checkout's csrc/")
    if reasons:
        warnings.warn(f"ipu_cnn: this source checkout ({own_dir}) is using the compiled core installed at {core}, "
                      f"but {' and '.join(reasons)}; run `pip install .` in the checkout to rebuild it",
                      RuntimeWarning, stacklevel=3)


def _venv_core(checkout: Path) -> Path | None:
    """The compiled core that ``pip install .`` put into the checkout's own virtual environment (the README's
    ``.venv``), when the Python running now is not that environment's."""
    venv = checkout / ".venv"
    if not (venv / "pyvenv.cfg").is_file() or Path(sys.prefix).resolve() == venv.resolve():
        return None
    # Any Python version's build: the environment's own interpreter is the one that loads it.
    cores = sorted(p for p in venv.glob("lib*/python*/site-packages/ipu_cnn/_C.*") if p.suffix in (".so", ".pyd"))
    return cores[0] if cores else None


def missing_core_message(package_dir: str) -> str:
    """What to do when no compiled core can be found: activate the checkout's ``.venv`` if one holds a core, else
    build it."""
    checkout = Path(package_dir).resolve().parent
    where = (f"ipu_cnn's compiled core (ipu_cnn._C) is not available to this Python ({sys.executable}): {package_dir} "
             "holds the Python sources only, and no installed ipu_cnn was found on sys.path.")
    core = _venv_core(checkout)
    if core is not None:
        return (f"{where} The checkout's virtual environment has one ({core}): activate it first "
                "(`. .venv/bin/activate`), or run its Python (`.venv/bin/python -m ...`).")
    return (f"{where} Run `pip install .` in the repository root (it needs a C++17 compiler, CMake and the "
            "libjpeg-turbo headers: apt-get install libjpeg62-turbo-dev).")
