"""The driver's end table (study.summary) shows every finished trial's FID, and a toy's modes and
high-quality share, whatever the trial ran as. Found on the committed toy-references study
(docs/results/toy-references): its JS and GraN trials, packs of one config that cannot be packed
and so run unpacked, showed FID "-", and no row showed modes or hq."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from types import SimpleNamespace

from study.summary import StudyOutcome, _member_summary, print_summary
from trainables.ray.trainable import pack_report, trial_config, trial_report

TOY = {"dataset": "ring8", "arch": "mlp", "width": 0.25, "iterations": 20, "stats_every": 10,
       "eval_every": 10, "fid_samples": 200, "loss": "ns", "regularizer": "none", "seed": 0}
LATEST = [{"fid": 0.0095, "modes_covered": 8.0, "hq_share": 0.4995, "toy_quality": 0.5},
          {"fid": 0.0196, "modes_covered": 7.0, "hq_share": 0.951, "toy_quality": 0.86}]


def _finished(run_id: str) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, run_name=run_id, status="FINISHED"),
                           data=SimpleNamespace(tags={"lipstudy.status": "finished"}, metrics={}))


def _summary(report: dict, suffix: str, run_id: str = "r"):
    res = SimpleNamespace(error=None, metrics=report)
    return _member_summary(None, trial_config, {"trial": dict(TOY)}, f"t/{suffix}", suffix,
                           _finished(run_id), "TERMINATED", res)


def test_a_pack_of_one_config_run_unpacked_shows_its_fid_modes_and_hq():
    """run_pack runs a one-config pack it cannot pack (JS, GraN) through run_trial, whose report
    has ``fid``, not ``fid_m0``; the summary still asks for member 0."""
    s = _summary(trial_report(10000, LATEST[0]), "_m0")
    assert s.status == "finished"
    assert (s.fid, s.modes, s.hq) == (0.0095, 8.0, 0.4995)


def test_each_pack_member_shows_its_own_fid_modes_and_hq():
    report = pack_report(10000, LATEST, [None, None])
    got = [_summary(report, f"_m{i}", f"r{i}") for i in range(2)]
    assert [(s.fid, s.modes, s.hq) for s in got] == [(0.0095, 8.0, 0.4995), (0.0196, 7.0, 0.951)]


def test_a_one_config_trial_still_reads_its_own_keys():
    s = _summary({"fid": 18.4, "step": 2500, "diverged": 0.0, "fid_m0": 99.0}, "")
    assert s.fid == 18.4 and s.modes is None


def test_the_printed_table_has_the_toy_columns(tmp_path):
    trials = [_summary(trial_report(10000, LATEST[0]), "_m0", "a"),
              _summary(pack_report(10000, LATEST, [None, None]), "_m1", "b")]
    tracking = SimpleNamespace(tracking_uri="sqlite:///mlflow.db", experiment_id="1")
    outcome = StudyOutcome(tracking, str(tmp_path))
    outcome.trials = trials
    buf = io.StringIO()
    with redirect_stdout(buf):
        print_summary(outcome)
    lines = buf.getvalue().splitlines()
    assert lines[1].split()[-2:] == ["modes", "hq"]
    rows = [ln.split() for ln in lines[2:4]]
    assert rows[0][-4:] == ["0.01", "10000", "8", "0.50"] and rows[1][-4:] == ["0.02", "10000",
                                                                             "7", "0.95"]


GRID = """
name: stopped-at-once
search: grid
fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 60, stats_every: 10, eval_every: 20,
        fid_samples: 40, batch_size: 16, device: cpu}
