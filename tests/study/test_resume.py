"""Fault tolerance with real processes: SIGKILL the `lipstudy run` driver mid-study, then
`lipstudy resume <study dir>` finishes it — every trial once, finished trials not re-run, one MLflow
run per trial, the Optuna searcher state kept (Ray #30861) and persisted for optuna-dashboard.
"""

from __future__ import annotations

import re
import shutil
import signal
import textwrap

import pytest

from tests.study._procs import (family, kill_pids, lipstudy, processes_naming, ray_tmpdir,
                                wait_for)

pytestmark = pytest.mark.slow

STUDY = """
name: resume-e2e
search: optuna
sampler: tpe
fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 60, stats_every: 20,
        eval_every: 20, fid_samples: 40, batch_size: 16, device: cpu}
space:
  loss: {choice: [ns, wgan, hinge]}
  regularizer: {choice: [sn, none]}
  k_sn: {loguniform: [0.5, 5.0], when: {regularizer: sn}}
  alpha: {loguniform: [1.0e-3, 1.0e3]}
points_to_evaluate:
  - {loss: ns, regularizer: sn, k_sn: 1.0, alpha: 1.0}
num_samples: 4
seeds: 1
max_concurrent: 1
resources: {cpu: 1, gpu: 0}
"""


def _children(uri, exp_id, deleted=False):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([exp_id], run_view_type=ViewType.ALL, max_results=1000)
    return client, [r for r in runs if r.data.tags.get("mlflow.parentRunId")
                    and (r.info.lifecycle_stage == "deleted") == deleted]


def test_killed_driver_then_resume_finishes_the_study(tmp_path):
    from mlflow.tracking import MlflowClient

    study = tmp_path / "study.yaml"
    study.write_text(textwrap.dedent(STUDY))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rt = ray_tmpdir()
    env = {"RAY_TMPDIR": rt, "RAY_num_cpus": "2"}
    log1 = tmp_path / "run.log"
    driver = lipstudy(["run", str(study), "--tracking-uri", uri, "--storage-path",
                       str(tmp_path / "results")], cwd=tmp_path, env_extra=env, log=log1)
    started: set[int] = set()
    try:
        # kill once two trials have finished and the third has reported at least once
        def progress():
            started.update(family(driver.pid))
            text = log1.read_text()
            return text.count(" finished") >= 2 and re.search(r"step \d+/60", text.split(
                " finished")[-1])
        wait_for(progress, 240, driver, "two finished trials")
        started.update(family(driver.pid))
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        driver.stdout_file.close()
        kill_pids((started | processes_naming(rt)) - {driver.pid})
    text = log1.read_text()
    study_dir = re.search(r"study directory (\S+)", text).group(1)

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resume-e2e")
    _, before = _children(uri, exp.experiment_id)
    done_before = {r.info.run_id: r for r in before if r.info.status == "FINISHED"}
    assert len(done_before) >= 2, text
    fid_len_before = {rid: len(client.get_metric_history(rid, "fid")) for rid in done_before}

    log2 = tmp_path / "resume.log"
    resumer = lipstudy(["resume", study_dir], cwd=tmp_path, env_extra=env, log=log2)
    try:
        started = set()
        wait_for(lambda: (started.update(family(resumer.pid)), resumer.poll() is not None)[1],
                 300, None, "resume to finish")
    finally:
        resumer.stdout_file.close()
        kill_pids((started | processes_naming(rt)) - {resumer.pid})
        if resumer.poll() is None:
            kill_pids({resumer.pid})
        shutil.rmtree(rt, ignore_errors=True)
    out = log2.read_text()
    assert resumer.returncode == 0, out

    # one live child run per trial, all finished, distinct trial ids; nothing re-run from scratch
    _, after = _children(uri, exp.experiment_id)
    assert len(after) == 4, [(r.info.status, r.data.tags.get("lipstudy.trial_id")) for r in after]
    assert all(r.info.status == "FINISHED" for r in after)
    assert len({r.data.tags["lipstudy.trial_id"] for r in after}) == 4
    for rid, n in fid_len_before.items():
        assert rid in {r.info.run_id for r in after}
        assert len(client.get_metric_history(rid, "fid")) == n  # finished trials were not re-run
    for r in after:  # every trial evaluated FID at 20, 40, 60 exactly once per step
        steps = sorted({m.step for m in client.get_metric_history(r.info.run_id, "fid")})
        assert steps == [20, 40, 60], (r.info.run_name, steps)
    parent = client.get_run(after[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and parent.data.tags["lipstudy.resumed"] == "1"
    # the papers' default was tried first
    first = min(after, key=lambda r: r.info.start_time)
    assert first.data.params["loss"] == "ns" and float(first.data.params["k_sn"]) == 1.0

    # the searcher came back as OptunaSearch with its Optuna study (Ray #30861): the persisted
    # study holds every trial, complete, with the FID Tune saw
    from study.search import load_optuna_study
    from study.tuner import read_state

    state = read_state(study_dir)
    ot = load_optuna_study(state["optuna_storage"], state["optuna_study_name"])
    complete = [t for t in ot.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4, [(t.number, t.state.name) for t in ot.trials]
    assert "optuna-dashboard" in out
