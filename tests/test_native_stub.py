"""ipu_cnn/_C.pyi against the compiled module: the stub names exactly the module's public functions, classes and enum
members, with the functions' parameters in the same order, so type checkers see the surface that really exists."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ipu_cnn import _C

STUB = Path(__file__).resolve().parents[1] / "ipu_cnn" / "_C.pyi"


def _stub() -> tuple[dict[str, ast.FunctionDef], dict[str, ast.ClassDef]]:
    tree = ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    return functions, classes


def _public(names: object) -> set[str]:
    return {n for n in names if not n.startswith("_")}  # type: ignore[union-attr]


def _native_parameters(function: object) -> list[str]:
    """Parameter names from the signature pybind11 writes as the first line of a function's __doc__."""
    name = function.__name__  # type: ignore[attr-defined]
    first = (function.__doc__ or "").splitlines()[0]
    match = re.fullmatch(rf"{name}\((.*)\) -> .*", first)
    assert match, f"unexpected signature line for {name}: {first!r}"
    # Defaults may hold commas inside <...> reprs; parameter names are the identifiers before ': '.
    return re.findall(r"(?:^|, )(\w+): ", match.group(1))


def _stub_parameters(node: ast.FunctionDef) -> list[str]:
    return [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]


def _class_members(node: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            names.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return _public(names)


def test_stub_names_exactly_the_module_surface() -> None:
    functions, classes = _stub()
    module = _public(dir(_C))
    assert set(functions) | set(classes) == module, (
        f"in the module only: {sorted(module - set(functions) - set(classes))}; "
        f"in the stub only: {sorted(set(functions) | set(classes) - module)}")
    for name in functions:
        assert callable(getattr(_C, name)) and not isinstance(getattr(_C, name), type), name
    for name in classes:
        assert isinstance(getattr(_C, name), type), name


@pytest.mark.parametrize("name", sorted(_stub()[0]))
def test_stub_function_parameters_match(name: str) -> None:
    functions, _ = _stub()
    assert _stub_parameters(functions[name]) == _native_parameters(getattr(_C, name)), name


@pytest.mark.parametrize("name", sorted(_stub()[1]))
def test_stub_class_members_match(name: str) -> None:
    _, classes = _stub()
    native = _public(vars(getattr(_C, name)))
    assert _class_members(classes[name]) == native, name


def test_status_values_are_the_native_ones() -> None:
    """The enum's members and values, as the stub documents them and decode.py compares them."""
    assert {k: int(v) for k, v in _C.Status.__members__.items()} == {"OK": 0, "FALLBACK": 1, "ERROR": 2}
    report = _C.decode_transform(b"not a jpeg", __import__("numpy").zeros((4, 4, 3), "uint8"), _params(),
                                 0, 0, 0, 0, _C.DecodeOptions())
    assert isinstance(report, _C.DecodeReport) and report.status == _C.Status.FALLBACK
    assert report.reason == "not a JPEG file (no SOI marker)"
    report, pixels = _C.decode_full(b"", _C.DecodeOptions())
    assert report.status == _C.Status.ERROR and pixels is None and report.reason == "empty file (0 bytes)"


def _params() -> _C.CropParams:
    p = _C.CropParams()
    p.mode, p.out_w, p.out_h = 2, 4, 4
    return p


def test_stub_ships_with_the_package() -> None:
    """scikit-build-core packages the ipu_cnn/ directory, so the stub beside the package's modules is installed."""
    text = (STUB.parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'packages\s*=\s*\[[^\]]*"ipu_cnn"', text), "pyproject.toml must package ipu_cnn/"
