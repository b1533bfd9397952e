"""The end of a study execution: each trial's true state, in MLflow and on the console.

States: ``finished``, ``stopped early`` (by the ASHA scheduler: a full, FINISHED run that ends
before ``iterations``), ``diverged`` (NaN/inf: recorded, the study goes on), ``crashed`` (the trial
raised after its retries, or once on an error a retry would meet again:
``trainables.ray.trainable.end_attempt``), ``interrupted`` (stopped by a signal at step N;
``lipstudy resume`` continues it from its last checkpoint), ``not started``. A trial is named by
its own configuration (``ns-sn-k1-a1-s0``); one Tune never created is still listed, from the
study's grid.

A driver that left ``fit()`` without its result grid (a second signal: "stop at once"; a full
disk) takes each trial's state from Tune's last saved experiment state instead, as a resume does.

The MLflow side: a child run left RUNNING by an interrupted trial becomes KILLED with
``lipstudy.status = interrupted`` and ``lipstudy.interrupted_step`` (the table shows the values
the run last logged); a trial Tune stopped leaves its run RUNNING for this summary to end
(``trainables.tracking.trial_runs.end_attempt``): one writer of the end state; the parent run gets
``lipstudy.status`` (finished / interrupted), the number of trials per state, and is FINISHED or
KILLED accordingly (a resume sets it RUNNING again).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from study.recovery import child_runs, saved_trials
from study.shell import lipstudy_command
from study.tracking import StudyTracking
from trainables import names
from trainables.names import (BEST_FID_EXTRACTOR_TAG, BEST_FID_METRIC, BEST_KEY_PREFIX,
                              BEST_RUN_TAG, BEST_TRIAL_TAG, DATASET, DIVERGED, FID, FID_EXTRACTOR,
                              HQ_SHARE, ITERATIONS, LOSS_D, MODES_COVERED, STATUS_TAG,
                              TRIAL_ID_TAG)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STATES = ("finished", "stopped early", DIVERGED, "crashed", "interrupted", "not started")


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
    stopped: str | None = None  # what stopped the study (its store gone, a full disk): one line
    from_saved_state: bool = False  # no result grid (stopped at once): Tune's last saved state

    @property
    def complete(self) -> bool:
        return not self.stopped and self.not_suggested == 0 and all(
            t.status in ("finished", "stopped early", DIVERGED, "crashed") for t in self.trials)

    def counts(self) -> dict[str, int]:
        out = {s: sum(t.status == s for t in self.trials) for s in STATES}
        out["not started"] += self.not_suggested
        return out


def clean_error(error: Any) -> str | None:
    """The cause's own line of a trial's error, without terminal colour codes (for Ray's task
    errors, the exception line under its traceback: ``trainables.ray.checkpoints.cause_line``)."""
    from trainables.ray.checkpoints import cause_line

    return cause_line(error)


def _name(cfg: dict[str, Any] | None, fallback: str) -> str:
    if not cfg:
        return fallback
    from trainables.ray.trainable import trial_config, trial_run_name

    try:
        return trial_run_name(trial_config(cfg))
    except Exception:  # noqa: BLE001 - a name is never worth a crash
        return fallback


def _last_step(client, run) -> int | None:
    for key in (LOSS_D, FID, MODES_COVERED):
        if key in run.data.metrics:
            hist = client.get_metric_history(run.info.run_id, key)
            if hist:
                return max(m.step for m in hist)
    return None


def _last_logged(summary: TrialSummary, metrics: dict[str, float]) -> None:
    """An interrupted trial's FID / modes / hq as its MLflow run last logged them (MLflow's
    latest value of each metric), which may be past Tune's last report: the trial logs an
    evaluation before it reports it with its checkpoint."""
    fid = metrics.get(FID)
    if isinstance(fid, (int, float)) and math.isfinite(fid):
        summary.fid = float(fid)
    summary.modes = metrics.get(MODES_COVERED, summary.modes)
    summary.hq = metrics.get(HQ_SHARE, summary.hq)


def _canon(cfg: dict[str, Any]) -> str:
    return json.dumps(cfg, sort_keys=True, default=str)


def _members(raw: dict[str, Any], trial_id: str) -> list[tuple[dict[str, Any], str, str]]:
    """(Tune-style config, MLflow trial-id tag, metric suffix) of each configuration a Tune trial
    runs: itself, or every member of a population pack (``<trial id>/m<i>``, ``fid_m<i>``)."""
    if "pack" in raw:
        return [({"trial": m}, f"{trial_id}/m{i}", f"_m{i}") for i, m in enumerate(raw["pack"])]
    return [(raw, trial_id, "")]


def _member_summary(client, trial_config, raw, key, suffix, run, status, res) -> TrialSummary:
    """One configuration's true state (see the module docstring); writes the interrupted /
    stopped-early marks on its MLflow run."""
    metrics = res.metrics or {}
    if suffix and not any(k.startswith(f"{FID}_m") for k in metrics):
        suffix = ""  # a pack of one config that cannot be packed ran (and reported) unpacked
    summary = TrialSummary(name=_name(raw, run.info.run_name if run else key), config={},
                           status="not started", fid=None, step=None, trial_id=key,
                           run_id=run.info.run_id if run else None)
    try:
        summary.config = trial_config(raw) if raw else {}
    except Exception:  # noqa: BLE001
        summary.config = dict(raw.get("trial") or {})
    run_status = run.data.tags.get(STATUS_TAG) if run is not None else None
    if res.error is not None:
        summary.status, summary.error = "crashed", clean_error(res.error)
        if run is not None and (run.info.status != "FAILED" or run_status != "crashed"):
            # the trial died before its own handler could say so (parent and child agree)
            client.set_tag(run.info.run_id, STATUS_TAG, "crashed")
            client.set_tag(run.info.run_id, names.CRASH_REASON_TAG, summary.error[:5000])
            client.set_terminated(run.info.run_id, "FAILED")
    elif status == "TERMINATED" and run_status == "crashed" and run.info.status == "FAILED":
        # a deterministic error (trainables.ray.trainable.end_attempt): the trial ended its run
        # with the cause and returned, so that Tune would not retry it in vain
        summary.status = "crashed"
        summary.error = run.data.tags.get(names.CRASH_REASON_TAG) or "crashed"
    elif status == "TERMINATED":
        diverged = run_status == DIVERGED or (not suffix and metrics.get(DIVERGED))
        summary.status = DIVERGED if diverged else "finished"
        if summary.status == "finished" and run is not None and (
                run.info.status != "FINISHED" or run_status == "stopped_early"):
            summary.status = "stopped early"  # by the scheduler (ASHA): the trial did not end it
            if run.info.status != "FINISHED":  # (ended already when Tune completed the trial)
                client.set_tag(run.info.run_id, STATUS_TAG, "stopped_early")
                client.set_tag(run.info.run_id, names.STOPPED_STEP_TAG, metrics.get("step"))
                client.set_terminated(run.info.run_id, "FINISHED")
    elif (run.data.metrics if run is not None
          else status in ("RUNNING", "PAUSED") and client is None):
        summary.status = "interrupted"  # (no client: the store is gone, Tune's state says so)
    fid = metrics.get(f"{FID}{suffix}")
    summary.fid = float(fid) if isinstance(fid, (int, float)) and math.isfinite(fid) else None
    summary.step = metrics.get("step")
    summary.modes = metrics.get(f"{MODES_COVERED}{suffix}")
    summary.hq = metrics.get(f"{HQ_SHARE}{suffix}")
    if summary.status == "interrupted" and run is not None:
        summary.step = _last_step(client, run)
        _last_logged(summary, run.data.metrics)
    if run is not None and run.info.status != "FINISHED" and summary.status in (
            "interrupted", "not started"):  # RUNNING, or FAILED by the stop itself
        client.set_tag(run.info.run_id, STATUS_TAG, "interrupted")
        if summary.step is not None:
            client.set_tag(run.info.run_id, names.INTERRUPTED_STEP_TAG, summary.step)
        client.set_terminated(run.info.run_id, "KILLED")
    return summary


def trial_iterations(config: dict[str, Any] | None, default: int) -> int:
    """A Tune trial's own ``iterations`` (grid blocks may override the study's fixed value; a
    pack's members share theirs), else ``default``."""
    cfg = config or {}
    member = (cfg.get("pack") or [None])[0] or cfg.get("trial") or {}
    return int(cfg.get(ITERATIONS) or member.get(ITERATIONS) or default)


