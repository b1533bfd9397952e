"""Stop signals for a running study: SIGINT (Ctrl-C) and SIGTERM (``kill``, a service manager).

The first signal asks Ray Tune for its graceful stop (the handler ``tune.run`` installs for
SIGUSR1: stop the trials, write the experiment state one last time, return from ``fit()``), so the
study can be resumed with ``lipstudy resume``; a second signal forces the driver out
(``KeyboardInterrupt``). Which signal arrived is remembered: the CLI exits with 128 + its number
(130 for SIGINT, 143 for SIGTERM) and the study's parent run is marked interrupted.

Tune's own SIGINT handler is switched off (``TUNE_DISABLE_SIGINT_HANDLER``) while the study runs:
it would swallow the signal without telling us and print Ray's resume hint instead of ours.

Once ``fit()`` has returned (or been left), the driver only writes down what happened: each
trial's end state in MLflow and the parent run (``study.summary``), seconds. A signal then is
acknowledged on stderr and otherwise ignored (:meth:`StopSignals.closing`): stopping half-way
would leave runs RUNNING and the parent without its counts, which a resume would have to mend.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager installing the handlers (main thread only; elsewhere it does nothing)."""

    def __init__(self, announce=None):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._env_before: str | None = None
        self._announce = announce
        self._closing = False

    @property
    def interrupted(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum else None

    def _handle(self, signum, frame) -> None:
        if self._closing:
            print(f"\nlipstudy: {signal.Signals(signum).name} received while writing the trials' "
                  "end states to MLflow: finishing that first (seconds) ...", file=sys.stderr,
                  flush=True)
            return
        if self.signum is not None:  # second signal: no more waiting
            raise KeyboardInterrupt
        self.signum = signum
        if self._announce is not None:
            self._announce(signal.Signals(signum).name)
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if callable(tune_handler) and tune_handler is not self._handle:
            tune_handler(signum, frame)  # Tune's graceful stop (fit() returns)
        else:
            raise KeyboardInterrupt  # Tune is not running yet: nothing to stop gracefully

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        self._env_before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        # a SIGUSR1 handler left by an earlier fit() in this process would swallow a signal that
        # arrives before this study's fit() installs its own
        self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        return self

    def closing(self) -> None:
        """Tune is done: from now on a signal is acknowledged and ignored (module docstring)."""
        self._closing = True

    def rearm(self) -> None:
        """Install the handlers again: ``ray.init`` puts Ray's own C++ SIGTERM handler in place
        (it prints a stack trace and aborts the driver, losing the graceful stop)."""
        if self._previous:
            for sig in SIGNALS:
                signal.signal(sig, self._handle)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._env_before is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env_before
