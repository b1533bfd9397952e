"""What a study directory says about its trials, and how a resume reconciles MLflow with it.

Ray Tune's experiment state (``experiment_state-*.json`` in the study directory, written at most
every second, see ``study.ray_runtime.init_ray``) is the list of trials a ``Tuner.restore``
brings back: their real trial ids (``a0626_00000`` for a grid, ``4f1c2a9e`` for a searcher),
statuses and configs. Each MLflow child run carries its Ray trial id in the tag ``lipstudy.trial_id``, so runs
and trials are matched by that id and never by parsing directory names.

On resume, for every child run of the study that is not FINISHED:

* its trial is in the saved state → the restored trial continues this very run (from its
  checkpoint, or from scratch with the same seed when it had none: the logger finds the run by
  trial id and its per-metric high-water marks drop the steps it already holds). Kept as is; a run
  an earlier version of this code deleted is restored.
* its trial is not in the saved state (it started after Tune's last state write; the trial will
  not come back, its configuration restarts as a new trial) → the run is *superseded*: kept,
  marked KILLED with ``lipstudy.status = superseded`` and the reason, when it holds metrics; deleted
  only when it holds nothing (params only). Both are recorded on the parent run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from study.limits import StudyError
from study.statefile import INTACT_DIR, fs_and_path
from study.tracking import StudyTracking

from trainables.names import (PARENT_TAG, STATUS_TAG, SUPERSEDED_REASON_TAG, TRIAL_ID_TAG,
                              reconciled_tag)


@dataclass
class SavedTrial:
    """One trial as Tune's experiment state holds it."""

    trial_id: str
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    config: dict[str, Any]
    dirname: str | None
    last_step: int | None
    last_result: dict[str, Any] = field(default_factory=dict)  # Tune's last reported result


@dataclass
class Reconciliation:
    """What a resume did to the study's MLflow runs before restoring Tune."""

    continued: list[str] = field(default_factory=list)   # run ids the restored trials continue
    superseded: list[str] = field(default_factory=list)  # kept, KILLED, tagged superseded
    deleted: list[str] = field(default_factory=list)     # empty runs (params only)
    restored: list[str] = field(default_factory=list)    # runs an earlier resume had deleted

    def as_dict(self) -> dict[str, list[str]]:
        return {"continued": self.continued, "superseded": self.superseded,
                "deleted": self.deleted, "restored": self.restored}


def _experiment_states(study_dir: str) -> tuple[Any, list[str]]:
    """(filesystem, Tune's experiment state files in ``study_dir``, oldest first)."""
    import pyarrow.fs

    fs, base = fs_and_path(study_dir)
    states = sorted(i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(base))
                    if i.base_name.startswith("experiment_state") and i.base_name.endswith(".json"))
    return fs, states


def _read_state(fs, path: str) -> dict[str, Any]:
    with fs.open_input_stream(path) as fh:
        data = json.loads(fh.read().decode())
    if not isinstance(data, dict) or not isinstance(data.get("trial_data"), list):
        raise ValueError("no trial_data")
    return data


def set_aside_damaged_states(study_dir: str) -> list[str]:
    """Rename every experiment state that cannot be read (a full disk or a kill truncated it) to
    ``<name>.damaged``, so ``Tuner.restore`` takes the newest intact one (Tune reads the newest by
    name), the newest one replaced by its last intact copy when the driver kept one
    (``study.store_watch.keep_intact_states``); returns the damaged names. When none intact is
    left, raises a ``StudyError`` line: restarting the Tuner would run finished trials again."""
    fs, states = _experiment_states(study_dir)
    damaged: list[tuple[str, str]] = []
    for path in states:
        try:
            _read_state(fs, path)
        except (ValueError, UnicodeDecodeError) as err:
            damaged.append((path, str(err)))
    names = [p.rsplit("/", 1)[-1] for p, _ in damaged]
    if damaged and damaged[-1][0] == states[-1] and _restore_intact(fs, states[-1]):
        damaged.pop()  # the newest is whole again (its last intact copy)
    elif damaged and len(damaged) == len(states):
        raise StudyError(f"{study_dir}: Tune's experiment state {', '.join(names)} is damaged "
                         f"({damaged[-1][1]}) and no intact one is left to resume from")
    for path, err in damaged:
        fs.move(path, f"{path}.damaged")
        name = path.rsplit("/", 1)[-1]
        print(f"lipstudy: {name} is damaged ({err}; set aside as {name}.damaged): resuming "
              "from the newest intact experiment state", file=sys.stderr, flush=True)
    return names


