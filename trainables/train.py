"""One GAN trial as a plain function: build, train, measure, evaluate, checkpoint.

``train(config)`` runs a validated trial config (``trainables.config.validate_trial``) to its end and
returns a :class:`TrialResult`; it needs no Ray and no MLflow. It is the training loop
(``trainables.loop.run_members``) over one member with the single-trial engine: the trial
(``trainables.trial.GANTrial``) and its step. Whoever runs it observes it through a
:class:`Callbacks` object (the Ray trainable in ``trainables.ray.trainable`` logs to MLflow and
reports to Tune from there) and can resume it from ``GANTrial.state_dict()``.

How the step executes is the trial key ``step_mode`` (docs/design.md "Throughput"); it never
changes what a step computes, only where the host waits (:func:`resolve_step_mode`):

* ``eager``: the step as written; the host reads the losses after every step (one device sync per
  step) to check divergence.
* ``sync_free``: the same step, bit for bit, with no host sync inside it: the first non-finite
  step and its losses are flagged on the device and read only at stats / evaluation steps and
  when the trial is stopped; the trial then ends ``diverged`` with the step and reason eager
  gives. On CUDA an in-memory image set is moved to the device once, so a batch is gathered
  there from the indices the trial's CPU ``data_gen`` draws (the same draws as eager; only the
  indices cross).
* ``compiled``: ``sync_free`` with the step's pieces under ``torch.compile``
  (``trainables.trial_capture``). Not bit-identical to eager (fused kernels);
  ``tests/trainables/test_step_modes.py`` states the tolerance.
* ``cuda_graph``: ``sync_free`` with the whole iteration captured once as a CUDA graph and
  replayed (``trainables.trial_capture``); the draws are eager's. CUDA only.

``compiled`` and ``cuda_graph`` capture the D step, so they take only the regularizers whose D step
is plain forward / backward / update (:data:`CAPTURE_REGULARIZERS`); the others are refused with
one message (:func:`step_mode_problem`).

Evaluation (FID/KID on a fixed z, sample grids) lives in :mod:`trainables.metrics.evaluation`, with the FID
scale every image run carries: ``fid_floor`` and ``fid_init`` at step 0 (before the first step, via
``Callbacks.on_stats``), ``fid_quality`` at every evaluation, ``*_final`` with the final one.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from trainables import names
from trainables.config import ConfigError
from trainables.devices import apply_precision, resolve_device  # noqa: F401 - re-exported
from trainables.metrics.evaluation import (  # noqa: F401 - re-exported
    FID_REF_MAX, FINAL_KEEP, GRID_SAMPLES, final_evaluation, initial_scale, with_quality,
)
from trainables.loop import CheckpointHook, TrialEngine, run_members
from trainables.loop import Callbacks, TrialResult  # noqa: F401 - re-exported
from trainables.step_modes import (  # noqa: F401 - STEP_MODES, step_mode_problem re-exported
    STEP_MODES, captured_regularizers, step_mode_problem,
)
from trainables.trial import GANTrial, divergence_reason  # noqa: F401 - re-exported

# ----------------------------------------------------------------------------------- step modes

#: Regularizers whose single-trial D step ``compiled`` and ``cuda_graph`` capture (from
#: :data:`trainables.step_modes.CAPTURE`).
CAPTURE_REGULARIZERS: frozenset[str] = captured_regularizers("compiled", packed=False)


def check_step_mode(cfg: dict[str, Any]) -> None:
    """Raise ``ConfigError("step_mode", …)`` (one line) when :func:`step_mode_problem` finds one."""
    problem = step_mode_problem(cfg)
    if problem:
        raise ConfigError(names.STEP_MODE, problem)


def resolve_step_mode(cfg: dict[str, Any], device: torch.device | str) -> str:
    """The step mode a trial runs on ``device``: one of :data:`STEP_MODES`.

    ``auto`` is ``sync_free`` on every device: a captured mode becomes CUDA's ``auto`` only
    where ``bench/gpu_throughput.py``'s results show it faster (docs/measurements.md).
    ``auto`` never refuses a config. An explicit mode the config cannot run raises
    ``ConfigError`` (:func:`check_step_mode`), except ``cuda_graph`` on a device that turned out
    not to be CUDA (``device: auto`` / ``cuda`` without a GPU), which warns once and runs
    ``sync_free``. Used by :func:`train` and by the pack side (``trainables.pack.population``)."""
    check_step_mode(cfg)
    mode = cfg.get(names.STEP_MODE, "auto")
    if mode == "auto":
        return "sync_free"
    device = torch.device(device)
    if mode == "cuda_graph" and device.type != "cuda":
        warnings.warn(f"step_mode 'cuda_graph' needs CUDA and this trial runs on {device.type}: "
                      f"running it sync_free", RuntimeWarning, stacklevel=2)
        return "sync_free"
    return mode


def train(
    config: dict[str, Any],
    callbacks: Callbacks | None = None,
    *,
    state: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: CheckpointHook | None = None,
) -> TrialResult:
    """Run one validated trial config to its end (or divergence); see the module docstring.

    ``state`` resumes from ``GANTrial.state_dict()``. Metrics go to ``callbacks.on_stats`` every
    ``stats_every`` steps, FID/KID and a sample grid to ``callbacks.on_eval`` every ``eval_every``
    steps and at the last step, each evaluation followed by ``callbacks.on_checkpoint`` (and
    ``on_checkpoint(step, pack_state, latest)``, the loop's hook, with the state as the one member
    of a pack). An image trial starting at step 0 first measures its FID scale (``fid_floor``,
    ``fid_init``) and passes it to ``callbacks.on_stats(0, …)``; a resumed one carries it.

    ``step_mode`` (:func:`resolve_step_mode`; a config it cannot run raises ``ConfigError``
    before anything is built): outside ``eager`` divergence is read from the device flag at
    stats / evaluation steps and when ``should_stop`` stops the trial, and a trial that
    diverged in between ends exactly as eager ends it (same step, reason, callbacks, metrics;
    ``step_times`` up to the step before).

    ``precision`` (``trainables.devices.apply_precision``: TF32 off or on) is set for the
    process before the trial is built.
    """
    dev = torch.device(device) if device is not None else resolve_device(config[names.DEVICE])
    mode = resolve_step_mode(config, dev)
    apply_precision(config.get(names.PRECISION, "fp32"), dev)
    trial = GANTrial(config, dev, step_mode=mode)
    if state is not None:
        trial.load_state_dict(state)
    return run_members(TrialEngine(trial), [callbacks], should_stop=should_stop,
                       on_checkpoint=on_checkpoint)[0]
