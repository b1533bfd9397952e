"""Population trials: several one-config trials that share shapes, trained as one batched model.

``train_population(configs, callbacks)`` runs P validated trial configs (a *pack*) through the
training loop (``trainables.loop.run_members``) with the pack engine, :class:`Population`; member
i behaves as ``train(configs[i], callbacks[i])`` (docs/design.md "Throughput"):

* **Same draws.** Every member is a real :class:`~trainables.trial.GANTrial` built exactly as
  ``train()`` builds it (``torch.manual_seed(seed)``, G then D, SN's initial power iterations), so
  it owns the same ``data_gen`` / ``noise_gen`` and the same parameter initialisation. Batches and
  z are drawn *outside* the batched step from each member's own generators in ``train_step``'s
  order (real batch, then z, per D step): the same ``randint`` / ``randn`` call of the same size
  on the same generator, written into the member's row of a stacked tensor; the arithmetic after
  the draws (toys: ``trainables.data.toys.toy_draw``; images: gather and rescale) runs once for the
  pack, element for element what ``sample_toy`` / ``ImageSet.batch`` compute. Draws that
  ``train()`` takes from torch's global RNG (the GP interpolation weights) come from a per-member
  generator holding what the global RNG would hold in that member's own trial.
* **One batched model.** The member networks are stacked (a leading member axis P on every
  parameter and buffer; ``trainables.nets.batched_net``): ``mlp`` layers as batched matrix products,
  conv layers one call per member on CPU and grouped convolutions elsewhere, BatchNorm with
  per-member statistics, spectral norm as torch's power iteration batched over members (own u,
  v, k_SN). The regularizer's penalty is its batched form (``Regularizer.pack``: for ``gp``
  double backprop through the batched D with each member's λ and k_GP).
* **Bit for bit on CPU.** Every op of the step is the one-config trial's own op on the member's
  own values: batched where the batched kernel is checked to reproduce it for that shape, else
  looped over members; the loss terms too (grouped by (loss, α), each group with its members'
  own ``DomainScaledLoss``). So on CPU a pack's members ARE their one-config trials, record for
  record (tested). On CUDA (batched kernels, grouped convolutions) they are not bitwise: the
  pack-vs-trial tolerances are the contract there (loss_d and Ω at the last stats step within
  1e-3 relative, FID within 2 %).
* **Own hyper-parameters.** The optimizer (:class:`~trainables.gan.batched_optim.StackedOptimizer`)
  is torch's RMSprop / Adam update over stacked tensors with per-member lr / ε / betas (ε
  outside the root, as ``trainables.gan.optim``): bit for bit torch's update of each member.
* **Same records.** At a stats step the pack measures all members at once
  (``trainables.metrics.stats.member_stats`` over the batched D in eval mode, one host read; the
  one-config trial's ``measure`` is the same code at P = 1), then each member's ``GANTrial``
  completes its record (Ω∪, the regularizer's metrics). At evaluation steps the member's slice
  of the stacked state is copied back into its ``GANTrial`` (:meth:`Population.sync`), whose own
  ``evaluate`` / ``state_dict`` the loop then calls.
* **Divergence without host syncs.** Non-finite losses set a per-member flag (the step and the
  values) on the device, read by the loop at stats / evaluation steps (every step in ``eager``).
  A diverged member is masked: members are independent in every batched op, so its NaNs never
  reach the others; it keeps being computed until the pack ends (cheaper than re-stacking).
* **Resume.** The pack state is every member's ``GANTrial`` state (each one a valid
  single-trial state) plus the members' statuses and latest metrics.

Step modes (trial key ``step_mode``, equal across a pack; ``trainables.pack.modes``): the step is
split into the draws (host side) and ``Population._core`` (device side: forwards, both
``autograd.grad`` calls, SN's power iteration, BatchNorm statistics, the stacked optimizers'
in-place updates, the divergence flags; no host read, no Python value that changes from step to
step). ``eager`` and ``sync_free`` run ``_core`` op by op; ``compiled`` runs it under
``torch.compile(fullgraph=True)`` with dynamo's ``trace_autograd_ops`` (``torch.autograd.grad``
traced into the one graph; with ``aot_eager`` it is the eager step bit for bit, inductor rounds
differently: the pack-vs-trial tolerances hold; refused for ``gp``, whose double backward
AOTAutograd does not support, pytorch/pytorch#91469); ``cuda_graph`` captures ``_core`` once
and replays it (:class:`_GraphedStep`), the static inputs filled from the members' generators
before every replay. An explicit mode the pack cannot run is refused at construction with one
``ValueError`` naming the mode, the reason and the modes that do run.

Supported: the regularizers that have a batched form (``trainables.pack.packing``); the others run
one config per trial (``unsupported_reason``). Members of a pack must agree on every trial key
except :data:`MEMBER_KEYS` (``pack_signature``).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch

from trainables import names
from trainables.nets.batched_net import BatchedNet, member_apply, member_mean, register_member_fn
from trainables.gan.batched_optim import StackedOptimizer
from trainables.devices import apply_precision, resolve_device
from trainables.loop import Callbacks, CheckpointHook, TrialResult, run_members
from trainables.pack.modes import (  # noqa: F401 - step_mode_refusal re-exported
    COMPILE_BACKEND, member_rng, resolve_pack_step_mode, step_mode_refusal, tune_malloc,
)
from trainables.pack.packing import (MEMBER_KEYS, POPULATION_REGULARIZERS, pack_configs,
                                pack_signature, unsupported_reason)
from trainables.metrics.stats import member_stats, spectral_norms
from trainables.step_modes import (  # noqa: F401 - STEP_MODES re-exported
    CAPTURED_MODES, STEP_MODES,
)
from trainables.data.toys import toy_draw, toy_modes
from trainables.trial import GANTrial, divergence_reason
from trainables.trial_capture import GraphedStep

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


class _GraphedStep:
    """The pack's ``_core`` captured as one CUDA graph (``torch.cuda.graphs``).

    Static inputs: the real batches, z and (gp) interpolation weights of one iteration, filled
    before each replay by ``Population._draw`` from every member's own generators (outside the
    graph, so the draws are the eager ones); Adam's bias corrections are device tensors written
    by ``StackedOptimizer.prepare``. Parameters, optimizer states, SN u/v, BN statistics, the
    step counter and the divergence flags are updated in place by the graph (fixed addresses).
    Every step draws first (warm-up steps included), then is one step of
    ``trainables.trial_capture.GraphedStep``: ``_core`` eagerly on a side stream while warming
    up, captured on that step's side stream after a device synchronize, then replayed; the
    returned tensors are the graph's outputs (valid until the next step)."""

    def __init__(self, pop: "Population"):
        self.pop = pop
        self.runner = GraphedStep(pop.device, capture_on_side=True)
        self.real, self.z, self.u = pop._inputs()  # static: filled before every replay
        self.out: dict[str, torch.Tensor] | None = None

    def body(self) -> None:
        """What the graph holds: one ``_core`` on the static inputs (outputs kept in ``out``)."""
        self.out = self.pop._core(self.real, self.z, self.u)

    def step(self) -> dict[str, torch.Tensor]:
        self.pop._draw(self.real, self.z, self.u)
        self.runner.step(self.body, self.body)
        return self.out


