"""The library's shape: layers that import only downward (``nn`` <- ``spaces`` <- ``runtime`` <- {``search``,
``train``}, the last two peers), and no function longer than 60 lines."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "asose_jax"
LAYERS = {"nn": 0, "spaces": 1, "runtime": 2, "search": 3, "train": 3}
MAX_FUNCTION_LINES = 60


def modules() -> list[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def imported_layers(path: pathlib.Path) -> set[str]:
    """The ``asose_jax`` sub-packages that ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name.split(".")[1] for name in names if name.startswith("asose_jax.")}
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_import_goes_downward(path):
    layer = path.relative_to(PACKAGE).parts[0]
    for imported in imported_layers(path):
        assert LAYERS[imported] < LAYERS[layer] or imported == layer, f"{layer} imports {imported}"


def test_the_walk_finds_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from asose_jax.search.steps import State\n    import asose_jax.train.steps\n")
    assert imported_layers(module) == {"search", "train"}


def long_functions(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]  # fmt: skip


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_60_lines(path):
    assert long_functions(path) == []


def test_the_length_check_sees_a_long_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n" + "    x = 1\n" * 60)
    assert long_functions(module) == ["f (61 lines)"]
