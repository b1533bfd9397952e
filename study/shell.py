"""Commands printed for a person to type (``lipstudy resume <dir>``, ``lipstudy ui --store ...``),
spelled so that they run as typed in the shell they were printed in."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def _lipstudy() -> str:
    """How to call this ``lipstudy``: the bare name when it is the one on PATH; else the console
    script beside this interpreter (``.venv/bin/lipstudy`` after ``make study``, which does not
    activate the venv), relative to the working directory when inside it; else
    ``python -m study.cli``."""
    here = Path(sys.executable).parent / "lipstudy"  # not resolved: a venv's python is a symlink
    found = shutil.which("lipstudy")
    if found and (not here.is_file() or os.path.realpath(found) == os.path.realpath(here)):
        return "lipstudy"
    if not here.is_file():
        return f"{shlex.quote(sys.executable)} -m study.cli"
    try:  # a relative path with a slash runs as typed from here
        return shlex.quote(str(here.absolute().relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(here.absolute()))


def lipstudy_command(*args: str) -> str:
    """``lipstudy <args>`` as it runs when typed here (arguments quoted for the shell)."""
    return " ".join([_lipstudy(), *(shlex.quote(str(a)) for a in args)])
