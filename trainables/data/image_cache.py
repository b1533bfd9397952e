"""Decode-once image caches, and the file lock that guards them and dataset downloads.

CelebA and ``folder:<path>`` datasets are compressed image files. Decoding them (PIL: RGB, center
crop, bilinear antialiased resize) per training batch keeps the host busy and the accelerator
waiting, so :func:`cached_images` decodes a split once, through the very same per-item transform,
into a uint8 N×C×R×R array saved as a ``.npy`` file. Later loads memory-map that file: nothing is
decoded again, and the pixels are the per-item decoder's, bit for bit.

**Key.** One file per (dataset, split, crop, resolution) and source fingerprint: the fingerprint
hashes the split's ordered file list with each file's size and modification time (and the cache
format and Pillow version, which fix the decoded bits), so adding, removing, replacing or touching
an image re-decodes the split. Files of the same key with an older fingerprint are removed when
the new one is written.

**Where.** ``$LIPSTUDY_IMAGE_CACHE/<source tag>/`` when that variable is set (e.g. a node's local
disk when the data sits on a network share). Otherwise a ``.lipstudy-cache`` folder next to the
data (``<data_root>/celeba/.lipstudy-cache``; ``<path>/.lipstudy-cache`` for ``folder:<path>``)
when it can be written and has room, else ``$XDG_CACHE_HOME/lipstudy/image-cache/<source tag>/``
(default ``~/.cache``). A cache found in any of these is used. When none can hold it (read-only,
or a split too large for the free space, e.g. a big folder at 1024 pixels) a line says so and the
caller decodes per batch instead.

**Concurrency.** Trials that start together on one node build a cache once: the builder holds an
exclusive ``fcntl.flock`` on ``<key>.lock`` beside the cache, writes to a temporary file and
renames it into place, so readers see either no file or a complete one; the others wait on the
lock and then map the finished file. :func:`file_lock` is the same lock, used around
torchvision's downloads into a data root (:mod:`trainables.data.sources`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import PIL

from trainables.data.imagesets import DatasetError, ItemSource

__all__ = ["CACHE_DIRNAME", "cache_dirs", "cached_images", "decode_into", "file_lock",
           "fingerprint"]

#: The cache folder's name next to the data.
CACHE_DIRNAME = ".lipstudy-cache"
#: Bumped when the cached layout or the decoding changes (part of every fingerprint).
CACHE_FORMAT = 1
#: Most threads that decode a split (Pillow releases the GIL while decoding and resizing).
MAX_DECODE_THREADS = 16


@contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    When another process holds it, one line on stderr says who is waited for (``what``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process {what} (lock {path})", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fingerprint(base: Path, names: Sequence[str], extra: str = "") -> str:
    """Hash of the ordered files ``base/name`` (name, size, mtime), the cache format, the Pillow
    version and ``extra``: equal exactly when the decoded split would be. A listed file that
    cannot be read is a :class:`DatasetError` naming it."""
    h = hashlib.sha256(f"{CACHE_FORMAT}|{PIL.__version__}|{extra}".encode())
    for name in names:
        try:
            st = (base / name).stat()
        except OSError as exc:
            raise DatasetError(f"cannot read image {base / name}: {exc.strerror or exc}") from exc
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _source_tag(source: Path) -> str:
    """A folder name unique to ``source`` (its last component and a hash of its absolute path)."""
    path = str(Path(source).expanduser().resolve())
    return f"{Path(path).name or 'root'}-{hashlib.sha256(path.encode()).hexdigest()[:12]}"


def cache_dirs(near: Path, source: Path) -> list[Path]:
    """Where a cache of the data in ``source`` may live, in order of preference (module
    docstring): ``$LIPSTUDY_IMAGE_CACHE`` alone when set, else ``near/.lipstudy-cache`` and the
    user cache directory."""
    env = os.environ.get("LIPSTUDY_IMAGE_CACHE")
    if env:
        return [Path(env).expanduser() / _source_tag(source)]
    user = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return [Path(near) / CACHE_DIRNAME, user / "lipstudy" / "image-cache" / _source_tag(source)]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _open(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array memory-mapped (copy-on-write, so torch can wrap it), or None when the file
    is missing or is not a uint8 array of ``shape``."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None
    if arr.dtype != np.uint8 or arr.shape != shape:
        return None
    return arr


class _Progress:
    """A progress bar on stderr: tqdm when installed, else a line every few seconds with ETA."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.t0 = self.last = time.monotonic()
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, desc=label, unit="img", file=sys.stderr, mininterval=1.0)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= 5.0 or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"{self.label}: {self.done}/{self.total} images, {rate:.0f}/s, "
                  f"ETA {eta:.0f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _decode_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DECODE_THREADS))


