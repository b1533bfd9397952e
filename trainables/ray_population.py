"""The Ray Tune trainable of a population trial: one Tune trial = one pack of configs.

``run_pack`` is ``ray_trainable.run_trial`` for a pack (``config["pack"]``: the members' trial
configs, packed by ``study.tuner`` with ``trainables.population.pack_configs``). Every member
logs to its own MLflow child run through the same ``MlflowCallbacks`` a one-config trial uses —
same run name, params, metrics, steps and artifacts; the run carries the Ray trial id in
``TRIAL_ID_TAG`` and its place in the pack in ``lipstudy.pack_member`` (the lookup token of a
retried attempt is ``<trial id>/m<i>``).

Checkpoint (one per FID evaluation, as a one-config trial): the pack state
(``trainables.population``: every member's ``GANTrial`` state, statuses, latest metrics) plus the
members' MLflow run ids; a retried or resumed pack continues every member's run, no step twice.

What Tune sees (ASHA acts on packs): one report per evaluation with ``fid`` = the best (lowest)
FID among the pack's live members, ``fid_m<i>`` and ``diverged_m<i>`` per member, ``step`` and
``diverged`` = 1 only when every member diverged. ASHA therefore stops a pack when even its best
member is in the bottom fraction at a rung; a stopped pack ends all its members FINISHED ("stopped
early").
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import torch

from trainables.devices import apply_precision
from trainables.population import train_population, unsupported_reason
from trainables.checkpoints import CheckpointChain
from trainables.names import PACK_MEMBER_TAG, PACK_SIZE_TAG
from trainables.ray_trainable import (
    MlflowCallbacks, TrialContext, current_trial_id, end_attempt, fault_injection, finish_run,
    open_trial_run, pause_injection, report_crashed, restore_state, trial_config, trial_device,
    trial_run_name,
)

PACK_STATE_FILE = "pack_state.pt"
PACK_META_FILE = "pack_meta.json"


def pack_member_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The validated trial configs of a pack trial's Tune config."""
    return [trial_config({"trial": m}) for m in config["pack"]]


def pack_run_name(config: dict[str, Any]) -> str:
    cfgs = pack_member_configs(config)
    return f"pack{len(cfgs)}-{trial_run_name(cfgs[0])}"


class _MemberCallbacks(MlflowCallbacks):
    """A member's MLflow logging; checkpoints are the pack's (flush only). The test hooks of
    one-config trials (``ray_trainable.FAULT_ENV`` / ``PAUSE_ENV``) fire here too, after the
    member's statistics are logged: a pack killed at step s has logged s for its first members
    only (the awkward moment a retry must mend)."""

    def on_stats(self, step, metrics):
        super().on_stats(step, metrics)
        fault_injection(step)
        pause_injection(step)

    def on_checkpoint(self, step, state, metrics):
        self.logger.flush()


def run_pack(config: dict[str, Any], context: TrialContext) -> None:
    """Ray Tune function trainable of a pack (``tune.with_parameters(run_pack, context=...)``)."""
    from ray import tune

    cfgs = pack_member_configs(config)
    if len(cfgs) == 1 and unsupported_reason(cfgs[0]):  # runs as a one-config trial
        from trainables.ray_trainable import run_trial

        return run_trial({"trial": config["pack"][0]}, context)
    device = trial_device(cfgs[0]["device"])
    apply_precision(cfgs[0]["precision"], device)  # a pack shares it (not a member key)
    chain = CheckpointChain.of_trial()  # the runs open first: a damaged checkpoint is their cause
    run_ids = (chain.meta(PACK_META_FILE) or {}).get("mlflow_run_ids") or [None] * len(cfgs)
    trial_id = current_trial_id()
    loggers, callbacks = [], []
    for i, (cfg, run_id) in enumerate(zip(cfgs, run_ids)):
        logger, params = open_trial_run(
            cfg, device, context, f"{trial_id}/m{i}", run_id,
            {PACK_MEMBER_TAG: str(i), PACK_SIZE_TAG: str(len(cfgs))})
        loggers.append(logger)
        callbacks.append(_MemberCallbacks(logger, params))

    def on_checkpoint(step, pack_state, latest):
        for lg in loggers:
            lg.flush()
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(pack_state, os.path.join(tmp, PACK_STATE_FILE))
            with open(os.path.join(tmp, PACK_META_FILE), "w") as fh:
                json.dump({"mlflow_run_ids": [lg.run_id for lg in loggers], "step": step}, fh)
            tune.report(pack_report(step, latest, pack_state["results"]),
                        checkpoint=tune.Checkpoint.from_directory(tmp))

    try:
        state = restore_state(chain, PACK_STATE_FILE, loggers)
        results = train_population(cfgs, callbacks, state=state, device=device,
                                   on_checkpoint=on_checkpoint)
    except BaseException as err:
        if end_attempt(loggers, err):  # deterministic: every member's run says why
            return report_crashed(cfgs[0]["dataset"], len(cfgs))
        raise
    for lg, res in zip(loggers, results):
        finish_run(lg, res)  # the pack reports to Tune, not each member
    if all(r.status == "diverged" for r in results):
        from trainables.toy_quality import diverged_values  # the objectives' worst values

        tune.report({**diverged_values(cfgs[0]["dataset"]), "diverged": 1.0,
                     "step": max(r.step for r in results)})


def pack_report(step: int, latest: list[dict[str, float]], results: list) -> dict[str, float]:
    live = [i for i, r in enumerate(results) if r is None or r["status"] != "diverged"]
    fids = {f"fid_m{i}": float(latest[i].get("fid", math.inf)) for i in range(len(latest))}
    # a diverged member's fid_m<i> is its last finite FID; diverged_m<i> says it diverged (the
    # searcher of a packed Optuna/random study tells such a member inf, study.search)
    dead = {f"diverged_m{i}": 0.0 if i in live else 1.0 for i in range(len(latest))}
    best = min((fids[f"fid_m{i}"] for i in live), default=math.inf)
    toy = toy_objective(latest, live)  # the toys' objective, per member and the pack's best
    return {"fid": best, "step": step, "diverged": 0.0 if live else 1.0,
            "pack_live": float(len(live)), **fids, **dead, **toy}


def toy_objective(latest: list[dict[str, float]], live: list[int]) -> dict[str, float]:
    """A toy pack's ``toy_quality_m<i>`` (a member's latest, its worst value 0 until it has one)
    and ``toy_quality``: the best live member's, 0 when none lives; empty for image packs."""
    from trainables.toy_quality import TOY_QUALITY, TOY_QUALITY_WORST

    if not any(TOY_QUALITY in m for m in latest):
        return {}
    per = {f"{TOY_QUALITY}_m{i}": float(m.get(TOY_QUALITY, TOY_QUALITY_WORST))
           for i, m in enumerate(latest)}
    best = max((per[f"{TOY_QUALITY}_m{i}"] for i in live), default=TOY_QUALITY_WORST)
    return {TOY_QUALITY: best, **per}
