"""The training loop: members run through a step engine; evaluation, divergence, checkpoints and
callbacks are handled here, once, for every kind of run.

A *member* is one trial config with its own :class:`Callbacks`, records and result. An *engine*
(:class:`Engine`) advances all its members by one iteration per ``train_step`` and answers for
them: the single-trial engine (:class:`TrialEngine`, one ``GANTrial``) and the pack engine
(``trainables.pack.population.Population``, P members in one batched model) both implement it, so a
single trial is a run of one member and a pack a run of P members through :func:`run_members`.

Per member the loop does what the paper's protocol asks of a trial (Appendix B; docs/design.md
"What every trial measures"):

* at the start, ``on_start`` with the trial's derived facts and, for an image trial at step 0,
  its FID scale (``fid_floor``, ``fid_init``: ``trainables.metrics.evaluation.initial_scale``) through
  ``on_stats(0, …)``; a resumed trial carries the scale in its state;
* every ``stats_every`` steps (and at the last) the engine's measurements through ``on_stats``;
* every ``eval_every`` steps (and at the last) FID/KID and a sample grid through ``on_eval``, at
  the last step the final evaluation through ``on_final``, then a snapshot of the member's full
  state through ``on_checkpoint`` (and the run's ``on_checkpoint`` hook with every member's);
* a non-finite loss (read from the engine at stats / evaluation steps, every step in ``eager``)
  or a non-finite FID ends the member as ``diverged`` with the step and reason, never raising;
  the others go on. A diverged member's ``step_times`` stop before the step that diverged.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from trainables import names
from trainables.metrics.evaluation import final_evaluation, initial_scale


class Callbacks:
    """Observer of a running trial; every method is optional (the default does nothing)."""

    def on_start(self, params: dict[str, Any]) -> None:
        """Once the trial is built: derived facts (``GANTrial.params``: lipschitz_k, …)."""

    def on_stats(self, step: int, metrics: dict[str, float]) -> None:
        """Every ``stats_every`` steps (and at the last step): losses and domain statistics. Also
        at step 0 of an image trial, before training: its FID scale (``fid_floor``,
        ``fid_init``; see ``trainables.metrics.evaluation``); and the ``diverged`` marker."""

    def on_eval(self, step: int, metrics: dict[str, float], grid: torch.Tensor) -> None:
        """Every ``eval_every`` steps and at the end: FID/KID and ``fid_quality`` (or the toy
        metrics) and a sample grid (3×H×W float in [0, 1])."""

    def on_final(self, step: int, metrics: dict[str, float], samples: torch.Tensor | None) -> None:
        """Once, after the last regular evaluation: the final evaluation on ``fid_final_samples``
        (``fid_final``, ``kid_final``, optionally ``fid_inf``; image trials also
        ``fid_floor_final``, ``fid_init_final``, ``fid_quality_final``) and up to 1,000 of its
        samples as uint8 N×C×H×W (None for the toys)."""

    def on_checkpoint(self, step: int, state: dict[str, Any], metrics: dict[str, float]) -> None:
        """Right after each evaluation: a snapshot of the full resumable state (the callee may
        keep it) and the latest metrics."""

    def on_end(self, result: "TrialResult") -> None:
        """Once, when the trial finished or diverged."""


@dataclass
class TrialResult:
    status: str  # "finished" or "diverged"
    step: int
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of every metric
    step_times: list[float] = field(default_factory=list)  # seconds per step (incl. measuring and
    # logging at stats steps, excluding FID evaluations; a pack's step divided among its members)


class Engine(Protocol):
    """What the loop needs from a step engine. ``members`` are the members' ``GANTrial`` objects
    (their configs, evaluators and FID scales); ``step`` counts the iterations done."""

    members: Sequence[Any]
    step: int
    step_mode: str

    def train_step(self) -> dict[str, Any]:
        """One iteration of every member; the returned tensors feed ``divergences`` / ``measure``."""

    def divergences(self) -> dict[int, tuple[int, str]]:
        """Members whose losses were non-finite so far: i → (step, reason)."""

    def measure(self, out: dict[str, Any], live: Sequence[int]) -> list[dict[str, float]]:
        """The stats records of members ``live`` at this step, in that order."""

    def sync(self, i: int) -> Any:
        """Member i's ``GANTrial`` holding its current models (for evaluation)."""

    def member_state(self, i: int) -> dict[str, Any]:
        """A snapshot of member i's full ``GANTrial`` state (a single-trial state)."""