def decode_into(items: ItemSource, out: np.ndarray, label: str, chunk: int = 128) -> None:
    """``out[i] = items[i]`` for every item (uint8 C×R×R tensors), in threads, with progress."""
    n = len(out)
    progress = _Progress(n, label)

    def work(lo: int) -> int:
        hi = min(lo + chunk, n)
        for i in range(lo, hi):
            try:
                img = items[i]
            except (OSError, ValueError) as exc:  # PIL: unreadable or truncated file
                raise DatasetError(f"{label}: image {i} cannot be decoded: {exc}") from exc
            out[i] = img.numpy()
        return hi - lo

    try:
        with ThreadPoolExecutor(_decode_threads()) as pool:
            for done in pool.map(work, range(0, n, chunk)):
                progress.update(done)
    finally:
        progress.close()


def _build(items: ItemSource, path: Path, shape: tuple[int, ...], label: str) -> None:
    """Decode into ``path`` through a temporary file renamed into place (readers never see a
    partial file)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        decode_into(items, out, label)
        out.flush()
        del out
        os.replace(tmp, path)
    except OSError as exc:
        raise DatasetError(f"{label}: cannot write the image cache {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(folder: Path, key: str, keep: str) -> None:
    """Other fingerprints of ``key`` and temporary files left by killed builders (the caller
    holds the key's lock, so no builder is running)."""
    for p in folder.glob(f"{key}-*.npy*"):
        if p.name != keep:
            p.unlink(missing_ok=True)


def cached_images(items: ItemSource, key: str, shape: tuple[int, int, int], near: Path,
                  source: Path, fp: str, label: str) -> np.ndarray | None:
    """uint8 ``len(items)``×C×R×R: ``items`` decoded once into the cache (module docstring).

    ``key`` names dataset, split, crop and resolution (a file-name-safe string); ``fp`` is the
    source's :func:`fingerprint`; ``near`` the folder the cache goes beside, ``source`` the data
    folder (tags the user-cache location); ``label`` is what progress and messages call it.
    Returns the memory-mapped cache, or None when no cache folder can hold it (said on stderr)."""
    full = (len(items), *shape)
    name = f"{key}-{fp}.npy"
    dirs = cache_dirs(near, source)
    for folder in dirs:
        if (arr := _open(folder / name, full)) is not None:
            return arr
    need = int(np.prod(full)) + 2**20  # the pixels and the .npy header, with room to spare
    folder = next((d for d in dirs if _writable(d) and _free_bytes(d) >= need), None)
    if folder is None:
        print(f"{label}: no image cache folder is writable with {need / 2**30:.2f} GiB free "
              f"({' or '.join(map(str, dirs))}); decoding every batch instead",
              file=sys.stderr, flush=True)
        return None
    with file_lock(folder / f"{key}.lock", f"building the image cache of {label}"):
        arr = _open(folder / name, full)
        if arr is None:
            _build(items, folder / name, full, f"decoding {label}")
            _remove_stale(folder, key, name)
            arr = _open(folder / name, full)
    if arr is None:
        raise DatasetError(f"{label}: the image cache {folder / name} was written but cannot be "
                           "read back")
    return arr
