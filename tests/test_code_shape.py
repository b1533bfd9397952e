"""The code's shape: no module of ``trainables``, ``study`` or ``analysis`` over
:data:`MAX_MODULE_LINES` lines, no function (or method) over :data:`MAX_FUNCTION_LINES`.

A function's length runs from its ``def`` line to its last line (its docstring and any function
nested in it included, decorators not); a module's is its line count. The source is parsed with
:mod:`ast`, nothing is imported. :data:`NOT_YET` names the functions whose owners are reshaping
them, each at the length it has now: it only shrinks — one that grows fails, as does any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_import_cycles import PACKAGES, ROOT

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

#: ``file:function`` → its length now (files being reshaped by their owners; remove when done).
NOT_YET: dict[str, int] = {}


def too_long(root: Path, packages=PACKAGES) -> dict[str, int]:
    """``file`` (a module) or ``file:function`` → its length, for each one over the limits."""
    out: dict[str, int] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            text = path.read_text()
            if len(text.splitlines()) > MAX_MODULE_LINES:
                out[rel] = len(text.splitlines())
            for node in ast.walk(ast.parse(text, str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        key = f"{rel}:{node.name}"
                        out[key] = max(length, out.get(key, 0))
    return out


def test_no_long_module_or_function():
    bad = [f"{where}: {n} lines" + (f" (listed at {NOT_YET[where]})" if where in NOT_YET else "")
           for where, n in too_long(ROOT).items() if n > NOT_YET.get(where, 0)]
    assert not bad, (f"over {MAX_MODULE_LINES} lines a module / {MAX_FUNCTION_LINES} a function "
                     "(split by job):\n" + "\n".join(bad))


def test_a_long_function_and_module_are_found(tmp_path):
    pkg = tmp_path / "study"
    pkg.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    (pkg / "ok.py").write_text(f"@staticmethod\ndef f():\n{body}")  # 60 lines: the limit
    (pkg / "long.py").write_text(f"class C:\n    def g(self):\n    {body.replace(chr(10), chr(10) + '    ')}"
                                 "    y = 1\n")
    (pkg / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert too_long(tmp_path, ("study",)) == {"study/long.py:g": MAX_FUNCTION_LINES + 1,
                                              "study/big.py": MAX_MODULE_LINES + 1}
