"""The IDX file format of MNIST / Fashion-MNIST (LeCun et al.), read with numpy and the standard
library only (so the tools that use it run without torch)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

__all__ = ["read_idx"]


def read_idx(path: Path) -> np.ndarray:
    """Read a (optionally gzip'ed) IDX file of unsigned bytes (magic 0x00000801 / 0x00000803)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {np.prod(shape)} values for shape {shape}, got {arr.size}")
    return arr.reshape(shape).copy()
