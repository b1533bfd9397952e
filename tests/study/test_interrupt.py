"""The driver's stop signals (``study.interrupt.StopSignals``), in this process with real signals:
the first asks Tune's graceful stop, a second forces the driver out of ``fit()``, and once the
driver is writing down what happened (``closing``) a signal is acknowledged and ignored — the
summary that ends every run is never cut short (a second Ctrl-C that came just after ``fit()``
returned used to raise ``KeyboardInterrupt`` in the middle of it)."""

from __future__ import annotations

import os
import signal

import pytest

from study.interrupt import StopSignals


def _signal_self(sig: int) -> None:
    os.kill(os.getpid(), sig)  # delivered before os.kill returns (main thread, Python handler)


def test_first_signal_asks_tunes_graceful_stop_the_second_forces_the_driver_out():
    asked: list[int] = []
    announced: list[str] = []
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job (nohup, CI)
    with StopSignals(announced.append) as stop:
        signal.signal(signal.SIGUSR1, lambda signum, frame: asked.append(signum))  # Tune's
        _signal_self(signal.SIGINT)
        assert asked == [signal.SIGINT] and announced == ["SIGINT"] and stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            _signal_self(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_a_signal_while_closing_is_acknowledged_and_ignored(capsys):
    with StopSignals() as stop:
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)
        _signal_self(signal.SIGTERM)  # the first: graceful stop
        stop.closing()
        _signal_self(signal.SIGINT)  # would be "stop at once"; the summary is being written
        _signal_self(signal.SIGTERM)
        assert stop.name == "SIGTERM"  # the signal that stopped the study stays the one told
    err = capsys.readouterr().err
    assert err.count("received while writing the trials' end states to MLflow") == 2, err


def test_a_signal_before_tune_started_stops_the_driver():
    with StopSignals() as stop:
        with pytest.raises(KeyboardInterrupt):
            _signal_self(signal.SIGINT)
        assert stop.interrupted
