"""Assemble and run a study with Ray Tune's own machinery.

study file → (validated here, before Ray starts) → ``tune.Tuner`` over
``trainables.ray.trainable.run_trial`` → one MLflow child run per trial.

* grid: the expanded, validated list of trial configs is the grid (``tune.grid_search``), so
  conditional grids (a list of blocks) need nothing special.
* optuna / random: ``OptunaSearch`` with a define-by-run space (conditional keys only when their
  ``when`` holds), TPE or random sampler; seeds as replicates through Tune's ``Repeater``. With
  ``population: P``, ``PackedOptunaSearch``: one Tune trial is a pack of ⌊P / n_seeds⌋ asked
  configurations, each with every seed (``num_samples`` configurations in
  ⌈num_samples / configs per pack⌉ Tune trials).
* ASHA on the FID reported at every evaluation (same iterations in every trial), FIFO otherwise.
* FailureConfig retries a crashed trial from its last checkpoint; CheckpointConfig keeps 2.
* The study directory (``<storage_path>/<run name>``) holds Ray's experiment state, the Optuna
  journal and ``lipstudy_study.json`` (the study file, the MLflow experiment / parent run ids and
  the Optuna storage), which is what ``lipstudy resume <study dir>`` needs to re-wrap the trainable
  with the same context and call ``Tuner.restore``.

Beside this module: how configurations become trials (``study.packs``), the GPU share and
population a study runs with (``study.placement``), Ray start-up (``study.ray_runtime``) and the
state file (``study.statefile``).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from study import ray_runtime
from study.cluster import gpu_share
from study.search import (build_searcher, objective, objective_text, configs_per_pack,
                          storage_location)
from study.packs import n_trials, study_packs
from study.placement import prepare_cluster
from study.spec import StudyError, StudySpec, check_study
from study.schema import RUN_STAMP, study_dir_name
from study.interrupt import StopSignals
from study.run_lock import locked, resume_lock_key
from study.recovery import reconcile_runs, record_reconciliation, set_aside_damaged_states
from study.store_watch import SignStates, StopOnFullDisk, StoreWatch, disk_full_line
from study.summary import StudyOutcome, summarize
from study.tracking import (StudyTracking, absolute_uri, default_tracking_uri, mark_crashed,
                            start_study_run)
from study.statefile import (STATE_FILE, check_storage, fs_and_path, is_remote, read_state,
                             write_state)
from trainables import names
from trainables.tracking import provenance
from trainables.names import EVAL_EVERY, ITERATIONS


def trial_resources(spec: StudySpec) -> dict[str, float]:
    return {"cpu": spec.resources.cpu, "gpu": gpu_share(spec), **spec.resources.custom}


def make_trainable(spec: StudySpec, tracking: StudyTracking):
    """``run_trial`` wrapped with the study's MLflow context and per-trial resources (the same
    wrapping on a fresh run and on ``Tuner.restore``)."""
    from ray import tune

    from trainables.ray.trainable import TrialContext, run_trial

    from trainables.tracking.retry import sqlite_identity

    context = TrialContext(tracking.tracking_uri, tracking.experiment_id, tracking.parent_run_id,
                           spec.name, sqlite_identity(tracking.tracking_uri))
    if spec.population > 1 and (spec.search == "grid" or configs_per_pack(spec)):
        # one Tune trial = one pack (trainables.ray.trainable.run_pack)
        from trainables.ray.trainable import run_pack

        trainable = tune.with_parameters(run_pack, context=context)
        return tune.with_resources(trainable, trial_resources(spec))
    trainable = tune.with_parameters(run_trial, context=context)
    return tune.with_resources(trainable, trial_resources(spec))


def param_space(spec: StudySpec) -> dict[str, Any]:
    from ray import tune

    if spec.search == "grid":
        if spec.population > 1:
            return {"pack": tune.grid_search(study_packs(spec))}
        return {"trial": tune.grid_search(check_study(spec))}
    if configs_per_pack(spec):
        return {}  # PackedOptunaSearch suggests the whole pack: {"pack": [member configs]}
    return {"trial": dict(spec.fixed), "__seeds__": spec.seed_list}


def _trial_name(trial) -> str:
    from trainables.ray.trainable import trial_config, trial_run_name

    if not trial.config:  # a trial whose config is not resolved yet: never a default's name
        return str(trial.trial_id)
    if "pack" in trial.config:
        from trainables.ray.trainable import pack_run_name

        try:
            return pack_run_name(trial.config)
        except Exception:
            return str(trial.trial_id)
    try:
        return trial_run_name(trial_config(trial.config))
    except Exception:
        return str(trial.trial_id)


def build_tuner(spec: StudySpec, tracking: StudyTracking, storage_path: str, *,
                quiet: bool = False, run_name: str | None = None, optuna_storage: str | None = None):
    """The ``tune.Tuner`` of a study (``run_name`` is the study directory's name under
    ``storage_path``; ``optuna_storage`` where the Optuna study persists)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from study.progress import EndStoppedRuns, ProgressPrinter

    run_name = run_name or spec.name
    if spec.search == "grid":
        search_alg, num_samples = None, 1
    else:
        storage_loc = optuna_storage or storage_location(spec, _join(storage_path, run_name))
        search_alg = build_searcher(spec, storage_loc, study_name=run_name)
        num_samples = n_trials(spec)
    iterations = int(spec.fixed.get(ITERATIONS, 100_000))
    eval_every = int(spec.fixed.get(EVAL_EVERY, 10_000))
    n_evals = max(1, math.ceil(iterations / eval_every))
    # stop_last_trials=False: a trial at max_t ends by itself (the trial's own end: its run's
    # step times, diverged = 0, Ω plot, FINISHED). ASHA's default STOPs it at its last report,
    # before the trial function returns: every full-length ASHA trial then read "stopped early
    # at step <iterations>" and lost its ending
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=n_evals,
                      grace_period=min(spec.asha.grace_period, n_evals),
                      reduction_factor=spec.asha.reduction_factor, stop_last_trials=False)
        if spec.scheduler == "asha" else FIFOScheduler()
    )
    metric, mode = objective(spec)  # fid/min; toy_quality/max on the 2-D toys (study.search)
    tune_config = tune.TuneConfig(
        metric=metric, mode=mode, search_alg=search_alg, scheduler=scheduler,
        num_samples=num_samples, max_concurrent_trials=spec.max_concurrent,
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_dirname,
        # a finished trial's actor runs the next trial: no new process importing torch and MLflow
        # and loading the feature extractor per trial (≈ 5 s each on 2 cores); each trial still
        # builds its own data, model and generators; FunctionTrainable.reset_config falls back to
        # a fresh actor when the old trial's thread has not ended
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=run_name,
        storage_path=storage_path,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoints_to_keep),
        callbacks=[ProgressPrinter(n_trials(spec), iterations, quiet=quiet), StopOnFullDisk(),
                   SignStates(), EndStoppedRuns(tracking, iterations)],
        verbose=0,
    )
    return tune.Tuner(make_trainable(spec, tracking), param_space=param_space(spec),
                      tune_config=tune_config, run_config=run_config)


