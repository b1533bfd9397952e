"""A trial's MLflow runs: opening or continuing them, logging a running trial, ending them.

One trial config = one MLflow child run of the study's parent run (a pack's members each have
their own). :func:`open_trial_run` opens it (or continues it: a retried or resumed trial never
makes a second run), :class:`MlflowCallbacks` logs the training loop's records to it, and the
run ends by what happened: :func:`finish_run` (finished or diverged), :func:`end_attempt` for an
attempt that raised (crashed with its cause, :func:`crash_run`; interrupted by a signal; a stop of
Tune's leaves the run to the study's summary, the one writer of that end). Needs no Ray; the Ray
trainable (``trainables.ray.trainable``) drives these.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainables import names
from trainables.tracking import provenance
from trainables.ray.checkpoints import cause_line
from trainables.tracking.environment import environment_params
from trainables.loop import Callbacks, TrialResult
from trainables.tracking.mlflow_logger import MlflowTrialLogger, run_name
from trainables.names import (CODE_VERSION_TAG, CRASH_REASON_TAG, DIVERGED_REASON_TAG,
                              DIVERGED_STEP_TAG, STATUS_TAG, STUDY_TAG, TRIAL_ID_TAG)
from trainables.gan.regularizers import REGULARIZERS


@dataclass(frozen=True)
class TrialContext:
    """Study-level facts every trial needs but that are not trial keys."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None = None
    study_name: str = ""
    #: the SQLite store's file identity when the driver built the trials
    #: (``trainables.tracking.retry.sqlite_identity``; None for other stores)
    store_identity: str | None = None


def trial_run_name(cfg: dict[str, Any]) -> str:
    """The MLflow run name of a validated trial config, e.g. ``ns-sn-k1-a1-s0``: its K is the
    value of the regularizer's declared ``k_key`` (none for a regularizer without a K)."""
    k_key = REGULARIZERS[cfg[names.REGULARIZER]].k_key
    return run_name(cfg, (k_key,) if k_key else ())


class MlflowCallbacks(Callbacks):
    """Logs one trial to its MLflow run (no Ray needed): params, metrics per measured step,
    a sample grid at every FID evaluation, the final samples, the Ω-interval plot at the end.

    Artifacts of a run::

        config.json                    the validated trial config (+ resolved FID settings)
        samples/step_<step>.png        fixed-z 8×8 grid at every FID evaluation
        final/samples.png              the first 100 samples of the final FID evaluation
        final/samples.npz              up to 1,000 of them, uint8 N×C×H×W ("samples")
        plots/omega_intervals.png      Ω real/fake intervals, Ω∪ and Theorem 1's bound over steps
    """

    def __init__(self, logger: MlflowTrialLogger, config: dict[str, Any] | None = None):
        self.logger = logger
        self.config = config
        self.bound: float | None = None

    def on_start(self, params):
        self.bound = params.get(names.OMEGA_BOUND)
        self.logger.log_params(params)
        if self.config is not None and not self.logger.resumed:
            self.logger.log_dict(self.config, "config.json")

    def on_stats(self, step, metrics):
        self.logger.log_metrics(step, metrics)

    def on_eval(self, step, metrics, grid):
        self.logger.log_metrics(step, metrics)
        self.logger.log_image(grid, f"samples/step_{step:07d}.png")

    def on_final(self, step, metrics, samples):
        self.logger.log_metrics(step, metrics)
        if samples is not None and len(samples):
            from torchvision.utils import make_grid

            grid = make_grid(samples[:100].float() / 255.0, nrow=10, padding=2)
            self.logger.log_image(grid, "final/samples.png")
            buf = io.BytesIO()
            np.savez_compressed(buf, samples=samples.numpy())
            self.logger._log_bytes(buf.getvalue(), "final/samples.npz")

    def on_end(self, result):
        self.log_omega_plot()

    def log_omega_plot(self) -> None:
        """Fig. 1a of the trial from the run's own metric history (so a resumed trial's plot
        covers the whole run, not just the last attempt)."""
        from trainables.metrics.plots import omega_interval_figure

        keys = (names.OMEGA_REAL_MIN, names.OMEGA_REAL_MAX, names.OMEGA_FAKE_MIN,
                names.OMEGA_FAKE_MAX, names.OMEGA_UNION_MIN, names.OMEGA_UNION_MAX)
        history = {k: self.logger.metric_history(k) for k in keys}
        if not history[names.OMEGA_REAL_MIN]:
            return
        name = self.config and trial_run_name(self.config)
        fig = omega_interval_figure(history, bound=self.bound,
                                    title=f"Ω over training — {name}" if name else "")
        self.logger.log_figure(fig, "plots/omega_intervals.png")


