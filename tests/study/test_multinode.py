"""Multi-node on one machine: ``ray.cluster_utils.Cluster`` (a head with no trial resources + two
worker nodes, each with a declared fake GPU and a custom resource). Trials request fractional GPUs,
spread over both nodes, and run on CPU tensors (no CUDA behind the fake GPUs). A second study logs
to a real ``mlflow server`` on loopback over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from tests.study._procs import family, kill_pids

pytestmark = pytest.mark.slow

TRIALS = """
fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 20, stats_every: 10, eval_every: 10,
        fid_samples: 40, batch_size: 16, device: auto}
grid: {loss: [ns, wgan], k_sn: [0.5, 2.0]}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (one worker, no job runner: ~0.5 GiB).
    Started first: it needs ~15 s to answer /health while the cluster starts."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        cwd=root, env=env, stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    yield proc, url, root
    kill_pids(family(proc.pid))


def _wait_healthy(proc, url, root, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError("mlflow server did not answer /health")


@pytest.fixture(scope="module")
def cluster(mlflow_server):
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1, num_gpus=1, resources={"lipnode": 1.0}) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def _run(tmp_path, name, extra, uri):
    from study.spec import load_study
    from study.tuner import run_study

    path = tmp_path / "study.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(TRIALS) + textwrap.dedent(extra))
    spec, text = load_study(path)
    # one machine: every node sees tmp_path, so the local storage and SQLite store are shared
    # (study.cluster refuses them on a multi-node cluster without this marker)
    return run_study(spec, text, tracking_uri=uri, storage_path=str(tmp_path / "results"),
                     quiet=True, shared_fs=True)


def _children(uri, exp_id):
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs([exp_id], max_results=100)
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId")]


def test_trials_spread_over_nodes_with_fractional_fake_gpus(tmp_path, cluster, monkeypatch):
    import ray._private.state as ray_state

    monkeypatch.chdir(tmp_path)
    c, nodes = cluster
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = _run(tmp_path, "multinode", "resources: {cpu: 1, gpu: 0.5, custom: {lipnode: 0.5}}\n",
                   uri)
    assert [t.status for t in outcome.trials] == ["finished"] * 4, outcome.trials
    runs = _children(uri, outcome.tracking.experiment_id)
    assert len(runs) == 4
    assert {r.data.params["device"] for r in runs} == {"cpu"}  # fake GPUs: CPU tensors

    trial_actors = [a for a in ray_state.actors().values()
                    if "ImplicitFunc" in a.get("ActorClassName", "")]
    used = {a["Address"]["NodeID"] for a in trial_actors}
    worker_ids = {n.node_id for n in nodes}
    assert used <= worker_ids, "a trial ran on the head, which offers no GPU / lipnode"
    assert used == worker_ids, f"trials did not spread over both nodes: {used}"
    # each node has 1 fake GPU and 1 CPU: trials asked for 0.5 GPU each and got them there


def test_trials_log_to_an_mlflow_server_over_http(tmp_path, cluster, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    proc, url, root = mlflow_server
    _wait_healthy(proc, url, root)
    outcome = _run(tmp_path, "over-http", "resources: {cpu: 1, gpu: 0.25}\n", url)
    assert outcome.tracking.tracking_uri == url
    assert all(t.status == "finished" for t in outcome.trials), outcome.trials
    runs = _children(url, outcome.tracking.experiment_id)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(url)
    for r in runs:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "fid")] == [10, 20]
        assert client.list_artifacts(r.info.run_id, "samples")  # artifacts went through the server
    # the server's own store has them (nothing was written to a local ./mlflow.db)
    assert not (tmp_path / "mlflow.db").exists()
    assert any((root / "artifacts").rglob("*.png"))
