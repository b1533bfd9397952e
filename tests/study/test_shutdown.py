"""``lipstudy ui`` stops the MLflow server it started, with real signals to a real process.

``kill -TERM`` (a service manager), ``kill -INT`` (Ctrl-C) and SIGHUP (the terminal closed) of
``lipstudy ui``: nothing serves its port within 10 s, no process it started is left, and it exits
with 128 + the signal. ``kill -KILL`` of ``lipstudy ui`` (no chance to clean up): the server still
goes (``PR_SET_PDEATHSIG``). A server that ignores SIGTERM is SIGKILLed after the grace period.
Only 127.0.0.1 is contacted; every process is found by PID (``/proc``) and cleaned up by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import answers, free_port, listening_addresses, server_env, wait_http
from tests.study._procs import REPO, _cmdline, alive, family, kill_pids, processes_naming

STOP_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A study store with one (tagged) experiment: what ``lipstudy ui`` is pointed at."""
    from study.tracking import ensure_experiment

    root = tmp_path_factory.mktemp("ui-shutdown")
    ensure_experiment(f"sqlite:///{root / 'mlflow.db'}", "shutdown-study", str(root / "mlruns"))
    return root / "mlflow.db"


def _start_ui(db, port: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "study.cli", "ui", "--store", str(db), "--port", str(port)],
        cwd=REPO, env={**server_env(), "PYTHONUNBUFFERED": "1"}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)


def _wait(predicate, timeout: float) -> float | None:
    """Seconds until ``predicate()`` held, or None when it did not within ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def _cleanup(proc: subprocess.Popen, pids: set[int], marker: str) -> None:
    """Whatever a failed test left, by PID: ``pids`` and the processes whose command line names
    ``marker`` (a PID that has meanwhile gone to a stranger is left alone)."""
    ours = {p for p in pids | processes_naming(marker) if alive(p) and marker in _cmdline(p)}
    if proc.poll() is None:
        ours.add(proc.pid)
    kill_pids(ours)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _up(proc, port: int) -> set[int]:
    """Wait for the UI to answer; return the PIDs ``lipstudy ui`` started (the ``mlflow ui``
    process and its uvicorn server), checking they hold the port on 127.0.0.1 only."""
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=180)
    started = family(proc.pid) - {proc.pid}
    assert len(started) >= 2, started  # mlflow ui + uvicorn
    assert listening_addresses(port) == {"0100007F"}
    return started


def _marker(port: int) -> str:
    return f"--port {port}"  # in the command line of lipstudy ui, mlflow ui and uvicorn


def _stopped(port: int, started: set[int]) -> bool:
    """Nothing listens on / answers at the port, and no process we saw or that names the port
    is alive."""
    return (not listening_addresses(port) and not answers(port)
            and not any(alive(p) for p in started | processes_naming(_marker(port))))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
@pytest.mark.scenario
def test_a_signal_to_lipstudy_ui_stops_its_server(store, tmp_path, sig):
    port = free_port()
    with open(tmp_path / "ui.log", "wb") as log:
        proc = _start_ui(store, port, log)
        started: set[int] = set()
        try:
            started = _up(proc, port)
            t0 = time.monotonic()
            os.kill(proc.pid, sig)
            closed = _wait(lambda: not listening_addresses(port) and not answers(port),
                           STOP_WITHIN_S)
            took = _wait(lambda: _stopped(port, started), STOP_WITHIN_S - (closed or 0))
            left = {p for p in started if alive(p)}
            assert closed is not None and took is not None, (
                f"{sig.name}: after {STOP_WITHIN_S:.0f}s still listening: "
                f"{listening_addresses(port)}, alive: {left}")
            assert proc.wait(timeout=max(0.1, STOP_WITHIN_S - (time.monotonic() - t0))) \
                == 128 + int(sig)
            print(f"{sig.name}: port closed after {closed:.2f}s, {len(started)} child processes "
                  f"gone after {closed + took:.2f}s, lipstudy ui exited after "
                  f"{time.monotonic() - t0:.2f}s")
        finally:
            _cleanup(proc, started, _marker(port))
    out = (tmp_path / "ui.log").read_text()
    assert f"http://127.0.0.1:{port}" in out
    assert "shutdown-study: " in out and "workflowType=machine_learning" in out, out


@pytest.mark.slow
def test_the_server_does_not_outlive_a_killed_lipstudy_ui(store, tmp_path):
    """SIGKILL leaves ``lipstudy ui`` no chance to clean up: Linux tells the server (parent-death
    signal), which stops."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    port = free_port()
    with open(tmp_path / "ui.log", "wb") as log:
        proc = _start_ui(store, port, log)
        started: set[int] = set()
        try:
            started = _up(proc, port)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            closed = _wait(lambda: not listening_addresses(port) and not answers(port),
                           STOP_WITHIN_S)
            took = _wait(lambda: _stopped(port, started), STOP_WITHIN_S - (closed or 0))
            left = {p for p in started if alive(p)}
            assert closed is not None and took is not None, (
                f"after {STOP_WITHIN_S:.0f}s still listening: {listening_addresses(port)}, "
                f"alive: {left}")
            print(f"SIGKILL of lipstudy ui: port closed after {closed:.2f}s, server processes "
                  f"gone after {closed + took:.2f}s")
        finally:
            _cleanup(proc, started, _marker(port))


@pytest.mark.slow
def test_a_signal_during_start_up_leaves_nothing(store, tmp_path):
    """SIGTERM as soon as ``lipstudy ui`` says it started the server (before it answers)."""
    port = free_port()
    log_path = tmp_path / "ui.log"
    with open(log_path, "wb") as log:
        proc = _start_ui(store, port, log)
        seen: set[int] = set()
        try:
            assert _wait(lambda: "MLflow UI for" in log_path.read_text(), 60), log_path.read_text()
            seen = family(proc.pid) - {proc.pid}
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=STOP_WITHIN_S) == 128 + int(signal.SIGTERM)
            assert _wait(lambda: _stopped(port, seen), STOP_WITHIN_S) is not None
        finally:
            _cleanup(proc, seen, _marker(port))


def test_stop_process_group_kills_what_ignores_sigterm(tmp_path):
    """A server that ignores SIGTERM, with a child of its own that ignores it too: both get
    SIGKILL after the grace period, and the group is empty."""
    from study.cli import _group_members, stop_process_group

    script = ("import signal, subprocess, sys, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
              "print('ready', flush=True)\n"
              "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            start_new_session=True)
    pids: set[int] = set()
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert _wait(lambda: len(family(proc.pid)) == 2, 10) is not None
        pids = family(proc.pid)
        t0 = time.monotonic()
        stop_process_group(proc, signal.SIGTERM, grace=1.0)
        took = time.monotonic() - t0
        assert proc.returncode == -signal.SIGKILL
        assert not any(alive(p) for p in pids) and not _group_members(proc.pid)
        assert 1.0 <= took < 7.0, took
    finally:
        proc.stdout.close()
        _cleanup(proc, pids, "time.sleep(120)")
