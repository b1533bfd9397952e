"""A synthetic CelebA-like image folder for benchmarks: ``n`` JPEGs of CelebA's aligned size
(178×218, RGB), each a smooth random colour field with mild noise, so a file is about the size of
a CelebA JPEG and costs about as much to decode. Used through the trial's own
``folder:<path>`` dataset (``trainables.data.datasets``), never read here.

    python bench/jpeg_folder.py /tmp/jpegs 22000     # makes /tmp/jpegs/22000x178x218/

The folder is made once per (n, size) and reused: a ``.complete`` marker is written last.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

#: CelebA's aligned images (``img_align_celeba``): width × height.
CELEBA_SIZE = (178, 218)
MARKER = ".complete"


def _write_chunk(folder: str, start: int, stop: int, size: tuple[int, int]) -> None:
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        coarse = Image.fromarray(rng.integers(0, 256, (7, 6, 3), dtype=np.uint8))
        img = np.asarray(coarse.resize(size, Image.BICUBIC), dtype=np.int16)
        img = img + rng.integers(-6, 7, img.shape, dtype=np.int16)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"{i:06d}.jpg"), quality=90)


def make_jpeg_folder(root: str | os.PathLike, n: int, size: tuple[int, int] = CELEBA_SIZE,
                     workers: int | None = None) -> tuple[Path, bool]:
    """``root/<n>x<w>x<h>`` holding ``n`` JPEGs (made in parallel unless already complete);
    returns (folder, made now)."""
    if n < 1:
        raise ValueError(f"a synthetic folder needs at least one image, not {n}")
    folder = Path(root) / f"{n}x{size[0]}x{size[1]}"
    if (folder / MARKER).is_file():
        return folder, False
    folder.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(16, os.cpu_count() or 1))
    step = max(1, -(-n // (workers * 4)))
    with ProcessPoolExecutor(workers) as pool:
        jobs = [pool.submit(_write_chunk, str(folder), a, min(n, a + step), size)
                for a in range(0, n, step)]
        for job in jobs:
            job.result()
    (folder / MARKER).write_text(f"{n}\n")
    return folder, True


if __name__ == "__main__":
    out, made = make_jpeg_folder(sys.argv[1], int(sys.argv[2]))
    print(f"{out}: {'made' if made else 'already complete'}")
