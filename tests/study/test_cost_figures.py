"""GPU costs and ``gpu: auto`` packing from the GPU benchmark's measured figures:
``bench/gpu_throughput.py --out`` writes ``figures.json``, ``study.cost`` prices a config of a
measured shape from it, and a ``gpu: auto`` study on a GPU cluster packs by the best P it found,
only on the GPU model the figures were measured on."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from study import cost
from study.spec import parse_study
from study.placement import auto_population, resolve_population
from trainables.config import validate_trial

ROOT = Path(__file__).resolve().parents[2]
SHAPE = dict(label="MNIST Table 2", dataset="fashion_mnist_mini", arch="dcgan32", channels=1,
             width=1.0, batch_size=64, regularizer="sn", n_dis=1,
             best_mode="population 16 cuda_graph", population=16, ms_per_trial_iteration=0.5,
             best_over_eager=12.0)


MODEL = "NVIDIA H100 80GB HBM3"  # torch.cuda.get_device_name; Ray's accelerator type: H100


@pytest.fixture(autouse=True)
def _no_gpu_model(monkeypatch):
    monkeypatch.delenv(cost.GPU_MODEL_ENV, raising=False)
    monkeypatch.setattr(cost, "_SAID", set())  # each test sees the fall-back line afresh


def _figures(tmp_path, device_type="cuda", version=cost.FIGURES_VERSION, shapes=(SHAPE,),
             gpu_model=MODEL):
    p = tmp_path / "figures.json"
    p.write_text(json.dumps({"version": version, "device_type": device_type,
                             "gpu_model": gpu_model, "shapes": list(shapes)}))
    return p


def test_no_figures_means_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv(cost.FIGURES_ENV, str(tmp_path / "absent.json"))
    assert cost.load_figures() is None
    cfg = validate_trial(dict(dataset="fashion_mnist_mini", width=1.0, iterations=1000,
                              eval_every=1000, fid_samples=1000), check_data=False)
    assert cost.trial_seconds(cfg) == cost.trial_seconds(cfg, None)
    assert cost.best_population(None) == 1


def test_cpu_figures_and_foreign_versions_do_not_price_a_gpu(tmp_path):
    assert cost.load_figures(_figures(tmp_path, device_type="cpu")) is None  # a CPU smoke run
    with pytest.raises(ValueError, match=f"version 0, expected {cost.FIGURES_VERSION}"):
        cost.load_figures(_figures(tmp_path, version=0))
    with pytest.raises(ValueError, match="without the GPU model"):
        cost.load_figures(_figures(tmp_path, gpu_model=None))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not a GPU figures file"):
        cost.load_figures(tmp_path / "bad.json")


def test_a_measured_shape_is_priced_from_the_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv(cost.GPU_MODEL_ENV, "H100")
    fig = cost.load_figures(_figures(tmp_path))
    base = dict(dataset="fashion_mnist_mini", width=1.0, iterations=10_000, eval_every=10_000,
                fid_samples=5_000)
    sn = validate_trial(base, check_data=False)
    fid_s = 5_000 / cost.FID_IMG_PER_S
    assert cost.trial_seconds(sn, fig) == pytest.approx(10_000 * 0.5e-3 + fid_s)
    # another regularizer of the same shape: the measurement scaled by the model's FLOP ratio
    gp = validate_trial({**base, "regularizer": "gp"}, check_data=False)
    ratio = (cost._step_flops("dcgan32", 1, 1.0, 64, 1, "gp")
             / cost._step_flops("dcgan32", 1, 1.0, 64, 1, "sn"))
    assert ratio > 1
    assert cost.trial_seconds(gp, fig) == pytest.approx(10_000 * 0.5e-3 * ratio + fid_s)
    # a shape the benchmark did not measure (width 0.5): the model
    half = validate_trial({**base, "width": 0.5}, check_data=False)
    assert cost.measured_shape(half, fig) is None
    assert cost.trial_seconds(half, fig) == cost.trial_seconds(half)
    assert cost.best_population(fig) == 16


def test_figures_count_only_on_the_gpu_model_they_were_measured_on(tmp_path, capsys,
                                                                   monkeypatch):
    fig = cost.load_figures(_figures(tmp_path))
    cfg = validate_trial(dict(dataset="fashion_mnist_mini", width=1.0, iterations=10_000,
                              eval_every=10_000, fid_samples=5_000), check_data=False)
    measured = 10_000 * 0.5e-3 + 5_000 / cost.FID_IMG_PER_S
    modelled = cost.trial_seconds(cfg)
    assert modelled != pytest.approx(measured)
    # model A (as torch names it, or as Ray's accelerator type): the measurement
    for a in (MODEL, "H100", "h100"):
        assert cost.best_population(fig, gpu_model=a) == 16
        assert cost.trial_seconds(cfg, fig, gpu_model=a) == pytest.approx(measured)
    assert capsys.readouterr().out == ""
    # model B: the model, said once
    assert cost.best_population(fig, gpu_model="NVIDIA A10G") == 1
    assert cost.trial_seconds(cfg, fig, gpu_model="NVIDIA A10G") == modelled
    hours = cost.study_gpu_hours([dict(cfg)] * 3, fig, "NVIDIA A10G")
    assert hours == pytest.approx(3 * modelled / 3600)
    out = capsys.readouterr().out.splitlines()
    assert out == [f"GPU figures measured on {MODEL}, the cluster runs NVIDIA A10G: costs and "
                   "packing use the model"]
    # unknown: no $LIPSTUDY_GPU_MODEL and no Ray cluster with a GPU node
    assert cost.cluster_gpu_model() is None
    assert cost.best_population(fig) == 1 and cost.trial_seconds(cfg, fig) == modelled
    assert "GPU model is unknown (set LIPSTUDY_GPU_MODEL)" in capsys.readouterr().out
    # a live GPU node's accelerator_type resource names the model (Ray adds it on GPU nodes)
    import ray

    from study import cluster

    view = cluster.ClusterView(live_nodes=2, live_gpus=1, started_here=False)
    monkeypatch.setattr(cluster, "read_cluster", lambda: view)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources",
                        lambda: {"CPU": 8.0, "GPU": 1.0, "accelerator_type:H100": 1.0})
    assert cost.cluster_gpu_model() == "H100"
    assert cost.best_population(fig) == 16
    monkeypatch.setattr(ray, "cluster_resources",
                        lambda: {"GPU": 2.0, "accelerator_type:A10G": 1.0})
    assert cost.best_population(fig) == 1
    monkeypatch.setenv(cost.GPU_MODEL_ENV, "H100")  # the environment overrides the cluster
    assert cost.best_population(fig) == 16
    monkeypatch.delenv(cost.GPU_MODEL_ENV)
    # an autoscaling cluster with no GPU node up yet: its GPU node types name the model
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert cost.cluster_gpu_model() is None
    for model, p in (("H100", 16), ("A10G", 1)):
        view = cluster.ClusterView(1, 0, False, declared=(
            cluster.NodeType("cpu", {"CPU": 8.0}, 2),
            cluster.NodeType("gpu", {"GPU": 1.0, f"accelerator_type:{model}": 1.0}, 4)))
        monkeypatch.setattr(cluster, "read_cluster", lambda v=view: v)
        assert cost.cluster_gpu_model() == model and cost.best_population(fig) == p


GRID = """
    name: auto-pack
    resources: {{gpu: {gpu}}}
    {population}
    fixed: {{dataset: ring8, arch: mlp, iterations: 10, eval_every: 10}}
    grid: {{loss: [ns, ls, wgan], k_sn: [1.0, 5.0]}}
