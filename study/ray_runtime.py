"""Ray start-up for a study's driver and the silencing of the libraries' own console output.

The study prints its own progress, summary and next steps; Ray's, Tune's, Optuna's and MLflow's
notices (token-auth notice, Tune's boxes and TensorBoard hint, its resume hint, Optuna's
experimental warnings) are shown only with ``--verbose``.
"""

from __future__ import annotations

import logging
import os


def init_ray(address: str | None = None, verbose: bool = False) -> None:
    """Join ``address`` / ``$RAY_ADDRESS`` when given, else start a new local Ray (no dashboard).
    Ray's own console output is silenced unless ``verbose`` (:func:`quiet_libraries`)."""
    import ray

    # Tune's experiment state (which trials exist / finished) is written every "auto" period
    # (≥ 10 s); a driver killed in between resumes from a stale view and leaves orphan trials.
    # The state of a study is small: write it at most every second.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    quiet_libraries(verbose)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    level = logging.INFO if verbose else logging.ERROR
    # Workers import trainables/ from the installed package; keep their logs out of the console
    # (errors are reported per trial by the progress printer and kept in the trial directories).
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=level)
    else:
        # "local": always a fresh local Ray, never silently attach to another Ray on this machine
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 logging_level=level)


def stale_checkpoint_noise(record: logging.LogRecord) -> bool:
    """A logging filter: drop Tune's ERROR when a restored trial's checkpoint manager deletes a
    checkpoint that is already gone (removed before the driver died; the trial goes on): noise,
    not a failure."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (isinstance(exc, FileNotFoundError) and "checkpoint_" in str(exc)
                and "Error handling checkpoint" in record.getMessage())


def quiet_libraries(verbose: bool = False) -> None:
    """Ray's, Optuna's and MLflow's notices are not for our users unless ``--verbose``."""
    if verbose:
        return
    import warnings

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)  # "Trials did not complete"
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(stale_checkpoint_noise)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*ExperimentalWarning.*")
    try:
        from optuna.exceptions import ExperimentalWarning

        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # pragma: no cover - optuna is a dependency
        pass
