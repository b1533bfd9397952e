"""The thin Ray Tune wrapper around ``trainables.train.train``.

Per trial it (1) completes and checks the config, (2) picks the device Ray gave it (a GPU id with no
CUDA behind it falls back to CPU), (3) opens or continues the trial's MLflow child run, (4) runs the
plain train function with callbacks that log to MLflow and report to Tune, with a checkpoint (the
full ``GANTrial`` state plus the MLflow run id) at every FID evaluation. A retried or resumed trial
restores from that checkpoint and continues the same MLflow run.

What Tune sees: one report per FID evaluation (same iterations in every trial, so ASHA compares like
with like) with ``fid``, ``kid``, ``step`` and the latest domain statistics; a diverged trial ends
with ``diverged = 1`` and ``fid = inf`` so searchers rank it worst, never as missing.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainables import provenance
from trainables.config import validate_trial
from trainables.devices import apply_precision, require_usable_cuda
from trainables.environment import environment_params
from trainables.mlflow_logger import MlflowTrialLogger, run_name
from trainables.checkpoints import CheckpointChain, cause_line
from trainables.names import (CHECKPOINT_FALLBACK_TAG, CODE_VERSION_TAG, CRASH_REASON_TAG,
                              DIVERGED_REASON_TAG, DIVERGED_STEP_TAG, STATUS_TAG, STUDY_TAG,
                              TRIAL_ID_TAG)
from trainables.regularizers import REGULARIZERS
from trainables.train import Callbacks, TrialResult, resolve_device, train

STATE_FILE = "trial_state.pt"
META_FILE = "trial_meta.json"


@dataclass(frozen=True)
class TrialContext:
    """Study-level facts every trial needs but that are not trial keys."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None = None
    study_name: str = ""
    #: the SQLite store's file identity when the driver built the trials
    #: (``trainables.tracking_retry.sqlite_identity``; None for other stores)
    store_identity: str | None = None


def trial_device(requested: str) -> torch.device:
    """The device for this trial inside Ray: with ``auto``, CUDA when Ray assigned this trial a
    GPU and CUDA works, the CPU when it assigned none or the GPU is a fake one (no NVIDIA driver
    on the node: ``ray.init(num_gpus=…)`` in tests); explicit names as
    ``trainables.devices.resolve_device`` takes them. A GPU Ray assigned on a node whose NVIDIA
    driver is present but CUDA unusable raises ``CudaUnusableError`` (one line), never a silent
    CPU trial."""
    if requested != "auto":
        return resolve_device(requested)
    import ray

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    if not gpu_ids:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    require_usable_cuda(f"Ray gave this trial GPU {gpu_ids}")
    return torch.device("cpu")


def load_state(path: str) -> dict[str, Any]:
    """A checkpoint's state, every tensor on the CPU, whatever device saved it or runs it next:
    generator states must stay CPU ByteTensors (``Generator.set_state`` refuses any other), and
    ``GANTrial.load_state_dict`` copies the model and optimizer tensors to the trial's device.
    Plain data only (``weights_only``: nothing in a checkpoint is unpickled as code)."""
    return torch.load(path, weights_only=True, map_location="cpu")


def trial_run_name(cfg: dict[str, Any]) -> str:
    """The MLflow run name of a validated trial config, e.g. ``ns-sn-k1-a1-s0``: its K is the
    value of the regularizer's declared ``k_key`` (none for a regularizer without a K)."""
    k_key = REGULARIZERS[cfg["regularizer"]].k_key
    return run_name(cfg, (k_key,) if k_key else ())


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """The trial keys of a Tune config, completed by validation.

    The study puts fixed keys (and, for grids, the whole trial) under ``trial``; searched keys sit
    at the top level; ``__seeds__`` with Tune's ``Repeater`` index ``__trial_index__`` picks the
    replicate's seed."""
    raw = dict(config.get("trial") or {})
    raw.update({k: v for k, v in config.items() if k != "trial" and not k.startswith("__")})
    seeds = config.get("__seeds__")
    if seeds:
        raw["seed"] = seeds[int(config.get("__trial_index__", 0)) % len(seeds)]
    return validate_trial(raw, check_data=False)


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
        self.bound = params.get("omega_bound")
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
        from trainables.plots import omega_interval_figure

        keys = ("omega_real_min", "omega_real_max", "omega_fake_min", "omega_fake_max",
                "omega_union_min", "omega_union_max")
        history = {k: self.logger.metric_history(k) for k in keys}
        if not history["omega_real_min"]:
            return
        name = self.config and trial_run_name(self.config)
        fig = omega_interval_figure(history, bound=self.bound,
                                    title=f"Ω over training — {name}" if name else "")
        self.logger.log_figure(fig, "plots/omega_intervals.png")


