"""No import cycle between the project's modules (``study``, ``trainables``, ``analysis``).

The import graph is read from the source, not from ``sys.modules``: every file is parsed with
:mod:`ast` and every ``import`` / ``from ... import`` statement in it counts, wherever it stands —
at module level, under ``if TYPE_CHECKING:``, or inside a function. An import deferred into a
function still makes one module depend on the other (it only hides the cycle from Python's
loader), so the architecture is the graph of all of them. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``; relative imports are resolved against the
importing module's package; imports of anything outside the three packages are ignored.

A cycle is a strongly connected component of more than one module (Tarjan's algorithm); the
failure names every module of each component and, for each, the modules it imports inside it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "trainables", "analysis")


def project_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name → source file, for every ``.py`` file under ``packages``."""
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load (a module, or a name inside one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package, up level - 1 packages
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """module → the project modules it imports (every import statement in the file)."""
    modules = project_modules(root, packages)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = _imported(node, module, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom):  # `from pkg import mod`: pkg.mod, else pkg
                names = [n for n in names[:-1] if n in modules] or names[-1:]
            edges.update(r for r in map(resolve, names) if r and r != module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    inside = set(component)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & inside))}" for m in component)


def test_the_project_has_no_import_cycle():
    graph = import_graph(ROOT)
    assert len(graph) > 50, f"only {len(graph)} modules found under {ROOT}"
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    """The walker sees imports at every level: a deferred import closing a loop is a cycle, a
    chain without a loop is none."""
    pkg = tmp_path / "study"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from study.b import x\n")
    (pkg / "b.py").write_text("from . import c\nx = 1\n")
    (pkg / "c.py").write_text("def f():\n    from study import a\n")
    (pkg / "d.py").write_text("import study.a\nimport os\n")
    graph = import_graph(tmp_path, ("study",))
    assert graph["study.d"] == {"study.a"} and graph["study.b"] == {"study.c"}
    assert cycles(graph) == [["study.a", "study.b", "study.c"]]
    (pkg / "c.py").write_text("def f():\n    import json\n")
    assert cycles(import_graph(tmp_path, ("study",))) == []
