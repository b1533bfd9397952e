"""A short outage of a real tracking server is survived: ``mlflow server`` on loopback stopped for
45 s in the middle of a 4-trial study, then restarted on the same port and store; the study ends
with exit 0 and every child run FINISHED with its full FID history (each evaluation step once).
The trials' tracking calls retry for up to ``RetryPolicy.budget_s`` (300 s); the driver's store
watch (``study.store_watch``) stops the study only past that bound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.study._procs import family, kill_pids
from tests.study.test_chaos import Study, _progress
from tests.study.test_multinode import _free_port, _wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ITERATIONS, EVAL_EVERY = 800, 100
STUDY = f"""
    name: outage
    search: grid
    fixed: {{dataset: ring8, arch: mlp, width: 0.25, iterations: {ITERATIONS}, stats_every: 50,
            eval_every: {EVAL_EVERY}, fid_samples: 40, batch_size: 16, device: cpu}}
    grid: {{loss: [ns, wgan], k_sn: [1.0, 2.0]}}
    max_concurrent: 2
    resources: {{cpu: 1, gpu: 0}}
"""


def _start_server(root, port):
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        cwd=root, env=env, stdout=open(root / "server.log", "a"), stderr=subprocess.STDOUT,
        start_new_session=True)


@pytest.mark.scenario
def test_a_45s_server_outage_mid_study_loses_nothing(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    servers = [_start_server(root, port)]
    study = Study(tmp_path, "grid-toy", pause_step=None)
    study.file.write_text(textwrap.dedent(STUDY))
    study.uri = url
    outage: list[float] = []

    def outage_once(text: str) -> bool:
        if not outage and _progress(text):
            pids = family(servers[0].pid)
            os.killpg(servers[0].pid, signal.SIGKILL)  # gone at once, as a crashed host
            servers[0].wait()
            kill_pids(pids)
            outage.append(time.time())
            time.sleep(45)
            servers.append(_start_server(root, port))
            _wait_healthy(servers[-1], url, root)
            outage.append(time.time())
        return False

    try:
        _wait_healthy(servers[0], url, root)
        rc, text = study.run(moment=outage_once, timeout=600)
        assert len(outage) == 2 and outage[1] - outage[0] >= 45, outage
        assert rc == 0, text
        from mlflow.tracking import MlflowClient

        client = MlflowClient(url)
        exp = client.get_experiment_by_name("outage")
        runs = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("mlflow.parentRunId")]
        assert len(runs) == 4, [r.info.run_name for r in runs]
        for r in runs:
            assert r.info.status == "FINISHED", (r.info.run_name, r.info.status)
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "fid")]
            assert len(steps) == len(set(steps)), (r.info.run_name, sorted(steps))
            assert set(range(EVAL_EVERY, ITERATIONS + 1, EVAL_EVERY)) <= set(steps), (
                r.info.run_name, sorted(steps))
    finally:
        study.close()
        for proc in servers:
            kill_pids(family(proc.pid))
