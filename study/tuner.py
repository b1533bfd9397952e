"""Assemble and run a study with Ray Tune's own machinery.

study file → (validated here, before Ray starts) → ``tune.Tuner`` over
``trainables.ray_trainable.run_trial`` → one MLflow child run per trial.

* grid: the expanded, validated list of trial configs is the grid (``tune.grid_search``), so
  conditional grids (a list of blocks) need nothing special.
* optuna / random: ``OptunaSearch`` with a define-by-run space (conditional keys only when their
  ``when`` holds), TPE or random sampler; seeds as replicates through Tune's ``Repeater``.
* ASHA on the FID reported at every evaluation (same iterations in every trial), FIFO otherwise.
* FailureConfig retries a crashed trial from its last checkpoint; CheckpointConfig keeps 2.
* The study directory (``<storage_path>/<run name>``) holds Ray's experiment state, the Optuna
  journal and ``lipstudy_study.json`` (the study file, the MLflow experiment / parent run ids and
  the Optuna storage), which is what ``lipstudy resume <study dir>`` needs to re-wrap the trainable
  with the same context and call ``Tuner.restore``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.search import METRIC, MODE, DefineByRun, build_searcher, storage_location  # noqa: F401
from study.spec import StudyError, StudySpec, check_study
from study.tracking import StudyTracking, absolute_uri, default_tracking_uri, start_study_run

STATE_FILE = "lipstudy_study.json"


@dataclass
class TrialSummary:
    name: str
    config: dict[str, Any]
    status: str
    fid: float | None
    step: int | None
    error: str | None = None
    trial_id: str | None = None


@dataclass
class StudyOutcome:
    tracking: StudyTracking
    storage_path: str  # the study directory (Ray experiment dir)
    trials: list[TrialSummary] = field(default_factory=list)
    wall_s: float = 0.0
    dropped_runs: list[str] = field(default_factory=list)


AUTO_GPU_SHARE = 0.25


def _gpu_share(spec: StudySpec) -> float:
    """``auto``: a quarter GPU per trial (four trials share one GPU: these models are small and
    launch-latency bound) when the Ray cluster has GPUs, else none: the trial runs on CPU. The
    trial itself uses CUDA only where Ray gave it a GPU and CUDA exists (``trial_device``)."""
    if spec.resources.gpu != "auto":
        return float(spec.resources.gpu)
    import ray

    return AUTO_GPU_SHARE if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def trial_resources(spec: StudySpec) -> dict[str, float]:
    return {"cpu": spec.resources.cpu, "gpu": _gpu_share(spec), **spec.resources.custom}


def make_trainable(spec: StudySpec, tracking: StudyTracking):
    """``run_trial`` wrapped with the study's MLflow context and per-trial resources (the same
    wrapping on a fresh run and on ``Tuner.restore``)."""
    from ray import tune

    from trainables.ray_trainable import TrialContext, run_trial

    context = TrialContext(tracking.tracking_uri, tracking.experiment_id, tracking.parent_run_id,
                           spec.name)
    trainable = tune.with_parameters(run_trial, context=context)
    return tune.with_resources(trainable, trial_resources(spec))


def param_space(spec: StudySpec) -> dict[str, Any]:
    from ray import tune

    if spec.search == "grid":
        return {"trial": tune.grid_search(check_study(spec))}
    return {"trial": dict(spec.fixed), "__seeds__": spec.seed_list}


def n_trials(spec: StudySpec) -> int:
    if spec.search == "grid":
        return len(check_study(spec))
    return spec.num_samples * len(spec.seed_list)


def _trial_name(trial) -> str:
    from trainables.mlflow_logger import run_name
    from trainables.ray_trainable import _k_keys, trial_config

    try:
        cfg = trial_config(trial.config)
        return run_name(cfg, _k_keys(cfg["regularizer"]))
    except Exception:
        return str(trial.trial_id)


def build_tuner(spec: StudySpec, tracking: StudyTracking, storage_path: str, *,
                quiet: bool = False, run_name: str | None = None, optuna_storage: str | None = None):
    """The ``tune.Tuner`` of a study (``run_name`` is the study directory's name under
    ``storage_path``; ``optuna_storage`` where the Optuna study persists)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from study.progress import ProgressPrinter

    run_name = run_name or spec.name
    if spec.search == "grid":
        search_alg, num_samples = None, 1
    else:
        storage_loc = optuna_storage or storage_location(spec, _join(storage_path, run_name))
        search_alg = build_searcher(spec, storage_loc, study_name=run_name)
        num_samples = spec.num_samples * len(spec.seed_list)
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
        trial_dirname_creator=_trial_dirname,
    )
    run_config = tune.RunConfig(
        name=run_name,
        storage_path=storage_path,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoints_to_keep),
        callbacks=[ProgressPrinter(n_trials(spec), iterations, quiet=quiet)],
        verbose=0,
    )
    return tune.Tuner(make_trainable(spec, tracking), param_space=param_space(spec),
                      tune_config=tune_config, run_config=run_config)


