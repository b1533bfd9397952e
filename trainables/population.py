"""Population trials: several one-config trials that share shapes, trained as one batched model.

``train_population(configs, callbacks)`` runs P validated trial configs (a *pack*) together and is,
member by member, the plain ``trainables.train.train`` (docs/design.md "Throughput", issue #12):

* **Same draws.** Every member is a real :class:`~trainables.train.GANTrial` built exactly as
  ``train()`` builds it (``torch.manual_seed(seed)``, G then D, SN's initial power iterations), so
  it owns the same ``data_gen`` / ``noise_gen`` and the same parameter initialisation. Batches and
  z are drawn *outside* the batched step from each member's own generators in ``train_step``'s
  order (real batch, then z, per D step). Draws that ``train()`` takes from torch's global RNG
  (the GP interpolation weights) come from a per-member generator holding what the global RNG
  would hold in that member's own trial.
* **One batched model.** The member networks are stacked (a leading member axis P on every
  parameter and buffer) and run without vmap: ``mlp`` layers as ``baddbmm`` over (P, B, F), conv
  layers as grouped convolutions over a (B, P·C, H, W) layout, BatchNorm as one ``batch_norm``
  over P·C channels (per-member statistics and running buffers). Spectral norm is the power
  iteration of ``torch.nn.utils.parametrizations.spectral_norm`` batched over members (own u, v,
  own k_SN); it advances at every train-mode D forward, exactly as the parametrization does.
  The gradient penalty is double backprop through the batched D.
* **Own hyper-parameters.** Losses are grouped by (loss, α) and computed with the member's own
  ``DomainScaledLoss`` object; the optimizer (:class:`StackedOptimizer`) is torch's RMSprop / Adam
  update written over stacked tensors, per-member lr / ε / betas (ε outside the root, as
  ``trainables.optim``). A hyper-parameter equal for all members is used as a Python scalar, the
  same arithmetic as torch's.
* **Same records.** At stats and evaluation steps the member's slice of the stacked state is
  copied back into its ``GANTrial`` and that trial's own ``measure`` / ``evaluate`` /
  ``final_evaluation`` / ``state_dict`` run: every member reports through its own
  :class:`~trainables.train.Callbacks` exactly what its one-config trial would (the pack's step
  time is divided among the members).
* **Divergence without host syncs.** Non-finite losses set a per-member flag (the step and the
  values) on the device; the host reads it only at stats / evaluation steps. A diverged member is
  recorded as ``train()`` records it (same step, same reason) and masked: members are independent
  in every batched op, so its NaNs never reach the others; it keeps being computed until the pack
  ends (cheaper than re-stacking).
* **Resume.** The pack state (:meth:`Population.state_dict`) is every member's ``GANTrial`` state
  (each one a valid single-trial state) plus the members' statuses and latest metrics.

Supported: regularizers ``none``, ``sn``, ``gp`` (:data:`POPULATION_REGULARIZERS`); the others run
one config per trial (``unsupported_reason``). Members of a pack must agree on every trial key
except :data:`MEMBER_KEYS` (``pack_signature``).

The parts: packing in :mod:`trainables.packing`, the batched networks in
:mod:`trainables.batched_net`, the stacked optimizer in :mod:`trainables.batched_optim`; this
module holds the pack (:class:`Population`) and its training loop, and re-exports the rest.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Sequence

import torch

from trainables import data as data_lib
from trainables.batched_net import BatchedNet
from trainables.batched_optim import StackedOptimizer, _per_member
from trainables.evaluation import final_evaluation, initial_scale
from trainables.packing import (MEMBER_KEYS, POPULATION_REGULARIZERS, pack_configs,
                                pack_signature, unsupported_reason)
from trainables.train import Callbacks, GANTrial, TrialResult, resolve_device

__all__ = [
    "MEMBER_KEYS",
    "POPULATION_REGULARIZERS",
    "Population",
    "StackedOptimizer",
    "pack_configs",
    "pack_signature",
    "train_population",
    "unsupported_reason",
]


# -------------------------------------------------------------------------------------- population


def _member_rng(seed: int, device: torch.device, state: torch.Tensor | None = None,
                cuda_state: torch.Tensor | None = None) -> torch.Generator:
    """What torch's global RNG of ``device`` would be in the member's own trial."""
    if device.type == "cpu":
        g = torch.Generator()
        g.set_state(state if state is not None else torch.get_rng_state())
        return g
    g = torch.Generator(device=device).manual_seed(seed)
    if cuda_state is not None:
        g.set_state(cuda_state)
    return g


class Population:
    """The members (``GANTrial`` each) and their batched model; see the module docstring."""

    def __init__(self, configs: Sequence[dict[str, Any]], device: torch.device | str | None = None,
                 states: Sequence[dict[str, Any] | None] | None = None):
        if not configs:
            raise ValueError("population: no configs")
        sig = pack_signature(configs[0])
        for c in configs:
            why = unsupported_reason(c)
            if why:
                raise ValueError(f"population: {why}")
            if pack_signature(c) != sig:
                diff = sorted(k for k in set(c) | set(configs[0])
                              if k not in MEMBER_KEYS and c.get(k) != configs[0].get(k))
                raise ValueError(f"population: members differ in shape keys {diff}")
        self.cfgs = [dict(c) for c in configs]
        self.P = len(configs)
        self.device = torch.device(device) if device is not None else \
            resolve_device(configs[0]["device"])
        states = list(states) if states is not None else [None] * self.P
        saved_rng = torch.get_rng_state()
        self.members: list[GANTrial] = []
        self.rngs: list[torch.Generator] = []
        shared_data = None
        for cfg, st in zip(self.cfgs, states):
            m = GANTrial(cfg, self.device)
            if shared_data is not None:  # one image store for the pack (device-resident below)
                m.data = m.evaluator.train_data = shared_data
            elif m.data is not None:
                shared_data = m.data
                if self.device.type != "cpu" and getattr(shared_data, "in_memory", False):
                    shared_data.to(self.device)  # batches gathered on the device
            if st is not None:
                m.load_state_dict(st)
                self.rngs.append(_member_rng(cfg["seed"], self.device, st["torch_rng"],
                                             st.get("member_cuda_rng")))
            else:
                self.rngs.append(_member_rng(cfg["seed"], self.device))
            self.members.append(m)
        torch.set_rng_state(saved_rng)
        m0 = self.members[0]
        self.toy = m0.toy
        self.step = m0.step
        if any(m.step != self.step for m in self.members):
            raise ValueError("population: members resumed at different steps")
        cfg0 = self.cfgs[0]
        self.regularizer = cfg0["regularizer"]
        self.batch = cfg0["batch_size"]
        self.n_dis = cfg0["n_dis"]
        self.concat_d = m0.concat_d
        self.G = BatchedNet([m.G for m in self.members], self.device, image=not self.toy)
        self.D = BatchedNet([m.D for m in self.members], self.device, image=not self.toy)
        self.opt_d = StackedOptimizer(cfg0["optimizer"], list(self.D.params.values()), self.cfgs,
                                      "lr_d", self.device)
        self.opt_g = StackedOptimizer(cfg0["optimizer"], list(self.G.params.values()), self.cfgs,
                                      "lr_g", self.device)
        for i, m in enumerate(self.members):
            self.opt_d.load_member(i, m.opt_d, list(m.D.parameters()))
            self.opt_g.load_member(i, m.opt_g, list(m.G.parameters()))
        # losses grouped by (name, α): each group computed by its members' own loss object
        groups: dict[tuple[str, float], list[int]] = {}
        for i, c in enumerate(self.cfgs):
            groups.setdefault((c["loss"], float(c["alpha"])), []).append(i)
        self.loss_groups = [(self.members[idx[0]].loss,
                             torch.tensor(idx, device=self.device), idx)
                            for idx in groups.values()]
        self._inv = torch.empty(self.P, dtype=torch.long, device=self.device)
        self._inv[torch.cat([g[1] for g in self.loss_groups])] = torch.arange(
            self.P, device=self.device)
        if self.regularizer == "gp":
            rp = [m.regularizer.params for m in self.members]
            self.gp_lambda = _per_member([r.gp_lambda for r in rp], self.device)
            self.k_gp = [float(r.k_gp) for r in rp]
            self.gp_one_sided = rp[0].gp_mode == "one-sided"
        # device-side divergence flags: step of the first non-finite loss (-1: none) and values
        self.div_step = torch.full((self.P,), -1, dtype=torch.long, device=self.device)
        self.div_vals = torch.zeros(self.P, 3, device=self.device)

    # -- draws ----------------------------------------------------------------------------------
    def _real(self) -> torch.Tensor:
        out = []
        for m in self.members:
            if self.toy:
                out.append(data_lib.sample_toy(m.cfg["dataset"], self.batch, m.data_gen))
            else:
                idx = torch.randint(len(m.data), (self.batch,), generator=m.data_gen)
                out.append(m.data.batch(idx))
        return torch.stack(out).to(self.device, non_blocking=True)

    def _noise(self) -> torch.Tensor:
        return torch.stack([m._noise(self.batch) for m in self.members])

    # -- the step --------------------------------------------------------------------------------
    def _per_member_loss(self, f: torch.Tensor, term: str) -> torch.Tensor:
        """(P,) means of a loss term over each member's batch, grouped by (loss, α)."""
        parts = []
        for loss, idx_t, idx in self.loss_groups:
            fg = f if len(idx) == self.P else f.index_select(0, idx_t)
            parts.append(getattr(loss, term)(fg).mean(dim=1))
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts).index_select(0, self._inv)

    def _d_outputs(self, real: torch.Tensor, fake: torch.Tensor):
        if self.concat_d:
            out = self.D(torch.cat([real, fake], dim=1))
            return out[:, : real.shape[1]], out[:, real.shape[1]:]
        return self.D(real), self.D(fake)

    def _gp(self, real: torch.Tensor, fake: torch.Tensor):
        """Eq. 18 per member: λ·mean((‖∇f(x̂)‖ − k_GP)²) (one-sided: relu), u from the member's
        global-RNG stream as ``GradientPenalty.interpolates`` draws it."""
        shape = (real.shape[1],) + (1,) * (real.dim() - 2)
        u = torch.stack([torch.rand(shape, device=self.device, dtype=real.dtype, generator=g)
                         for g in self.rngs])
        x_hat = (u * real.detach() + (1 - u) * fake.detach()).requires_grad_(True)
        f = self.D(x_hat)
        (grad,) = torch.autograd.grad(f.sum(), x_hat, create_graph=True)
        flat = grad.float().flatten(2)
        per = []
        norms = []
        sq = None
        n = None
        for i, k in enumerate(self.k_gp):
            if k == 0:
                if sq is None:
                    sq = flat.pow(2).sum(dim=2)
                per.append(sq[i])
                norms.append(sq[i].detach().sqrt())
            else:
                if n is None:
                    n = torch.linalg.vector_norm(flat, dim=2)
                dev = n[i] - k
                if self.gp_one_sided:
                    dev = torch.relu(dev)
                per.append(dev * dev)
                norms.append(n[i].detach())
        per_t = torch.stack(per)
        norms_t = torch.stack(norms)
        lam = self.gp_lambda
        pen = (lam * per_t.mean(dim=1)) if isinstance(lam, float) else lam * per_t.mean(dim=1)
        self._gp_stash = (norms_t.mean(dim=1), norms_t.max(dim=1).values)
        return pen

    def train_step(self) -> dict[str, Any]:
        """One iteration for every member: n_dis D updates, one G update (``GANTrial.train_step``
        batched). Returns detached (P, …) tensors; raises the flags of members whose losses are
        not finite (no host sync)."""
        d_params = list(self.D.params.values())
        g_params = list(self.G.params.values())
        for _ in range(self.n_dis):
            real = self._real()
            fake = self.G(self._noise())
            f_real, f_fake = self._d_outputs(real, fake.detach())
            loss_d = self._per_member_loss(f_real, "d_real") + self._per_member_loss(
                f_fake, "d_fake")
            if self.regularizer == "gp":
                penalty = self._gp(real, fake)
            else:
                penalty = torch.zeros(self.P, device=self.device, dtype=real.dtype)
            grads = torch.autograd.grad((loss_d + penalty).sum(), d_params)
            self.opt_d.step(grads)
        f_gen = self.D(fake, detach=True)
        loss_g = self._per_member_loss(f_gen, "g")
        grads = torch.autograd.grad(loss_g.sum(), g_params)
        self.opt_g.step(grads)
        self.step += 1
        with torch.no_grad():
            vals = torch.stack([loss_d.detach().float(), loss_g.detach().float(),
                                penalty.detach().float()], dim=1)
            bad = ~torch.isfinite(vals).all(dim=1)
            new = bad & (self.div_step < 0)
            self.div_step = torch.where(new, self.step, self.div_step)
            self.div_vals = torch.where(new[:, None], vals, self.div_vals)
        return {"real": real, "fake": fake.detach(), "f_real": f_real.detach(),
                "f_fake": f_fake.detach(), "f_gen": f_gen.detach(), "loss_d": loss_d.detach(),
                "loss_g": loss_g.detach(), "penalty": penalty.detach()}

    # -- members ---------------------------------------------------------------------------------
    def divergences(self) -> dict[int, tuple[int, str]]:
        """Members flagged so far: i → (step, reason as ``GANTrial.divergence`` words it)
        (one host read)."""
        steps = self.div_step.tolist()
        if all(s < 0 for s in steps):
            return {}
        vals = self.div_vals.tolist()
        out = {}
        for i, s in enumerate(steps):
            if s >= 0:
                bad = [f"{n}={v}" for n, v in zip(("loss_d", "loss_g", "penalty"), vals[i])
                       if not math.isfinite(v)]
                out[i] = (s, f"non-finite {', '.join(bad)} at step {s}")
        return out

    def member_out(self, out: dict[str, Any], i: int) -> dict[str, Any]:
        o = {k: v[i] for k, v in out.items()}
        o["reg_metrics"] = {}
        return o

    @torch.no_grad()
    def sync(self, i: int, *, optimizers: bool = False) -> GANTrial:
        """Copy member i's slice of the stack into its ``GANTrial`` (models; optionally the
        optimizer states and RNG) so its own measure / evaluate / state_dict see it."""
        m = self.members[i]
        m.G.load_state_dict(self.G.member_state(i))
        m.D.load_state_dict(self.D.member_state(i))
        m.step = self.step
        if self.regularizer == "gp" and hasattr(self, "_gp_stash"):
            m.regularizer._stash = {"gp_grad_norm_mean": self._gp_stash[0][i],
                                    "gp_grad_norm_max": self._gp_stash[1][i]}
        if optimizers:
            m.opt_d.state.clear()
            m.opt_d.state.update(self.opt_d.member_state(i, list(m.D.parameters())))
            m.opt_g.state.clear()
            m.opt_g.state.update(self.opt_g.member_state(i, list(m.G.parameters())))
        return m

    def member_state(self, i: int) -> dict[str, Any]:
        """Member i's full ``GANTrial`` state (a valid single-trial state)."""
        m = self.sync(i, optimizers=True)
        st = m.state_dict()
        if self.device.type == "cpu":
            st["torch_rng"] = self.rngs[i].get_state()
        else:
            st["member_cuda_rng"] = self.rngs[i].get_state()
        return copy.deepcopy(st)