def end_stopped_runs(tracking: StudyTracking, trial, iterations: int) -> bool:
    """End the MLflow runs of a trial Tune has just completed when the scheduler (ASHA) stopped
    it before its last step — FINISHED, ``stopped_early`` at its step — with the summary's own
    code (:func:`_member_summary`), so that the runs say so while the study goes on instead of
    RUNNING until its end. A trial that ended by itself (finished, diverged, crashed) has ended
    its runs; :func:`summarize` checks every trial again at the end. Returns whether it ended
    any."""
    res = trial.last_result or {}
    step = res.get("step")
    if (res.get("crashed") or res.get(DIVERGED) or not isinstance(step, (int, float))
            or step >= trial_iterations(trial.config, iterations)):
        return False
    from trainables.ray.trainable import trial_config

    client = tracking.client()
    ended = False
    for raw, key, suffix in _members(trial.config or {}, trial.trial_id):
        found = client.search_runs(
            [tracking.experiment_id], max_results=2,
            filter_string=f"tags.`{TRIAL_ID_TAG}` = '{key}' and "
                          f"tags.`{names.PARENT_TAG}` = '{tracking.parent_run_id}'")
        for run in found:
            if run.info.status == "RUNNING":
                _member_summary(client, trial_config, raw, key, suffix, run, "TERMINATED",
                                SimpleNamespace(error=None, metrics=res))
                ended = True
    return ended


