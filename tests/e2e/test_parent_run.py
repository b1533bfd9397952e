"""What a study's parent run and experiment say in the MLflow UI (SQLite store, no server):
the experiment kind tag (new and old experiments), the trials per state, the best FID with its
trial and configuration, and the table of trials, rewritten (not appended) by every resume."""

from __future__ import annotations

import json

import pytest

from study.summary import StudyOutcome, TrialSummary, mark_parent
from study.tracking import EXPERIMENT_KIND, ensure_experiment, start_study_run
from trainables.names import EXPERIMENT_KIND_TAG, PARENT_TAG, TRIAL_ID_TAG


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def test_study_experiments_are_tagged_new_old_and_restored(uri, tmp_path):
    client = _client(uri)
    new = ensure_experiment(uri, "new-study", str(tmp_path / "mlruns"))
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    old = client.create_experiment("old-study")  # made before the tag existed
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert ensure_experiment(uri, "old-study") == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    gone = client.create_experiment("deleted-study")
    client.delete_experiment(gone)
    assert ensure_experiment(uri, "deleted-study") == gone
    exp = client.get_experiment(gone)
    assert exp.lifecycle_stage == "active" and exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def _trial(client, tracking, name, cfg, status, fid, step, extractor="domain", *, run=True):
    run_id = None
    if run:
        r = client.create_run(tracking.experiment_id, run_name=name,
                              tags={PARENT_TAG: tracking.parent_run_id, TRIAL_ID_TAG: name})
        run_id = r.info.run_id
        client.log_param(run_id, "fid_extractor", extractor)
    return TrialSummary(name=name, config=cfg, status=status, fid=fid, step=step,
                        trial_id=name if run else None, run_id=run_id)