def _trial_dirname(trial) -> str:
    return f"{_trial_name(trial)}_{trial.trial_id}"


def _join(storage_path: str, name: str) -> str:
    return f"{storage_path.rstrip('/')}/{name}"


def _fs_and_path(path: str):
    """A pyarrow filesystem and path for a local directory or a storage URI (s3://, gs://)."""
    import pyarrow.fs

    if is_remote(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), str(Path(path.removeprefix("file://")).resolve())


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def study_run_name(spec: StudySpec, storage_path: str) -> str:
    """The study's name, or ``<name>-<timestamp>`` when a study directory of that name exists
    (a new execution never writes into an earlier one; ``lipstudy resume`` continues one)."""
    fs, base = _fs_and_path(storage_path)
    import pyarrow.fs

    if fs.get_file_info(f"{base}/{spec.name}").type == pyarrow.fs.FileType.NotFound:
        return spec.name
    return f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_state(study_dir: str, state: dict[str, Any]) -> None:
    fs, path = _fs_and_path(study_dir)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{STATE_FILE}") as fh:
        fh.write(json.dumps(state, indent=1).encode())


def read_state(study_dir: str) -> dict[str, Any]:
    fs, path = _fs_and_path(study_dir)
    try:
        with fs.open_input_stream(f"{path}/{STATE_FILE}") as fh:
            return json.loads(fh.read().decode())
    except (FileNotFoundError, OSError):
        raise StudyError(f"{study_dir}: not a lipstudy study directory (no {STATE_FILE}; "
                         "give the directory `lipstudy run` printed as 'Study directory')") from None

def init_ray(address: str | None = None) -> None:
    """Join ``address`` / ``$RAY_ADDRESS`` when given, else start a new local Ray (no dashboard)."""
    import ray

    # Tune's experiment state (which trials exist / finished) is written every "auto" period
    # (≥ 10 s); a driver killed in between resumes from a stale view and leaves orphan trials.
    # The state of a study is small: write it at most every second.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Workers import trainables/ from the installed package; keep their logs out of the console
    # (errors are reported per trial by the progress printer and kept in the trial directories).
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": always a fresh local Ray, never silently attach to another Ray on this machine
        ray.init(address="local", include_dashboard=False, log_to_driver=False)


def _storage_root(spec: StudySpec, storage_path: str | None) -> str:
    root = storage_path or spec.storage_path
    return root if is_remote(root) else str(Path(root.removeprefix("file://")).resolve())


def run_study(spec: StudySpec, study_text: str, *, tracking_uri: str | None = None,
              storage_path: str | None = None, address: str | None = None,
              quiet: bool = False, on_start=None) -> StudyOutcome:
    """Validate, set up MLflow in the driver, run the Tuner, and summarise every trial.

    ``on_start(study_dir)`` is called once the study directory and its state file exist (the CLI
    prints the directory so a killed driver can be resumed)."""
    check_study(spec)  # nothing starts unless the whole study is valid
    uri = absolute_uri(tracking_uri or spec.tracking_uri or default_tracking_uri())
    storage = _storage_root(spec, storage_path)
    t0 = time.time()
    run_name = study_run_name(spec, storage)
    study_dir = _join(storage, run_name)
    optuna_loc = storage_location(spec, study_dir) if spec.search != "grid" else None
    tracking = start_study_run(uri, spec.name, study_text, hypotheses=spec.hypotheses,
                               tags={"lipstudy.search": spec.search,
                                     "lipstudy.study_dir": study_dir,
                                     **({"lipstudy.optuna_storage": optuna_loc}
                                        if optuna_loc else {})})
    write_state(study_dir, {
        "study_text": study_text, "tracking_uri": uri, "experiment_id": tracking.experiment_id,
        "parent_run_id": tracking.parent_run_id, "storage_path": storage, "run_name": run_name,
        "optuna_storage": optuna_loc, "optuna_study_name": run_name if optuna_loc else None,
    })
    if on_start is not None:
        on_start(study_dir)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    init_ray(address)
    client = tracking.client()
    try:
        tuner = build_tuner(spec, tracking, storage, quiet=quiet, run_name=run_name,
                            optuna_storage=optuna_loc)
        results = tuner.fit()
    except BaseException:
        client.set_terminated(tracking.parent_run_id, "FAILED")
        raise
    return _summarize(results, tracking, study_dir, t0)


