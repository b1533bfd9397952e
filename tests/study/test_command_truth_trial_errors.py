"""What a trial's failure tells: a deterministic error (data that cannot be served, a download
that failed, a config error) ends the run FAILED with the cause's own line and is not retried;
Tune's stop of a trial (the study's Ctrl-C, ASHA) leaves the run's end to the study's summary,
never crashed, and a late stop cannot undo what the summary wrote; a signal to the worker ends
the run interrupted; the end table of an interrupted trial shows the last value its run logged,
not Tune's last report.

The trainable is driven without Ray (its MLflow logger and the training function replaced); one
slow test runs a real study whose data cannot be read."""

from __future__ import annotations

import io
import textwrap
from contextlib import redirect_stdout
from types import SimpleNamespace

import pytest

from trainables.ray import trainable as ray_trainable
from trainables.ray.checkpoints import CheckpointChain
from trainables.data.imagesets import DatasetError

TOY = {"dataset": "ring8", "arch": "mlp", "width": 0.25, "iterations": 20, "stats_every": 10,
       "eval_every": 20, "fid_samples": 40, "batch_size": 16, "device": "cpu", "loss": "ns"}
DOWNLOAD = ("Error downloading train-images-idx3-ubyte.gz:\nTried https://m1/, got:\n<urlopen "
            "error [Errno -2] Name or service not known>\nTried https://m2/, got:\n<urlopen error "
            "[Errno -2] Name or service not known>\n")


class FakeLogger:
    def __init__(self):
        self.tags, self.status, self.run_id, self.resumed = {}, None, "r1", False
        self.released = False

    def set_tags(self, tags):
        self.tags.update(tags)

    def finish(self, status="FINISHED"):
        self.status = status

    def release(self):
        self.released = True

    def log_params(self, params):
        pass


@pytest.fixture
def trial(monkeypatch):
    """``run_trial`` of a toy config whose training raises ``trial.error``; its fake logger."""
    state = SimpleNamespace(logger=FakeLogger(), error=None, reported=[])

    def train(*a, **k):
        raise state.error

    monkeypatch.setattr(ray_trainable, "train", train)
    monkeypatch.setattr(ray_trainable, "open_trial_run", lambda *a, **k: (state.logger, {}))
    monkeypatch.setattr(CheckpointChain, "of_trial", classmethod(lambda cls: cls([])))
    monkeypatch.setattr(ray_trainable, "current_trial_id", lambda: "t1")
    monkeypatch.setattr(ray_trainable, "report_crashed",  # tune.report needs a Tune session
                        lambda dataset, members=0: state.reported.append(dataset))
    state.run = lambda: ray_trainable.run_trial({"trial": dict(TOY)}, None)
    return state


@pytest.mark.parametrize("error, cause", [
    (DatasetError("dataset 'mnist': cannot read /d/train-images-idx3-ubyte: EOF"),
     "DatasetError: dataset 'mnist': cannot read /d/train-images-idx3-ubyte: EOF"),
    (RuntimeError(DOWNLOAD), "RuntimeError: Error downloading train-images-idx3-ubyte.gz: "
     "<urlopen error [Errno -2] Name or service not known>"),
    (FileNotFoundError(2, "No such file or directory", "/d/images"),
     "FileNotFoundError: [Errno 2] No such file or directory: '/d/images'"),
])
def test_a_deterministic_error_ends_the_run_and_is_not_retried(trial, error, cause):
    trial.error = error
    assert trial.run() is None  # returned: Tune does not retry it
    assert trial.reported == ["ring8"]  # the worst values, crashed = 1
    assert trial.logger.status == "FAILED" and trial.logger.tags["lipstudy.status"] == "crashed"
    assert trial.logger.tags["lipstudy.crash_reason"] == cause


def test_other_errors_are_still_retried(trial):
    trial.error = RuntimeError("CUDA error: an illegal memory access was encountered")
    with pytest.raises(RuntimeError):
        trial.run()
    assert trial.reported == []
    assert trial.logger.status == "FAILED" and trial.logger.tags["lipstudy.status"] == "crashed"


def test_tunes_stop_leaves_the_runs_end_to_the_summary_never_crashed(trial):
    trial.error = SystemExit(0)  # what tune.report raises once Tune stops the trial
    with pytest.raises(SystemExit):
        trial.run()
    assert trial.logger.released and trial.logger.status is None, trial.logger.status
    assert trial.logger.tags == {}, trial.logger.tags


def test_a_signal_to_the_worker_ends_the_run_interrupted_not_crashed(trial):
    trial.error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        trial.run()
    assert trial.logger.status == "KILLED", trial.logger.status
    assert trial.logger.tags == {"lipstudy.status": "interrupted"}, trial.logger.tags


