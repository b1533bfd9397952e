"""Console progress of a running study: one line per FID evaluation, finished or failed trial,
each with the time elapsed, the trials done and an ETA; and the MLflow end of a trial the
scheduler stops, as it stops (:class:`EndStoppedRuns`)."""

from __future__ import annotations

import math
import sys
import time

from ray.tune import Callback

from study.limits import duration_text
from study.summary import end_stopped_runs, trial_iterations
from study.tracking import StudyTracking
from trainables.names import DIVERGED, FID


def eta_text(elapsed: float, fraction: float, start_fraction: float = 0.0) -> str:
    """``ETA 3m00s``: the time left when the rest of the study goes at the rate it went since
    this driver started (``fraction - start_fraction`` of the work in ``elapsed`` seconds; a
    resumed study starts at the fraction done before); "" before any progress and at the end."""
    gained = fraction - start_fraction
    if gained <= 0 or fraction >= 1:
        return ""
    return f"ETA {duration_text(elapsed * (1 - fraction) / gained)}"


class ProgressPrinter(Callback):
    """Prints ``[done/total] trial step/iterations fid=…`` as Tune reports arrive."""

    def __init__(self, n_trials: int, iterations: int, quiet: bool = False):
        # no stream attribute: Tune pickles its callbacks with the run config
        self.n_trials, self.iterations, self.quiet = n_trials, iterations, quiet
        self.completed: set[str] = set()
        self.t0 = time.time()
        self.start_fraction: float | None = None  # of the work, when this driver started
        self.steps: dict[str, int] = {}  # the step each trial reported last (Tune updates
        # ``trial.last_result`` only after the callbacks have seen the result)

    @property
    def done(self) -> int:
        return len(self.completed)

    def _count(self, trials) -> None:
        """Trials already ended count as done: a resumed study starts at its finished ones (the
        restored callback is the pickled one, so its own count cannot be trusted)."""
        self.completed |= {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}

    def setup(self, **info):
        self.t0 = time.time()  # also on restore (the pickled callback carries the old start)
        self.start_fraction = None
        self.steps = {}

    def fraction(self, trials) -> float:
        """The share of the study's iterations done: ended trials count whole (stopped early or
        diverged too: their work is over), running ones up to their last reported step, trials
        the searcher has not suggested yet as ``iterations`` each, none of it done."""
        done = total = 0
        for t in trials:
            its = self._iterations(t)
            step = max(self.steps.get(t.trial_id, 0), (t.last_result or {}).get("step") or 0)
            total += its
            done += its if t.status in ("TERMINATED", "ERROR") else min(step, its)
        total += max(0, self.n_trials - len(trials)) * self.iterations
        return done / total if total else 0.0

    def on_trial_start(self, iteration, trials, trial, **info):
        self._count(trials)
        if self.start_fraction is None:
            self.start_fraction = self.fraction(trials)

    def _line(self, text: str, trials=()) -> None:
        if self.quiet:
            return
        elapsed = time.time() - self.t0
        eta = eta_text(elapsed, self.fraction(trials), self.start_fraction or 0.0) if trials else ""
        print(f"[{elapsed:6.0f}s {self.done}/{self.n_trials} done] {text.rstrip()}"
              f"{'  (' + eta + ')' if eta else ''}", file=sys.stdout, flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._count(trials)
        if isinstance(result.get("step"), int):
            self.steps[trial.trial_id] = result["step"]
        fid = result.get(FID)
        if result.get(DIVERGED) or result.get("crashed"):
            return
        fid_s = f"fid={fid:.2f}" if isinstance(fid, (int, float)) and math.isfinite(fid) else ""
        self._line(f"{trial} step {result.get('step')}/{self._iterations(trial)} {fid_s}", trials)

    def _iterations(self, trial) -> int:
        return trial_iterations(trial.config, self.iterations)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._count(trials)
        self.completed.add(trial.trial_id)
        res = trial.last_result or {}
        if res.get("crashed"):  # a deterministic error (trainables.ray.trainable.end_attempt)
            self._line(f"{trial} CRASHED, not retried (the same error would recur; the cause is "
                       "in the table below and on its MLflow run)", trials)
        elif res.get(DIVERGED):
            self._line(f"{trial} DIVERGED at step {res.get('step')}", trials)
        elif res.get("step") is not None and res["step"] < self._iterations(trial):
            self._line(f"{trial} stopped early at step {res['step']} (scheduler)", trials)
        else:
            self._line(f"{trial} finished", trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._count(trials)
        self.completed.add(trial.trial_id)
        self._line(f"{trial} ERROR (see {trial.local_path}/error.txt)", trials)


class EndStoppedRuns(Callback):
    """Ends a trial's MLflow runs when the scheduler (ASHA) stops it before its last step, as
    Tune completes it (``study.summary.end_stopped_runs``): FINISHED, ``stopped_early``, instead
    of RUNNING until the study's end. Tune calls ``on_trial_complete`` for a trial that returned
    or that the scheduler stopped, never for the trials a graceful stop of the study halts. A
    store that cannot be written now is a warning: the study's summary ends the runs later."""

    def __init__(self, tracking: StudyTracking, iterations: int):
        self.tracking, self.iterations = tracking, iterations

    def on_trial_complete(self, iteration, trials, trial, **info):
        try:
            end_stopped_runs(self.tracking, trial, self.iterations)
        except Exception as err:  # noqa: BLE001 - the study goes on; the summary retries
            print(f"lipstudy: warning: could not mark {trial} stopped early in MLflow now "
                  f"({type(err).__name__}: {err}); the study's summary will", file=sys.stderr,
                  flush=True)
