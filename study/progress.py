"""Console progress of a running study: one line per FID evaluation, finished or failed trial."""

from __future__ import annotations

import math
import sys
import time

from ray.tune import Callback


class ProgressPrinter(Callback):
    """Prints ``[done/total] trial step/iterations fid=…`` as Tune reports arrive."""

    def __init__(self, n_trials: int, iterations: int, quiet: bool = False):
        # no stream attribute: Tune pickles its callbacks with the run config
        self.n_trials, self.iterations, self.quiet = n_trials, iterations, quiet
        self.completed: set[str] = set()
        self.t0 = time.time()

    @property
    def done(self) -> int:
        return len(self.completed)

    def _count(self, trials) -> None:
        """Trials already ended count as done: a resumed study starts at its finished ones (the
        restored callback is the pickled one, so its own count cannot be trusted)."""
        self.completed |= {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}

    def setup(self, **info):
        self.t0 = time.time()  # also on restore (the pickled callback carries the old start)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._count(trials)

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        elapsed = time.time() - self.t0
        print(f"[{elapsed:6.0f}s {self.done}/{self.n_trials} done] {text}", file=sys.stdout,
              flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._count(trials)
        fid = result.get("fid")
        if result.get("diverged"):
            return
        fid_s = f"fid={fid:.2f}" if isinstance(fid, (int, float)) and math.isfinite(fid) else ""
        self._line(f"{trial} step {result.get('step')}/{self._iterations(trial)} {fid_s}")

    def _iterations(self, trial) -> int:
        """The trial's own ``iterations`` (grid blocks may override the study's fixed value)."""
        cfg = trial.config or {}
        return (cfg.get("iterations") or (cfg.get("trial") or {}).get("iterations")
                or self.iterations)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._count(trials)
        self.completed.add(trial.trial_id)
        res = trial.last_result or {}
        if res.get("diverged"):
            self._line(f"{trial} DIVERGED at step {res.get('step')}")
        elif res.get("step") is not None and res["step"] < self._iterations(trial):
            self._line(f"{trial} stopped early at step {res['step']} (scheduler)")
        else:
            self._line(f"{trial} finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._count(trials)
        self.completed.add(trial.trial_id)
        self._line(f"{trial} ERROR (see {trial.local_path}/error.txt)")