def _table(client, run_id):
    """The rows of the parent's ``trials.json`` as ``log_table`` wrote them (orient="split")."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with open(client.download_artifacts(run_id, "trials.json", tmp)) as fh:
            data = json.load(fh)
    return [dict(zip(data["columns"], row)) for row in data["data"]]


def test_parent_run_says_best_fid_counts_and_trials_and_a_resume_rewrites_them(uri, tmp_path):
    client = _client(uri)
    tracking = start_study_run(uri, "grid-study", "name: grid-study\n", hypotheses=["H1"],
                               artifact_root=str(tmp_path / "mlruns"))
    base = {"dataset": "fashion_mnist", "regularizer": "sn", "iterations": 100}
    a = _trial(client, tracking, "ns-sn-k1", {**base, "loss": "ns", "k_sn": 1.0}, "finished",
               80.0, 100)
    b = _trial(client, tracking, "wgan-sn-k5", {**base, "loss": "wgan", "k_sn": 5.0},
               "interrupted", 20.0, 40)  # lower, but a partial run: not the best
    c = _trial(client, tracking, "ls-sn-k1", {**base, "loss": "ls", "k_sn": 1.0}, "not started",
               None, None, run=False)
    first = StudyOutcome(tracking, str(tmp_path), trials=[a, b, c], interrupted_by="SIGTERM")
    mark_parent(client, tracking, first)

    run = client.get_run(tracking.parent_run_id)
    tags = run.data.tags
    assert run.info.status == "KILLED" and tags["lipstudy.status"] == "interrupted"
    assert (tags["lipstudy.trials_finished"], tags["lipstudy.trials_interrupted"],
            tags["lipstudy.trials_not_started"]) == ("1", "1", "1")
    assert run.data.metrics["best_fid"] == 80.0
    assert tags["lipstudy.best_trial"] == "ns-sn-k1" and tags["lipstudy.best_run_id"] == a.run_id
    assert tags["lipstudy.best.loss"] == "ns" and tags["lipstudy.best.k_sn"] == "1.0"
    assert "lipstudy.best.dataset" not in tags  # not varied by the study
    assert tags["lipstudy.best_fid_extractor"] == "domain"
    rows = _table(client, tracking.parent_run_id)
    assert [(r["name"], r["status"], r["fid"], r["step"], r["run_id"]) for r in rows] == [
        ("ns-sn-k1", "finished", 80.0, 100, a.run_id),
        ("wgan-sn-k5", "interrupted", 20.0, 40, b.run_id),
        ("ls-sn-k1", "not started", None, None, None)]
    assert {"modes", "hq", "fid_extractor", "loss", "k_sn"} <= set(rows[0])
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [{"path": "trials.json", "type": "table"}]

    # the resume: the interrupted trial finishes best, the last one runs; the table is replaced
    b.status, b.fid, b.step = "finished", 15.0, 100
    c2 = _trial(client, tracking, "ls-sn-k1", c.config, "finished", 30.0, 100)
    mark_parent(client, tracking, StudyOutcome(tracking, str(tmp_path), trials=[a, b, c2]))
    run = client.get_run(tracking.parent_run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and tags["lipstudy.status"] == "finished"
    assert tags["lipstudy.trials_finished"] == "3" and tags["lipstudy.trials_interrupted"] == "0"
    assert run.data.metrics["best_fid"] == 15.0
    assert tags["lipstudy.best_trial"] == "wgan-sn-k5" and tags["lipstudy.best.k_sn"] == "5.0"
    rows = _table(client, tracking.parent_run_id)
    assert [(r["name"], r["status"], r["fid"]) for r in rows] == [
        ("ns-sn-k1", "finished", 80.0), ("wgan-sn-k5", "finished", 15.0),
        ("ls-sn-k1", "finished", 30.0)]
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [{"path": "trials.json", "type": "table"}]


def test_fids_of_different_datasets_or_extractors_are_never_one_best(uri, tmp_path):
    client = _client(uri)
    tracking = start_study_run(uri, "mixed", "name: mixed\n", hypotheses=[],
                               artifact_root=str(tmp_path / "mlruns"))
    trials = [
        _trial(client, tracking, "img-a", {"dataset": "fashion_mnist", "loss": "ns"}, "finished",
               50.0, 10, "domain"),
        _trial(client, tracking, "img-b", {"dataset": "fashion_mnist", "loss": "ls"}, "finished",
               40.0, 10, "domain"),
        _trial(client, tracking, "toy", {"dataset": "ring8", "loss": "ns"}, "finished",
               0.5, 10, "data-space"),
    ]
    mark_parent(client, tracking, StudyOutcome(tracking, str(tmp_path), trials=trials))
    run = client.get_run(tracking.parent_run_id)
    assert "best_fid" not in run.data.metrics
    assert run.data.metrics == {"best_fid_fashion_mnist_domain": 40.0,
                                "best_fid_ring8_data-space": 0.5}
    assert run.data.tags["lipstudy.best_trial_fashion_mnist_domain"] == "img-b"
    assert run.data.tags["lipstudy.best_trial_ring8_data-space"] == "toy"
    assert "lipstudy.best_trial" not in run.data.tags


def test_a_resumed_study_from_before_the_tag_gets_it(uri, tmp_path):
    """``lipstudy resume`` does not go through ensure_experiment: the summary tags it."""
    client = _client(uri)
    tracking = start_study_run(uri, "old", "name: old\n", hypotheses=[],
                               artifact_root=str(tmp_path / "mlruns"))
    client.delete_experiment_tag(tracking.experiment_id, EXPERIMENT_KIND_TAG)
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(tracking.experiment_id).tags
    mark_parent(client, tracking, StudyOutcome(tracking, str(tmp_path), not_suggested=2))
    assert client.get_experiment(tracking.experiment_id).tags[EXPERIMENT_KIND_TAG] \
        == EXPERIMENT_KIND
    rows = _table(client, tracking.parent_run_id)  # an Optuna study stopped before any trial
    assert [(r["name"], r["status"]) for r in rows] == [("not suggested #1", "not started"),
                                                         ("not suggested #2", "not started")]
    assert client.get_run(tracking.parent_run_id).info.status == "KILLED"
