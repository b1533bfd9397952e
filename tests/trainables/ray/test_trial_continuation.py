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

from trainables.ray.trainable import FAULT_ENV

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


@pytest.mark.scenario
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


@pytest.mark.scenario
def test_killed_pack_is_retried_and_every_member_continues_its_run(tmp_path, ray_with_fault,
                                                                   monkeypatch):
    """Issue #12 "Resume and retry tests for packs": a population trial (3 members: losses × k_SN)
    SIGKILLed at step 6 — after its first member logged step 6, before the others did — is
    retried by Tune's FailureConfig from the step-4 checkpoint. Every member keeps ONE MLflow run
    with each step once, and its values are those of its own one-config trial (the pack-vs-alone
    tolerances of tests/study/test_population_study.py: 1e-3 on loss_d and Ω, 2 % on FID)."""
    from mlflow.tracking import MlflowClient

    from study.spec import load_study
    from study.tuner import run_study
    from trainables.config import validate_trial
    from trainables.ray.trainable import trial_run_name
    from trainables.train import Callbacks, train

    monkeypatch.chdir(tmp_path)
    fixed = dict(dataset="fashion_mnist_mini", arch="dcgan32", width=0.0625, regularizer="sn",
                 iterations=8, stats_every=1, eval_every=4, fid_samples=40,
                 fid_extractor="domain", batch_size=16, device="cpu")
    members = [dict(loss="ns", k_sn=1.0), dict(loss="wgan", k_sn=1.0), dict(loss="ns", k_sn=5.0)]
    ray_with_fault.write_text("armed")
    study = tmp_path / "study.yaml"
    study.write_text(textwrap.dedent("""\
        name: e2e-kill-pack
        max_failures: 1
        population: 3
        resources: {cpu: 1, gpu: 0}
        fixed:
        """) + "".join(f"  {k}: {v}\n" for k, v in fixed.items())
        + "grid:\n" + "".join(f"  - {{loss: [{m['loss']}], k_sn: [{m['k_sn']}]}}\n"
                              for m in members))
    spec, text = load_study(study)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_study(spec, text, tracking_uri=uri, storage_path=str(tmp_path / "results"),
                        quiet=True)
    assert not ray_with_fault.exists(), "the pack was never killed"
    assert [t.status for t in outcome.trials] == ["finished"] * 3, outcome.trials

    client = MlflowClient(uri)
    runs = client.search_runs([outcome.tracking.experiment_id])
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    configs = [validate_trial({**fixed, **m}) for m in members]
    assert sorted(children) == sorted(trial_run_name(c) for c in configs)  # no duplicate run

    class Rec(Callbacks):
        def __init__(self):
            self.stats, self.evals = {}, {}

        def on_stats(self, step, m):
            self.stats[step] = m

        def on_eval(self, step, m, grid):
            self.evals[step] = m

    for cfg in configs:
        run = children[trial_run_name(cfg)]
        assert run.info.status == "FINISHED" and run.data.tags["lipstudy.status"] == "finished"
        ref = Rec()
        train(cfg, ref)  # the member's own uninterrupted one-config trial
        for key in ("loss_d", "omega_real_min", "omega_fake_max", "omega_union_max"):
            hist = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
            steps = [m.step for m in hist]
            assert steps == list(range(1, 9)), (run.info.run_name, key, steps)  # each step once
            np.testing.assert_allclose([m.value for m in hist], [ref.stats[s][key] for s in steps],
                                       rtol=1e-3, atol=1e-6, err_msg=f"{run.info.run_name} {key}")
        fid = sorted(client.get_metric_history(run.info.run_id, "fid"), key=lambda m: m.step)
        assert [m.step for m in fid] == [4, 8], run.info.run_name
        assert [m.value for m in fid] == pytest.approx([ref.evals[4]["fid"], ref.evals[8]["fid"]],
                                                       rel=0.02)
        assert math.isfinite(run.data.metrics["fid_final"])