def resume_study(study_dir: str, *, address: str | None = None, quiet: bool = False) -> StudyOutcome:
    """Finish a study whose driver died: ``Tuner.restore`` with the same trainable context.

    Finished trials are not re-run; unfinished and errored ones continue from their last
    checkpoint (same MLflow run). MLflow runs of trials that had no checkpoint yet (they restart
    from scratch, with a new run) are deleted first, so the experiment holds one run per trial.
    The searcher (OptunaSearch, its Repeater) comes back from Tune's experiment checkpoint, its
    Optuna study from the persisted storage.
    """
    study_dir = study_dir if is_remote(study_dir) else str(Path(study_dir).resolve())
    state = read_state(study_dir)
    from study.spec import parse_study

    spec = parse_study(state["study_text"], f"{study_dir}/{STATE_FILE}")
    from ray import tune

    if not tune.Tuner.can_restore(study_dir):
        raise StudyError(f"{study_dir}: Ray Tune has no experiment state to restore here")
    t0 = time.time()
    tracking = StudyTracking(state["tracking_uri"], state["experiment_id"], state["parent_run_id"])
    os.environ["MLFLOW_TRACKING_URI"] = tracking.tracking_uri
    client = tracking.client()
    removed = drop_orphan_runs(study_dir, tracking)
    client.update_run(tracking.parent_run_id, status="RUNNING")
    resumed = int(client.get_run(tracking.parent_run_id).data.tags.get("lipstudy.resumed", 0)) + 1
    client.set_tag(tracking.parent_run_id, "lipstudy.resumed", resumed)
    init_ray(address)
    try:
        tuner = tune.Tuner.restore(study_dir, make_trainable(spec, tracking),
                                   resume_unfinished=True, resume_errored=True,
                                   param_space=param_space(spec))
        results = tuner.fit()
    except BaseException:
        client.set_terminated(tracking.parent_run_id, "FAILED")
        raise
    outcome = _summarize(results, tracking, study_dir, t0)
    outcome.dropped_runs = removed
    return outcome


def latest_checkpoint_runs(study_dir: str) -> dict[str, str | None]:
    """trial id → MLflow run id in its latest checkpoint (None: the trial has no checkpoint)."""
    import pyarrow.fs

    from trainables.ray_trainable import META_FILE

    fs, base = _fs_and_path(study_dir)
    out: dict[str, str | None] = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(base)):
        if info.type != pyarrow.fs.FileType.Directory or "_" not in info.base_name:
            continue
        trial_id = info.base_name.rsplit("_", 1)[1]
        ckpts = sorted(i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(info.path))
                       if i.type == pyarrow.fs.FileType.Directory
                       and i.base_name.startswith("checkpoint_"))
        run_id = None
        for ck in reversed(ckpts):
            try:
                with fs.open_input_stream(f"{ck}/{META_FILE}") as fh:
                    run_id = json.loads(fh.read().decode()).get("mlflow_run_id")
                break
            except (FileNotFoundError, OSError, ValueError):
                continue  # a checkpoint cut short by the kill: use the one before
        out[trial_id] = run_id
    return out


def drop_orphan_runs(study_dir: str, tracking: StudyTracking) -> list[str]:
    """Delete the child runs a resumed study would duplicate: unfinished runs that the trial's
    latest checkpoint does not point to (the trial restarts without them). Returns their ids."""
    client = tracking.client()
    ckpt_runs = latest_checkpoint_runs(study_dir)
    runs = client.search_runs(
        [tracking.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{tracking.parent_run_id}'", max_results=50_000)
    dropped = []
    for run in runs:
        if run.info.status == "FINISHED":
            continue
        trial_id = run.data.tags.get("lipstudy.trial_id", "")
        if ckpt_runs.get(trial_id) == run.info.run_id:
            continue  # the restored trial continues this run
        client.set_tag(run.info.run_id, "lipstudy.status", "superseded")
        client.set_terminated(run.info.run_id, "KILLED")
        client.delete_run(run.info.run_id)
        dropped.append(run.info.run_id)
    return dropped


def _summarize(results, tracking: StudyTracking, study_dir: str, t0: float) -> StudyOutcome:
    from trainables.ray_trainable import trial_config

    outcome = StudyOutcome(tracking, study_dir)
    for res in results:
        cfg = res.config or {}
        metrics = res.metrics or {}
        try:
            tcfg = trial_config(cfg)
        except Exception:
            tcfg = cfg.get("trial", {})
        if res.error is not None:
            status = "error"
        elif metrics.get("diverged"):
            status = "diverged"
        elif not metrics:
            status = "not run"
        else:
            status = "finished"
        fid = metrics.get("fid")
        outcome.trials.append(TrialSummary(
            name=_name_of(tcfg), config=tcfg, status=status,
            fid=None if fid is None or not math.isfinite(fid) else float(fid),
            step=metrics.get("step"), error=str(res.error).splitlines()[0] if res.error else None,
            trial_id=metrics.get("trial_id") or (res.path or "").rsplit("_", 1)[-1],
        ))
    outcome.wall_s = time.time() - t0
    client = tracking.client()
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
