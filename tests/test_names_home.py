"""Every MLflow name (tag, param, metric) is spelt once, in ``trainables/names.py``.

Writers (``study``, ``trainables``) and the reader (``analysis``) take the names from there; a
string constant (or the literal head of an f-string) starting with ``lipstudy.`` anywhere else in
those packages is a second spelling that can drift from the first. Docstrings and comments that
mention a tag in prose do not start with it and are not counted.

The same holds for every other MLflow name — a trial key (param), a derived or environment param,
a metric, a tag: a string constant equal to one of them outside ``names.py`` is a second spelling.
Files whose owners have not moved to the constants yet are listed in :data:`NOT_YET`, with how many
times each name is spelt there; the list only shrinks: a new spelling, or one more of a listed one,
fails.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

from trainables import names

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / "trainables" / "names.py"
TAG = re.compile(r"lipstudy\.\w")


def spelt_tags(path: Path, root: Path = ROOT) -> list[str]:
    """``path:line: 'value'`` (relative to ``root``) for each string constant in ``path`` that
    starts with a tag name."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and TAG.match(node.value):
            out.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return out


def test_tag_names_are_spelt_only_in_names_py():
    files = [p for pkg in ("study", "trainables", "analysis") for p in (ROOT / pkg).rglob("*.py")
             if p != HOME]
    found = [line for p in sorted(files) for line in spelt_tags(p)]
    assert not found, "tag names spelt outside trainables/names.py:\n" + "\n".join(found)


def test_a_literal_tag_and_an_f_string_tag_are_found(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('"""Writes ``lipstudy.status``."""\nA = {"lipstudy.status": 1}\n'
                    'B = f"lipstudy.best_{x}"\nC = "see lipstudy.status"\n')
    assert spelt_tags(path, tmp_path) == ["m.py:2: 'lipstudy.status'", "m.py:3: 'lipstudy.best_'"]


def mlflow_names() -> frozenset[str]:
    """Every name a run carries in MLflow, as ``trainables.names`` declares them."""
    tags = {v for k, v in vars(names).items() if k.endswith("_TAG") and isinstance(v, str)}
    return frozenset(tags | set(names.TRIAL_PARAM_TYPES) | set(names.DERIVED_PARAM_TYPES)
                     | set(names.ENVIRONMENT_PARAM_TYPES) | set(names.METRICS)
                     | set(names.OTHER_METRICS) | {names.BEST_FID_METRIC})


def spelt_names(path: Path, known: frozenset[str]) -> Counter:
    """How many times each name of ``known`` stands as a string constant in ``path`` (a bare
    string statement — a docstring — does not count, nor does an entry of ``__all__``: it names
    a Python object of the module, e.g. the function ``fid_floor``, not an MLflow name)."""
    tree = ast.parse(path.read_text(), str(path))
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    exported = {id(c) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                for c in ast.walk(node.value)}
    return Counter(node.value for node in ast.walk(tree)
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)
                   and node.value in known and id(node) not in bare | exported)


#: Files not moved to the ``names`` constants yet (their owners are reshaping them): the names
#: still spelt there and how often. Remove an entry when its file moves; never add one.
NOT_YET: dict[str, dict[str, int]] = {
}


def test_mlflow_names_are_spelt_only_in_names_py():
    known = mlflow_names()
    assert {"fid", "fid_quality", "k_sn", "alpha", names.STATUS_TAG} <= known
    files = [p for pkg in ("study", "trainables", "analysis") for p in (ROOT / pkg).rglob("*.py")
             if p != HOME]
    found = []
    for path in sorted(files):
        rel = path.relative_to(ROOT).as_posix()
        allowed = NOT_YET.get(rel, {})
        found += [f"{rel}: {name!r} x{n}" + (f" (listed: {allowed[name]})" if name in allowed else "")
                  for name, n in sorted(spelt_names(path, known).items())
                  if n > allowed.get(name, 0)]
    assert not found, ("MLflow names spelt outside trainables/names.py (use its constants):\n"
                       + "\n".join(found))


def test_a_spelt_metric_and_param_are_counted_and_a_docstring_and_all_are_not(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('"""Logs ``fid``."""\n__all__ = ["fid_floor"]\nA = {"fid": 1, "k_sn": 2}\n'
                    'B = row["fid"]\nC = "fid is low"\nD = ["fid_floor"]\n\n\ndef f():\n    "fid"\n')
    assert spelt_names(path, mlflow_names()) == Counter({"fid": 2, "k_sn": 1, "fid_floor": 1})


def test_each_name_constant_is_its_name_in_capitals():
    """``names.FID == "fid"``, ``names.K_SN == "k_sn"``, …: one constant per param and metric name,
    spelt as the name in capitals (the grouped assignments in names.py cannot swap two)."""
    values = (set(names.TRIAL_PARAM_TYPES) | set(names.DERIVED_PARAM_TYPES)
              | set(names.ENVIRONMENT_PARAM_TYPES) | set(names.METRICS) | set(names.OTHER_METRICS))
    wrong = sorted(v for v in values if getattr(names, v.upper(), None) != v)
    assert not wrong, f"no constant spelt as these names in capitals: {wrong}"