def _check_pack(configs: Sequence[dict[str, Any]]) -> None:
    """One clear ``ValueError`` for configs that cannot form a pack."""
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



class Population:
    """The members (``GANTrial`` each) and their batched model: the pack engine of the training
    loop (``trainables.loop.Engine``); see the module docstring."""

    def __init__(self, configs: Sequence[dict[str, Any]], device: torch.device | str | None = None,
                 states: Sequence[dict[str, Any] | None] | None = None):
        _check_pack(configs)
        self.cfgs = [dict(c) for c in configs]
        self.P = len(configs)
        self.device = torch.device(device) if device is not None else \
            resolve_device(configs[0][names.DEVICE])
        if self.device.type == "cpu":
            tune_malloc()
        self._build_members(states)
        m0, cfg0 = self.members[0], self.cfgs[0]
        self.toy = m0.toy
        self.step = m0.step
        if any(m.step != self.step for m in self.members):
            raise ValueError("population: members resumed at different steps")
        self.batch, self.n_dis = cfg0[names.BATCH_SIZE], cfg0[names.N_DIS]
        self.z_dim = cfg0[names.Z_DIM]
        self.concat_d = m0.concat_d
        self.sample_shape = tuple(m0.sample_shape)
        if self.toy:  # the arithmetic of a toy draw (trainables.data.toys), once for the pack
            self.n_modes = toy_modes(cfg0[names.DATASET]).shape[0]
            self.toy_draw = toy_draw(cfg0[names.DATASET])
        self.G = BatchedNet([m.G for m in self.members], self.device, image=not self.toy)
        self.D = BatchedNet([m.D for m in self.members], self.device, image=not self.toy)
        self.step_mode = resolve_pack_step_mode(cfg0, self.device)
        self._build_optimizers()
        self._build_losses()
        self.regularizer = cfg0[names.REGULARIZER]
        reg = type(m0.regularizer)
        #: the regularizer's batched form (None: no penalty term, e.g. none / sn)
        self.reg_pack = (reg.pack([m.regularizer for m in self.members], self.device)
                         if reg.packs() else None)
        # device-side divergence flags: step of the first non-finite loss (-1: none) and values
        self.div_step = torch.full((self.P,), -1, dtype=torch.long, device=self.device)
        self.div_vals = torch.zeros(self.P, 3, device=self.device)
        self._step_t = torch.tensor(self.step, dtype=torch.long, device=self.device)
        if self.step_mode == "compiled":
            self._compiled = torch.compile(self._core, backend=COMPILE_BACKEND, fullgraph=True,
                                           dynamic=False)
        elif self.step_mode == "cuda_graph":
            self._graph = _GraphedStep(self)

    def _build_members(self, states: Sequence[dict[str, Any] | None] | None) -> None:
        """Every member's ``GANTrial``, built (and resumed) as ``train()`` builds it, sharing one
        image store, and its stand-in for torch's global RNG; the process's global RNG is left
        as it was."""
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
                self.rngs.append(member_rng(cfg[names.SEED], self.device, st["torch_rng"],
                                            st.get("member_cuda_rng"), int(st["step"])))
            else:
                self.rngs.append(member_rng(cfg[names.SEED], self.device))
            self.members.append(m)
        torch.set_rng_state(saved_rng)

    def _build_optimizers(self) -> None:
        """The stacked optimizers, loaded with every member's own optimizer state."""
        cfg0 = self.cfgs[0]
        capturable = self.step_mode in CAPTURED_MODES
        self.opt_d = StackedOptimizer(cfg0[names.OPTIMIZER], list(self.D.params.values()),
                                      self.cfgs, names.LR_D, self.device, capturable=capturable,
                                      updates_per_step=self.n_dis)
        self.opt_g = StackedOptimizer(cfg0[names.OPTIMIZER], list(self.G.params.values()),
                                      self.cfgs, names.LR_G, self.device, capturable=capturable)
        for i, m in enumerate(self.members):
            self.opt_d.load_member(i, m.opt_d, list(m.D.parameters()))
            self.opt_g.load_member(i, m.opt_g, list(m.G.parameters()))

    def _build_losses(self) -> None:
        """Losses grouped by (name, α): each group computed by its members' own loss object."""
        groups: dict[tuple[str, float], list[int]] = {}
        for i, c in enumerate(self.cfgs):
            groups.setdefault((c[names.LOSS], float(c[names.ALPHA])), []).append(i)
        self.loss_groups = []  # (registered name, member indices as a tensor and a list)
        for (name, alpha), idx in groups.items():
            loss, key = self.members[idx[0]].loss, f"{name}:{alpha!r}"
            for term in ("d_real", "d_fake", "g"):
                register_member_fn(f"{key}:{term}", getattr(loss, term))
            self.loss_groups.append((key, torch.tensor(idx, device=self.device), idx))
        self._inv = torch.empty(self.P, dtype=torch.long, device=self.device)
        self._inv[torch.cat([g[1] for g in self.loss_groups])] = torch.arange(
            self.P, device=self.device)

    # -- draws ----------------------------------------------------------------------------------
    def _inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Empty (real, z, u) for one iteration on the device (u None unless the regularizer's
        batched form draws per-sample weights, as gp's interpolation does)."""
        n, P, B = self.n_dis, self.P, self.batch
        real = torch.empty((n, P, B) + self.sample_shape, device=self.device)
        z = torch.empty((n, P, B, self.z_dim), device=self.device)
        u = (torch.empty((n, P, B) + (1,) * len(self.sample_shape), device=self.device)
             if self.reg_pack is not None and self.reg_pack.draws_u else None)
        return real, z, u

    def _draw(self, real: torch.Tensor | None = None, z: torch.Tensor | None = None,
              u: torch.Tensor | None = None):
        """This step's draws from every member's own generators, in ``GANTrial.train_step``'s
        order within each generator: per D step the real batch (``data_gen``), z
        (``noise_gen``) and, for gp, the interpolation weights (the member's global-RNG
        stream). Each member's draw is the same call on the same generator as in its own trial
        (``torch.randint`` / ``torch.randn`` / ``torch.rand`` of the same size, written into its
        row of a stacked tensor); only the arithmetic after the draws (toy: mode + std·noise,
        images: gather and rescale) runs once for the pack. Given tensors (the captured step's
        static inputs) are filled in place; returns (real, z, u): (n_dis, P, B, …), u None
        without gp."""
        n, P, B = self.n_dis, self.P, self.batch
        if self.toy:
            which = torch.empty((n, P, B), dtype=torch.long)
            noise = torch.empty((n, P, B, 2))
        else:
            # pinned on CUDA: the indices travel to the image store without the host waiting
            idx = torch.empty((n, P, B), dtype=torch.long, pin_memory=self.device.type == "cuda")
        if z is None:
            _, z, u = self._inputs()
        for j in range(n):
            for i, m in enumerate(self.members):
                if self.toy:
                    torch.randint(self.n_modes, (B,), generator=m.data_gen, out=which[j, i])
                    torch.randn((B, 2), generator=m.data_gen, out=noise[j, i])
                else:
                    torch.randint(len(m.data), (B,), generator=m.data_gen, out=idx[j, i])
                torch.randn((B, self.z_dim), generator=m.noise_gen, out=z[j, i])
                if u is not None:
                    torch.rand(u.shape[2:], generator=self.rngs[i], out=u[j, i])
        if self.toy:  # data_lib.sample_toy's arithmetic: modes[which] + std·(in-plane noise)
            drawn = self.toy_draw(which, noise)
        else:
            data = self.members[0].data
            drawn = data.batch(idx.reshape(-1).to(data.device, non_blocking=True)).reshape(
                (n, P, B) + self.sample_shape)
        if real is None:
            real = drawn.to(self.device, non_blocking=True)
        else:
            real.copy_(drawn, non_blocking=True)
        return real, z, u

    # -- the step --------------------------------------------------------------------------------
    def _per_member_loss(self, f: torch.Tensor, term: str) -> torch.Tensor:
        """(P,) means of a loss term over each member's batch, grouped by (loss, α)."""
        parts = []
        for key, idx_t, idx in self.loss_groups:
            fg = f if len(idx) == self.P else f.index_select(0, idx_t)
            parts.append(member_mean(member_apply(f"{key}:{term}", fg)))
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts).index_select(0, self._inv)

    def _d_outputs(self, real: torch.Tensor, fake: torch.Tensor):
        if self.concat_d:
            out = self.D(torch.cat([real, fake], dim=1))
            return out[:, : real.shape[1]], out[:, real.shape[1]:]
        return self.D(real), self.D(fake)

    def _core(self, reals: torch.Tensor, zs: torch.Tensor, us: torch.Tensor | None
              ) -> dict[str, torch.Tensor]:
        """The device side of one iteration for every member (``GANTrial.train_step`` batched):
        n_dis D updates, one G update, the divergence flags; no host read, no Python value that
        changes from step to step (what ``compiled`` traces and ``cuda_graph`` captures)."""
        d_params = list(self.D.params.values())
        g_params = list(self.G.params.values())
        for j in range(self.n_dis):
            real = reals[j]
            fake = self.G(zs[j])
            f_real, f_fake = self._d_outputs(real, fake.detach())
            loss_d = self._per_member_loss(f_real, "d_real") + self._per_member_loss(
                f_fake, "d_fake")
            penalty = None if self.reg_pack is None else self.reg_pack.penalty(
                self.D, real, fake, None if us is None else us[j])
            if penalty is None:
                penalty = torch.zeros_like(loss_d)
                total = loss_d
            else:
                total = loss_d + penalty
            grads = torch.autograd.grad(total.sum(), d_params)
            if self.opt_d.capturable:
                self.opt_d.update(grads, j)
            else:
                self.opt_d.step(grads)
        f_gen = self.D(fake, detach=True)
        loss_g = self._per_member_loss(f_gen, "g")
        grads = torch.autograd.grad(loss_g.sum(), g_params)
        if self.opt_g.capturable:
            self.opt_g.update(grads)
        else:
            self.opt_g.step(grads)
        with torch.no_grad():
            self._step_t.add_(1)
            vals = torch.stack([loss_d.detach().float(), loss_g.detach().float(),
                                penalty.detach().float()], dim=1)
            new = ~torch.isfinite(vals).all(dim=1) & (self.div_step < 0)
            self.div_step.copy_(torch.where(new, self._step_t, self.div_step))
            self.div_vals.copy_(torch.where(new[:, None], vals, self.div_vals))
        return {"real": real, "fake": fake.detach(), "f_real": f_real.detach(),
                "f_fake": f_fake.detach(), "f_gen": f_gen.detach(), names.LOSS_D: loss_d.detach(),
                names.LOSS_G: loss_g.detach(), names.PENALTY: penalty.detach()}

    def train_step(self) -> dict[str, Any]:
        """One iteration for every member: n_dis D updates, one G update (``GANTrial.train_step``
        batched), executed as ``step_mode`` says. Returns detached (P, …) tensors; raises the
        flags of members whose losses are not finite (no host sync)."""
        if self.step_mode in CAPTURED_MODES:
            self.opt_d.prepare()
            self.opt_g.prepare()
        if self.step_mode == "cuda_graph":
            out = self._graph.step()
        elif self.step_mode == "compiled":
            reals, zs, us = self._draw()
            with torch._dynamo.config.patch(trace_autograd_ops=True,
                                            fail_on_recompile_limit_hit=True):
                out = self._compiled(reals, zs, us)
        else:
            out = self._core(*self._draw())
        self.step += 1
        return out

    # -- members ---------------------------------------------------------------------------------
    def divergences(self) -> dict[int, tuple[int, str]]:
        """Members flagged so far: i → (step, reason as ``GANTrial.divergence`` words it)
        (one host read)."""
        steps = self.div_step.tolist()
        if all(s < 0 for s in steps):
            return {}
        vals = self.div_vals.tolist()
        return {i: (s, divergence_reason(s, vals[i])) for i, s in enumerate(steps) if s >= 0}

    def member_out(self, out: dict[str, Any], i: int) -> dict[str, Any]:
        o = {k: v[i] for k, v in out.items()}
        o["reg_metrics"] = {}
        return o

    def measure(self, out: dict[str, Any], live: Sequence[int]) -> list[dict[str, float]]:
        """The stats records of members ``live`` at this step: what each one's
        ``GANTrial.measure`` records, measured for the whole pack at once
        (``trainables.metrics.stats.member_stats`` over the batched D in eval mode, the SN layers'
        SVDs over the stacked weights) and read in one device sync; Ω∪ and the regularizer's
        metrics then completed by each member's own trial."""
        extra: dict[str, torch.Tensor] = {}
        if self.regularizer == "sn":
            extra["sn_sigma"] = self._sn_sigmas(live)
        elif self.reg_pack is not None:
            extra.update(self.reg_pack.stash)
        values = member_stats(lambda x: self.D(x, training=False, detach=True), out["real"],
                              out["fake"], out["f_real"], out["f_fake"], out["f_gen"],
                              out[names.PENALTY], [m.loss for m in self.members], extra=extra)
        records = []
        for i in live:
            m, ex = values[i]
            trial = self.members[i]
            if self.regularizer == "sn":
                reg = trial.regularizer.sigma_metrics(ex["sn_sigma"], trial.D)
            else:
                reg = {k: v[0] for k, v in ex.items()}
            records.append(trial.record_stats(m, reg))
        return records

    def _sn_sigmas(self, live: Sequence[int]) -> torch.Tensor:
        """(P, L) σ(W̄) of every SN layer's effective weight (eval mode: the stored u, v), one
        batched SVD per layer over the live members (a diverged member's weights may not be
        finite; its row stays 0)."""
        with torch.no_grad():
            ws = [self.D.weight(info, training=False, detach=True)
                  for _kind, _pre, info in self.D.layers if info.get("sn")]
            if len(live) == self.P:
                return spectral_norms(ws)
            rows = torch.tensor(list(live), device=self.device)
            sig = spectral_norms([w.index_select(0, rows) for w in ws])
            return sig.new_zeros((self.P, sig.shape[1])).index_copy_(0, rows, sig)

    @torch.no_grad()
    def sync(self, i: int, *, optimizers: bool = False) -> GANTrial:
        """Copy member i's slice of the stack into its ``GANTrial`` (models; optionally the
        optimizer states and RNG) so its own measure / evaluate / state_dict see it."""
        m = self.members[i]
        m.G.load_state_dict(self.G.member_state(i))
        m.D.load_state_dict(self.D.member_state(i))
        m.step = self.step
        if self.reg_pack is not None and self.reg_pack.stash:
            m.regularizer._stash = self.reg_pack.member_stash(i)
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



def train_population(
    configs: Sequence[dict[str, Any]],
    callbacks: Sequence[Callbacks | None] | None = None,
    *,
    state: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: CheckpointHook | None = None,
) -> list[TrialResult]:
    """Run a pack of validated trial configs to their ends; member i behaves as
    ``train(configs[i], callbacks[i])`` (same draws, same callback calls, same results).

    ``state`` resumes from a pack state (the ``on_checkpoint`` argument). ``on_checkpoint(step,
    pack_state, latest_per_member)`` is called once per evaluation step, after every member's
    own ``on_checkpoint``. Returns one :class:`TrialResult` per member."""
    callbacks = list(callbacks) if callbacks is not None else [None] * len(configs)
    if len(callbacks) != len(configs):
        raise ValueError("population: one callbacks object per config")
    pop = Population(configs, device, state["members"] if state is not None else None)
    apply_precision(configs[0].get(names.PRECISION, "fp32"), pop.device)  # one precision per pack
    return run_members(pop, callbacks, state=state, should_stop=should_stop,
                       on_checkpoint=on_checkpoint)
