"""The package layering holds: ``seggpt_model`` <- ``pipelines`` <- ``vos`` (imports point down only).

Every import statement of every module is read from its AST, function-local imports included, so a
cycle hidden inside a function body fails here too (see docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package -> its rank; a module may import packages of its own rank or lower.
LAYERS = {"seggpt_model": 0, "pipelines": 1, "vos": 2}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def _layer_violations() -> list[str]:
    bad = []
    for package, rank in LAYERS.items():
        for path in _modules(package):
            for line, name in _imported(path):
                top = name.split(".")[0]
                if top in LAYERS and LAYERS[top] > rank:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def test_imports_point_down_only():
    assert _layer_violations() == []


def test_checker_sees_function_local_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: an upward import inside a function body, absolute or relative, is found."""
    fake = tmp_path / "pipelines"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from vos.run import run_video\n    from ..vos import x\n"
                                 "    import seggpt_model.weights\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = [v for v in _layer_violations() if v.startswith("pipelines")]
    assert found == ["pipelines/bad.py:2 imports vos.run", "pipelines/bad.py:3 imports vos"]


def test_seggpt_model_needs_no_transformers():
    uses = [f"{p.relative_to(ROOT)}:{line}" for p in _modules("seggpt_model")
            for line, name in _imported(p) if name.split(".")[0] == "transformers"]
    assert uses == []


@pytest.mark.parametrize("module", ["weights.py"])
def test_loader_does_not_import_model_classes(module):
    """``seggpt_model.weights`` works on a model it is handed (the builder sits on top of both)."""
    names = [name for _, name in _imported(ROOT / "seggpt_model" / module)]
    assert "seggpt_model.model" not in names
