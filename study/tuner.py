"""Assemble and run a study with Ray Tune's own machinery.

study file → (validated here, before Ray starts) → ``tune.Tuner`` over
``trainables.ray_trainable.run_trial`` → one MLflow child run per trial.

* grid: the expanded, validated list of trial configs is the grid (``tune.grid_search``), so
  conditional grids (a list of blocks) need nothing special.
* optuna / random: ``OptunaSearch`` with a define-by-run space (conditional keys only when their
  ``when`` holds), TPE or random sampler; seeds as replicates through Tune's ``Repeater``.
* ASHA on the FID reported at every evaluation (same iterations in every trial), FIFO otherwise.
* FailureConfig retries a crashed trial from its last checkpoint; CheckpointConfig keeps 2.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.spec import StudySpec, check_study
from study.tracking import StudyTracking, absolute_uri, default_tracking_uri, start_study_run

METRIC, MODE = "fid", "min"


@dataclass
class TrialSummary:
    name: str
    config: dict[str, Any]
    status: str
    fid: float | None
    step: int | None
    error: str | None = None


@dataclass
class StudyOutcome:
    tracking: StudyTracking
    storage_path: str
    trials: list[TrialSummary] = field(default_factory=list)
    wall_s: float = 0.0


class DefineByRun:
    """Optuna define-by-run space of a study: keys in file order, a conditional key only when its
    ``when`` holds (inactive keys are absent from the trial). A top-level class, not a closure:
    Tune pickles the searcher into its experiment checkpoint so a resumed study keeps its state."""

    def __init__(self, spec: StudySpec):
        self.space = spec.space

    def __call__(self, trial) -> None:
        chosen: dict[str, Any] = {}
        for key, entry in self.space.items():
            if not entry.active(chosen):
                continue
            if entry.choice is not None:
                chosen[key] = trial.suggest_categorical(key, entry.choice)
            elif entry.loguniform is not None:
                chosen[key] = trial.suggest_float(key, *entry.loguniform, log=True)
            elif entry.uniform is not None:
                chosen[key] = trial.suggest_float(key, *entry.uniform)
            else:
                chosen[key] = trial.suggest_int(key, *entry.int_)
        return None


def _gpu_share(spec: StudySpec) -> float:
    """``auto``: a quarter GPU per trial when the Ray cluster has GPUs, else none."""
    if spec.resources.gpu != "auto":
        return float(spec.resources.gpu)
    import ray

    return 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _trial_name(trial) -> str:
    from trainables.mlflow_logger import run_name
    from trainables.ray_trainable import _k_keys, trial_config

    try:
        cfg = trial_config(trial.config)
        return run_name(cfg, _k_keys(cfg["regularizer"]))
    except Exception:
        return str(trial.trial_id)


def build_tuner(spec: StudySpec, tracking: StudyTracking, storage_path: str, *,
                quiet: bool = False):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from study.progress import ProgressPrinter
    from trainables.ray_trainable import TrialContext, run_trial

    context = TrialContext(tracking.tracking_uri, tracking.experiment_id, tracking.parent_run_id,
                           spec.name)
    trainable = tune.with_parameters(run_trial, context=context)
    trainable = tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": _gpu_share(spec)})

    seeds = spec.seed_list
    if spec.search == "grid":
        configs = check_study(spec)
        param_space: dict[str, Any] = {"trial": tune.grid_search(configs)}
        search_alg, num_samples = None, 1
        n_trials = len(configs)
    else:
        import optuna
        from ray.tune.search import Repeater
        from ray.tune.search.optuna import OptunaSearch

        sampler = (optuna.samplers.TPESampler(seed=spec.sampler_seed) if spec.search == "optuna"
                   else optuna.samplers.RandomSampler(seed=spec.sampler_seed))
        # metric/mode on the searcher itself: Repeater does not forward them from TuneConfig
        search_alg = OptunaSearch(DefineByRun(spec), metric=METRIC, mode=MODE, sampler=sampler)
        if len(seeds) > 1:
            search_alg = Repeater(search_alg, repeat=len(seeds), set_index=True)
        param_space = {"trial": dict(spec.fixed), "__seeds__": seeds}
        num_samples = spec.num_samples * len(seeds)
        n_trials = num_samples

    iterations = int(spec.fixed.get("iterations", 100_000))
    eval_every = int(spec.fixed.get("eval_every", 10_000))
    n_evals = max(1, math.ceil(iterations / eval_every))
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=n_evals,
                      grace_period=min(spec.asha.grace_period, n_evals),
                      reduction_factor=spec.asha.reduction_factor)
        if spec.scheduler == "asha" else FIFOScheduler()
    )
    tune_config = tune.TuneConfig(
        metric=METRIC, mode=MODE, search_alg=search_alg, scheduler=scheduler,
        num_samples=num_samples, max_concurrent_trials=spec.max_concurrent,
        trial_name_creator=_trial_name,
        trial_dirname_creator=lambda t: f"{_trial_name(t)}_{t.trial_id}",
    )
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=storage_path,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=[ProgressPrinter(n_trials, iterations, quiet=quiet)],
        verbose=0,
    )
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                      run_config=run_config)


def init_ray(address: str | None = None) -> None:
    """Join ``address`` / ``$RAY_ADDRESS`` when given, else start a local Ray (no dashboard)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Workers import trainables/ from the installed package; keep their logs out of the console
    # (errors are reported per trial by the progress printer and kept in the trial directories).
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)


