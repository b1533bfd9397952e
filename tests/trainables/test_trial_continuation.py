"""A trial SIGKILLed mid-run is retried by Ray Tune from its last checkpoint and continues the
same MLflow run: one run per trial, every step once, the same values as an uninterrupted run.

Slow (local Ray with 2 CPUs, a real worker crash): marked ``slow``; CI runs it too.
"""

from __future__ import annotations

import math
import os
import textwrap

import numpy as np
import pytest

from trainables.ray_trainable import FAULT_ENV

pytestmark = pytest.mark.slow

KILL_STEP = 6  # past the checkpoint at step 4, metrics of steps 5-6 already logged


@pytest.fixture(scope="module")
def ray_with_fault(tmp_path_factory):
    import ray

    trigger = tmp_path_factory.mktemp("fault") / "kill-once"
    old = os.environ.get(FAULT_ENV)
    os.environ[FAULT_ENV] = f"{KILL_STEP}:{trigger}"  # inherited by the Ray workers
    # address="local": a fresh Ray of our own, even when another Ray runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield trigger
    ray.shutdown()
    if old is None:
        os.environ.pop(FAULT_ENV, None)
    else:
        os.environ[FAULT_ENV] = old


def test_killed_trial_continues_the_same_run_without_duplicate_steps(tmp_path, ray_with_fault,
                                                                    monkeypatch):
    from mlflow.tracking import MlflowClient

    from study.spec import load_study
    from study.tuner import run_study
    from trainables.config import validate_trial
    from trainables.train import Callbacks, train

    monkeypatch.chdir(tmp_path)
    fixed = dict(dataset="fashion_mnist_mini", arch="dcgan32", width=0.0625, loss="ns",
                 regularizer="sn", k_sn=1.0, iterations=8, stats_every=1, eval_every=4,
                 fid_samples=40, fid_extractor="domain", batch_size=16, device="cpu")
    ray_with_fault.write_text("armed")
    study = tmp_path / "study.yaml"
    study.write_text(textwrap.dedent("""\
        name: e2e-kill
        max_failures: 1
        resources: {cpu: 1, gpu: 0}
        fixed:
        """) + "".join(f"  {k}: {v}\n" for k, v in fixed.items()))
    spec, text = load_study(study)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_study(spec, text, tracking_uri=uri, storage_path=str(tmp_path / "results"),
                        quiet=True)
    assert not ray_with_fault.exists(), "the trial was never killed"
    assert [t.status for t in outcome.trials] == ["finished"], outcome.trials

    client = MlflowClient(uri)
    runs = client.search_runs([outcome.tracking.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 1, [r.info.run_name for r in children]  # no duplicate run
    run = children[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "ns-sn-k1-a1-s0"
    assert run.data.tags["lipstudy.status"] == "finished"

    class Rec(Callbacks):
        def __init__(self):
            self.stats, self.evals = {}, {}

        def on_stats(self, step, m):
            self.stats[step] = m

        def on_eval(self, step, m, grid):
            self.evals[step] = m

    ref = Rec()
    train(validate_trial(fixed), ref)  # the uninterrupted trajectory
    for key in ("loss_d", "omega_union_max", "grad_norm_fake_median", "fd_lipschitz_1"):
        hist = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        steps = [m.step for m in hist]
        assert steps == list(range(1, 9)), (key, steps)  # each step exactly once
        np.testing.assert_allclose([m.value for m in hist], [ref.stats[s][key] for s in steps],
                                   rtol=1e-4, err_msg=key)
    fid = sorted(client.get_metric_history(run.info.run_id, "fid"), key=lambda m: m.step)
    assert [m.step for m in fid] == [4, 8]
    assert [m.value for m in fid] == pytest.approx([ref.evals[4]["fid"], ref.evals[8]["fid"]],
                                                   rel=1e-4)
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "samples", "final", "plots"} <= arts
    assert math.isfinite(run.data.metrics["fid_final"])