def _trial_dirname(trial) -> str:
    return f"{_trial_name(trial)}_{trial.trial_id}"


def _join(storage_path: str, name: str) -> str:
    return f"{storage_path.rstrip('/')}/{name}"


def study_run_name(spec: StudySpec, storage_path: str) -> str:
    """The study's name, or ``<name>-<timestamp>`` when a study directory of that name exists
    (a new execution never writes into an earlier one; ``lipstudy resume`` continues one)."""
    fs, base = fs_and_path(storage_path)
    import pyarrow.fs

    if fs.get_file_info(f"{base}/{spec.name}").type == pyarrow.fs.FileType.NotFound:
        return spec.name
    return study_dir_name(spec.name, time.strftime(RUN_STAMP))


def _storage_root(spec: StudySpec, storage_path: str | None) -> str:
    root = storage_path or spec.storage_path
    return root if is_remote(root) else str(Path(root.removeprefix("file://")).resolve())


def _run_lock_key(spec: StudySpec, *_, storage_path: str | None = None, **__) -> tuple[str, str]:
    """The lock a run takes (``study.run_lock``), after the checks that write nothing."""
    check_study(spec)
    storage = _storage_root(spec, storage_path)
    check_storage(storage)
    return storage, spec.name


def import_trainable() -> None:
    """Import the trainable, and with it torch, before a study opens anything or arms its stop
    signals. A SIGINT that interrupts ``import torch`` half-way leaves torch's C extension
    half-initialised; the next import of it (the end-of-study summary) crashed the driver with
    SIGSEGV. Interrupted here, nothing exists yet to clean up."""
    import trainables.ray.trainable  # noqa: F401


