"""``resources: {gpu: auto}`` asks for the GPUs a cluster has *or can have* (``study.cluster``).

On the documented cluster (``cluster.yaml``: GPU workers with ``min_workers: 0``) no GPU is live
when a study starts. The end-to-end test runs a study on a Ray head with a real autoscaler (the
fake multi-node provider: each node it launches is a raylet on this machine with the declared fake
GPU) and checks that trials ask for 0.25 GPU, so the autoscaler starts a GPU node and the trials
run there (on CPU tensors: no CUDA behind a fake GPU). With no GPU live or declared, trials run on
CPU and one line says so.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from study.cluster import (AUTO_GPU_SHARE, ClusterView, NodeType, gpu_plan, multi_node_problems,
                           node_types_from_config)
from study.spec import StudyError, parse_study

ROOT = Path(__file__).resolve().parents[2]

STUDY = """
name: {name}
fixed: {{dataset: ring8, arch: mlp, width: 0.25, iterations: 10, stats_every: 5, eval_every: 10,
        fid_samples: 40, batch_size: 16, device: auto}}
grid: {{loss: [ns, wgan]}}
population: 1
resources: {{cpu: 1, gpu: auto}}
"""


def _spec(population: int = 1, gpu: str = "auto"):
    text = STUDY.format(name="g").replace("population: 1", f"population: {population}")
    return parse_study(text.replace("gpu: auto", f"gpu: {gpu}"))


GPU_TYPE = NodeType("gpu_worker", {"CPU": 8.0, "GPU": 1.0}, 8)


def test_declared_gpu_node_types_with_none_live_give_the_auto_share():
    view = ClusterView(live_nodes=1, live_gpus=0, started_here=False, declared=(GPU_TYPE,))
    assert gpu_plan(_spec(), view)[0] == AUTO_GPU_SHARE
    assert gpu_plan(_spec(population=2), view)[0] == 1.0  # a pack: a whole GPU
    assert gpu_plan(_spec(gpu="0.5"), view) == (0.5, None)  # the study's own share: kept


def test_no_gpu_anywhere_is_cpu_with_a_line_and_unknown_is_refused():
    cpu_only = NodeType("cpu_worker", {"CPU": 4.0}, 4)
    for view in (ClusterView(1, 0, started_here=True),  # a local Ray: live is everything
                 ClusterView(3, 0, started_here=False, declared=(cpu_only,))):
        share, note = gpu_plan(_spec(), view)
        assert share == 0 and "trials run on CPU" in note
    with pytest.raises(StudyError, match=r"set resources: \{gpu: 0.25\}"):
        gpu_plan(_spec(), ClusterView(2, 0, started_here=False, declared=None))
    assert gpu_plan(_spec(), ClusterView(2, 2, started_here=False))[0] == AUTO_GPU_SHARE


def test_cluster_yaml_declares_gpus_that_gpu_auto_asks_for():
    """The shipped cluster config: no GPU live at start, GPU workers declared → trials ask."""
    types = node_types_from_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    assert all(t.name != "head" for t in types)
    view = ClusterView(1, 0, started_here=False, declared=types, source="cluster.yaml")
    assert view.declared_gpus >= 1 and view.multi_node
    assert gpu_plan(_spec(), view)[0] == AUTO_GPU_SHARE
    problems = multi_node_problems(view, "/home/ubuntu/results", "sqlite:////home/u/m.db", False)
    assert len(problems) == 2


def _run(tmp_path, name, **kwargs):
    from study.spec import load_study
    from study.tuner import run_study

    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY.format(name=name)))
    spec, text = load_study(path)
    return run_study(spec, text, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                     storage_path=str(tmp_path / "results"), quiet=True, **kwargs)


def _spy_resources(monkeypatch):
    import study.tuner as tuner

    asked = []
    real = tuner.trial_resources

    def spy(spec):
        asked.append(real(spec))
        return asked[-1]

    monkeypatch.setattr(tuner, "trial_resources", spy)
    return asked


@pytest.mark.slow
def test_no_gpu_on_a_local_ray_runs_on_cpu_with_one_line(tmp_path, monkeypatch, capsys):
    import ray

    monkeypatch.chdir(tmp_path)
    asked = _spy_resources(monkeypatch)
    try:
        outcome = _run(tmp_path, "gpu-auto-local")
    finally:
        ray.shutdown()
    assert [t.status for t in outcome.trials] == ["finished"] * 2
    assert asked and all(r["gpu"] == 0 for r in asked)
    lines = [line for line in capsys.readouterr().out.splitlines() if "gpu: auto" in line]
    assert lines == ["gpu: auto: no GPU on this cluster (none live, none an autoscaler can "
                     "start): trials run on CPU"]


@pytest.fixture
def autoscaling_head(tmp_path, monkeypatch):
    import ray

    from tests.study._autoscaling import AUTH_ENV, start_autoscaling_head

    for key, value in AUTH_ENV.items():
        monkeypatch.setenv(key, value)
    # Ray caches the auth mode it read from the environment at import; re-read it, as Ray's own
    # token-auth set-up does (authentication_token_setup._enable_token_auth)
    from ray._raylet import Config

    Config.initialize("")
    head = start_autoscaling_head(tmp_path, {"gpu_worker": {
        "resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0,
        "max_workers": 1}})
    # the driver runs on the head, where `ray up` puts the config the autoscaler reads
    monkeypatch.setenv("LIPSTUDY_AUTOSCALING_CONFIG", str(head.config_path))
    try:
        ray.init(address=head.address, log_to_driver=False)
        yield head
    finally:
        ray.shutdown()
        head.stop()


@pytest.mark.slow
def test_declared_gpu_nodes_with_none_live_make_trials_ask_for_gpus(tmp_path, monkeypatch, capsys,
                                                                     autoscaling_head):
    import ray
    import ray._private.state as ray_state
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    assert ray.cluster_resources().get("GPU", 0) == 0  # nothing live: the autoscaler's to start
    head_id = ray.get_runtime_context().get_node_id()
    asked = _spy_resources(monkeypatch)
    # one machine: the local storage and SQLite store are seen by every fake node
    outcome = _run(tmp_path, "gpu-auto-autoscaler", shared_fs=True)
    assert asked and all(r["gpu"] == AUTO_GPU_SHARE for r in asked)
    assert [t.status for t in outcome.trials] == ["finished"] * 2, outcome.trials
    out = capsys.readouterr().out
    assert "gpu: auto: 0.25 GPU per trial (GPUs: 0 live, 1 the autoscaler can start)" in out

    trial_nodes = {a["Address"]["NodeID"] for a in ray_state.actors().values()
                   if "ImplicitFunc" in a.get("ActorClassName", "")}
    gpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("GPU", 0) >= 1}
    assert gpu_nodes, "the autoscaler started no GPU node"
    assert trial_nodes and head_id not in trial_nodes and trial_nodes <= gpu_nodes
    runs = [r for r in MlflowClient(outcome.tracking.tracking_uri).search_runs(
        [outcome.tracking.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    assert len(runs) == 2
    assert {r.data.params["device"] for r in runs} == {"cpu"}  # a fake GPU: CPU tensors
