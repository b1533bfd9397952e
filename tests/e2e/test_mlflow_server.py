"""Trials logging at once to a real MLflow tracking server over HTTP (``mlflow server`` on
loopback, started here): each trial one child run with every step once, artifacts proxied."""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.slow


def test_concurrent_trials_log_to_a_tracking_server(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from study.tracking import start_study_run
    from trainables.config import validate_trial
    from trainables.tracking.mlflow_logger import MlflowTrialLogger
    from trainables.names import TRIAL_ID_TAG
    from trainables.ray.trainable import MlflowCallbacks, trial_run_name
    from trainables.train import train

    tracking = start_study_run(mlflow_server, "server-study", "name: server-study\n",
                               hypotheses=["H1"])
    base = dict(dataset="ring8", arch="mlp", width=0.25, regularizer="sn", iterations=12,
                stats_every=1, eval_every=6, fid_samples=200, batch_size=32, device="cpu")
    configs = [validate_trial({**base, "loss": loss, "k_sn": k})
               for loss, k in (("ns", 1.0), ("wgan", 1.0), ("ls", 5.0), ("hinge", 0.5))]
    errors, run_ids = [], {}
    barrier = threading.Barrier(len(configs))

    def one(i, cfg):
        try:
            name = trial_run_name(cfg)
            logger = MlflowTrialLogger(mlflow_server, tracking.experiment_id, name=name,
                                       params=cfg, parent_run_id=tracking.parent_run_id,
                                       tags={TRIAL_ID_TAG: f"t{i}"})
            run_ids[name] = logger.run_id
            barrier.wait(timeout=60)  # all trials log at the same time
            train(cfg, MlflowCallbacks(logger, cfg))
            logger.finish()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(configs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([tracking.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{tracking.parent_run_id}'")
    assert sorted(r.info.run_name for r in runs) == sorted(run_ids)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["loss"] in ("ns", "wgan", "ls", "hinge")
        for key in ("loss_d", "omega_union_max", "fd_lipschitz_0.1", "grad_norm_real_q25"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(1, 13)), (run.info.run_name, key, steps)
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "fid")) == [6, 12]
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.json", "samples", "plots"} <= arts, arts