def _restore_intact(fs, path: str) -> bool:
    """Put the last intact copy of the experiment state ``path`` (``study.store_watch``
    .keep_intact_states) back beside it, the damaged one set aside; whether there was one."""
    directory, name = path.rsplit("/", 1)
    copy = f"{directory}/{INTACT_DIR}/{name}"
    try:
        _read_state(fs, copy)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    fs.move(path, f"{path}.damaged")
    fs.copy_file(copy, path)
    print(f"lipstudy: {name} is damaged (set aside as {name}.damaged): resuming from its last "
          f"intact copy ({INTACT_DIR}/{name})", file=sys.stderr, flush=True)
    return True


def saved_trials(study_dir: str) -> dict[str, SavedTrial]:
    """trial id → :class:`SavedTrial` from the newest readable experiment state in ``study_dir``
    (empty when Tune never wrote one)."""
    fs, states = _experiment_states(study_dir)
    data: dict[str, Any] = {}
    for path in reversed(states):
        try:
            data = _read_state(fs, path)
            break
        except (ValueError, UnicodeDecodeError):
            continue
    out: dict[str, SavedTrial] = {}
    for meta_json, run_json in data.get("trial_data", []):
        meta, runtime = json.loads(meta_json), json.loads(run_json)
        last = runtime.get("last_result") or {}
        step = last.get("step")
        out[meta["trial_id"]] = SavedTrial(
            trial_id=meta["trial_id"], status=meta.get("status", "PENDING"),
            config=meta.get("config") or {}, dirname=meta.get("relative_logdir"),
            last_step=int(step) if isinstance(step, (int, float)) else None,
            last_result=last if isinstance(last, dict) else {})
    return out


def child_runs(tracking: StudyTracking, *, deleted: bool = False):
    """The study execution's child runs (``deleted=True``: also the deleted ones)."""
    from mlflow.entities import ViewType

    client = tracking.client()
    return client.search_runs(
        [tracking.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{tracking.parent_run_id}'",
        run_view_type=ViewType.ALL if deleted else ViewType.ACTIVE_ONLY, max_results=50_000)


def reconcile_runs(study_dir: str, tracking: StudyTracking) -> Reconciliation:
    """Prepare the study's MLflow runs for ``Tuner.restore`` (see the module docstring)."""
    client = tracking.client()
    trials = saved_trials(study_dir)
    rec = Reconciliation()
    runs = child_runs(tracking, deleted=True)
    live_ids = {r.data.tags.get(TRIAL_ID_TAG) for r in runs if r.info.lifecycle_stage == "active"}
    for run in runs:
        info, tags = run.info, run.data.tags
        tag = tags.get(TRIAL_ID_TAG, "")
        trial_id = tag.split("/m")[0]  # a population pack's member: <trial id>/m<i>
        if info.lifecycle_stage == "deleted":
            if trial_id in trials and tag not in live_ids:  # deleted by an older resume
                client.restore_run(info.run_id)
                client.set_tag(info.run_id, STATUS_TAG, "restored")
                live_ids.add(tag)
                rec.restored.append(info.run_id)
            continue
        if info.status == "FINISHED":
            continue
        if trial_id in trials:
            rec.continued.append(info.run_id)
        elif tags.get(STATUS_TAG) == "superseded":
            continue
        elif run.data.metrics:
            client.set_tag(info.run_id, STATUS_TAG, "superseded")
            client.set_tag(info.run_id, SUPERSEDED_REASON_TAG,
                           f"Ray trial {trial_id or '?'} started after the study's last saved "
                           "state; its configuration restarts as a new trial on resume")
            client.set_terminated(info.run_id, "KILLED")
            rec.superseded.append(info.run_id)
        else:
            client.delete_run(info.run_id)
            rec.deleted.append(info.run_id)
    return rec


def record_reconciliation(tracking: StudyTracking, attempt: int, rec: Reconciliation) -> None:
    """Keep what a resume changed on the parent run: counts as tags, the run ids as an artifact."""
    client = tracking.client()
    client.log_dict(tracking.parent_run_id, rec.as_dict(), f"resume/resume-{attempt}.json")
    for key in ("superseded", "deleted", "restored"):
        ids = getattr(rec, key)
        if ids:
            prev = client.get_run(tracking.parent_run_id).data.tags.get(reconciled_tag(key), "0")
            client.set_tag(tracking.parent_run_id, reconciled_tag(key), int(prev) + len(ids))
