"""Process helpers for the tests that kill real processes: find what a driver started (its
descendants, and anything whose command line names its private Ray temp dir) and end it by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ray_tmpdir() -> str:
    # short: Ray's Unix socket paths must stay under ~107 characters
    return tempfile.mkdtemp(prefix="lr", dir="/tmp")


def lipstudy(args: list[str], *, cwd: Path, env_extra: dict[str, str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_extra}
    fh = open(log, "w")  # noqa: SIM115 - closed by the caller through proc.stdout_file
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", *args], cwd=cwd, env=env,
                            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    proc.stdout_file = fh  # type: ignore[attr-defined]
    return proc


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = ""):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def family(pid: int) -> set[int]:
    """``pid`` and all its live descendants (from /proc)."""
    parents = {p: _ppid(p) for p in _all_pids()}
    out, frontier = set(), {pid}
    while frontier:
        out |= frontier
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in out}
    return {p for p in out if alive(p)}


def processes_naming(text: str) -> set[int]:
    return {p for p in _all_pids() if text in _cmdline(p)}


def kill_pids(pids: set[int], sig: int = signal.SIGKILL) -> None:
    me = os.getpid()
    for pid in sorted(pids):
        if pid == me:
            continue
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    t0 = time.time()
    while time.time() - t0 < 10 and any(alive(p) for p in pids if p != me):
        time.sleep(0.2)
