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