def run_study(spec: StudySpec, study_text: str, *, tracking_uri: str | None = None,
              storage_path: str | None = None, address: str | None = None,
              quiet: bool = False) -> StudyOutcome:
    """Validate, set up MLflow in the driver, run the Tuner, and summarise every trial."""
    check_study(spec)  # nothing starts unless the whole study is valid
    uri = absolute_uri(tracking_uri or spec.tracking_uri or default_tracking_uri())
    storage = str(Path(storage_path or spec.storage_path).resolve()) if "://" not in (
        storage_path or spec.storage_path) else (storage_path or spec.storage_path)
    t0 = time.time()
    tracking = start_study_run(uri, spec.name, study_text, hypotheses=spec.hypotheses,
                               tags={"lipstudy.search": spec.search})
    os.environ["MLFLOW_TRACKING_URI"] = uri
    init_ray(address)
    client = tracking.client()
    try:
        tuner = build_tuner(spec, tracking, storage, quiet=quiet)
        results = tuner.fit()
    except BaseException:
        client.set_terminated(tracking.parent_run_id, "FAILED")
        raise
    outcome = StudyOutcome(tracking, str(Path(storage) / spec.name))
    for res in results:
        cfg = res.config or {}
        metrics = res.metrics or {}
        from trainables.ray_trainable import trial_config

        try:
            tcfg = trial_config(cfg)
        except Exception:
            tcfg = cfg.get("trial", {})
        if res.error is not None:
            status = "error"
        elif metrics.get("diverged"):
            status = "diverged"
        else:
            status = "finished"
        fid = metrics.get("fid")
        outcome.trials.append(TrialSummary(
            name=_name_of(tcfg), config=tcfg, status=status,
            fid=None if fid is None or not math.isfinite(fid) else float(fid),
            step=metrics.get("step"), error=str(res.error).splitlines()[0] if res.error else None,
        ))
    outcome.wall_s = time.time() - t0
    n_bad = sum(t.status == "error" for t in outcome.trials)
    client.set_tag(tracking.parent_run_id, "lipstudy.trials", len(outcome.trials))
    client.set_tag(tracking.parent_run_id, "lipstudy.errored_trials", n_bad)
    client.set_terminated(tracking.parent_run_id, "FINISHED")
    return outcome


def _name_of(cfg: dict[str, Any]) -> str:
    from trainables.mlflow_logger import run_name
    from trainables.ray_trainable import _k_keys

    try:
        return run_name(cfg, _k_keys(cfg["regularizer"]))
    except Exception:
        return "?"