@locked(_run_lock_key)  # a second run of this study in this storage path: one line
def run_study(spec: StudySpec, study_text: str, *, tracking_uri: str | None = None,
              storage_path: str | None = None, address: str | None = None,
              quiet: bool = False, verbose: bool = False, on_start=None,
              on_signal=None, shared_fs: bool | None = None) -> StudyOutcome:
    """Validate, check the cluster (``study.placement.prepare_cluster``), set up MLflow in the
    driver, run the Tuner, and summarise every trial. ``shared_fs``: every node sees this
    machine's files at the same paths (default: ``$LIPSTUDY_SHARED_FS``); without it, a local
    storage path or tracking store on a cluster of more than one node is refused before anything
    starts.

    ``on_start(study_dir)`` is called once the study directory and its state file exist (the CLI
    prints the directory so a killed driver can be resumed). SIGINT/SIGTERM stop the study
    gracefully (``study.interrupt``); the outcome then says ``interrupted_by``."""
    check_study(spec)  # nothing starts unless the whole study is valid
    import_trainable()
    uri = absolute_uri(tracking_uri or spec.tracking_uri or default_tracking_uri())
    storage = _storage_root(spec, storage_path)
    check_storage(storage)  # a file, a read-only file system: one line, before anything opens
    t0 = time.time()
    run_spec = prepare_cluster(spec, storage, uri, address=address, verbose=verbose,
                               shared_fs=shared_fs)
    run_name = study_run_name(spec, storage)
    study_dir = _join(storage, run_name)
    optuna_loc = storage_location(spec, study_dir) if spec.search != "grid" else None
    ray_runtime.quiet_libraries(verbose)
    tracking = start_study_run(uri, spec.name, study_text, hypotheses=spec.hypotheses,
                               tags={**provenance.current().tags(), names.SEARCH_TAG: spec.search,
                                     names.STUDY_DIR_TAG: study_dir,
                                     **({names.OPTUNA_STORAGE_TAG: optuna_loc,
                                         names.OBJECTIVE_TAG: objective_text(spec)}
                                        if optuna_loc else {})})
    try:
        write_state(study_dir, {
            "study_text": study_text, "tracking_uri": uri, "experiment_id": tracking.experiment_id,
            "parent_run_id": tracking.parent_run_id, "storage_path": storage, "run_name": run_name,
            "optuna_storage": optuna_loc, "optuna_study_name": run_name if optuna_loc else None,
        })
        if on_start is not None:
            on_start(study_dir)
    except BaseException as err:  # the parent is open: it ends FAILED with the cause, never RUNNING
        mark_crashed(tracking, err)
        raise
    os.environ["MLFLOW_TRACKING_URI"] = uri

    def make(s: StudySpec):
        if s.population != spec.population:  # a resume must run the same packs
            write_state(study_dir, {**read_state(study_dir), "population": s.population})
        return build_tuner(s, tracking, storage, quiet=quiet, run_name=run_name,
                           optuna_storage=optuna_loc)

    return _fit(make, run_spec, tracking, study_dir, t0, address, verbose, on_signal)


def _fit(make_tuner, spec: StudySpec, tracking: StudyTracking, study_dir: str, t0: float,
         address: str | None, verbose: bool, on_signal, on_crash=None) -> StudyOutcome:
    """Run ``make_tuner(spec).fit()`` under the stop-signal handlers (Ray is up and ``spec``
    resolved: ``study.placement.prepare_cluster``), summarise. A crash of the driver marks the
    parent run FAILED (``on_crash(err)``, default :func:`mark_crashed`); a signal before Tune
    started leaves no trials."""
    on_crash = on_crash or (lambda err: mark_crashed(tracking, err))
    results = None
    watch = StoreWatch(tracking.tracking_uri, study_dir=study_dir)
    with StopSignals(on_signal) as stop:
        try:
            ray_runtime.init_ray(address, verbose)
            stop.rearm()
            tuner = make_tuner(spec)
            with watch:  # a store gone for good stops the study (study.store_watch)
                results = _fit_stoppable(tuner)
        except KeyboardInterrupt:
            if not stop.interrupted:
                raise
        except StudyError:  # refused before Tune started; the caller left the parent as it was
            raise
        except BaseException as err:
            on_crash(err)
            raise
        stop.closing()  # writing down what happened is never cut short (study.interrupt)
        return summarize(results, spec, tracking, study_dir, t0, interrupted_by=stop.name,
                         stopped=watch.lost or disk_full_line(), offline=watch.lost is not None)


def _fit_stoppable(tuner):
    """``tuner.fit()``; None when it failed after a full disk stopped the study (Tune's result
    grid then reads the error files the full disk truncated)."""
    try:
        return tuner.fit()
    except Exception:
        if disk_full_line() is None:
            raise
        return None


def record_code_version(client, parent_run_id: str, version: str) -> str | None:
    """Compare the code of this resume with the study's (``trainables.tracking.provenance``): when they
    differ, say so on stderr (one line, before anything continues) and list every version, first
    run then resumes, in the parent's ``lipstudy.resumed_code_versions``. Returns the line."""
    tags = client.get_run(parent_run_id).data.tags
    seen = (tags.get(names.RESUMED_CODE_VERSIONS_TAG)
            or tags.get(names.CODE_VERSION_TAG, provenance.UNKNOWN)).split(",")
    if seen[-1] == version:
        return None
    line = (f"lipstudy resume: this study ran on code {', '.join(dict.fromkeys(seen))}; this "
            f"resume runs {version}. Its runs will carry both versions, which the report refuses "
            f"to pool unless --pool-versions.")
    print(line, file=sys.stderr, flush=True)
    client.set_tag(parent_run_id, names.RESUMED_CODE_VERSIONS_TAG, ",".join([*seen, version]))
    return line


