"""No private name crosses a module boundary inside ``study``, ``trainables`` and ``analysis``.

A leading underscore says "only this module uses it": ``from m import _name`` or ``m._name`` in
another module turns it into an interface nobody declared. The source is read with :mod:`ast`:
every ``from ... import`` of a project module's ``_name`` (at any level, relative imports
resolved), and every attribute ``_name`` read off a name bound to a project module (``import m``,
``from pkg import m``). Dunder names are not private. A module's own private names are its own.

:data:`NOT_YET` lists the crossings in files whose owners are reshaping them; it only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_import_cycles import PACKAGES, ROOT, project_modules

#: ``file: imported name`` crossings not removed yet (their owners are reshaping the files).
NOT_YET: frozenset[str] = frozenset()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join(package + ([node.module] if node.module else []))


def private_crossings(root: Path, packages=PACKAGES) -> list[str]:
    """``file: module.name`` for each private name a module takes from another project module."""
    modules = project_modules(root, packages)
    found = []
    for module, path in modules.items():
        here: list[str] = []
        tree = ast.parse(path.read_text(), str(path))
        bound: dict[str, str] = {}  # local name -> project module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _base(node, module, path.name == "__init__.py")
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in modules:
                        bound[alias.asname or alias.name] = full
                    elif base in modules and base != module and _private(alias.name):
                        here.append(full)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        bound[alias.asname or alias.name.split(".")[0]] = (
                            alias.name if alias.asname else alias.name.split(".")[0])
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                chain, value = [node.attr], node.value
                while isinstance(value, ast.Attribute):
                    chain.append(value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in bound:
                    owner = ".".join([bound[value.id], *reversed(chain[1:])])
                    if owner in modules and owner != module:
                        here.append(f"{owner}.{node.attr}")
        found += [f"{path.relative_to(root).as_posix()}: {name}" for name in here]
    return sorted(set(found))


def test_no_private_name_is_used_across_modules():
    found = [f for f in private_crossings(ROOT) if f not in NOT_YET]
    assert not found, "private names used outside their module (make them public or move " \
                      "them):\n" + "\n".join(found)


def test_a_private_import_and_attribute_are_found_and_own_use_is_not(tmp_path):
    pkg = tmp_path / "study"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("_X = 1\n__version__ = 2\n\n\ndef _f():\n    return _X\n")
    (pkg / "b.py").write_text("from study.a import _X, __version__\nfrom . import a\n"
                              "y = a._f() + a.__version__\n")
    (pkg / "c.py").write_text("import study.a\nimport study.a as sa\nz = study.a._X + sa._f\n"
                              "obj = object()\nw = obj._private\n")
    assert private_crossings(tmp_path, ("study",)) == [
        "study/b.py: study.a._X", "study/b.py: study.a._f",
        "study/c.py: study.a._X", "study/c.py: study.a._f"]
