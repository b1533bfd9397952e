"""Every ``lipstudy.*`` MLflow tag name is spelt once, in ``trainables/names.py``.

Writers (``study``, ``trainables``) and the reader (``analysis``) take the names from there; a
string constant (or the literal head of an f-string) starting with ``lipstudy.`` anywhere else in
those packages is a second spelling that can drift from the first. Docstrings and comments that
mention a tag in prose do not start with it and are not counted.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

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
