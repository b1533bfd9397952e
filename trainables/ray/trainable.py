"""The Ray Tune trainable: one Tune trial runs one trial config (:func:`run_trial`) or a pack of
them (:func:`run_pack`), through the same attempt.

Per attempt it (1) completes and checks the configs, (2) picks the device Ray gave it (a GPU id
with no CUDA behind it falls back to CPU), (3) opens or continues every member's MLflow child run
(``trainables.tracking.trial_runs``), (4) runs the training loop (``trainables.train.train`` for one
config, ``trainables.pack.population.train_population`` for a pack) with callbacks that log to MLflow,
and at every FID evaluation saves a checkpoint and reports to Tune. A retried or resumed trial
restores from the newest loadable checkpoint and continues the same MLflow runs, no step twice.

Checkpoint files: a one-config trial keeps its ``GANTrial`` state in :data:`STATE_FILE` and its
run id in :data:`META_FILE`; a pack keeps the pack state (every member's state, statuses, latest
metrics) in :data:`PACK_STATE_FILE` and the members' run ids in :data:`PACK_META_FILE`.

What Tune sees: one report per FID evaluation (same iterations in every trial, so ASHA compares
like with like). A one-config trial reports ``fid``, ``kid``, ``step`` and the latest domain
statistics; a diverged trial ends with ``diverged = 1`` and the objectives' worst values so
searchers rank it worst, never as missing. A pack reports ``fid`` = the best (lowest) FID among
its live members, ``fid_m<i>`` and ``diverged_m<i>`` per member, ``step`` and ``diverged`` = 1
only when every member diverged (:func:`pack_report`); ASHA therefore stops a pack when even its
best member is in the bottom fraction at a rung, and a stopped pack ends all its members
FINISHED. A pack member's run carries the Ray trial id as ``<trial id>/m<i>`` and its place in
the pack (``PACK_MEMBER_TAG``, ``PACK_SIZE_TAG``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import torch

from trainables import names
from trainables.ray.checkpoints import CheckpointChain
from trainables.config import validate_trial
from trainables.devices import apply_precision, require_usable_cuda
from trainables.names import CHECKPOINT_FALLBACK_TAG, PACK_MEMBER_TAG, PACK_SIZE_TAG
from trainables.pack.packing import unsupported_reason
from trainables.pack.population import train_population
from trainables.train import resolve_device, train
from trainables.tracking.trial_runs import (  # noqa: F401 - crash_run, error_line, ... re-exported
    MlflowCallbacks, TrialContext, crash_run, end_attempt, error_line, finish_run,
    is_deterministic, open_trial_run, trial_run_name,
)
from trainables.tracking.mlflow_logger import MlflowTrialLogger

STATE_FILE = "trial_state.pt"
META_FILE = "trial_meta.json"
PACK_STATE_FILE = "pack_state.pt"
PACK_META_FILE = "pack_meta.json"


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


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """The trial keys of a Tune config, completed by validation.

    The study puts fixed keys (and, for grids, the whole trial) under ``trial``; searched keys sit
    at the top level; ``__seeds__`` with Tune's ``Repeater`` index ``__trial_index__`` picks the
    replicate's seed."""
    raw = dict(config.get("trial") or {})
    raw.update({k: v for k, v in config.items() if k != "trial" and not k.startswith("__")})
    seeds = config.get("__seeds__")
    if seeds:
        raw[names.SEED] = seeds[int(config.get("__trial_index__", 0)) % len(seeds)]
    return validate_trial(raw, check_data=False)


