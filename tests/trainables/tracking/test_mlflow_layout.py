"""One trial's MLflow run: metrics, artifacts, and continuation of the same run without duplicate
steps (fast, no Ray: ``train`` with the ``MlflowCallbacks`` the Ray trainable uses)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.trainables import tiny
from trainables.tracking.mlflow_logger import MlflowTrialLogger
from trainables.names import TRIAL_ID_TAG
from trainables.ray.trainable import MlflowCallbacks
from trainables.metrics.stats import FD_DELTAS, fd_key
from trainables.train import train


def images(**kw):
    """The tiny image trial, measured every 2 steps, with a final FID at N = 60 and FID∞."""
    return tiny.images(**{"k_sn": 1.0, "stats_every": 2, "fid_final_samples": 60,
                          "fid_inf": True, **kw})


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("layout", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="study").info.run_id
    return uri, exp, parent, client


def _logger(store, cfg, run_id=None, trial_id="t0", synchronous=True):
    uri, exp, parent, _ = store
    return MlflowTrialLogger(uri, exp, name="ns-sn-k1-a1-s0", params=cfg, parent_run_id=parent,
                             tags={TRIAL_ID_TAG: trial_id}, run_id=run_id,
                             synchronous=synchronous)


def _histories(client, run_id):
    keys = client.get_run(run_id).data.metrics.keys()
    return {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, k),
                                                   key=lambda m: (m.step, m.timestamp))]
            for k in keys}


def test_trial_run_has_every_metric_and_artifact(store):
    cfg = images()
    logger = _logger(store, cfg)
    train(cfg, MlflowCallbacks(logger, cfg))
    logger.finish()
    client = store[3]
    run = client.get_run(logger.run_id)
    m = run.data.metrics
    for k in ("fid", "kid", "fid_final", "kid_final", "fid_inf", "fid_final_samples",
              "omega_union_min", "omega_union_max", "omega_bound", "omega_within_bound",
              "sn_sigma_product", "sn_k_product", "grad_norm_real", "grad_norm_fake_q75",
              "grad_norm_real_min", "grad_norm_real_median", "grad_norm_fake_max",
              *[fd_key(d) for d in FD_DELTAS], fd_key(10) + "_max", fd_key(0.01) + "_real"):
        assert k in m and math.isfinite(m[k]), k
    assert m["fid_final_samples"] == 60 and m["omega_within_bound"] == 1.0
    assert m["fid_final"] > 0 and m["fid_inf"] == pytest.approx(m["fid_final"], rel=0.5)
    # every stats step once, evaluations at 3 and 6, final values once at the last step
    hist = _histories(client, logger.run_id)
    assert [s for s, _ in hist["loss_d"]] == [2, 4, 6]
    assert [s for s, _ in hist["fid"]] == [3, 6]
    assert [s for s, _ in hist["fid_final"]] == [6]

    def paths(prefix=None):
        return sorted(a.path for a in client.list_artifacts(logger.run_id, prefix))

    assert paths() == ["config.json", "final", "plots", "samples"]
    assert paths("samples") == ["samples/step_0000003.png", "samples/step_0000006.png"]
    assert paths("final") == ["final/samples.npz", "final/samples.png"]
    assert paths("plots") == ["plots/omega_intervals.png"]
    local = client.download_artifacts(logger.run_id, "")
    with open(f"{local}/config.json") as fh:
        assert json.load(fh)["fid_final_samples"] == 60
    with np.load(f"{local}/final/samples.npz") as z:
        assert z["samples"].shape == (60, 1, 32, 32) and z["samples"].dtype == np.uint8
    from PIL import Image

    for p in ("plots/omega_intervals.png", "final/samples.png", "samples/step_0000006.png"):
        with Image.open(f"{local}/{p}") as im:
            assert im.size[0] > 100, p


class Crash(RuntimeError):
    pass


class CrashAt(MlflowCallbacks):
    """Dies right after logging the metrics of ``step`` (past the last checkpoint), keeping the
    checkpoints it was handed, as Tune would."""

    def __init__(self, logger, cfg, step):
        super().__init__(logger, cfg)
        self.crash_step, self.states = step, {}

    def on_stats(self, step, metrics):
        super().on_stats(step, metrics)
        if step == self.crash_step:
            raise Crash(step)

    def on_checkpoint(self, step, state, metrics):
        buf = io.BytesIO()
        import torch

        torch.save(state, buf)
        buf.seek(0)
        self.states[step] = torch.load(buf, weights_only=True)


@pytest.mark.parametrize("synchronous", [True, False], ids=["sync", "writer-thread"])
def test_resumed_trial_continues_the_run_without_duplicate_steps(store, synchronous):
    cfg = images(iterations=8, stats_every=1, eval_every=4, fid_inf=False)
    ref_logger = _logger(store, cfg, trial_id="reference")
    train(cfg, MlflowCallbacks(ref_logger, cfg))
    ref = _histories(store[3], ref_logger.run_id)

    logger = _logger(store, cfg, trial_id="crashing", synchronous=synchronous)
    cb = CrashAt(logger, cfg, step=6)
    with pytest.raises(Crash):
        train(cfg, cb)
    logger.flush()  # a killed process would lose the queue's tail: covered by the Ray test
    assert set(cb.states) == {4}
    # the retry gets the run id from the checkpoint
    resumed = _logger(store, cfg, run_id=logger.run_id, trial_id="crashing",
                      synchronous=synchronous)
    assert resumed.resumed and resumed.run_id == logger.run_id
    assert resumed.logged_steps()["loss_d"] == 6
    train(cfg, MlflowCallbacks(resumed, cfg), state=cb.states[4])
    resumed.finish()
    logger.finish()
    got = _histories(store[3], logger.run_id)
    assert got.keys() == ref.keys()
    for k in ref:
        steps = [s for s, _ in got[k]]
        assert steps == sorted(set(steps)), f"{k}: duplicate steps {steps}"
        assert steps == [s for s, _ in ref[k]], k
        np.testing.assert_allclose([v for _, v in got[k]], [v for _, v in ref[k]], rtol=1e-5,
                                   err_msg=k)
    _, exp, parent, client = store
    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2  # the reference and the crashed-then-resumed trial, nothing else


def test_trial_killed_before_its_first_checkpoint_finds_its_run_by_trial_id(store):
    cfg = images(iterations=4, stats_every=1, eval_every=4, fid_inf=False)
    logger = _logger(store, cfg, trial_id="early")
    with pytest.raises(Crash):
        train(cfg, CrashAt(logger, cfg, step=2))
    again = _logger(store, cfg, trial_id="early")  # no checkpoint: no run id handed over
    assert again.run_id == logger.run_id and again.resumed
    train(cfg, MlflowCallbacks(again, cfg))  # starts from scratch, logs only new steps
    got = _histories(store[3], logger.run_id)
    assert [s for s, _ in got["loss_d"]] == [1, 2, 3, 4]
    other = _logger(store, cfg, trial_id="another")
    assert other.run_id != logger.run_id and not other.resumed


def test_writer_thread_keeps_order_and_surfaces_errors(store):
    cfg = images()
    logger = _logger(store, cfg, synchronous=False)
    for step in range(1, 41):
        logger.log_metrics(step, {"a": float(step), "b": -float(step)})
    logger.flush()
    hist = _histories(store[3], logger.run_id)
    assert hist["a"] == [(s, float(s)) for s in range(1, 41)]
    logger.log_metrics(41, {"a": float("nan")})  # NaN is a valid metric value
    logger.client.log_batch = lambda *a, **k: (_ for _ in ()).throw(OSError("store gone"))
    logger.log_metrics(42, {"a": 1.0})
    with pytest.raises(RuntimeError, match="store gone"):
        logger.flush()
