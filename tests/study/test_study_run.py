"""End to end: study file → Ray Tune (grid and Optuna) → trials → MLflow parent/child runs.

Slow (starts a local Ray with 2 CPUs): marked ``slow``; CI runs it too.
"""

import json
import math
import textwrap

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(tmp_path, text):
    from study.spec import load_study
    from study.tuner import run_study

    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    spec, raw = load_study(path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_study(spec, raw, tracking_uri=uri, storage_path=str(tmp_path / "results"))
    return spec, outcome, uri


def _runs(uri, experiment_id):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lipstudy.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return client, parents, children


def test_grid_study_logs_parent_children_metrics_grids_and_divergence(tmp_path, ray_local,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, outcome, uri = _run(tmp_path, """
        name: e2e-grid
        hypotheses: [H1]
        fixed: {iterations: 8, stats_every: 2, eval_every: 4, fid_samples: 60, batch_size: 16,
                device: cpu}
        grid:
          - {dataset: [ring8], arch: [mlp], width: [0.25], loss: [ns, wgan], k_sn: [1.0]}
          - {dataset: [ring8], arch: [mlp], width: [0.25], loss: [exp], alpha: [1.0e11]}
          - {dataset: [fashion_mnist_mini], arch: [dcgan32], width: [0.0625], loss: [ls],
             fid_extractor: [domain]}
    """)
    status = {t.name: t.status for t in outcome.trials}
    assert len(status) == 4, status
    assert status["exp-sn-k1-a1e+11-s0"] == "diverged"
    assert sum(s == "finished" for s in status.values()) == 3, status

    client, parents, children = _runs(uri, outcome.tracking.experiment_id)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lipstudy.hypotheses"] == "H1"
    assert "study.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        p = run.data.params
        for key in ("loss", "regularizer", "alpha", "eps", "optimizer", "lr_d", "seed", "dataset",
                    "fid_extractor", "fid_samples", "fid_ref_split", "k_sn"):
            assert key in p, key
        if run.data.tags["lipstudy.status"] == "diverged":
            assert run.data.metrics["diverged"] == 1.0
            assert "non-finite" in run.data.tags["lipstudy.diverged_reason"]
            continue
        fid_steps = [m.step for m in client.get_metric_history(run.info.run_id, "fid")]
        assert sorted(fid_steps) == [4, 8]
        for key in ("loss_d", "loss_g", "omega_real_min", "omega_fake_max", "psi_min",
                    "psi_attained_max", "grad_norm_real", "grad_norm_fake"):
            hist = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in hist] == [2, 4, 6, 8], key
            assert all(math.isfinite(m.value) for m in hist)
        grids = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
        assert grids == ["samples/step_0000004.png", "samples/step_0000008.png"]
    image_run = next(r for r in children if r.data.params["dataset"] == "fashion_mnist_mini")
    assert image_run.data.params["fid_extractor"] == "domain"
    assert "kid" in image_run.data.metrics

    # Tune reuses a finished trial's actor for the next trial (reuse_actors): 4 trials, 2 CPUs,
    # so at most 2 worker processes ran them (Tune writes each result's pid), the diverged one
    # included; that nothing leaks between trials is checked by tests/study/test_chaos.py, which
    # compares every run with a plain train() of its config
    pids = {json.loads(f.read_text().splitlines()[-1])["pid"]
            for f in (tmp_path / "results").rglob("result.json")}
    assert 1 <= len(pids) <= 2, pids


def test_optuna_study_with_conditional_space_and_seed_replicates(tmp_path, ray_local, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, outcome, uri = _run(tmp_path, """
        name: e2e-optuna
        search: optuna
        fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 4, stats_every: 2,
                eval_every: 2, fid_samples: 50, batch_size: 16, device: cpu}
        space:
          loss: {choice: [ns, wgan]}
          regularizer: {choice: [sn, none]}
          k_sn: {loguniform: [0.5, 5.0], when: {regularizer: sn}}
          alpha: {loguniform: [1.0e-3, 1.0e3]}
        num_samples: 3
        seeds: 2
        scheduler: asha
    """)
    assert len(outcome.trials) == 6
    # ASHA may stop trials at an evaluation: a full run that ends early, never a lost one; a
    # trial that ran all 4 steps is finished, with its own ending (it used to be stopped by ASHA
    # at its last report, max_t: "stopped early at step 4", no step times, no diverged = 0)
    assert all(t.status in ("finished", "stopped early") for t in outcome.trials), outcome.trials
    assert all((t.status == "stopped early") == (t.step < 4) for t in outcome.trials), [
        (t.name, t.status, t.step) for t in outcome.trials]
    client, parents, children = _runs(uri, outcome.tracking.experiment_id)
    assert len(children) == 6
    for run in children:
        assert run.info.status == "FINISHED", (run.info.run_name, run.data.tags)
        early = run.data.tags["lipstudy.status"] == "stopped_early"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "fid")]
        assert max(steps) >= (int(float(run.data.tags["lipstudy.stopped_step"])) if early else 4)
        if early:
            assert int(float(run.data.tags["lipstudy.stopped_step"])) < 4, run.data.tags
        else:
            assert run.data.tags["lipstudy.status"] == "finished", run.data.tags
            assert run.data.metrics["diverged"] == 0.0 and "step_time_median_ms" in (
                run.data.metrics), (run.info.run_name, sorted(run.data.metrics))
    by_config: dict = {}
    for run in children:
        p = run.data.params
        assert ("k_sn" in p) == (p["regularizer"] == "sn")  # conditional key only under sn
        assert 1e-3 <= float(p["alpha"]) <= 1e3
        key = tuple(sorted((k, v) for k, v in p.items() if k != "seed"))
        by_config.setdefault(key, set()).add(p["seed"])
    # each sampled configuration ran once per seed replicate
    assert sorted(map(sorted, by_config.values())) == [["0", "1"]] * 3