grid: {loss: [ns, wgan, hinge, ls, cos], k_sn: [1.0]}
"""


def test_a_study_stopped_at_once_ends_its_runs_from_tunes_saved_state(tmp_path):
    """A second Ctrl-C forces the driver out of ``fit()`` (``study.interrupt``): no result grid.
    The summary then takes each trial's state from Tune's last saved experiment state, as a
    resume does: the trial Tune saved RUNNING is interrupted (its run KILLED at its last logged
    step), one ASHA stopped is stopped early (FINISHED), a finished one stays finished, a crashed
    one keeps its own cause, one Tune never created is not started. Before, every configuration
    was listed "not started" and the runs were left RUNNING (the trials no longer end their own
    runs on Tune's stop: ``trainables.tracking.trial_runs.end_attempt``)."""
    import json

    from mlflow.tracking import MlflowClient

    from study.spec import parse_study
    from study.summary import summarize
    from study.tracking import start_study_run
    from study.validation import check_study
    from trainables.names import (CRASH_REASON_TAG, INTERRUPTED_STEP_TAG, PARENT_TAG,
                                  STATUS_TAG, STOPPED_STEP_TAG, TRIAL_ID_TAG)

    spec = parse_study(GRID)
    cfgs = check_study(spec)  # ns, wgan, hinge, ls, cos
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = start_study_run(uri, "stopped-at-once", GRID, hypotheses=[],
                               artifact_root=str(tmp_path / "mlruns"))
    client = MlflowClient(uri)

    def child(trial_id, steps, fid, status="RUNNING", tags=None):
        run = client.create_run(tracking.experiment_id, run_name=f"run-{trial_id}", tags={
            PARENT_TAG: tracking.parent_run_id, TRIAL_ID_TAG: trial_id, **(tags or {})})
        for step in range(0, steps + 1, 10):
            client.log_metric(run.info.run_id, "loss_d", 0.5, step=step)
        client.log_metric(run.info.run_id, "fid", fid, step=20)
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    runs = {"a": child("a", 30, 2.5),  # Tune saved it RUNNING: interrupted at step 30
            "b": child("b", 60, 1.5, "FINISHED", {STATUS_TAG: "finished"}),
            "c": child("c", 10, 9.0, "FAILED", {STATUS_TAG: "crashed",
                                                 CRASH_REASON_TAG: "ValueError: boom"}),
            "d": child("d", 20, 3.0)}  # ASHA stopped it at step 20; the summary ends its run
    saved = {"a": ("RUNNING", {"step": 20, "fid": 2.5}), "b": ("TERMINATED", {"step": 60,
                                                                          "fid": 1.5}),
             "c": ("ERROR", {"step": 10}), "d": ("TERMINATED", {"step": 20, "fid": 3.0})}
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    trial_data = [[json.dumps({"trial_id": tid, "status": status, "config": {"trial": cfg},
                               "relative_logdir": tid}),
                   json.dumps({"last_result": last})]
                  for (tid, (status, last)), cfg in zip(saved.items(), cfgs)]
    (study_dir / "experiment_state-2026-12-05_20-00-00.json").write_text(
        json.dumps({"trial_data": trial_data}))

    outcome = summarize(None, spec, tracking, str(study_dir), 0.0, interrupted_by="SIGINT")

    got = {t.trial_id: (t.status, t.step, t.fid) for t in outcome.trials if t.trial_id}
    assert got == {"a": ("interrupted", 30, 2.5), "b": ("finished", 60, 1.5),
                   "c": ("crashed", 10, None), "d": ("stopped early", 20, 3.0)}, got
    assert [t.status for t in outcome.trials if not t.trial_id] == ["not started"]  # cos
    assert next(t for t in outcome.trials if t.trial_id == "c").error == "ValueError: boom"
    assert outcome.from_saved_state
    ends = {k: client.get_run(r) for k, r in runs.items()}
    assert {k: (r.info.status, r.data.tags.get(STATUS_TAG)) for k, r in ends.items()} == {
        "a": ("KILLED", "interrupted"), "b": ("FINISHED", "finished"),
        "c": ("FAILED", "crashed"), "d": ("FINISHED", "stopped_early")}
    assert ends["a"].data.tags[INTERRUPTED_STEP_TAG] == "30"
    assert ends["d"].data.tags[STOPPED_STEP_TAG] == "20"
    parent = client.get_run(tracking.parent_run_id)
    assert parent.info.status == "KILLED", parent.info.status
    buf = io.StringIO()
    with redirect_stdout(buf):
        print_summary(outcome)
    assert "stopped at once: each trial's state is the one Tune last saved" in buf.getvalue()


def test_a_trial_asha_stops_ends_its_runs_as_tune_completes_it(tmp_path):
    """``EndStoppedRuns`` (a Tune callback) → ``end_stopped_runs``: a trial the scheduler stopped
    before its last step has its runs ended at once — FINISHED, ``stopped_early`` at its step,
    a pack's members each — while a trial at its last step, a diverged and a crashed one are left
    to their own end; the study's summary still reads the ended run as stopped early. Before,
    such runs stayed RUNNING in the MLflow UI until the study ended."""
    from mlflow.tracking import MlflowClient

    from study.progress import EndStoppedRuns
    from study.tracking import start_study_run
    from trainables.names import PARENT_TAG, STATUS_TAG, STOPPED_STEP_TAG, TRIAL_ID_TAG
    from trainables.ray.trainable import trial_config

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = start_study_run(uri, "asha", "name: asha\n", hypotheses=[],
                               artifact_root=str(tmp_path / "mlruns"))
    client = MlflowClient(uri)

    def run(key):
        return client.create_run(tracking.experiment_id, run_name=key, tags={
            PARENT_TAG: tracking.parent_run_id, TRIAL_ID_TAG: key}).info.run_id

    cfg = dict(TOY, iterations=60)
    trials = {
        "early": ({"trial": cfg}, {"step": 20, "fid": 3.5}),
        "last": ({"trial": cfg}, {"step": 60, "fid": 3.4}),  # at max_t: its own end follows
        "diverged": ({"trial": cfg}, {"step": 20, "diverged": 1.0}),
        "crashed": ({"trial": cfg}, {"step": 0, "crashed": 1.0}),
        "pack": ({"pack": [cfg, dict(cfg, loss="wgan")]}, {"step": 40, "fid": 3.1,
                                                            "fid_m0": 3.1, "fid_m1": 3.6}),
    }
    ids = {k: run(k) for k in trials if k != "pack"} | {f"pack/m{i}": run(f"pack/m{i}")
                                                       for i in range(2)}
    callback = EndStoppedRuns(tracking, 100)
    for key, (config, last) in trials.items():
        callback.on_trial_complete(0, [], SimpleNamespace(trial_id=key, config=config,
                                                          last_result=last))
    ends = {k: client.get_run(r) for k, r in ids.items()}
    got = {k: (r.info.status, r.data.tags.get(STATUS_TAG), r.data.tags.get(STOPPED_STEP_TAG))
           for k, r in ends.items()}
    assert got == {"early": ("FINISHED", "stopped_early", "20"),
                   "last": ("RUNNING", None, None), "diverged": ("RUNNING", None, None),
                   "crashed": ("RUNNING", None, None),
                   "pack/m0": ("FINISHED", "stopped_early", "40"),
                   "pack/m1": ("FINISHED", "stopped_early", "40")}, got
    res = SimpleNamespace(error=None, metrics={"step": 20, "fid": 3.5})  # the end summary
    s = _member_summary(client, trial_config, {"trial": cfg}, "early", "", ends["early"],
                        "TERMINATED", res)
    assert (s.status, s.step, s.fid) == ("stopped early", 20, 3.5)