class TrialEngine:
    """The single-trial engine: one member, ``GANTrial``'s own step. In ``eager`` divergence is
    read from the last step's losses (one device sync); otherwise from the device flag."""

    def __init__(self, trial):
        self.trial = trial
        self.members = [trial]
        self.step_mode = trial.step_mode
        self._out: dict[str, Any] | None = None

    @property
    def step(self) -> int:
        return self.trial.step

    def train_step(self) -> dict[str, Any]:
        self._out = self.trial.train_step()
        return self._out

    def divergences(self) -> dict[int, tuple[int, str]]:
        if self.step_mode == "eager":
            reason = None if self._out is None else self.trial.divergence(self._out)
            return {} if reason is None else {0: (self.trial.step, reason)}
        hit = self.trial.flagged_divergence()
        return {} if hit is None else {0: hit}

    def measure(self, out: dict[str, Any], live: Sequence[int]) -> list[dict[str, float]]:
        return [self.trial.measure(out) for _ in live]

    def sync(self, i: int):
        return self.trial

    def member_state(self, i: int) -> dict[str, Any]:
        # a snapshot: state_dict() holds live tensors that the next step would change
        return copy.deepcopy(self.trial.state_dict())


@dataclass
class _Run:
    """One member's bookkeeping: its callbacks, latest value of every metric, step times, result."""

    cb: Callbacks
    latest: dict[str, float]
    step_times: list[float] = field(default_factory=list)
    result: TrialResult | None = None


#: ``on_checkpoint(step, pack_state, latest_per_member)``: the run's checkpoint hook.
CheckpointHook = Callable[[int, dict[str, Any], list[dict[str, float]]], None]


def run_members(engine: Engine, callbacks: Sequence[Callbacks | None], *,
                state: dict[str, Any] | None = None,
                should_stop: Callable[[], bool] | None = None,
                on_checkpoint: CheckpointHook | None = None) -> list[TrialResult]:
    """Train ``engine``'s members to their ends (see the module docstring); one result each.

    ``state`` (a pack state, as ``on_checkpoint`` receives it) carries the members' latest metrics
    and the results of members that ended before it. ``should_stop()`` is asked after every step;
    when it says so, pending divergences are read and the others end ``finished``."""
    runs = _open_runs(engine, callbacks, state)
    first, cfg = engine.step, engine.members[0].cfg
    total = cfg[names.ITERATIONS]
    while engine.step < total and any(r.result is None for r in runs):
        t0 = time.perf_counter()
        out = engine.train_step()
        step = engine.step
        last = step == total
        stats = step % cfg[names.STATS_EVERY] == 0 or last
        evaluate = step % cfg[names.EVAL_EVERY] == 0 or last
        if stats or evaluate or engine.step_mode == "eager":  # eager: a host read every step
            _read_divergences(engine, runs, first)
        live = [i for i, r in enumerate(runs) if r.result is None]
        if stats:
            for i, m in zip(live, engine.measure(out, live)):
                runs[i].latest.update(m)
                runs[i].cb.on_stats(step, m)
        dt = (time.perf_counter() - t0) / max(1, len(live))
        for i in live:
            runs[i].step_times.append(dt)
        if evaluate:
            _evaluate(engine, runs, live, step, last, first)
            _checkpoint(engine, runs, live, step, last, on_checkpoint)
        if should_stop is not None and should_stop():
            _read_divergences(engine, runs, first)
            break
    for r in runs:
        if r.result is None:  # stopped early (should_stop): what it has done is its result
            _finish(r, engine.step)
            r.cb.on_end(r.result)
    return [r.result for r in runs]