"""


def _spec(tmp_path, gpu="auto", population="", text=GRID):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text.format(gpu=gpu, population=population)))
    return parse_study(path.read_text(), str(path))


def test_gpu_auto_packs_by_the_benchmarks_best_population(tmp_path, monkeypatch):
    fig = cost.load_figures(_figures(tmp_path))
    spec = _spec(tmp_path)
    assert auto_population(spec, 1, fig) == 1           # the cluster's GPU model is unknown
    monkeypatch.setenv(cost.GPU_MODEL_ENV, "A10G")
    assert auto_population(spec, 1, fig) == 1           # measured on another model
    monkeypatch.setenv(cost.GPU_MODEL_ENV, "H100")
    assert auto_population(spec, 1, fig) == 16          # GPU cluster of that model: P = 16
    assert auto_population(spec, 0, fig) == 1           # no GPU: trials run alone on CPU
    assert auto_population(spec, 4, None) == 1          # no figures: today's behaviour
    assert auto_population(_spec(tmp_path, population="population: 2"), 1, fig) == 2  # set: kept
    assert auto_population(_spec(tmp_path, gpu="1"), 1, fig) == 1  # a fixed GPU share: kept
    resolved = resolve_population(spec, 16)
    assert resolved.population == 16 and resolved.name == spec.name
    assert resolve_population(spec, 1) is spec


def test_an_auto_population_the_study_cannot_take_keeps_its_own(tmp_path, capsys):
    searched = """
        name: auto-search
        search: optuna
        num_samples: 4
        seeds: 3
        resources: {{gpu: {gpu}}}
        {population}
        fixed: {{dataset: ring8, arch: mlp, iterations: 10, eval_every: 10}}
        space: {{k_sn: {{loguniform: [0.5, 5.0]}}}}
    """
    spec = _spec(tmp_path, text=searched)
    kept = resolve_population(spec, 2)  # 3 seeds do not fit in a pack of 2
    assert kept is spec and kept.population == 1
    assert "does not fit this study" in capsys.readouterr().out
    assert resolve_population(spec, 4).population == 4


def test_the_benchmark_writes_figures_cost_reads(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_rows
        import gpu_report
    finally:
        sys.path.pop(0)
    rows = [bench_rows.Row("4 eager trials sharing the GPU (gpu: auto)", 4, 24.0),
            bench_rows.Row("single eager", 1, 5.0),
            bench_rows.Row("population 16 cuda_graph", 16, 8.0),
            bench_rows.Row("single compiled", 1, note="failed: RuntimeError: boom")]
    cfg = validate_trial(dict(dataset="fashion_mnist_mini", arch="dcgan32", width=1.0,
                              regularizer="sn", loss="ns"), check_data=False)
    results = [bench_rows.Result("MNIST Table 2", cfg, rows)]
    assert results[0].best.name == "population 16 cuda_graph"
    assert results[0].ratio == pytest.approx(6.0 / 0.5)  # vs the 4-trial baseline, not 1 eager
    out = tmp_path / "figures.json"
    monkeypatch.setattr(gpu_report, "gpu_model", lambda device: MODEL)
    gpu_report.write_figures(out, torch.device("cuda"), ["GPU: test"], results)
    fig = cost.load_figures(out)
    assert fig is not None and fig["gpu_model"] == MODEL
    assert cost.best_population(fig, "H100") == 16
    assert cost.best_population(fig, "A10G") == 1  # measured on another model: not used
    assert math.isclose(fig["shapes"][0]["ms_per_trial_iteration"], 0.5)
    assert math.isclose(fig["shapes"][0]["baseline_ms_per_trial_iteration"], 6.0)
    monkeypatch.setattr(gpu_report, "gpu_model", lambda device: None)
    gpu_report.write_figures(out, torch.device("cpu"), ["CPU"], results)
    assert cost.load_figures(out) is None  # a CPU smoke run never prices a GPU