def open_trial_run(cfg: dict[str, Any], device: torch.device, context: TrialContext,
                   trial_tag: str, run_id: str | None,
                   extra_tags: dict[str, str] | None = None) -> tuple[MlflowTrialLogger, dict]:
    """Open (``run_id`` None) or continue a trial's MLflow child run; returns (logger, params):
    the params are the trial config plus the resolved FID setting, the device and what the run
    executes on (``trainables.tracking.environment.environment_params``: versions, device model, the
    precision flags as applied), logged when the run is created."""
    from trainables.metrics.evaluation import resolved_extractor

    extractor = "data-space" if cfg[names.ARCH] == "mlp" else resolved_extractor(cfg)
    fid_params = {names.FID_EXTRACTOR: extractor, names.FID_SAMPLES: cfg[names.FID_SAMPLES],
                  names.FID_FINAL_SAMPLES: (cfg.get(names.FID_FINAL_SAMPLES)
                                            or cfg[names.FID_SAMPLES]),
                  names.FID_REF_SPLIT: cfg[names.FID_REF_SPLIT]}
    params = {**cfg, **fid_params, names.DEVICE: device.type, **environment_params(device)}
    code = provenance.current().tags()  # the code this process imported (trainables.tracking.provenance)
    tags = {STUDY_TAG: context.study_name, TRIAL_ID_TAG: trial_tag, **code,
            **(extra_tags or {})}
    logger = MlflowTrialLogger(
        context.tracking_uri, context.experiment_id, name=trial_run_name(cfg),
        params=params, parent_run_id=context.parent_run_id, tags=tags, run_id=run_id,
        synchronous=False,  # metrics via an in-order writer thread; flushed at every checkpoint
        store_identity=context.store_identity,
    )
    if logger.resumed:  # a continued run: trained by every version that touched it
        before = logger.run_tags().get(CODE_VERSION_TAG)
        code[CODE_VERSION_TAG] = provenance.merged_version(before, code[CODE_VERSION_TAG])
        logger.set_tags(code)
        logger.log_params(params)  # this attempt's device and environment: changes are tagged
    return logger, params


def is_deterministic(err: BaseException) -> bool:
    """Does a retry of the same trial meet ``err`` again? Data that cannot be served (missing or
    unreadable files, a download that failed from every mirror), a config error, feature-extractor
    weights that are not there. A crashed worker, a full disk or a tracking outage are not: Tune
    retries those (``FailureConfig``)."""
    from urllib.error import URLError

    from trainables.config import ConfigError
    from trainables.metrics.extractors import ExtractorUnavailableError
    from trainables.data.imagesets import DatasetError

    if isinstance(err, (ConfigError, DatasetError, ExtractorUnavailableError, FileNotFoundError,
                        NotADirectoryError, URLError)):
        return True  # ConfigError / DatasetError are ValueErrors: before the generic check
    return isinstance(err, RuntimeError) and str(err).startswith("Error downloading ")


def error_line(err: BaseException) -> str:
    """The cause's own line (``checkpoints.cause_line``); for a message whose first line only
    introduces the details (torchvision's ``Error downloading <file>:`` then what each mirror
    answered) the last detail is appended: ``... <file>: <urlopen error ... not known>``."""
    line = cause_line(err) or type(err).__name__
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and line.endswith(":"):
        line = f"{line} {lines[-1]}"
    return line


def end_attempt(loggers: list[MlflowTrialLogger], err: BaseException) -> bool:
    """End the runs of a trial attempt that raised ``err``; True when the trainable must return
    instead of raising (Tune would retry it in vain: :func:`is_deterministic`).

    Tune's stop (a graceful stop of the study on SIGINT/SIGTERM, a scheduler's stop) raises
    ``SystemExit`` out of ``tune.report``: the runs are released (queued metrics written) and
    left RUNNING, for the study's summary to end — only the driver knows whether ASHA stopped the
    trial (FINISHED, ``stopped_early``) or the study stopped (KILLED, ``interrupted``, with the
    step). The trial's thread meets the stop only when Tune stops or tears down its actor, which
    can be after that summary ran: a second writer here turned a stopped-early run KILLED.

    A signal to the worker itself raises ``KeyboardInterrupt``: those runs end KILLED with
    ``lipstudy.status = interrupted``, never crashed (the driver may not know of that signal; a
    retry or resume sets the run RUNNING again). Anything else ends FAILED, crashed, with its
    cause."""
    if isinstance(err, SystemExit):
        for logger in loggers:
            logger.release()
        return False
    if isinstance(err, KeyboardInterrupt):
        for logger in loggers:
            logger.set_tags({STATUS_TAG: "interrupted"})
            logger.finish("KILLED")
        return False
    for logger in loggers:
        crash_run(logger, err)
    return is_deterministic(err)


def crash_run(logger: MlflowTrialLogger, err: BaseException | None = None) -> None:
    """End the run of a trial whose training raised: tagged crashed with the cause's own line
    (``CRASH_REASON_TAG``: :func:`error_line`), FAILED."""
    tags = {STATUS_TAG: "crashed"}
    if err is not None:
        tags[CRASH_REASON_TAG] = error_line(err)[:5000]
    logger.set_tags(tags)
    logger.finish("FAILED")


def finish_run(logger: MlflowTrialLogger, result: TrialResult) -> dict[str, float]:
    """Log the step-time summary and the ending (tags, ``diverged``), end the run FINISHED;
    returns the summary."""
    times = np.asarray(result.step_times) if result.step_times else np.asarray([math.nan])
    summary = {names.STEP_TIME_MEDIAN_MS: float(np.median(times) * 1e3),
               names.STEP_TIME_MEAN_MS: float(np.mean(times) * 1e3)}
    logger.log_metrics(result.step, summary)
    if result.status == names.DIVERGED:
        logger.set_tags({STATUS_TAG: names.DIVERGED, DIVERGED_STEP_TAG: result.step,
                         DIVERGED_REASON_TAG: result.reason})
        # the metric diverged = 1 was logged by train()'s on_stats marker: not again
    else:
        logger.set_tags({STATUS_TAG: "finished"})
        logger.log_metrics(result.step, {names.DIVERGED: 0.0})
    logger.finish("FINISHED")
    return summary