def _open_runs(engine: Engine, callbacks: Sequence[Callbacks | None],
               state: dict[str, Any] | None) -> list[_Run]:
    """The members' bookkeeping, ended members of ``state`` restored; the others started:
    ``on_start`` and, for an image trial without one, its FID scale at step 0."""
    P = len(engine.members)
    cbs = [c or Callbacks() for c in callbacks]
    if len(cbs) != P:
        raise ValueError(f"training: {len(cbs)} callbacks objects for {P} members")
    state = state or {}
    runs = [_Run(cb, dict(lat or {})) for cb, lat in zip(cbs, state.get("latest", [None] * P))]
    for r, res in zip(runs, state.get("results", [None] * P)):
        if res is not None:  # ended before the checkpoint: stays ended
            r.result = TrialResult(res["status"], int(res["step"]), res.get("reason"),
                                   dict(r.latest), [])
    for m, r in zip(engine.members, runs):
        if r.result is not None:
            continue
        r.cb.on_start(m.params)
        if m.toy:
            continue
        if not m.fid_scale:  # step 0 (or a state from before the scale existed): measure it
            m.fid_scale = initial_scale(m)
            r.latest.update(m.fid_scale)
            r.cb.on_stats(0, dict(m.fid_scale))
        else:  # resumed: measured and logged at step 0 by an earlier attempt
            r.latest.update(m.fid_scale)
    return runs


def _diverged(r: _Run, step: int, reason: str, first: int) -> None:
    """End a member as diverged (a result, never an exception): marker metrics + ``on_end``;
    its step times stop before ``step``."""
    del r.step_times[max(0, step - first - 1):]
    marker = {names.DIVERGED: 1.0, "diverged_step": float(step)}
    r.latest.update(marker)
    r.cb.on_stats(step, marker)
    r.result = TrialResult(names.DIVERGED, step, reason, r.latest, r.step_times)
    r.cb.on_end(r.result)


def _read_divergences(engine: Engine, runs: list[_Run], first: int) -> None:
    for i, (s, reason) in engine.divergences().items():
        if runs[i].result is None:
            _diverged(runs[i], s, reason, first)


def _evaluate(engine: Engine, runs: list[_Run], live: list[int], step: int, last: bool,
              first: int) -> None:
    """FID/KID and the grid of every live member; at the last step its final evaluation."""
    for i in live:
        m, r = engine.sync(i), runs[i]
        ev = m.evaluate()
        if not math.isfinite(ev[names.FID]):
            _diverged(r, step, f"non-finite fid={ev[names.FID]} at step {step}", first)
            continue
        r.latest.update(ev)
        r.cb.on_eval(step, ev, m.sample_grid())
        if last:
            final = final_evaluation(m, ev)
            samples = final.pop("images", None)
            if not math.isfinite(final.get(names.FID_FINAL, math.nan)):
                _diverged(r, step, f"non-finite fid_final at step {step}", first)
                continue
            r.latest.update(final)
            r.cb.on_final(step, final, samples)


def _finish(r: _Run, step: int) -> None:
    r.latest[names.DIVERGED] = 0.0
    r.result = TrialResult("finished", step, None, r.latest, r.step_times)


def _checkpoint(engine: Engine, runs: list[_Run], live: list[int], step: int, last: bool,
                on_checkpoint: CheckpointHook | None) -> None:
    """Each member still running snapshots its state (``on_checkpoint``); at the last step they
    finish; then the run's hook gets every member's state, latest metrics and result; then the
    finished members' ``on_end``. Nothing when every member ended at this evaluation."""
    going = [i for i in live if runs[i].result is None]
    if not going:
        return
    wanted = range(len(runs)) if on_checkpoint is not None else going
    states = {i: engine.member_state(i) for i in wanted}
    for i in going:
        runs[i].cb.on_checkpoint(step, states[i], dict(runs[i].latest))
    if last:
        for i in going:
            _finish(runs[i], step)
    if on_checkpoint is not None:
        pack_state = {
            "members": [states[i] for i in range(len(runs))],
            "latest": [dict(r.latest) for r in runs],
            "results": [None if r.result is None else
                        {"status": r.result.status, "step": r.result.step,
                         "reason": r.result.reason} for r in runs],
        }
        on_checkpoint(step, pack_state, [dict(r.latest) for r in runs])
    if last:
        for i in going:
            runs[i].cb.on_end(runs[i].result)
