"""Atomic file writes: a temporary file in the target's directory, flushed to disk, renamed over
the target (``os.replace``), so a reader sees the old file or the new one, never a part."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: Path, write: Callable[[IO[Any]], None], binary: bool = True) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it and rename it to ``path``;
    on any failure the temporary file is removed and the error re-raised."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