# ------------------------------------------------------------------------------------ the loop


class _Member:
    """Bookkeeping of one member as ``train()`` keeps it for its trial."""

    def __init__(self, cb: Callbacks, latest: dict[str, float] | None = None):
        self.cb = cb
        self.latest: dict[str, float] = dict(latest or {})
        self.step_times: list[float] = []
        self.result: TrialResult | None = None


def train_population(
    configs: Sequence[dict[str, Any]],
    callbacks: Sequence[Callbacks | None] | None = None,
    *,
    state: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[int, dict[str, Any], list[dict[str, float]]], None] | None = None,
) -> list[TrialResult]:
    """Run a pack of validated trial configs to their ends; member i behaves as
    ``train(configs[i], callbacks[i])`` (same draws, same callback calls, same results).

    ``state`` resumes from a pack state (the ``on_checkpoint`` argument). ``on_checkpoint(step,
    pack_state, latest_per_member)`` is called once per evaluation step, after every member's
    own ``on_checkpoint``. Returns one :class:`TrialResult` per member (diverged members'
    ``step_times`` end at their divergence)."""
    P = len(configs)
    cbs = [c or Callbacks() for c in (callbacks or [None] * P)]
    if len(cbs) != P:
        raise ValueError("population: one callbacks object per config")
    members_state = state["members"] if state is not None else None
    pop = Population(configs, device, members_state)
    runs = [_Member(cb, (state or {}).get("latest", [{}] * P)[i]) for i, cb in enumerate(cbs)]
    if state is not None:  # members that ended before the checkpoint stay ended
        for i, r in enumerate(state.get("results", [None] * P)):
            if r is not None:
                runs[i].result = TrialResult(r["status"], int(r["step"]), r.get("reason"),
                                             dict(runs[i].latest), [])
    for i, (m, r) in enumerate(zip(pop.members, runs)):
        if r.result is not None:
            continue
        r.cb.on_start(m.params)
        if not m.toy:
            if m.fid_scale:
                r.latest.update(m.fid_scale)
            else:
                m.fid_scale = initial_scale(m)
                r.latest.update(m.fid_scale)
                r.cb.on_stats(0, dict(m.fid_scale))

    def diverged(i: int, step: int, reason: str) -> None:
        r = runs[i]
        marker = {"diverged": 1.0, "diverged_step": float(step)}
        r.latest.update(marker)
        r.cb.on_stats(step, marker)
        r.result = TrialResult("diverged", step, reason, r.latest, r.step_times)
        r.cb.on_end(r.result)

    cfg = pop.cfgs[0]
    total = cfg["iterations"]
    while pop.step < total and any(r.result is None for r in runs):
        t0 = time.perf_counter()
        out = pop.train_step()
        step = pop.step
        last = step == total
        stats = step % cfg["stats_every"] == 0 or last
        evaluate = step % cfg["eval_every"] == 0 or last
        live = [i for i, r in enumerate(runs) if r.result is None]
        if stats or evaluate:
            for i, (s, reason) in pop.divergences().items():
                if runs[i].result is None:
                    diverged(i, s, reason)
            live = [i for i in live if runs[i].result is None]
        if stats:
            for i in live:
                m = pop.sync(i)
                mt = m.measure(pop.member_out(out, i))
                runs[i].latest.update(mt)
                runs[i].cb.on_stats(step, mt)
        dt = (time.perf_counter() - t0) / max(1, len(live))
        for i in live:
            runs[i].step_times.append(dt)
        if evaluate:
            for i in live:
                m = pop.sync(i)
                r = runs[i]
                ev = m.evaluate()
                if not math.isfinite(ev["fid"]):
                    diverged(i, step, f"non-finite fid={ev['fid']} at step {step}")
                    continue
                r.latest.update(ev)
                r.cb.on_eval(step, ev, m.sample_grid())
                if last:
                    final = final_evaluation(m, ev)
                    samples = final.pop("images", None)
                    if not math.isfinite(final.get("fid_final", math.nan)):
                        diverged(i, step, f"non-finite fid_final at step {step}")
                        continue
                    r.latest.update(final)
                    r.cb.on_final(step, final, samples)
            member_states = [pop.member_state(i) for i in range(P)]
            for i in live:
                if runs[i].result is None:
                    runs[i].cb.on_checkpoint(step, member_states[i], dict(runs[i].latest))
            if last:
                for i in live:
                    r = runs[i]
                    if r.result is None:
                        r.latest["diverged"] = 0.0
                        r.result = TrialResult("finished", step, None, r.latest, r.step_times)
            if on_checkpoint is not None:
                pack_state = {
                    "members": member_states,
                    "latest": [dict(r.latest) for r in runs],
                    "results": [None if r.result is None else
                                {"status": r.result.status, "step": r.result.step,
                                 "reason": r.result.reason} for r in runs],
                }
                on_checkpoint(step, pack_state, [dict(r.latest) for r in runs])
            if last:
                for i in live:
                    if runs[i].result is not None and runs[i].result.status == "finished":
                        runs[i].cb.on_end(runs[i].result)
        if should_stop is not None and should_stop():
            break
    for r in runs:
        if r.result is None:  # stopped early (should_stop), as train() ends such a trial
            r.latest["diverged"] = 0.0
            r.result = TrialResult("finished", pop.step, None, r.latest, r.step_times)
            r.cb.on_end(r.result)
    return [r.result for r in runs]