def summarize(results, spec, tracking: StudyTracking, study_dir: str, t0: float,
              interrupted_by: str | None = None, stopped: str | None = None,
              offline: bool = False) -> StudyOutcome:
    """Summarise a returned ``Tuner.fit()`` (``results``; None when the driver was stopped before
    Tune started) and write every trial's state to MLflow. ``stopped``: the line saying what
    stopped the study (``study.store_watch``); ``offline``: the tracking store is gone, the table
    comes from Tune's saved state alone and nothing is written to MLflow."""
    from trainables.ray.trainable import trial_config

    client = tracking.client()
    runs = {} if offline else {r.data.tags.get(TRIAL_ID_TAG): r
                                  for r in child_runs(tracking)}
    # after a graceful stop Tune marks its in-memory trials TERMINATED; the state it saved for
    # the resume keeps the truth (RUNNING / PENDING for the ones that did not finish)
    saved = saved_trials(study_dir)
    outcome = StudyOutcome(tracking, study_dir, interrupted_by=interrupted_by,
                           stopped=stopped)
    trials = list(getattr(getattr(results, "_experiment_analysis", None), "trials", None) or [])
    pairs = list(zip(trials, results or []))
    if results is None and saved:  # the driver left fit() at once: no result grid
        pairs = _saved_pairs(saved, runs)
        outcome.from_saved_state = True
    seen_cfgs = set()
    for trial, res in pairs:
        status = saved[trial.trial_id].status if trial.trial_id in saved else trial.status
        for raw, key, suffix in _members(trial.config or {}, trial.trial_id):
            seen_cfgs.add(_canon(raw.get("trial") or {}))
            outcome.trials.append(_member_summary(None if offline else client, trial_config,
                                                  raw, key, suffix, runs.get(key), status, res))
    if spec.search == "grid":
        from study.spec import check_study

        for cfg in check_study(spec):
            if _canon(cfg) not in seen_cfgs:
                outcome.trials.append(TrialSummary(
                    name=_name({"trial": cfg}, "?"), config=cfg, status="not started",
                    fid=None, step=None))
    else:
        from study.packs import n_runs

        # in runs (configurations x seeds): a pack of a searched study holds several
        outcome.not_suggested = max(0, n_runs(spec) - len(outcome.trials))
    outcome.extractors = sorted({r.data.params[FID_EXTRACTOR] for r in runs.values()
                                 if FID_EXTRACTOR in r.data.params})
    outcome.wall_s = time.time() - t0
    if not offline:
        mark_parent(client, tracking, outcome)
    return outcome


