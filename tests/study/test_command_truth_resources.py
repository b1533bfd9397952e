"""A per-trial resource request no node of the cluster can hold (a GPU on a GPU-less machine,
more CPUs than it has) is refused with one line before the study's parent run opens, when the
cluster is known in full: a local Ray, or an autoscaler whose node types were read. No Ray is
started here: the cluster is a ``ClusterView``."""

from __future__ import annotations

import pytest

from study import cluster
from study.cluster import ClusterError, ClusterView, NodeType, trial_request, unmet_request
from study.spec import parse_study

STUDY = """
name: unmet
fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 10, stats_every: 5, eval_every: 10,
        fid_samples: 40, batch_size: 16, device: cpu}
grid: {loss: [ns]}
resources: RESOURCES
"""
LAPTOP = {"CPU": 2.0, "memory": 8e9, "node:127.0.0.1": 1.0}  # what ray.nodes() lists here


def _spec(resources: str):
    return parse_study(STUDY.replace("RESOURCES", resources))


def _local(*nodes):
    return ClusterView(len(nodes), sum(n.get("GPU", 0) for n in nodes), True, live=nodes)


def test_requests_a_local_ray_cannot_hold_are_one_line():
    for resources, short in (("{cpu: 1, gpu: 1}", "1 GPU"), ("{cpu: 4, gpu: 0}", "4 CPU"),
                             ("{cpu: 1, gpu: 0, custom: {tpu: 1}}", "1 tpu")):
        spec = _spec(resources)
        line = unmet_request(trial_request(spec, float(spec.resources.gpu)), _local(LAPTOP))
        assert line and "\n" not in line and short in line and "no autoscaler" in line, line
    fits = _spec("{cpu: 2, gpu: 0}")
    assert unmet_request(trial_request(fits, 0.0), _local(LAPTOP)) is None
    gpu = _spec("{cpu: 1, gpu: 0.5}")  # a fraction of one of two fake GPUs
    assert unmet_request(trial_request(gpu, 0.5), _local({**LAPTOP, "GPU": 2.0})) is None


def test_an_autoscaler_that_can_start_a_fitting_node_is_not_refused():
    spec = _spec("{cpu: 4, gpu: 1}")
    request = trial_request(spec, 1.0)
    gpu_type = NodeType("gpu_worker", {"CPU": 8.0, "GPU": 1.0}, 2)
    unstated = NodeType("gpu_worker", {"GPU": 1.0}, 2)  # CPUs read from the instance type
    for types in ((gpu_type,), (unstated,)):
        view = ClusterView(1, 0, False, types, "cluster.yaml", live=(LAPTOP,))
        assert unmet_request(request, view) is None
    none_left = NodeType("gpu_worker", {"CPU": 8.0, "GPU": 1.0}, 0)
    cpu_type = NodeType("cpu_worker", {"CPU": 16.0}, 4)
    line = unmet_request(request, ClusterView(1, 0, False, (none_left, cpu_type), "cluster.yaml",
                                              live=(LAPTOP,)))
    assert line and "cpu_worker 16 CPU, 0 GPU" in line and "cluster.yaml" in line, line
    # a joined cluster whose autoscaler cannot be read may still grow: not refused
    assert unmet_request(request, ClusterView(1, 0, False, None, live=(LAPTOP,))) is None


def test_run_refuses_before_the_parent_run_opens(tmp_path, monkeypatch, capsys):
    """``lipstudy run`` of a GPU study on a GPU-less local Ray: exit 2, one line, no store."""
    import study.tuner
    from study import placement, ray_runtime
    from study.cli import main

    monkeypatch.setattr(ray_runtime, "init_ray", lambda *a, **k: None)
    monkeypatch.setattr(cluster, "read_cluster", lambda: _local(LAPTOP))

    def parent_opened(*a, **k):
        raise AssertionError("the study's parent run opened")

    monkeypatch.setattr(study.tuner, "start_study_run", parent_opened)
    path = tmp_path / "gpu.yaml"
    path.write_text(STUDY.replace("RESOURCES", "{cpu: 1, gpu: 1}"))
    rc = main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
               "--storage-path", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "1 GPU" in err[0], err
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "results").exists()
    with pytest.raises(ClusterError):
        placement.prepare_cluster(_spec("{cpu: 3, gpu: 0}"), str(tmp_path), "sqlite:///x.db",
                                  address=None, verbose=False)
