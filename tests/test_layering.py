"""The import structure holds (see docs/architecture.md):

* packages: ``seggpt_model`` <- ``pipelines`` <- ``vos`` (imports point down only);
* inside ``vos``, sub-packages by capability, in ranks: a module imports only its own rank or lower,
  so commands sit on top and nothing below imports a command; the tracking engine imports neither
  Ray nor the batch package;
* no import circle anywhere in the three packages;
* imports sit at the top of modules: one inside a function says why on its line or the line above.

Every import statement of every module is read from its AST, function-local and relative imports
included, so a dependency hidden inside a function body is seen too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("seggpt_model", "pipelines", "vos")
#: package -> its rank; a module may import packages of its own rank or lower.
LAYERS = {"seggpt_model": 0, "pipelines": 1, "vos": 2}
#: parts of ``vos`` -> rank (the longest matching prefix decides); same rule as LAYERS.
VOS_LAYERS = {
    "vos": 0, "vos.errors": 0, "vos.signals": 0,
    "vos.labels": 1,
    "vos.prompts": 2,
    "vos.engine": 3,
    "vos.datasets": 4, "vos.evaluation": 4,
    "vos.batch": 5,
    "vos.app": 6,
    "vos.commands": 7,
    "vos.cli": 8,
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, absolute module name, inside a function)`` of every import in ``path``; for
    ``from X import Y`` where ``X.Y`` is a module of the tree, the name is ``X.Y``."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1])
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        local = id(node) in in_function
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, local) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            subs = [f"{name}.{a.name}" for a in node.names if _exists(f"{name}.{a.name}")]
            out += [(node.lineno, n, local) for n in subs] or [(node.lineno, name, local)]
    return out


def _exists(module: str) -> bool:
    p = ROOT.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _rank(name: str) -> int | None:
    best = None
    for prefix, rank in VOS_LAYERS.items():
        if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, rank)
    return None if best is None else best[1]


def _layer_violations() -> list[str]:
    bad = []
    for package, rank in LAYERS.items():
        for path in _modules(package):
            for line, name, _ in _imports(path):
                top = name.split(".")[0]
                if top in LAYERS and LAYERS[top] > rank:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def _vos_violations() -> list[str]:
    bad = []
    for path in _modules("vos"):
        me = _module_name(path)
        for line, name, _ in _imports(path):
            if name.split(".")[0] != "vos" or name == "vos":
                continue
            if _rank(name) > _rank(me):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({me}, rank {_rank(me)}) imports {name} "
                           f"(rank {_rank(name)})")
    return bad


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the three packages it imports (anywhere in its body)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in _modules(package):
            me = _module_name(path)
            graph.setdefault(me, set())
            for _, name, _ in _imports(path):
                while name and not _exists(name):     # `from pkg.mod import function` -> pkg.mod
                    name = name.rpartition(".")[0]
                if name and name.split(".")[0] in PACKAGES and name != me:
                    graph[me].add(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle ``[a, b, ..., a]`` of ``graph``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_imports_point_down_only():
    assert _layer_violations() == []


def test_vos_sub_packages_point_down_only():
    """Commands on top (nothing below imports one); engine < datasets/evaluation < batch < app."""
    assert _vos_violations() == []


def test_every_vos_module_has_a_rank():
    assert [m for m in map(_module_name, _modules("vos")) if _rank(m) is None] == []


def test_engine_imports_neither_ray_nor_batch():
    found = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p in (ROOT / "vos" / "engine").rglob("*.py")
             for line, name, _ in _imports(p)
             if name.split(".")[0] == "ray" or name == "vos.batch" or name.startswith("vos.batch.")]
    assert found == []


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_function_level_imports_say_why():
    """An import inside a function is for an optional dependency or a stated start-up reason."""
    silent = []
    for package in PACKAGES:
        for path in _modules(package):
            lines = path.read_text().splitlines()
            for line, name, local in _imports(path):
                if local and "#" not in lines[line - 1] and not lines[line - 2].strip().startswith("#"):
                    silent.append(f"{path.relative_to(ROOT)}:{line} imports {name} inside a function")
    assert silent == []


def test_checker_sees_function_local_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: an upward import inside a function body, absolute or relative, is found."""
    fake = tmp_path / "pipelines"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from vos.engine.video import run_video\n    from ..vos import x\n"
                                 "    import seggpt_model.weights\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = [v for v in _layer_violations() if v.startswith("pipelines")]
    assert found == ["pipelines/bad.py:2 imports vos.engine.video", "pipelines/bad.py:3 imports vos"]


def test_checker_sees_a_planted_circle_and_a_command_imported_below(tmp_path, monkeypatch):
    """The cycle finder and the vos rank check on a planted tree: engine -> commands -> engine."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for sub in ("engine", "commands"):
        (tmp_path / "vos" / sub).mkdir()
        (tmp_path / "vos" / sub / "__init__.py").write_text("")
    (tmp_path / "vos" / "engine" / "video.py").write_text(
        "def run():\n    from vos.commands.run import main\n")
    (tmp_path / "vos" / "commands" / "run.py").write_text("from vos.engine import video\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert find_cycle(import_graph()) == ["vos.commands.run", "vos.engine.video", "vos.commands.run"]
    assert _vos_violations() == ["vos/engine/video.py:2 (vos.engine.video, rank 3) imports "
                                 "vos.commands.run (rank 7)"]


def test_seggpt_model_needs_no_transformers():
    uses = [f"{p.relative_to(ROOT)}:{line}" for p in _modules("seggpt_model")
            for line, name, _ in _imports(p) if name.split(".")[0] == "transformers"]
    assert uses == []


@pytest.mark.parametrize("module", ["weights.py"])
def test_loader_does_not_import_model_classes(module):
    """``seggpt_model.weights`` works on a model it is handed (the builder sits on top of both)."""
    names = [name for _, name, _ in _imports(ROOT / "seggpt_model" / module)]
    assert "seggpt_model.model" not in names