def pack_member_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The validated trial configs of a pack trial's Tune config (``config["pack"]``, packed by
    the study with ``trainables.pack.packing.pack_configs``)."""
    return [trial_config({"trial": m}) for m in config["pack"]]


def pack_run_name(config: dict[str, Any]) -> str:
    cfgs = pack_member_configs(config)
    return f"pack{len(cfgs)}-{trial_run_name(cfgs[0])}"


class _TuneCallbacks(MlflowCallbacks):
    """A member's MLflow logging inside Tune: the test hooks (:data:`FAULT_ENV`,
    :data:`PAUSE_ENV`) fire after its statistics are logged (a pack killed at step s has logged
    s for its first members only: the awkward moment a retry must mend); at a checkpoint its
    metrics are flushed (the attempt's checkpoint hook saves and reports)."""

    def on_stats(self, step, metrics):
        super().on_stats(step, metrics)
        fault_injection(step)
        pause_injection(step)

    def on_checkpoint(self, step, state, metrics):
        self.logger.flush()


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
    """Ray Tune function trainable of one config (``tune.with_parameters(run_trial,
    context=...)``)."""
    _attempt([trial_config(config)], context, packed=False)


def run_pack(config: dict[str, Any], context: TrialContext) -> None:
    """Ray Tune function trainable of a pack (``tune.with_parameters(run_pack, context=...)``);
    a pack of one config that cannot be packed runs as a one-config trial."""
    cfgs = pack_member_configs(config)
    if len(cfgs) == 1 and unsupported_reason(cfgs[0]):
        return run_trial({"trial": config["pack"][0]}, context)
    _attempt(cfgs, context, packed=True)


def _attempt(cfgs: list[dict[str, Any]], context: TrialContext, packed: bool) -> None:
    """One attempt of a Tune trial: its members' runs opened (or continued), the newest loadable
    checkpoint restored, the loop run to its end; then the runs end by what happened."""
    from ray import tune

    device = trial_device(cfgs[0][names.DEVICE])
    apply_precision(cfgs[0][names.PRECISION], device)  # before the runs record the flags
    chain = CheckpointChain.of_trial()  # the runs open first: a damaged checkpoint is their cause
    loggers, callbacks = _open_runs(cfgs, device, context, chain.meta(_meta_file(packed)), packed)

    def on_checkpoint(step: int, pack_state: dict[str, Any], latest: list[dict]) -> None:
        for lg in loggers:  # everything up to the checkpoint is stored before Tune records it
            lg.flush()
        with tempfile.TemporaryDirectory() as tmp:
            _save_checkpoint(tmp, step, pack_state, [lg.run_id for lg in loggers], packed)
            tune.report(pack_report(step, latest, pack_state["results"]) if packed
                        else trial_report(step, latest[0]),
                        checkpoint=tune.Checkpoint.from_directory(tmp))

    try:
        state = restore_state(chain, PACK_STATE_FILE if packed else STATE_FILE, loggers)
        if packed:
            results = train_population(cfgs, callbacks, state=state, device=device,
                                       on_checkpoint=on_checkpoint)
        else:
            results = [train(cfgs[0], callbacks[0], state=state, device=device,
                             on_checkpoint=on_checkpoint)]
    except BaseException as err:
        if end_attempt(loggers, err):  # deterministic: every member's run says why
            return report_crashed(cfgs[0][names.DATASET], len(cfgs) if packed else 0)
        raise
    summaries = [finish_run(lg, res) for lg, res in zip(loggers, results)]
    if all(r.status == names.DIVERGED for r in results):
        from trainables.metrics.toy_quality import diverged_values  # the objectives' worst values

        tune.report({**diverged_values(cfgs[0][names.DATASET]), names.DIVERGED: 1.0,
                     "step": max(r.step for r in results),
                     **({} if packed else summaries[0])})


def _meta_file(packed: bool) -> str:
    return PACK_META_FILE if packed else META_FILE


def _open_runs(cfgs: list[dict[str, Any]], device: torch.device, context: TrialContext,
               meta: dict[str, Any] | None, packed: bool
               ) -> tuple[list[MlflowTrialLogger], list[_TuneCallbacks]]:
    """Every member's run, continued when the checkpoint's meta file names it, and its
    callbacks. A pack member's run is tagged with its place in the pack."""
    meta = meta or {}
    run_ids = (meta.get("mlflow_run_ids") if packed else [meta.get("mlflow_run_id")]) \
        or [None] * len(cfgs)
    trial_id = current_trial_id()
    loggers, callbacks = [], []
    for i, (cfg, run_id) in enumerate(zip(cfgs, run_ids)):
        if packed:
            tag, extra = f"{trial_id}/m{i}", {PACK_MEMBER_TAG: str(i), PACK_SIZE_TAG: str(len(cfgs))}
        else:
            tag, extra = trial_id, None
        logger, params = open_trial_run(cfg, device, context, tag, run_id, extra)
        loggers.append(logger)
        callbacks.append(_TuneCallbacks(logger, params))
    return loggers, callbacks


def _save_checkpoint(directory: str, step: int, pack_state: dict[str, Any],
                     run_ids: list[str], packed: bool) -> None:
    """The checkpoint files: a pack's whole state, or the one member's ``GANTrial`` state, and
    the run ids."""
    if packed:
        state, meta = pack_state, {"mlflow_run_ids": run_ids, "step": step}
    else:
        state, meta = pack_state["members"][0], {"mlflow_run_id": run_ids[0], "step": step}
    torch.save(state, os.path.join(directory, PACK_STATE_FILE if packed else STATE_FILE))
    with open(os.path.join(directory, _meta_file(packed)), "w") as fh:
        json.dump(meta, fh)


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


def report_crashed(dataset: str, members: int = 0) -> None:
    """Tell Tune that a trial ended on a deterministic error (``end_attempt``) without
    raising: the objectives' worst values (as for a diverged trial; a pack's members all dead),
    ``crashed = 1``. The trial then ends TERMINATED, and the study's summary reads its run."""
    from ray import tune

    from trainables.metrics.toy_quality import diverged_values

    pack = {k: v for i in range(members)
            for k, v in ((f"fid_m{i}", math.inf), (f"diverged_m{i}", 1.0))}
    tune.report({**diverged_values(dataset), names.DIVERGED: 0.0, "crashed": 1.0, "step": 0,
                 **pack})


def trial_report(step: int, latest: dict[str, float]) -> dict[str, float]:
    """A one-config trial's report at an evaluation: its latest metrics, ``step``, not diverged."""
    report = {k: v for k, v in latest.items() if isinstance(v, (int, float))}
    report.update(step=step, diverged=0.0)
    return report


def pack_report(step: int, latest: list[dict[str, float]], results: list) -> dict[str, float]:
    live = [i for i, r in enumerate(results) if r is None or r["status"] != names.DIVERGED]
    fids = {f"fid_m{i}": float(latest[i].get(names.FID, math.inf)) for i in range(len(latest))}
    # a diverged member's fid_m<i> is its last finite FID; diverged_m<i> says it diverged (the
    # searcher of a packed Optuna/random study tells such a member inf, study.search)
    dead = {f"diverged_m{i}": 0.0 if i in live else 1.0 for i in range(len(latest))}
    best = min((fids[f"fid_m{i}"] for i in live), default=math.inf)
    toy = toy_objective(latest, live)  # the toys' objective, per member and the pack's best
    shown = {f"{k}_m{i}": float(m[k]) for i, m in enumerate(latest)  # the end table's columns
             for k in (names.MODES_COVERED, names.HQ_SHARE) if k in m}
    return {names.FID: best, "step": step, names.DIVERGED: 0.0 if live else 1.0,
            "pack_live": float(len(live)), **fids, **dead, **toy, **shown}


def toy_objective(latest: list[dict[str, float]], live: list[int]) -> dict[str, float]:
    """A toy pack's ``toy_quality_m<i>`` (a member's latest, its worst value 0 until it has one)
    and ``toy_quality``: the best live member's, 0 when none lives; empty for image packs."""
    from trainables.metrics.toy_quality import TOY_QUALITY, TOY_QUALITY_WORST

    if not any(TOY_QUALITY in m for m in latest):
        return {}
    per = {f"{TOY_QUALITY}_m{i}": float(m.get(TOY_QUALITY, TOY_QUALITY_WORST))
           for i, m in enumerate(latest)}
    best = max((per[f"{TOY_QUALITY}_m{i}"] for i in live), default=TOY_QUALITY_WORST)
    return {TOY_QUALITY: best, **per}


def current_trial_id() -> str:
    """The Ray trial id of the running trial ("" outside a Tune session)."""
    try:
        from ray import tune

        return str(tune.get_context().get_trial_id())
    except Exception:
        return ""
