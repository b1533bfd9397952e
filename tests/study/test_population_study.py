"""A grid study with ``population: 4`` records what the same study with ``population: 1`` records.

Same MLflow child runs with the same names, ``loss_d`` and Ω at the last stats step within 1e-3
relative, FID within 2 %, on a ring8 grid and a tiny dcgan32 grid over losses, k_SN and α.
Slow (two studies on a local Ray with 2 CPUs): marked ``slow``.
"""

from __future__ import annotations

import textwrap

import pytest

pytestmark = pytest.mark.slow

STUDY = """
    name: pop-{p}
    population: {p}
    fixed: {{iterations: 12, stats_every: 4, eval_every: 6, fid_samples: 100, batch_size: 16,
            device: cpu, lr_d: 2.0e-4, lr_g: 2.0e-4, regularizer: sn}}
    grid:
      - {{dataset: [ring8], arch: [mlp], width: [0.25], loss: [ns, wgan, ls], k_sn: [1.0, 5.0],
         alpha: [1.0]}}
      - {{dataset: [ring8], arch: [mlp], width: [0.25], loss: [ns], k_sn: [1.0], alpha: [0.01]}}
      - {{dataset: [fashion_mnist_mini], arch: [dcgan32], width: [0.0625], loss: [ns, wgan],
         k_sn: [1.0, 10.0], fid_extractor: [domain]}}
"""
KEYS = ("loss_d", "omega_real_min", "omega_real_max", "omega_fake_min", "omega_fake_max")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _study(tmp_path, p):
    from mlflow.tracking import MlflowClient

    from study.spec import load_study
    from study.tuner import run_study

    d = tmp_path / f"p{p}"
    d.mkdir()
    path = d / "study.yaml"
    path.write_text(textwrap.dedent(STUDY.format(p=p)))
    spec, raw = load_study(path)
    uri = f"sqlite:///{d / 'mlflow.db'}"
    outcome = run_study(spec, raw, tracking_uri=uri, storage_path=str(d / "results"), quiet=True)
    client = MlflowClient(uri)
    runs = client.search_runs([outcome.experiment_id if hasattr(outcome, "experiment_id")
                               else client.get_experiment_by_name(spec.name).experiment_id],
                              max_results=1000)
    children = {(r.info.run_name, r.data.params["dataset"]): r for r in runs
                if r.data.tags.get("mlflow.parentRunId")}
    return client, children


def _last(client, run, key):
    hist = client.get_metric_history(run.info.run_id, key)
    return max(hist, key=lambda m: m.step)


@pytest.mark.scenario
def test_population_4_equals_population_1(tmp_path, ray_local, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c1, solo = _study(tmp_path, 1)
    c4, pack = _study(tmp_path, 4)
    assert len(solo) == 11 and sorted(solo) == sorted(pack)
    for name, a in solo.items():
        b = pack[name]
        assert a.info.status == b.info.status == "FINISHED", name
        assert a.data.params == b.data.params, name
        assert a.data.tags.get("lipstudy.status") == b.data.tags.get("lipstudy.status")
        assert set(a.data.metrics) == set(b.data.metrics), name
        for key in a.data.metrics:  # same steps, no duplicates
            sa = [m.step for m in c1.get_metric_history(a.info.run_id, key)]
            sb = [m.step for m in c4.get_metric_history(b.info.run_id, key)]
            assert sorted(sa) == sorted(sb) and len(set(sb)) == len(sb), (name, key)
        for key in KEYS:
            x, y = _last(c1, a, key), _last(c4, b, key)
            assert x.step == y.step and abs(x.value - y.value) <= 1e-3 * abs(x.value), (name, key)
        x, y = _last(c1, a, "fid"), _last(c4, b, "fid")
        assert abs(x.value - y.value) <= 0.02 * abs(x.value), name
        arts_a = {f.path for f in c1.list_artifacts(a.info.run_id)}
        arts_b = {f.path for f in c4.list_artifacts(b.info.run_id)}
        assert arts_a == arts_b, name
