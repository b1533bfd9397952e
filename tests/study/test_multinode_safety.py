"""On a cluster of more than one node, what only this machine can see is refused before anything
starts (``study.cluster``): a local storage path and a local tracking store, one line each, and a
``gpu: auto`` the cluster cannot answer. Nothing is written: no parent run, no study directory.

``ray.cluster_utils.Cluster``: a head + one worker node on this machine (auth as the test session
has it). ``tests/study/test_multinode.py`` runs real studies on such a cluster with the
``shared_fs`` marker (one machine: every node does see the same files).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from study.spec import StudyError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

STUDY = """
name: {name}
fixed: {{dataset: ring8, arch: mlp, width: 0.25, iterations: 10, stats_every: 5, eval_every: 10,
        fid_samples: 40, batch_size: 16, device: cpu}}
grid: {{loss: [ns]}}
resources: {{cpu: 1, gpu: {gpu}}}
"""


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    c.add_node(num_cpus=1, num_gpus=0)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def _study(tmp_path, name, gpu="0"):
    from study.spec import load_study

    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY.format(name=name, gpu=gpu)))
    return path, *load_study(path)


@pytest.fixture
def no_launcher_config(tmp_path, monkeypatch):
    """No ~/ray_bootstrap_config.yaml and no LIPSTUDY_AUTOSCALING_CONFIG: node types unknown."""
    monkeypatch.delenv("LIPSTUDY_AUTOSCALING_CONFIG", raising=False)
    monkeypatch.delenv("LIPSTUDY_SHARED_FS", raising=False)
    monkeypatch.setattr("study.cluster.BOOTSTRAP_CONFIG", str(tmp_path / "no-such-config.yaml"))


def test_local_storage_and_tracking_are_refused_before_anything_starts(tmp_path, two_nodes,
                                                                      no_launcher_config):
    from study.tuner import run_study

    _, spec, text = _study(tmp_path, "local-on-two-nodes")
    db = tmp_path / "mlflow.db"
    with pytest.raises(StudyError) as err:
        run_study(spec, text, tracking_uri=f"sqlite:///{db}",
                  storage_path=str(tmp_path / "results"), quiet=True)
    lines = str(err.value).splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"storage_path {tmp_path / 'results'} is on this machine's disk")
    assert lines[1].startswith(f"tracking_uri sqlite:///{db} is a local store")
    assert all("2 live node(s)" in line and "--shared-fs" in line for line in lines)
    assert not db.exists()  # no experiment, no parent run
    assert not (tmp_path / "results").exists()  # no study directory


def test_a_remote_store_passes_and_a_local_one_alone_is_refused(tmp_path, two_nodes,
                                                              no_launcher_config):
    from study.tuner import run_study

    _, spec, text = _study(tmp_path, "sqlite-on-two-nodes")
    with pytest.raises(StudyError) as err:  # the storage is fine; the SQLite file is not
        run_study(spec, text, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                  storage_path="s3://no-such-bucket/results", quiet=True)
    assert str(err.value).startswith("tracking_uri sqlite:///")
    assert "\n" not in str(err.value)


def test_gpu_auto_that_cannot_be_known_is_refused_with_what_to_set(tmp_path, two_nodes,
                                                                  no_launcher_config):
    from study.tuner import run_study

    _, spec, text = _study(tmp_path, "auto-unknown", gpu="auto")
    with pytest.raises(StudyError) as err:
        run_study(spec, text, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                  storage_path=str(tmp_path / "results"), quiet=True, shared_fs=True)
    assert "\n" not in str(err.value)
    assert "set resources: {gpu: 0.25}" in str(err.value)
    assert not (tmp_path / "m.db").exists()


def test_the_cli_prints_one_line_each_and_exits_2(tmp_path, two_nodes, no_launcher_config):
    path, _, _ = _study(tmp_path, "cli-on-two-nodes")
    proc = subprocess.run(
        [sys.executable, "-m", "study.cli", "run", str(path), "--address", two_nodes.address,
         "--storage-path", str(tmp_path / "results"),
         "--tracking-uri", f"sqlite:///{tmp_path / 'cli.db'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lipstudy: error:")]
    assert [e.split(": ")[2].split()[0] for e in errors] == ["storage_path", "tracking_uri"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cli.db").exists() and not (tmp_path / "results").exists()


def test_a_resume_is_checked_before_the_parent_run_changes(tmp_path, two_nodes,
                                                          no_launcher_config):
    """``lipstudy resume`` of a study whose directory and store are local: refused on two nodes
    before anything is read from or written to its tracking store."""
    from study.statefile import write_state
    from study.tuner import resume_study

    _, _, text = _study(tmp_path, "resume-on-two-nodes")
    study_dir = tmp_path / "results" / "resume-on-two-nodes"
    db = tmp_path / "never.db"
    write_state(str(study_dir), {
        "study_text": text, "tracking_uri": f"sqlite:///{db}", "experiment_id": "1",
        "parent_run_id": "0" * 32, "storage_path": str(tmp_path / "results"),
        "run_name": "resume-on-two-nodes", "optuna_storage": None, "optuna_study_name": None})
    with pytest.raises(StudyError) as err:
        resume_study(str(study_dir), quiet=True)
    assert [line.split()[0] for line in str(err.value).splitlines()] == ["storage_path",
                                                                         "tracking_uri"]
    assert not db.exists()