class _TuneCallbacks(MlflowCallbacks):
    def on_stats(self, step, metrics):
        super().on_stats(step, metrics)
        fault_injection(step)
        pause_injection(step)

    def on_checkpoint(self, step, state, metrics):
        from ray import tune

        self.logger.flush()  # everything up to the checkpoint is stored before Tune records it
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, os.path.join(tmp, STATE_FILE))
            with open(os.path.join(tmp, META_FILE), "w") as fh:
                json.dump({"mlflow_run_id": self.logger.run_id, "step": step}, fh)
            report = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            report.update(step=step, diverged=0.0)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))


#: Test hook: ``"<step>:<path>"`` — the first trial process that reaches ``step`` (after logging
#: its metrics) while ``path`` exists removes it and SIGKILLs itself (a worker crash, for the
#: same-run continuation test). Unset in normal use.
FAULT_ENV = "LIPSTUDY_TEST_KILL_AT_STEP"


def _hook_arg(env: str, step: int) -> str | None:
    """The argument of the test hook ``env`` (``"<step>:<arg>"``) when it fires at ``step``."""
    at, _, arg = os.environ.get(env, "").partition(":")
    return arg if at and arg and step == int(at) else None


def fault_injection(step: int) -> None:
    path = _hook_arg(FAULT_ENV, step)
    if path is None:
        return
    try:
        os.unlink(path)  # only the process that removes the file dies (retries run on)
    except FileNotFoundError:
        return
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


#: Test hook: ``"<step>:<dir>"`` — the first trial process that reaches ``step`` (after logging its
#: statistics, before that step's evaluation and checkpoint) creates ``<dir>/paused`` and sleeps,
#: so a test can stop the driver at that moment (before a checkpoint, during an evaluation).
PAUSE_ENV = "LIPSTUDY_TEST_PAUSE_AT_STEP"
PAUSE_S = 120.0