def test_a_stop_that_lands_after_the_summary_keeps_the_run_stopped_early(tmp_path):
    """The CI failure of test_chaos's ASHA + SIGINT scenario, in order: ASHA stops a trial whose
    actor Tune keeps for reuse; the study ends and its summary marks the run FINISHED /
    ``stopped_early``; only then does Tune tear the actor down, and ``tune.report`` raises
    ``SystemExit`` in the trial. That late end must not turn the run KILLED (it did: the trial
    wrote ``interrupted`` + KILLED as a second writer). Real sqlite store, real logger."""
    from mlflow.tracking import MlflowClient

    from study.summary import _member_summary
    from trainables.names import TRIAL_ID_TAG
    from trainables.ray.trainable import trial_config
    from trainables.tracking.mlflow_logger import MlflowTrialLogger
    from trainables.tracking.trial_runs import end_attempt

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("race", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="study").info.run_id
    logger = MlflowTrialLogger(uri, exp, name="ns-sn-k1-a1-s0", params={}, parent_run_id=parent,
                               tags={TRIAL_ID_TAG: "t1"}, synchronous=False)
    logger.log_metrics(20, {"fid": 3.5, "step": 20})
    logger.flush()  # on_checkpoint: flushed, then tune.report (which ASHA answers with a stop)
    logger.log_metrics(21, {"loss_d": 0.25})  # queued when the stop arrives

    res = SimpleNamespace(error=None, metrics={"fid": 3.5, "step": 20})
    s = _member_summary(client, trial_config, {"trial": dict(TOY)}, "t1", "",
                        client.get_run(logger.run_id), "TERMINATED", res)
    assert s.status == "stopped early"
    assert end_attempt([logger], SystemExit(0)) is False  # Tune tears the reused actor down

    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED", run.info.status
    assert run.data.tags["lipstudy.status"] == "stopped_early", run.data.tags
    assert run.data.tags["lipstudy.stopped_step"] == "20"
    assert [m.step for m in client.get_metric_history(logger.run_id, "loss_d")] == [21]


class FakeClient:
    def __init__(self, history):
        self.history, self.tags = history, {}

    def get_metric_history(self, run_id, key):
        return [SimpleNamespace(step=s, value=v) for s, v in self.history.get(key, [])]

    def set_tag(self, run_id, key, value):
        self.tags[key] = value

    def set_terminated(self, run_id, status):
        self.tags["__status"] = status


def test_the_interrupted_table_shows_the_last_logged_value():
    """Tune's last report (FID 1.95 at step 500, with its checkpoint) is older than what the run
    logged before the stop (1.018 at step 1000, its checkpoint not reported yet)."""
    from study.summary import _member_summary
    from trainables.ray.trainable import trial_config

    client = FakeClient({"loss_d": [(s, 0.1) for s in range(0, 1501, 100)],
                         "fid": [(500, 1.95), (1000, 1.018)]})
    run = SimpleNamespace(info=SimpleNamespace(run_id="r1", run_name="ns-sn-k1-a1-s0",
                                               status="RUNNING"),
                          data=SimpleNamespace(tags={}, metrics={"fid": 1.018, "loss_d": 0.1,
                                                                 "modes_covered": 7.0}))
    res = SimpleNamespace(error=None, metrics={"fid": 1.95, "step": 500, "modes_covered": 5.0})
    s = _member_summary(client, trial_config, {"trial": dict(TOY)}, "t1", "", run, "RUNNING", res)
    assert s.status == "interrupted" and s.step == 1500
    assert s.fid == 1.018 and s.modes == 7.0, (s.fid, s.modes)
    assert client.tags["lipstudy.status"] == "interrupted" and client.tags["__status"] == "KILLED"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_unreadable_data_is_one_attempt_with_its_cause_in_the_table(tmp_path, monkeypatch):
    """MNIST files that exist (the study validates) but hold nothing: one attempt although
    ``max_failures: 2``, the run FAILED with the reader's line, the table shows it."""
    import ray

    from study.spec import load_study
    from study.summary import print_summary
    from study.tuner import run_study

    data = tmp_path / "idx"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (data / name).touch()
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(f"""
        name: unreadable
        fixed: {{dataset: mnist, data_root: {data}, arch: dcgan32, width: 0.0625, iterations: 4,
                stats_every: 2, eval_every: 4, fid_samples: 20, batch_size: 8,
                fid_extractor: domain, device: cpu}}
        grid: {{loss: [ns]}}
        resources: {{cpu: 1, gpu: 0}}
        max_failures: 2
    """))
    monkeypatch.setenv("RAY_num_cpus", "2")
    spec, raw = load_study(path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        outcome = run_study(spec, raw, tracking_uri=uri, storage_path=str(tmp_path / "results"))
    finally:
        ray.shutdown()
    [t] = outcome.trials
    assert t.status == "crashed" and "cannot read" in t.error and "ray::" not in t.error, t
    errors = list((tmp_path / "results").rglob("error.txt"))
    assert errors == [], [e.read_text()[:300] for e in errors]  # Tune never saw it fail: no retry
    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(t.run_id)
    assert run.info.status == "FAILED" and run.data.tags["lipstudy.crash_reason"] == t.error
    out = io.StringIO()
    with redirect_stdout(out):
        print_summary(outcome)
    assert f"    {t.error}" in out.getvalue() and "1 crashed" in out.getvalue(), out.getvalue()
