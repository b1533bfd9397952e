"""Stop a study, with one line, on what retrying cannot mend: its MLflow tracking store gone, or
a full disk.

* A SQLite store (``sqlite:///path``) is gone when its file is deleted, replaced by another file
  (a new inode: SQLite would create an empty store at the path) or cannot be opened for writing
  (a read-only file system, permissions). Checked every ``interval_s`` seconds: a few seconds.
* A tracking server (``http(s)://``) is gone when its ``/health`` has not answered for longer than
  the trials' own retry bound (``trainables.tracking.retry.RetryPolicy.budget_s``, 300 s unless
  ``LIPSTUDY_TRACKING_RETRY_S``): a shorter outage is survived by the trials' retries, the study
  goes on. Other stores (a local ``file:`` store, Databricks) are not watched.

When the store is gone, the watcher asks Tune for the same graceful stop a SIGINT gets
(``study.interrupt``: Tune's SIGUSR1 handler saves the experiment state with the unfinished trials
as they are), so ``lipstudy resume`` continues once the store is back; ``lost`` holds the one
line naming the store and what happened.

A full disk (``ENOSPC``, errno 28) is no transient trial error: Tune's ``FailureConfig`` would
retry every trial into the same full disk. :class:`StopOnFullDisk`, a Tune callback on the driver,
reads each failed or retried trial's ``error.txt``; on ``No space left on device`` it asks for the
same graceful stop, keeping the trials resumable once space is freed (:func:`disk_full_line`).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

from ray.tune import Callback

from trainables.tracking.retry import sqlite_identity

#: The line of the full disk that stopped the study in this driver (``StopOnFullDisk``); Tune
#: restores its callbacks from the experiment state, so the instance is not ours to hold.
_FULL_DISK: list[str] = []
_ENOSPC = re.compile(r"[^\n]*(\[Errno 28\]|No space left on device)[^\n]*")


def request_graceful_stop() -> bool:
    """Tune's graceful stop (its SIGUSR1 handler, as ``study.interrupt`` uses for SIGINT), when
    Tune is running; returns whether it was asked."""
    if not callable(signal.getsignal(signal.SIGUSR1)):
        return False
    os.kill(os.getpid(), signal.SIGUSR1)
    return True


class StoreWatch:
    """Context manager: a daemon thread checking ``tracking_uri`` (see the module docstring)."""

    def __init__(self, tracking_uri: str, interval_s: float = 2.0,
                 outage_s: float | None = None, study_dir: str | None = None):
        from trainables.tracking.retry import RetryPolicy

        self.uri = tracking_uri
        self.interval_s = interval_s
        self.outage_s = RetryPolicy.from_env().budget_s if outage_s is None else outage_s
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inode: str | None = None
        self._down_since: float | None = None
        self.study_dir = study_dir

    @property
    def _sqlite_path(self) -> str | None:
        return self.uri[len("sqlite:///"):] if self.uri.startswith("sqlite:///") else None

    def check(self) -> str | None:
        """What is wrong with the store now (None: fine, or not watched)."""
        path = self._sqlite_path
        if path is not None:
            return self._check_sqlite(path)
        if self.uri.startswith(("http://", "https://")):
            return self._check_server()
        return None

    def _check_sqlite(self, path: str) -> str | None:
        try:
            os.stat(path)
        except FileNotFoundError:
            return f"tracking store {self.uri}: the database file was deleted"
        except OSError as err:
            return f"tracking store {self.uri}: cannot be read ({err.strerror})"
        inode = sqlite_identity(self.uri)  # what the trials compare with (TrialContext)
        if self._inode is None:
            self._inode = inode
        elif inode != self._inode:
            return f"tracking store {self.uri}: the database file was replaced by another"
        try:
            os.close(os.open(path, os.O_RDWR))
        except OSError as err:
            return f"tracking store {self.uri}: not writable ({err.strerror})"
        return None

    def _check_server(self) -> str | None:
        import requests

        try:
            ok = requests.get(f"{self.uri.rstrip('/')}/health", timeout=5).status_code < 500
        except requests.RequestException:
            ok = False
        now = time.monotonic()
        if ok:
            self._down_since = None
            return None
        self._down_since = self._down_since or now
        if now - self._down_since > self.outage_s:
            return (f"tracking store {self.uri}: the server has not answered for "
                    f"{now - self._down_since:.0f} s (longer than the trials' retry bound of "
                    f"{self.outage_s:.0f} s, LIPSTUDY_TRACKING_RETRY_S)")
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.study_dir is not None:
                keep_intact_states(self.study_dir)
            problem = self.check()
            if problem is None:
                continue
            self.lost = problem
            while not self._stop.is_set():  # Tune's graceful stop, once its handler is there
                if request_graceful_stop():
                    return
                self._stop.wait(0.5)
            return

    def __enter__(self) -> "StoreWatch":
        self.check()  # the SQLite file's identity at the start
        if self.study_dir is not None:  # the Tuner is built: its tuner.pkl is signed now
            keep_intact_states(self.study_dir, final=True)
            _SIGNING.update(dir=self.study_dir, stamp=None)
        self._thread = threading.Thread(target=self._run, name="lipstudy-store-watch",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        _SIGNING.clear()
        if self.study_dir is not None:  # the fit is over (finished, stopped or failed)
            keep_intact_states(self.study_dir, final=True)


#: The study directory this driver runs (set while a StoreWatch is entered): where
#: :class:`SignStates` signs; ``stamp`` is what its files were when last signed.
_SIGNING: dict = {}
_SIGN_LOCK = threading.Lock()  # the watch thread and Tune's loop sign one at a time


def _state_stamp(study_dir: str) -> tuple:
    """Name, size and mtime of each top-level file of a local study directory."""
    try:
        with os.scandir(study_dir) as entries:
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                                for e in entries if e.is_file()))
    except OSError:
        return ()


class SignStates(Callback):
    """Signs Tune's state files right after Tune writes them. ``TuneController.step`` saves the
    experiment and searcher states (``checkpoint()``) just before its callbacks'
    ``on_step_end``, so the newest state a kill leaves behind is already signed and a resume
    continues from it. The watch thread's signing every ``interval_s`` alone lags up to that
    long: a resume after a SIGKILL would then start from the older signed copy and re-run
    the trials finished since."""

    def on_step_end(self, iteration, trials, **info):
        from study.statefile import is_remote

        study_dir = _SIGNING.get("dir")
        if study_dir is None or is_remote(study_dir):
            return
        stamp = _state_stamp(study_dir)
        if stamp != _SIGNING.get("stamp"):
            keep_intact_states(study_dir)
            _SIGNING["stamp"] = stamp


def keep_intact_states(study_dir: str, final: bool = False) -> None:
    """Keep an intact copy of each of Tune's periodically rewritten states in ``study_dir`` (an
    experiment state only when it reads as whole JSON) in ``<study_dir>/lipstudy_intact/``, and
    sign them and the other pickle-bearing files with the user's key (``study.trust.sign_study``),
    so a state a full disk truncates or a kill leaves half-signed still has its last intact,
    signed version (``study.recovery.set_aside_damaged_states``, ``study.trust.verify_study``).
    Local directories only, except ``final`` (the Tuner built, its fit over): a remote one is
    then signed too, without copies. Never raises."""
    from study.limits import StudyError
    from study.statefile import is_remote
    from study.trust import sign_study

    if is_remote(study_dir) and not final:
        return
    try:
        with _SIGN_LOCK:
            sign_study(study_dir)
    except (OSError, StudyError):
        pass  # no space, or no key: the previous copies and signatures stay


def disk_full_line() -> str | None:
    """The line of the full disk that stopped this driver's study, if one did."""
    return _FULL_DISK[-1] if _FULL_DISK else None


class StopOnFullDisk(Callback):
    """Stops the study gracefully when a trial failed on a full disk (see the module docstring)."""

    def setup(self, **info):
        _FULL_DISK.clear()

    def _check(self, trial) -> None:
        try:
            with open(trial.error_file) as fh:
                text = fh.read()
        except (OSError, TypeError):  # no error file (not written: the disk may be full)
            return
        last = text.rsplit("Failure #", 1)[-1]
        found = _ENOSPC.search(last)
        if found and not _FULL_DISK:
            cause = found.group(0).strip()
            _FULL_DISK.append(f"the disk is full ({cause}); free space")
            request_graceful_stop()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check(trial)