def _saved_pairs(saved: dict[str, Any], runs: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(trial, result) pairs, as ``Tuner.fit()``'s result grid would give them, from Tune's last
    saved experiment state (``study.recovery.saved_trials``): for a driver that left ``fit()``
    without a result grid — a second signal (``study.interrupt``: "send it again to stop at
    once") or a full disk. A trial Tune saved as RUNNING is interrupted (its run ends KILLED with
    its last logged step); one it saved as ERROR is crashed with its run's own cause when the run
    has one."""
    pairs = []
    for st in saved.values():
        error = None
        if st.status == "ERROR":
            run = runs.get(st.trial_id)
            error = ((run.data.tags.get(names.CRASH_REASON_TAG) if run is not None else None)
                     or "the trial failed (Tune's saved state holds no cause)")
        pairs.append((SimpleNamespace(trial_id=st.trial_id, status=st.status, config=st.config),
                      SimpleNamespace(error=error, metrics=st.last_result)))
    return pairs


TRIALS_TABLE = "trials.json"  # the parent run's table of trials (an MLflow table artifact)
BEST_STATES = ("finished", "stopped early")  # a best FID is a whole run's, not a partial one's


def mark_parent(client, tracking: StudyTracking, outcome: StudyOutcome) -> None:
    """What the study's parent run says in the MLflow runs table, rewritten at the end of every
    execution and resume (it reflects the current state, not the last execution's share):

    * tags ``lipstudy.trials`` and ``lipstudy.trials_<state>`` (trials per state);
    * metric ``best_fid`` with tags ``lipstudy.best_trial`` (the run name), ``lipstudy.best_run_id``
      and ``lipstudy.best.<key>`` for every trial key the study varies: the lowest ``fid`` of a
      finished (or stopped-early) trial. FIDs of different datasets or feature extractors are
      never compared: a study holding several gets ``best_fid_<dataset>_<extractor>`` and
      ``lipstudy.best_trial_<dataset>_<extractor>`` per group instead;
    * the artifact ``trials.json`` (``MlflowClient.log_table`` format): one row per trial,
      interrupted and not-started ones included;
    * ``lipstudy.status`` finished / interrupted, and the run FINISHED / KILLED.

    The experiment is (re)tagged as a model-development one (``study.tracking``): a resume does not
    pass through ``ensure_experiment``. A failure to write the best/table (an unreachable artifact
    store) is reported and does not keep the run from being closed."""
    from study.tracking import mark_experiment_kind

    counts = outcome.counts()
    pid = tracking.parent_run_id
    client.set_tag(pid, names.TRIALS_TAG, len(outcome.trials) + outcome.not_suggested)
    client.set_tag(pid, names.ERRORED_TRIALS_TAG, counts["crashed"])
    for state, n in counts.items():
        client.set_tag(pid, names.count_tag(state), n)
    try:
        mark_experiment_kind(client, tracking.experiment_id)
        extractors = {r.info.run_id: r.data.params.get(FID_EXTRACTOR)
                      for r in child_runs(tracking)}
        varied = _varied_keys(outcome.trials)
        _write_best(client, pid, outcome.trials, extractors, varied)
        _log_trials_table(client, pid, _trials_frame(outcome, extractors, varied))
        from study.ui_view import log_study_figures

        log_study_figures(client, tracking)  # FID vs k_SN and FID curves, for the MLflow UI
    except Exception as err:  # noqa: BLE001 - the run's state below matters more
        import sys

        print(f"lipstudy: warning: could not write the best trial / {TRIALS_TABLE} to the "
              f"study's parent run {pid}: {err}", file=sys.stderr)
    if not outcome.interrupted_by and names.INTERRUPTED_BY_TAG in client.get_run(pid).data.tags:
        client.delete_tag(pid, names.INTERRUPTED_BY_TAG)  # an earlier execution's signal
    if outcome.complete:
        client.set_tag(pid, STATUS_TAG, "finished")
        client.set_terminated(pid, "FINISHED")
    else:
        client.set_tag(pid, STATUS_TAG, "interrupted")
        if outcome.interrupted_by:
            client.set_tag(pid, names.INTERRUPTED_BY_TAG, outcome.interrupted_by)
        client.set_terminated(pid, "KILLED")


def _varied_keys(trials: list[TrialSummary]) -> list[str]:
    """Trial keys whose value differs between the trials (or that only some trials have: a
    conditional key such as ``k_sn``), in the order they first appear."""
    configs = [t.config for t in trials if t.config]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys
            if len({_canon({"v": c[k]}) if k in c else "\0absent" for c in configs}) > 1]


def _metric_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "unknown"


def _write_best(client, pid: str, trials: list[TrialSummary], extractors: dict[str, Any],
                varied: list[str]) -> None:
    groups: dict[tuple[str, str], list[TrialSummary]] = {}
    for t in trials:
        if t.status in BEST_STATES and t.fid is not None and math.isfinite(t.fid):
            key = (str(t.config.get(DATASET, "")), str(extractors.get(t.run_id) or ""))
            groups.setdefault(key, []).append(t)
    tags = client.get_run(pid).data.tags
    wanted: dict[str, str] = {}
    now = int(time.time() * 1000)
    for (dataset, extractor), members in sorted(groups.items()):
        best = min(members, key=lambda t: t.fid)
        suffix = "" if len(groups) == 1 else "_" + _metric_key(f"{dataset}_{extractor}")
        client.log_metric(pid, f"{BEST_FID_METRIC}{suffix}", float(best.fid), timestamp=now,
                          step=0)
        wanted[f"{BEST_TRIAL_TAG}{suffix}"] = best.name
        wanted[f"{BEST_RUN_TAG}{suffix}"] = best.run_id or ""
        if len(groups) == 1:
            if extractor:
                wanted[BEST_FID_EXTRACTOR_TAG] = extractor
            for k in varied:
                if k in best.config:
                    wanted[f"{BEST_KEY_PREFIX}{k}"] = str(best.config[k])
    for key, value in wanted.items():
        if tags.get(key) != value:
            client.set_tag(pid, key, value)
    for key in tags:  # what an earlier execution's best said and this one's does not
        if key not in wanted and (key.startswith((BEST_TRIAL_TAG, BEST_RUN_TAG, BEST_KEY_PREFIX))
                                  or key == BEST_FID_EXTRACTOR_TAG):
            client.delete_tag(pid, key)


def _trials_frame(outcome: StudyOutcome, extractors: dict[str, Any], varied: list[str]):
    """One row per trial (the console table's, plus the run id and the keys the study varies);
    the trials the searcher has not suggested yet are one row each too (name ``not suggested``)."""
    import pandas as pd

    fixed = ["name", "status", FID, "step", "modes", "hq", FID_EXTRACTOR, "run_id", "error"]
    extra = [k for k in varied if k not in fixed]
    rows = []
    for t in outcome.trials:
        row = {"name": t.name, "status": t.status, FID: t.fid,
               "step": None if t.step is None else int(t.step), "modes": t.modes, "hq": t.hq,
               FID_EXTRACTOR: extractors.get(t.run_id), "run_id": t.run_id, "error": t.error}
        row.update({k: (None if t.config.get(k) is None else str(t.config[k])) for k in extra})
        rows.append(row)
    for i in range(outcome.not_suggested):
        rows.append({"name": f"not suggested #{i + 1}", "status": "not started"})
    return pd.DataFrame(rows, columns=fixed + extra).astype(object).where(
        lambda df: df.notna(), None)


def _log_trials_table(client, pid: str, frame) -> None:
    """``log_table`` the first time; afterwards the same JSON replaces the artifact (``log_table``
    would append the new rows to the old ones: a resume would list every trial twice)."""
    import os
    import tempfile

    if TRIALS_TABLE not in {a.path for a in client.list_artifacts(pid)}:
        client.log_table(pid, data=frame, artifact_file=TRIALS_TABLE)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, TRIALS_TABLE)
        frame.to_json(path, orient="split", index=False, date_format="iso")
        client.log_artifact(pid, path)


def print_summary(outcome: StudyOutcome) -> None:
    """The end-of-study table, the resolved FID extractor and what to do next."""
    order = {s: i for i, s in enumerate(STATES)}
    rows = sorted(outcome.trials, key=lambda t: (order[t.status],
                                                 t.fid if t.fid is not None else math.inf))
    toys = any(t.modes is not None for t in rows)
    width = max([32] + [len(t.name) + 1 for t in rows])
    head = f"{'trial':{width}s} {'status':24s} {FID:>9s} {'steps':>7s}"
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
    if outcome.from_saved_state:
        why = "stopped at once" if outcome.interrupted_by else "no result from Tune"
        print(f"({why}: each trial's state is the one Tune last saved)")
    counts = outcome.counts()
    print()
    told = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    extractor = ", ".join(outcome.extractors) or "none evaluated yet"
    print(f"{len(rows) + outcome.not_suggested} trials ({told}) in {outcome.wall_s / 60:.1f} min; "
          f"FID extractor: {extractor}")
    if outcome.stopped:
        print(f"The study STOPPED: {outcome.stopped}. Once that is mended, continue it "
              f"with:\n    {lipstudy_command('resume', outcome.storage_path)}")
    elif not outcome.complete:
        why = f"stopped by {outcome.interrupted_by}" if outcome.interrupted_by else "incomplete"
        print(f"The study is INTERRUPTED ({why}). Continue it with:\n"
              f"    {lipstudy_command('resume', outcome.storage_path)}")
    else:
        print(f"Study directory:  {outcome.storage_path}")
    _print_where(outcome)


def _print_where(outcome: StudyOutcome) -> None:
    from study.limits import StudyError
    from study.statefile import read_state

    try:
        optuna_loc = read_state(outcome.storage_path).get("optuna_storage")
    except StudyError:
        optuna_loc = None
    if optuna_loc:
        print(f"Optuna study:     optuna-dashboard {optuna_loc}")
    uri = outcome.tracking.tracking_uri
    print(f"MLflow runs:      {uri} (experiment id {outcome.tracking.experiment_id})")
    if uri.startswith("sqlite:") or "://" not in uri:
        print(f"Open them with:   {lipstudy_command('ui', '--store', uri)}   (MLflow UI on "
              "127.0.0.1:5000)")
    else:
        print(f"Open them in the MLflow UI of {uri}")
