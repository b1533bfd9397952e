"""The end of a study execution: each trial's true state, in MLflow and on the console.

States: ``finished``, ``stopped early`` (by the ASHA scheduler: a full, FINISHED run that ends
before ``iterations``), ``diverged`` (NaN/inf: recorded, the study goes on), ``crashed`` (the trial
raised after its retries), ``interrupted`` (stopped by a signal at step N; ``lipstudy resume``
continues it from its last checkpoint), ``not started``. A trial is named by its own
configuration (``ns-sn-k1-a1-s0``); one Tune never created is still listed, from the study's grid.

The MLflow side: a child run left RUNNING by an interrupted trial becomes KILLED with
``lipstudy.status = interrupted`` and ``lipstudy.interrupted_step``; the parent run gets
``lipstudy.status`` (finished / interrupted), the number of trials per state, and is FINISHED or
KILLED accordingly (a resume sets it RUNNING again).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from study.recovery import STATUS_TAG, TRIAL_ID_TAG, child_runs, saved_trials
from study.tracking import StudyTracking

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STATES = ("finished", "stopped early", "diverged", "crashed", "interrupted", "not started")


@dataclass
class TrialSummary:
    name: str
    config: dict[str, Any]
    status: str  # one of STATES
    fid: float | None
    step: int | None
    error: str | None = None
    trial_id: str | None = None
    modes: float | None = None  # 2-D toys: modes_covered / hq_share of the last evaluation
    hq: float | None = None
    run_id: str | None = None


@dataclass
class StudyOutcome:
    tracking: StudyTracking
    storage_path: str  # the study directory (Ray experiment dir)
    trials: list[TrialSummary] = field(default_factory=list)
    wall_s: float = 0.0
    interrupted_by: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the driver
    not_suggested: int = 0  # optuna/random: trials the searcher had not asked for yet
    extractors: list[str] = field(default_factory=list)  # resolved fid_extractor params
    reconciliation: dict[str, list[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.not_suggested == 0 and all(
            t.status in ("finished", "stopped early", "diverged", "crashed") for t in self.trials)

    def counts(self) -> dict[str, int]:
        out = {s: sum(t.status == s for t in self.trials) for s in STATES}
        out["not started"] += self.not_suggested
        return out


def clean_error(error: Any) -> str | None:
    """First meaningful line of a trial's error, without terminal colour codes."""
    if error is None:
        return None
    lines = [ANSI.sub("", ln).strip() for ln in str(error).splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[0] if lines else type(error).__name__


def _name(cfg: dict[str, Any] | None, fallback: str) -> str:
    if not cfg:
        return fallback
    from trainables.ray_trainable import trial_config, trial_run_name

    try:
        return trial_run_name(trial_config(cfg))
    except Exception:  # noqa: BLE001 - a name is never worth a crash
        return fallback


def _last_step(client, run) -> int | None:
    for key in ("loss_d", "fid", "modes_covered"):
        if key in run.data.metrics:
            hist = client.get_metric_history(run.info.run_id, key)
            if hist:
                return max(m.step for m in hist)
    return None


def _canon(cfg: dict[str, Any]) -> str:
    return json.dumps(cfg, sort_keys=True, default=str)


def summarize(results, spec, tracking: StudyTracking, study_dir: str, t0: float,
              interrupted_by: str | None = None) -> StudyOutcome:
    """Summarise a returned ``Tuner.fit()`` (``results``; None when the driver was stopped before
    Tune started) and write every trial's state to MLflow."""
    from trainables.ray_trainable import trial_config

    client = tracking.client()
    runs = {r.data.tags.get(TRIAL_ID_TAG): r for r in child_runs(tracking)}
    # after a graceful stop Tune marks its in-memory trials TERMINATED; the state it saved for
    # the resume keeps the truth (RUNNING / PENDING for the ones that did not finish)
    saved = saved_trials(study_dir)
    outcome = StudyOutcome(tracking, study_dir, interrupted_by=interrupted_by)
    trials = list(getattr(getattr(results, "_experiment_analysis", None), "trials", None) or [])
    seen_cfgs = set()
    for trial, res in zip(trials, results or []):
        raw = trial.config or {}
        seen_cfgs.add(_canon(raw.get("trial") or {}))
        metrics = res.metrics or {}
        run = runs.get(trial.trial_id)
        summary = TrialSummary(name=_name(raw, run.info.run_name if run else trial.trial_id),
                               config={}, status="not started", fid=None, step=None,
                               trial_id=trial.trial_id, run_id=run.info.run_id if run else None)
        try:
            summary.config = trial_config(raw) if raw else {}
        except Exception:  # noqa: BLE001
            summary.config = dict(raw.get("trial") or {})
        status = saved[trial.trial_id].status if trial.trial_id in saved else trial.status
        if res.error is not None:
            summary.status, summary.error = "crashed", clean_error(res.error)
        elif status == "TERMINATED":
            summary.status = "diverged" if metrics.get("diverged") else "finished"
            if (summary.status == "finished" and run is not None
                    and run.info.status != "FINISHED"):  # the scheduler stopped it (ASHA)
                summary.status = "stopped early"
                client.set_tag(run.info.run_id, STATUS_TAG, "stopped_early")
                client.set_tag(run.info.run_id, "lipstudy.stopped_step", metrics.get("step"))
                client.set_terminated(run.info.run_id, "FINISHED")
        elif run is not None and run.data.metrics:
            summary.status = "interrupted"
        fid = metrics.get("fid")
        summary.fid = float(fid) if isinstance(fid, (int, float)) and math.isfinite(fid) else None
        summary.step = metrics.get("step")
        summary.modes, summary.hq = metrics.get("modes_covered"), metrics.get("hq_share")
        if summary.status == "interrupted":
            summary.step = _last_step(client, run)
        if run is not None and run.info.status != "FINISHED" and summary.status in (
                "interrupted", "not started"):  # RUNNING, or FAILED by the stop itself
            client.set_tag(run.info.run_id, STATUS_TAG, "interrupted")
            if summary.step is not None:
                client.set_tag(run.info.run_id, "lipstudy.interrupted_step", summary.step)
            client.set_terminated(run.info.run_id, "KILLED")
        outcome.trials.append(summary)
    if spec.search == "grid":
        from study.spec import check_study

        for cfg in check_study(spec):
            if _canon(cfg) not in seen_cfgs:
                outcome.trials.append(TrialSummary(
                    name=_name({"trial": cfg}, "?"), config=cfg, status="not started",
                    fid=None, step=None))
    else:
        from study.tuner import n_trials

        outcome.not_suggested = max(0, n_trials(spec) - len(trials))
    outcome.extractors = sorted({r.data.params["fid_extractor"] for r in runs.values()
                                 if "fid_extractor" in r.data.params})
    outcome.wall_s = time.time() - t0
    _mark_parent(client, tracking, outcome)
    return outcome


def _mark_parent(client, tracking: StudyTracking, outcome: StudyOutcome) -> None:
    counts = outcome.counts()
    pid = tracking.parent_run_id
    client.set_tag(pid, "lipstudy.trials", len(outcome.trials) + outcome.not_suggested)
    client.set_tag(pid, "lipstudy.errored_trials", counts["crashed"])
    for state, n in counts.items():
        client.set_tag(pid, f"lipstudy.trials_{state.replace(' ', '_')}", n)
    if outcome.complete:
        client.set_tag(pid, STATUS_TAG, "finished")
        client.set_terminated(pid, "FINISHED")
    else:
        client.set_tag(pid, STATUS_TAG, "interrupted")
        if outcome.interrupted_by:
            client.set_tag(pid, "lipstudy.interrupted_by", outcome.interrupted_by)
        client.set_terminated(pid, "KILLED")


def print_summary(outcome: StudyOutcome) -> None:
    """The end-of-study table, the resolved FID extractor and what to do next."""
    order = {s: i for i, s in enumerate(STATES)}
    rows = sorted(outcome.trials, key=lambda t: (order[t.status],
                                                 t.fid if t.fid is not None else math.inf))
    toys = any(t.modes is not None for t in rows)
    width = max([32] + [len(t.name) + 1 for t in rows])
    head = f"{'trial':{width}s} {'status':24s} {'fid':>9s} {'steps':>7s}"
    print()
    print(head + (f" {'modes':>5s} {'hq':>5s}" if toys else ""))
    for t in rows:
        status = t.status
        if t.status in ("interrupted", "stopped early") and t.step is not None:
            status = f"{t.status} at step {int(t.step)}"
        fid = f"{t.fid:9.2f}" if t.fid is not None else f"{'-':>9s}"
        step = f"{int(t.step):7d}" if t.step is not None else f"{'-':>7s}"
        line = f"{t.name:{width}s} {status:24s} {fid} {step}"
        if toys:
            modes = f"{t.modes:5.0f}" if t.modes is not None else f"{'-':>5s}"
            hq = f"{t.hq:5.2f}" if t.hq is not None else f"{'-':>5s}"
            line += f" {modes} {hq}"
        print(line)
        if t.error:
            print(f"    {t.error}")
    if outcome.not_suggested:
        print(f"({outcome.not_suggested} more trial(s) not started: the searcher suggests them "
              "on resume)")
    counts = outcome.counts()
    print()
    told = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    extractor = ", ".join(outcome.extractors) or "none evaluated yet"
    print(f"{len(rows) + outcome.not_suggested} trials ({told}) in {outcome.wall_s / 60:.1f} min; "
          f"FID extractor: {extractor}")
    if not outcome.complete:
        why = f"stopped by {outcome.interrupted_by}" if outcome.interrupted_by else "incomplete"
        print(f"The study is INTERRUPTED ({why}). Continue it with:\n"
              f"    lipstudy resume {outcome.storage_path}")
    else:
        print(f"Study directory:  {outcome.storage_path}")
    _print_where(outcome)


def _print_where(outcome: StudyOutcome) -> None:
    from study.tuner import read_state
    from study.spec import StudyError

    try:
        optuna_loc = read_state(outcome.storage_path).get("optuna_storage")
    except StudyError:
        optuna_loc = None
    if optuna_loc:
        print(f"Optuna study:     optuna-dashboard {optuna_loc}")
    uri = outcome.tracking.tracking_uri
    print(f"MLflow runs:      {uri} (experiment id {outcome.tracking.experiment_id})")
    if uri.startswith("sqlite:") or "://" not in uri:
        print(f"Open them with:   lipstudy ui --store {uri}   (MLflow UI on 127.0.0.1:5000)")
    else:
        print(f"Open them in the MLflow UI of {uri}")