def pause_injection(step: int) -> None:
    directory = _hook_arg(PAUSE_ENV, step)
    if directory is None:
        return
    try:
        fd = os.open(os.path.join(directory, "paused"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another trial (or an earlier attempt) took the pause
    os.close(fd)
    import time

    time.sleep(PAUSE_S)


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Ray Tune function trainable (use with ``tune.with_parameters(run_trial, context=...)``)."""
    cfg = trial_config(config)
    device = trial_device(cfg["device"])
    apply_precision(cfg["precision"], device)  # before the run records the flags
    chain = CheckpointChain.of_trial()  # the run opens first: a damaged checkpoint is its cause
    run_id = (chain.meta(META_FILE) or {}).get("mlflow_run_id")
    logger, params = open_trial_run(cfg, device, context, current_trial_id(), run_id)
    callbacks = _TuneCallbacks(logger, params)
    try:
        state = restore_state(chain, STATE_FILE, [logger])
        result = train(cfg, callbacks, state=state, device=device)
    except BaseException as err:
        if end_attempt([logger], err):
            return report_crashed(cfg["dataset"])  # deterministic: a retry meets it again
        raise
    summary = finish_run(logger, result)
    if result.status == "diverged":
        from ray import tune

        from trainables.toy_quality import diverged_values  # the objectives' worst values

        tune.report({**diverged_values(cfg["dataset"]), "diverged": 1.0, "step": result.step,
                     **summary})


def open_trial_run(cfg: dict[str, Any], device: torch.device, context: TrialContext,
                   trial_tag: str, run_id: str | None,
                   extra_tags: dict[str, str] | None = None) -> tuple[MlflowTrialLogger, dict]:
    """Open (``run_id`` None) or continue a trial's MLflow child run; returns (logger, params):
    the params are the trial config plus the resolved FID setting, the device and what the run
    executes on (``trainables.environment.environment_params``: versions, device model, the
    precision flags as applied), logged when the run is created."""
    from trainables.evaluation import resolved_extractor

    extractor = "data-space" if cfg["arch"] == "mlp" else resolved_extractor(cfg)
    fid_params = {"fid_extractor": extractor, "fid_samples": cfg["fid_samples"],
                  "fid_final_samples": cfg.get("fid_final_samples") or cfg["fid_samples"],
                  "fid_ref_split": cfg["fid_ref_split"]}
    params = {**cfg, **fid_params, "device": device.type, **environment_params(device)}
    code = provenance.current().tags()  # the code this process imported (trainables.provenance)
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


def restore_state(chain: CheckpointChain, filename: str,
                  loggers: list[MlflowTrialLogger]) -> dict[str, Any] | None:
    """The state of the newest loadable checkpoint in ``chain`` (None: a fresh trial); when
    older ones stood in for damaged newer ones, the runs say which (``CHECKPOINT_FALLBACK_TAG``)."""
    state, used = chain.load(filename, load_state)
    note = chain.fallback_note(used)
    if note:
        for logger in loggers:
            logger.set_tags({CHECKPOINT_FALLBACK_TAG: note[:5000]})
    return state


def is_deterministic(err: BaseException) -> bool:
    """Does a retry of the same trial meet ``err`` again? Data that cannot be served (missing or
    unreadable files, a download that failed from every mirror), a config error, feature-extractor
    weights that are not there. A crashed worker, a full disk or a tracking outage are not: Tune
    retries those (``FailureConfig``)."""
    from urllib.error import URLError

    from trainables.config import ConfigError
    from trainables.extractors import ExtractorUnavailableError
    from trainables.imagesets import DatasetError

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
    ``SystemExit`` out of ``tune.report``; a signal to the worker raises ``KeyboardInterrupt``:
    those runs end KILLED with ``lipstudy.status = interrupted`` (what the study's summary writes
    for them, with the step), never crashed. Anything else ends FAILED, crashed, with its cause."""
    if isinstance(err, (SystemExit, KeyboardInterrupt)):
        for logger in loggers:
            logger.set_tags({STATUS_TAG: "interrupted"})
            logger.finish("KILLED")
        return False
    for logger in loggers:
        crash_run(logger, err)
    return is_deterministic(err)


def report_crashed(dataset: str, members: int = 0) -> None:
    """Tell Tune that a trial ended on a deterministic error (:func:`end_attempt`) without
    raising: the objectives' worst values (as for a diverged trial; a pack's members all dead),
    ``crashed = 1``. The trial then ends TERMINATED, and the study's summary reads its run."""
    from ray import tune

    from trainables.toy_quality import diverged_values

    pack = {k: v for i in range(members)
            for k, v in ((f"fid_m{i}", math.inf), (f"diverged_m{i}", 1.0))}
    tune.report({**diverged_values(dataset), "diverged": 0.0, "crashed": 1.0, "step": 0,
                 **pack})


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
    summary = {"step_time_median_ms": float(np.median(times) * 1e3),
               "step_time_mean_ms": float(np.mean(times) * 1e3)}
    logger.log_metrics(result.step, summary)
    if result.status == "diverged":
        logger.set_tags({STATUS_TAG: "diverged", DIVERGED_STEP_TAG: result.step,
                         DIVERGED_REASON_TAG: result.reason})
        # the metric diverged = 1 was logged by train()'s on_stats marker: not again
    else:
        logger.set_tags({STATUS_TAG: "finished"})
        logger.log_metrics(result.step, {"diverged": 0.0})
    logger.finish("FINISHED")
    return summary


def current_trial_id() -> str:
    """The Ray trial id of the running trial ("" outside a Tune session)."""
    try:
        from ray import tune

        return str(tune.get_context().get_trial_id())
    except Exception:
        return ""
