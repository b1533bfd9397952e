"""The study's own state file, written atomically and read back with one-line errors, and the
checks on a storage path made before a study's parent run opens.

``lipstudy_study.json`` in the study directory holds what ``lipstudy resume`` needs: the study
file, the MLflow experiment and parent run ids, the storage and Optuna locations. It is written to
a temporary file in the same directory and renamed over the old one (``os.replace``, atomic on
POSIX file systems), so a full disk or a killed driver leaves the previous version, never a
truncated one. On object stores (``s3://``, ``gs://``) a put is atomic already.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from study.limits import StudyError
from trainables.atomic import write_atomic

STATE_FILE = "lipstudy_study.json"
#: In the study directory: the last readable copies of Tune's experiment states
#: (``study.store_watch.keep_intact_states``).
INTACT_DIR = "lipstudy_intact"
#: What a resume reads from the state file; a file without one of them is damaged.
REQUIRED_KEYS = ("study_text", "tracking_uri", "experiment_id", "parent_run_id", "storage_path",
                 "run_name")


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> Path:
    return Path(path.removeprefix("file://")).resolve()


def fs_and_path(path: str):
    """A pyarrow filesystem and path for a local directory or a storage URI (s3://, gs://)."""
    import pyarrow.fs

    if is_remote(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), str(local_path(path))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same directory, flushed
    to disk and renamed over ``path``: readers see the old file or the new one, never a part."""
    write_atomic(path, lambda fh: json.dump(data, fh, indent=1), binary=False)


def write_state(study_dir: str, state: dict[str, Any]) -> None:
    """Write the study's state file (atomically where the storage is a local file system)."""
    if is_remote(study_dir):
        fs, path = fs_and_path(study_dir)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{STATE_FILE}") as fh:
            fh.write(json.dumps(state, indent=1).encode())
        return
    directory = local_path(study_dir)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / STATE_FILE, state)


def read_state(study_dir: str) -> dict[str, Any]:
    """The study's state; a :class:`StudyError` line when there is none or it is damaged
    (truncated, empty, not JSON, keys missing)."""
    fs, path = fs_and_path(study_dir)
    where = f"{study_dir.rstrip('/')}/{STATE_FILE}"
    try:
        with fs.open_input_stream(f"{path}/{STATE_FILE}") as fh:
            raw = fh.read()
    except (FileNotFoundError, OSError):
        raise StudyError(f"{study_dir}: not a lipstudy study directory (no {STATE_FILE}; "
                         "give the directory `lipstudy run` printed as 'Study directory')") from None
    try:
        state = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError) as err:
        what = "empty" if not raw.strip() else f"not valid JSON ({err})"
        raise StudyError(f"{where}: damaged ({what}); the study file is also the parent run's "
                         "artifact study.yaml in MLflow") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise StudyError(f"{where}: damaged (no {', '.join(missing)}); the study file is also "
                         "the parent run's artifact study.yaml in MLflow")
    return state


def check_storage(storage: str) -> None:
    """Refuse, with one line, a local storage path that is not a writable directory (a file, a
    read-only file system, no permission), before anything is written. A path that does not
    exist yet is checked at its nearest existing parent, which must be a writable directory."""
    if is_remote(storage):
        return
    path = local_path(storage)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == path else f" (its parent {probe} is a file)"
        raise StudyError(f"storage path {path}: not a directory{where}")
    try:  # access() says no for a read-only file system, but root passes every mode check
        fd, tmp = tempfile.mkstemp(prefix=".lipstudy-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        reason = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  errno.ENOSPC: "no space left on device"}.get(err.errno, err.strerror)
        where = "" if probe == path else f" (at {probe}, the nearest existing parent)"
        raise StudyError(f"storage path {path}: not writable{where}: {reason}") from None