@locked(resume_lock_key)  # the lock of the study's runs (study.run_lock)
def _reopen_parent(study_dir: str, tracking: StudyTracking):
    """Bring the parent run back to running for a resume: damaged Tune states set aside, child
    runs reconciled with the trials (``study.recovery``), the resume counted and the code version
    recorded. Returns the reconciliation."""
    client = tracking.client()
    set_aside_damaged_states(study_dir)  # a full disk or a kill truncated them: one line each
    rec = reconcile_runs(study_dir, tracking)
    resumed = int(client.get_run(tracking.parent_run_id).data.tags.get(names.RESUMED_TAG, 0)) + 1
    client.set_tag(tracking.parent_run_id, names.RESUMED_TAG, resumed)
    record_code_version(client, tracking.parent_run_id, provenance.current().version)
    record_reconciliation(tracking, resumed, rec)
    client.update_run(tracking.parent_run_id, status="RUNNING")
    client.set_tag(tracking.parent_run_id, names.STATUS_TAG, "running")
    return rec


def _resume_crashed(tracking: StudyTracking, before, err: BaseException) -> None:
    """A resume crashed: an unfinished study's parent run is marked crashed; a finished study's
    (``before``: its parent run as the resume found it) is left as it was."""
    if before.info.status != "FINISHED":
        return mark_crashed(tracking, err)
    client = tracking.client()
    client.set_tag(tracking.parent_run_id, names.STATUS_TAG,
                   before.data.tags.get(names.STATUS_TAG, "finished"))
    client.set_terminated(tracking.parent_run_id, "FINISHED", before.info.end_time)


def resume_study(study_dir: str, *, address: str | None = None, quiet: bool = False,
                 verbose: bool = False, on_signal=None,
                 shared_fs: bool | None = None, trust: bool = False) -> StudyOutcome:
    """Finish an interrupted study: ``Tuner.restore`` with the same trainable context.

    Finished trials are not re-run; unfinished and errored ones continue from their last
    checkpoint, each in its own MLflow run (``study.recovery``: runs are matched to trials by
    their real Ray trial id, nothing that holds data is deleted). The searcher (OptunaSearch, its
    Repeater) comes back from Tune's experiment checkpoint, its Optuna study from the persisted
    storage. A study stopped before Tune saved any state starts its Tuner afresh in the same
    directory and parent run. Safe to repeat on a finished or half-resumed study. The cluster
    is checked first, as for a new run (``study.placement.prepare_cluster``), before the parent run
    changes. Nothing pickled is read from a directory not signed with the user's key
    (``study.trust``: one line, unless ``trust`` signs it first).
    """
    study_dir = study_dir if is_remote(study_dir) else str(Path(study_dir).resolve())
    state = read_state(study_dir)
    import_trainable()
    from study.spec import parse_study

    spec = parse_study(state["study_text"], f"{study_dir}/{STATE_FILE}")
    from study.trust import trust_study, verify_study

    if trust:  # --trust: the user vouches for the directory as it is
        print(trust_study(study_dir), file=sys.stderr, flush=True)
    verify_study(study_dir)  # before anything is unpickled or the parent run changes
    ray_runtime.quiet_libraries(verbose)
    from ray import tune

    t0 = time.time()
    run_spec = prepare_cluster(spec, state["storage_path"], state["tracking_uri"], address=address,
                               verbose=verbose, shared_fs=shared_fs,
                               population=state.get("population", spec.population))
    tracking = StudyTracking(state["tracking_uri"], state["experiment_id"], state["parent_run_id"])
    os.environ["MLFLOW_TRACKING_URI"] = tracking.tracking_uri
    before = tracking.client().get_run(tracking.parent_run_id)
    rec = _reopen_parent(study_dir, tracking)

    def make(s: StudySpec):
        if tune.Tuner.can_restore(study_dir):
            return tune.Tuner.restore(study_dir, make_trainable(s, tracking),
                                      resume_unfinished=True, resume_errored=True,
                                      param_space=param_space(s))
        return build_tuner(s, tracking, state["storage_path"], quiet=quiet,
                           run_name=state["run_name"], optuna_storage=state.get("optuna_storage"))

    outcome = _fit(make, run_spec, tracking, study_dir, t0, address, verbose, on_signal,
                   functools.partial(_resume_crashed, tracking, before))
    outcome.reconciliation = rec.as_dict()
    return outcome
