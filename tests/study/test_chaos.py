"""Chaos: stop a real `lipstudy run` driver with real signals at awkward moments, resume, and check
that nothing was lost — for grid, random and Optuna studies, on the 2-D toy and the image set.

Moments: before any checkpoint (a trial paused at a statistics step before its first evaluation,
through the ``LIPSTUDY_TEST_PAUSE_AT_STEP`` hook), during an evaluation (paused at an evaluation
step, after its statistics and before its FID and checkpoint), between trials (right after a trial
finished), and during a resume. After the last resume, for every scenario:

* every configuration has exactly one FINISHED child run;
* no run that held metrics was deleted;
* every metric's steps are unique and reach the last iteration, and ``fid``/``loss_d`` equal an
  uninterrupted run of the same config (the plain ``train()``, no Ray);
* the Optuna journal agrees with MLflow (each COMPLETE trial is one FINISHED run, same params and
  the same FID);
* a second resume changes nothing.

Bounded: tiny trials, ≈ 1 min a scenario on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import textwrap
from pathlib import Path

import pytest

from tests.study._procs import family, kill_pids, lipstudy, processes_naming, ray_tmpdir, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOY = ("dataset: ring8, arch: mlp, width: 0.25, iterations: 60, stats_every: 10, eval_every: 20, "
       "fid_samples: 40, batch_size: 16, device: cpu")
IMAGE = ("dataset: fashion_mnist_mini, arch: dcgan32, width: 0.0625, iterations: 12, "
         "stats_every: 2, eval_every: 4, fid_samples: 60, batch_size: 16, fid_extractor: domain, "
         "device: cpu")

STUDIES = {
    "grid-toy": f"""
        name: chaos-grid-toy
        search: grid
        fixed: {{{TOY}}}
        grid: {{loss: [ns, wgan], k_sn: [1.0, 2.0]}}
        max_concurrent: 2
        resources: {{cpu: 1, gpu: 0}}
    """,
    "grid-toy-packs": f"""
        name: chaos-grid-packs
        search: grid
        fixed: {{{TOY}}}
        grid: {{loss: [ns, wgan], k_sn: [1.0, 2.0]}}
        population: 2
        max_concurrent: 1
        resources: {{cpu: 1, gpu: 0}}
    """,
    "grid-image": f"""
        name: chaos-grid-image
        search: grid
        fixed: {{{IMAGE}}}
        grid: {{loss: [ns, ls, wgan], k_sn: [1.0, 5.0]}}
        max_concurrent: 2
        resources: {{cpu: 1, gpu: 0}}
    """,
    "random-toy": f"""
        name: chaos-random-toy
        search: random
        fixed: {{{TOY}}}
        space:
          loss: {{choice: [ns, wgan, hinge]}}
          k_sn: {{loguniform: [0.5, 4.0]}}
        num_samples: 3
        max_concurrent: 1
        resources: {{cpu: 1, gpu: 0}}
    """,
    "optuna-image": f"""
        name: chaos-optuna-image
        search: optuna
        fixed: {{{IMAGE}}}
        space:
          loss: {{choice: [ns, wgan]}}
          k_sn: {{loguniform: [0.5, 5.0]}}
        points_to_evaluate: [{{loss: ns, k_sn: 1.0}}]
        num_samples: 3
        max_concurrent: 2
        resources: {{cpu: 1, gpu: 0}}
    """,
    "asha-toy-seeds": f"""
        name: chaos-asha-toy
        search: grid
        fixed: {{{TOY}}}
        grid: {{loss: [ns, wgan, hinge], k_sn: [1.0]}}
        seeds: 2
        scheduler: asha
        asha: {{grace_period: 1, reduction_factor: 2}}
        max_concurrent: 2
        resources: {{cpu: 1, gpu: 0}}
    """,
    "optuna-toy-seeds": f"""
        name: chaos-optuna-toy
        search: optuna
        fixed: {{{TOY}}}
        space:
          loss: {{choice: [ns, wgan]}}
          alpha: {{loguniform: [0.1, 10.0]}}
        num_samples: 2
        seeds: 2
        max_concurrent: 2
        resources: {{cpu: 1, gpu: 0}}
    """,
}


class Study:
    """One study under test: its file, store, Ray temp dir and the drivers it ran."""

    def __init__(self, tmp_path: Path, key: str, pause_step: int | None):
        self.tmp = tmp_path
        self.file = tmp_path / "study.yaml"
        self.file.write_text(textwrap.dedent(STUDIES[key]))
        self.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        self.pause_dir = tmp_path / "pause"
        self.pause_dir.mkdir()
        self.rt = ray_tmpdir()
        self.env = {"RAY_TMPDIR": self.rt, "RAY_num_cpus": "2"}
        if pause_step is not None:
            self.env["LIPSTUDY_TEST_PAUSE_AT_STEP"] = f"{pause_step}:{self.pause_dir}"
        self.study_dir: str | None = None
        self.n = 0

    def drive(self, args: list[str], moment=None, sig: int | None = None,
              timeout: float = 300, group: bool = False, twice: bool = False) -> tuple[int, str]:
        """Run ``lipstudy *args``; when ``moment(log_text)`` holds, send ``sig`` (``group``: to
        the driver's whole process group, as a terminal's Ctrl-C does; ``twice``: once more as
        soon as the driver said it is stopping the trials, the user who does not wait); wait for
        the driver to end (SIGKILL: at once), then end everything it started. (returncode,
        log)."""
        self.n += 1
        log = self.tmp / f"driver{self.n}.log"
        proc = lipstudy(args, cwd=self.tmp, env_extra=self.env, log=log)
        started: set[int] = set()
        try:
            def watch():
                started.update(family(proc.pid))
                return proc.poll() is not None or (moment is not None and moment(log.read_text()))
            wait_for(watch, timeout, None, f"the moment to stop {args[0]}")
            if proc.poll() is None and sig is not None:
                started.update(family(proc.pid))
                for _ in range(2 if twice else 1):
                    if proc.poll() is not None:
                        break
                    if group:  # the driver leads its own session: its group id is its pid
                        os.killpg(proc.pid, sig)
                    else:
                        proc.send_signal(sig)
                    if twice:  # the second as soon as the first was announced
                        wait_for(lambda: proc.poll() is not None
                                 or "send it again" in log.read_text(), 30, None,
                                 "the driver to announce its stop")
            wait_for(lambda: (started.update(family(proc.pid)), proc.poll() is not None)[1],
                     timeout, None, f"{args[0]} to end")
        finally:
            proc.stdout_file.close()
            kill_pids((started | processes_naming(self.rt)) - {proc.pid})
            if proc.poll() is None:
                kill_pids({proc.pid})
                proc.wait(10)
        text = log.read_text()
        found = re.search(r"study directory (\S+)", text)
        if found:
            self.study_dir = found.group(1)
        return proc.returncode, text

    def run(self, **kw):
        return self.drive(["run", str(self.file), "--tracking-uri", self.uri, "--storage-path",
                           str(self.tmp / "results")], **kw)

    def resume(self, **kw):
        assert self.study_dir, "no study directory was printed"
        return self.drive(["resume", self.study_dir], **kw)

    def paused(self, _text: str) -> bool:
        return (self.pause_dir / "paused").exists()

    def close(self) -> None:
        kill_pids(processes_naming(self.rt))
        shutil.rmtree(self.rt, ignore_errors=True)


def _after_finished(text: str) -> bool:
    return re.search(r"\] \S+ finished", text) is not None


def _progress(text: str) -> bool:
    return re.search(r"\] \S+ step \d+/", text) is not None


# --- what must hold after the last resume ------------------------------------------------------

def _children(study: Study):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(study.uri)
    exp = client.get_experiment_by_name(_study_name(study))
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    return client, [r for r in runs if r.data.tags.get("mlflow.parentRunId")]


def _study_name(study: Study) -> str:
    return re.search(r"name: (\S+)", study.file.read_text()).group(1)


def snapshot(study: Study) -> dict:
    client, runs = _children(study)
    return {r.info.run_id: (r.info.status, r.info.lifecycle_stage,
                            tuple(sorted((k, len(client.get_metric_history(r.info.run_id, k)))
                                         for k in r.data.metrics)))
            for r in runs}


def _reference(config: dict) -> dict[str, dict[int, float]]:
    """fid and loss_d by step of an uninterrupted run of the same config (plain train())."""
    from trainables.config import all_keys, validate_trial
    from trainables.train import Callbacks, train

    seen: dict[str, dict[int, float]] = {"fid": {}, "loss_d": {}}

    class Collect(Callbacks):
        def on_stats(self, step, metrics):
            self._keep(step, metrics)

        def on_eval(self, step, metrics, grid):
            self._keep(step, metrics)

        def _keep(self, step, metrics):
            for key in seen:
                if key in metrics:
                    seen[key][step] = float(metrics[key])

    raw = {k: v for k, v in config.items() if k in all_keys()}
    if raw.get("fid_extractor") == "data-space":  # the toys' resolved "extractor"
        del raw["fid_extractor"]
    cfg = validate_trial(raw, check_data=False)
    train(cfg, Collect())
    return seen


def assert_nothing_lost(study: Study, n_configs: int, iterations: int, compare: int = 99) -> None:
    client, runs = _children(study)
    live = [r for r in runs if r.info.lifecycle_stage == "active"]
    finished = [r for r in live if r.info.status == "FINISHED"]
    names = [r.info.run_name for r in finished]
    where = [(r.info.run_name, r.info.status, r.data.tags.get("lipstudy.status")) for r in runs]
    assert len(finished) == n_configs and len(set(names)) == n_configs, where
    for r in runs:  # a deleted run never held data
        if r.info.lifecycle_stage == "deleted":
            assert not r.data.metrics, (r.info.run_name, sorted(r.data.metrics))
    for r in finished:
        for key in r.data.metrics:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert len(steps) == len(set(steps)), (r.info.run_name, key, sorted(steps))
        last = iterations  # ASHA: a run it stopped ends at its recorded step
        if r.data.tags.get("lipstudy.status") == "stopped_early":
            last = int(float(r.data.tags["lipstudy.stopped_step"]))
        for key in ("fid", "loss_d"):
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, key))
            assert steps and steps[-1] >= last, (r.info.run_name, key, steps)
    # values equal an uninterrupted run (interrupted ones first)
    ordered = sorted(finished, key=lambda r: "lipstudy.interrupted_step" not in r.data.tags)
    for r in ordered[:compare]:
        if r.data.tags.get("lipstudy.status") == "stopped_early":
            continue  # an uninterrupted reference would run on past ASHA's stop
        path = client.download_artifacts(r.info.run_id, "config.json", str(study.tmp))
        ref = _reference(json.loads(Path(path).read_text()))
        for key, by_step in ref.items():
            got = {m.step: m.value for m in client.get_metric_history(r.info.run_id, key)}
            assert set(got) == set(by_step), (r.info.run_name, key, sorted(got), sorted(by_step))
            for step, value in by_step.items():
                assert math.isclose(got[step], value, rel_tol=1e-6, abs_tol=1e-9), (
                    r.info.run_name, key, step, got[step], value)


def assert_journal_agrees(study: Study) -> None:
    from study.search import load_optuna_study
    from study.statefile import read_state

    state = read_state(study.study_dir)
    ot = load_optuna_study(state["optuna_storage"], state["optuna_study_name"])
    client, runs = _children(study)
    finished = [r for r in runs if r.info.status == "FINISHED" and r.info.lifecycle_stage == "active"]
    complete = [t for t in ot.trials if t.state.name == "COMPLETE"]
    seeds = len({r.data.params["seed"] for r in finished})
    assert len(complete) * seeds == len(finished), ([t.params for t in complete],
                                                    [r.info.run_name for r in finished])
    for t in complete:
        match = [r for r in finished if all(
            math.isclose(float(r.data.params[k]), v, rel_tol=1e-9) if isinstance(v, float)
            else r.data.params[k] == str(v) for k, v in t.params.items())]
        assert len(match) == seeds, (t.params, [r.info.run_name for r in finished])
        # the study's objective (study.search.objective): toy_quality on the toys, else fid
        metric = ot.metric_names[0] if ot.metric_names else "fid"
        fids = [client.get_metric_history(r.info.run_id, metric) for r in match]
        mean_fid = sum(max(h, key=lambda m: m.step).value for h in fids) / seeds
        assert math.isclose(t.value, mean_fid, rel_tol=1e-6), (t.params, t.value, mean_fid)


def finish_and_check(study: Study, n_configs: int, iterations: int, compare: int = 99,
                     optuna: bool = False, done_before: int = 0,
                     tune_trials: int | None = None) -> None:
    rc, text = study.resume()
    assert rc == 0, text
    # the progress counter starts at the trials already finished
    first = re.search(r"\[\s*\d+s (\d+)/(\d+) done\]", text)
    total = tune_trials or n_configs  # a population pack is one Tune trial
    assert first and int(first.group(1)) >= done_before and int(first.group(2)) == total, text
    assert re.search(rf"{n_configs} trials \((\d+ finished|, |\d+ stopped early)+\)", text), text
    assert_nothing_lost(study, n_configs, iterations, compare)
    if optuna:
        assert_journal_agrees(study)
    client, runs = _children(study)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and parent.data.tags["lipstudy.status"] == "finished"
    assert int(parent.data.tags["lipstudy.resumed"]) >= 1
    if optuna:
        assert "optuna-dashboard" in text
    before = snapshot(study)
    rc, text = study.resume()
    assert rc == 0, text
    assert snapshot(study) == before  # a second resume changes nothing


@pytest.fixture
def make_study(tmp_path):
    made: list[Study] = []

    def make(key: str, pause_step: int | None = None) -> Study:
        made.append(Study(tmp_path, key, pause_step))
        return made[-1]

    yield make
    for s in made:
        s.close()


# --- scenarios ---------------------------------------------------------------------------------

@pytest.mark.scenario
def test_grid_toy_sigint_before_checkpoint_then_sigkill_during_resume(make_study):
    study = make_study("grid-toy", pause_step=10)  # first evaluation/checkpoint at 20
    rc, text = study.run(moment=study.paused, sig=signal.SIGINT)
    assert rc == 130, text
    assert "INTERRUPTED" in text and "lipstudy resume" in text and "Tuner.restore" not in text
    assert "Token authentication" not in text and "TensorBoard" not in text
    for name in ("ns-sn-k1-a1-s0", "wgan-sn-k1-a1-s0", "ns-sn-k2-a1-s0", "wgan-sn-k2-a1-s0"):
        assert name in text, text  # every trial under its own name, started or not
    assert re.search(r"interrupted at step 10", text), text
    client, runs = _children(study)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED" and parent.data.tags["lipstudy.status"] == "interrupted"
    rc, text = study.resume(moment=_progress, sig=signal.SIGKILL)
    assert rc == -signal.SIGKILL, text
    finish_and_check(study, 4, 60)


@pytest.mark.scenario
def test_grid_image_sigint_during_evaluation(make_study):
    study = make_study("grid-image", pause_step=8)  # after the first evaluation (4), inside the 2nd
    rc, text = study.run(moment=study.paused, sig=signal.SIGINT)
    assert rc == 130, text
    assert "\x1b[" not in text
    finish_and_check(study, 6, 12, compare=2)


@pytest.mark.scenario
def test_random_toy_sigkill_between_trials(make_study):
    study = make_study("random-toy")
    rc, text = study.run(moment=_after_finished, sig=signal.SIGKILL)
    assert rc == -signal.SIGKILL, text
    _, runs = _children(study)
    assert any(r.info.status == "FINISHED" for r in runs)
    # "already finished" is what the study's saved state knows: a trial killed within Tune's
    # state-save second after it finished is re-run from its last checkpoint (same run, no step
    # twice) and is not counted
    from study.recovery import saved_trials

    done = sum(t.status == "TERMINATED" for t in saved_trials(study.study_dir).values())
    finish_and_check(study, 3, 60, optuna=True, done_before=done)


@pytest.mark.scenario
def test_optuna_image_sigkill_during_evaluation_and_during_resume(make_study):
    study = make_study("optuna-image", pause_step=8)
    rc, text = study.run(moment=study.paused, sig=signal.SIGKILL)
    assert rc == -signal.SIGKILL, text
    rc, text = study.resume(moment=_progress, sig=signal.SIGKILL)
    assert rc == -signal.SIGKILL, text
    finish_and_check(study, 3, 12, compare=2, optuna=True)
    # the papers' default (points_to_evaluate) was the searcher's first trial (run creation order
    # is racy with two trials at once, Optuna's trial numbers are not)
    from study.search import load_optuna_study
    from study.statefile import read_state

    state = read_state(study.study_dir)
    ot = load_optuna_study(state["optuna_storage"], state["optuna_study_name"])
    assert ot.trials[0].params == {"loss": "ns", "k_sn": 1.0}, ot.trials[0].params


@pytest.mark.scenario
def test_optuna_toy_seeds_sigterm_before_checkpoint(make_study):
    study = make_study("optuna-toy-seeds", pause_step=10)
    rc, text = study.run(moment=study.paused, sig=signal.SIGTERM)
    assert rc == 143, text
    assert "SIGTERM" in text
    finish_and_check(study, 4, 60, optuna=True)


@pytest.mark.scenario
def test_asha_grid_with_seeds_sigint_during_evaluation(make_study):
    study = make_study("asha-toy-seeds", pause_step=40)
    rc, text = study.run(moment=study.paused, sig=signal.SIGINT)
    assert rc == 130, text
    finish_and_check(study, 6, 60)


@pytest.mark.scenario
def test_population_packs_sigkill_mid_pack_then_resume(make_study):
    """Population packs (issue #12): members carry ``<trial id>/m<i>``; a resume continues every
    member's own run (batched members are not bit-equal to one-config trials, so their values are
    checked by tests/study/test_population_study.py, not here)."""
    study = make_study("grid-toy-packs")
    rc, text = study.run(moment=_progress, sig=signal.SIGKILL)
    assert rc == -signal.SIGKILL, text
    finish_and_check(study, 4, 60, compare=0, tune_trials=2)
