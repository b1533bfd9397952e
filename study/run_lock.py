"""One execution of a study at a time in a storage path: an exclusive ``flock`` on
``<storage path>/.<study name>.lock``, held by ``run`` and ``resume`` for their whole length.

Two ``lipstudy run`` of the same study started together would otherwise both pick the same study
directory (``study.tuner.study_run_name``), open two MLflow parent runs of the same name and write
one Tune experiment with two drivers; a ``resume`` beside a ``run`` of the same study likewise.
The second is refused with one line naming the holder. The lock is the kernel's: it goes with the
file descriptor, so it is released when the driver ends however it ends (a crash, SIGKILL) and a
stale lock file (left by a killed driver) holds nothing. The descriptor is not inherited by the processes Ray starts
(``O_CLOEXEC``). Object-store storage (``s3://``, ``gs://``) has no such lock and is not locked.
"""

from __future__ import annotations

import fcntl
import functools
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from study.limits import StudyError
from study.statefile import is_remote, local_path


def lock_path(storage: str, name: str) -> Path:
    return local_path(storage) / f".{name}.lock"


@contextmanager
def study_lock(storage: str, name: str) -> Iterator[None]:
    """Hold the study's lock in ``storage``; a :class:`StudyError` line when another process
    holds it. The lock file is removed on the way out (while still held), and so are the storage
    directories it had to create when nothing else was written into them (a study refused by the
    cluster checks leaves no directory behind)."""
    if is_remote(storage):
        yield
        return
    path = lock_path(storage, name)
    created = _missing_dirs(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, name)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        try:
            path.unlink()  # still held: a process waiting on this inode sees it replaced
        except OSError:
            pass
        os.close(fd)  # releases the lock
        for directory in created:  # deepest first; one that holds anything stays
            try:
                directory.rmdir()
            except OSError:
                break


def _missing_dirs(directory: Path) -> list[Path]:
    """``directory`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _acquire(path: Path, name: str) -> int:
    """An open descriptor of ``path`` holding its exclusive lock. The file a holder removes on
    its way out may have been opened by another process before: a lock won on such a removed
    file is dropped and taken again on the file now at ``path``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StudyError(
                f"study {name!r} is already running in {path.parent} ({holder}, lock {path}): "
                "wait for it to end, or give this run another --storage-path") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def locked(key: Callable[..., tuple[str, str] | None]):
    """Decorator: run the function under :func:`study_lock` of ``key(*args, **kwargs)``
    (``(storage, study name)``; None: nothing to lock)."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            where = key(*args, **kwargs)
            if where is None:
                return fn(*args, **kwargs)
            with study_lock(*where):
                return fn(*args, **kwargs)
        return inner
    return wrap


def resume_lock_key(study_dir: str, *_, **__) -> tuple[str, str] | None:
    """The lock a resume of ``study_dir`` takes: the one its study's runs take, in the storage
    path that holds the directory (the study's name from its state file)."""
    from study.spec import parse_study_unchecked
    from study.statefile import read_state

    if is_remote(study_dir):
        return None
    state = read_state(study_dir)
    spec = parse_study_unchecked(str(state.get("study_text", "")))
    directory = local_path(study_dir)
    return str(directory.parent), spec.name if spec is not None else directory.name
