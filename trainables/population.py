"""Population trials: several one-config trials that share shapes, trained as one batched model.

``train_population(configs, callbacks)`` runs P validated trial configs (a *pack*) together and is,
member by member, the plain ``trainables.train.train`` (docs/design.md "Throughput", issue #12):

* **Same draws.** Every member is a real :class:`~trainables.train.GANTrial` built exactly as
  ``train()`` builds it (``torch.manual_seed(seed)``, G then D, SN's initial power iterations), so
  it owns the same ``data_gen`` / ``noise_gen`` and the same parameter initialisation. Batches and
  z are drawn *outside* the batched step from each member's own generators in ``train_step``'s
  order (real batch, then z, per D step): the same ``randint`` / ``randn`` call of the same size
  on the same generator, written into the member's row of a stacked tensor; the arithmetic after
  the draws (toy: mode + std·noise; images: gather and rescale) runs once for the pack, element
  for element what ``sample_toy`` / ``ImageSet.batch`` compute (bit-identical; tested). Draws that
  ``train()`` takes from torch's global RNG (the GP interpolation weights) come from a per-member
  generator holding what the global RNG would hold in that member's own trial.
* **One batched model.** The member networks are stacked (a leading member axis P on every
  parameter and buffer) and run without vmap: ``mlp`` layers as batched matrix products over
  (P, B, F); conv layers one call per member on CPU, grouped convolutions over a (B, P·C, H, W)
  layout elsewhere; BatchNorm with per-member statistics and running buffers. Spectral norm is
  the power iteration of ``torch.nn.utils.parametrizations.spectral_norm`` batched over members
  (own u, v, own k_SN); it advances at every train-mode D forward, exactly as the
  parametrization does. The gradient penalty is double backprop through the batched D.
* **Bit for bit on CPU.** Every op of the step is the one-config trial's own op on the member's
  own values: batched where the batched kernel is checked to reproduce it for that shape, else
  looped over members (``trainables.batched_net``); the loss terms too. So on CPU a pack's
  members ARE their one-config trials, record for record, toy and dcgan32 alike (tested: every
  stats / eval / final record equal). On CUDA (batched kernels, grouped convolutions) they are
  not bitwise: the pack-vs-trial tolerances are the contract there (loss_d and Ω at the last
  stats step within 1e-3 relative, FID within 2 %; not run on a GPU yet). On glibc a CPU pack
  keeps freed heap memory for reuse (``_tune_malloc``: its P-times-larger temporaries otherwise
  come back from the kernel as fresh pages, ~4 of a ring8 P = 16 step's 16 ms).
* **Own hyper-parameters.** Losses are grouped by (loss, α) and computed with the members' own
  ``DomainScaledLoss`` object (``member_apply``: per member where a batched call would round
  differently); the optimizer (:class:`StackedOptimizer`) is torch's RMSprop / Adam
  update written over stacked tensors with ``torch._foreach_*`` calls, per-member lr / ε / betas
  (ε outside the root, as ``trainables.optim``): bit for bit torch's update of each member.
* **Same records.** At a stats step the pack measures all members at once
  (:meth:`Population.measure`: ``trainables.stats.member_stats`` over the batched D in eval
  mode, the SN layers' SVDs over the stacked weights, one host read for the whole pack; the
  one-config trial's ``measure`` is the same code at P = 1, so the values are its own bit for
  bit on CPU), then each member's ``GANTrial`` completes its record (Ω∪, the regularizer's
  metrics). At evaluation steps the member's slice of the stacked state is copied back into its
  ``GANTrial`` and that trial's own ``evaluate`` / ``final_evaluation`` / ``state_dict`` run:
  every member reports through its own :class:`~trainables.train.Callbacks` exactly what its
  one-config trial would (the pack's step time is divided among the members).
* **Divergence without host syncs.** Non-finite losses set a per-member flag (the step and the
  values) on the device; the host reads it only at stats / evaluation steps (``sync_free``) or
  every step (``eager``). A diverged member is recorded as ``train()`` records it (same step,
  same reason) and masked: members are independent in every batched op, so its NaNs never reach
  the others; it keeps being computed until the pack ends (cheaper than re-stacking).
* **Resume.** The pack state (:meth:`Population.state_dict`) is every member's ``GANTrial`` state
  (each one a valid single-trial state) plus the members' statuses and latest metrics.

Step modes (trial key ``step_mode``, a shape key: equal across a pack; how the step executes,
never what it computes). The step is split in two: the draws (host side: every member's own
generators, the optimizers' step counts) and ``Population._core`` (device side: G and D
forwards, both ``autograd.grad`` calls, SN's in-place power iteration, BatchNorm statistics, the
stacked optimizers' in-place updates, the divergence flags; no host read, no Python value that
changes from step to step: Adam's bias corrections are device tensors written before it).

* ``eager``: ``_core`` run op by op; the divergence flags are read on the host every step, so a
  diverged member stops at its step exactly as ``train()`` stops (its ``step_times`` too).
* ``sync_free``: the same ops, the same records; flags read only at stats / evaluation steps
  (a diverged member's ``step_times`` run on to that step). ``auto`` is this on every device
  until ``trainables.train.resolve_step_mode`` exists, then that function's pick (``sync_free``
  where the pack cannot run the pick).
* ``compiled``: ``_core`` under ``torch.compile(fullgraph=True)`` with dynamo's
  ``trace_autograd_ops`` on (off by default in torch 2.14; with it ``torch.autograd.grad`` is
  traced into the graph instead of breaking it), so the whole D+G+optimizer step is ONE graph
  (the in-place updates of parameters, optimizer states and SN/BN buffers are functionalized and
  written back). Traced with ``aot_eager`` it is the eager step bit for bit (tested); inductor
  fuses kernels and rounds differently, so a compiled pack matches the eager pack within the
  pack-vs-trial tolerances, not bit for bit: loss_d at every stats step and loss_d and Ω at the
  last one within 1e-3 relative, FID within 2 %, over 40 steps (tested; measured ≤ 4e-4). In
  between, extremes of f can differ by a few % (RMSprop's first step turns the rounding of a
  near-zero gradient into a ±10·lr step). The first step pays the compilation (inductor's
  on-disk cache makes a later process cheaper). Measured on this 2-core CPU (ring8, P = 16,
  1,000 iterations, 1 thread, bench/population.py --pack-only): compiling took 39 s cold and
  ~6 s from the cache, the steps after it ~8-10 s against 11-12 s for the whole eager pack, so
  compiled is faster per step (~1.3×) but slower for a 1,000-iteration trial (48.8 s cold,
  13-15 s warm); ``auto`` does not pick it on CPU. Refused for ``gp``: its penalty is a double
  backward (``autograd.grad(create_graph=True)``), which AOTAutograd does not support ("torch.
  compile with aot_autograd does not currently support double backward"; pytorch/pytorch#91469,
  #183603).
* ``cuda_graph`` (CUDA only: refused with ``device: cpu``; a pack whose ``device: auto`` /
  ``cuda`` finds no GPU warns and runs ``sync_free``, as the one-config trial): ``_core``
  captured once with ``torch.cuda.graphs`` and replayed (:class:`_GraphedStep`). Static input
  tensors for the real batches, z and the GP weights are filled before each replay from each
  member's own generators (outside the graph: the draws stay identical); parameters and states
  are updated in place at fixed addresses. The first three iterations run eagerly on a side
  stream (the warm-up capture asks for; they are real steps), the fourth is captured, then
  replayed. Its kernels are the eager ones. The host logic around the graph (warm-up, static
  inputs filled before every replay, Adam's bias corrections as device tensors, the device
  step counter and flags) is tested on CPU against the eager pack with stand-ins for the CUDA
  API (bit-identical); the capture itself has not run on a GPU yet (written from torch's
  capture rules: no host sync, no per-step CPU values, allocations from the graph's pool).
  The gp pack's weights are static inputs too, but ``validate_trial`` refuses cuda_graph with
  gp (the one-config trial draws them inside its step), so a study never sends one.

An explicit mode the pack cannot run is refused at construction with one ``ValueError`` naming
the mode, the reason and the modes that do run (:func:`step_mode_refusal`).

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
import warnings
from typing import Any, Callable, Sequence

import torch

from trainables.batched_net import (BatchedNet, member_apply, member_mean,
                                   register_member_fn)
from trainables.batched_optim import StackedOptimizer, _per_member
from trainables.evaluation import final_evaluation, initial_scale
from trainables.packing import (MEMBER_KEYS, POPULATION_REGULARIZERS, pack_configs,
                                pack_signature, unsupported_reason)
from trainables.stats import member_stats, spectral_norms
from trainables.step_modes import (  # noqa: F401 - STEP_MODES re-exported
    CAPTURED_MODES, STEP_MODES, capture_refusal, cuda_graph_device_problem,
)
from trainables.toys import toy_draw, toy_modes
from trainables.train import Callbacks, GANTrial, TrialResult, resolve_device, resolve_step_mode

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


# -------------------------------------------------------------------------------------- step modes

#: torch.compile backend of the ``compiled`` step ("aot_eager" traces the same graph and runs it
#: with eager kernels: bit-identical to the eager step, what a test uses to check the trace).
COMPILE_BACKEND = "inductor"


def step_mode_refusal(mode: str, regularizer: str, device: torch.device) -> str | None:
    """Why a pack of ``regularizer`` on ``device`` cannot run ``mode`` (None when it can): the
    packed rows of :data:`trainables.step_modes.CAPTURE`, and ``cuda_graph`` needs CUDA."""
    if mode == "cuda_graph" and device.type != "cuda":
        return cuda_graph_device_problem(device.type, "this pack")
    return capture_refusal(mode, regularizer, packed=True)


def resolve_pack_step_mode(cfg: dict[str, Any], device: torch.device) -> str:
    """The pack's step mode from its (shared) ``step_mode`` key. An explicit mode the pack
    cannot run is refused (``ValueError`` with :func:`step_mode_refusal`'s reason); ``auto`` is
    what ``trainables.train.resolve_step_mode`` picks for the device, or ``sync_free`` when the
    pack cannot run that pick."""
    mode = cfg.get("step_mode", "auto")
    if mode != "auto":
        if mode == "cuda_graph" and device.type != "cuda" and cfg.get("device") != "cpu":
            # device auto / cuda that turned out to have no GPU: the pack still runs (as
            # resolve_device and the one-config trial do)
            warnings.warn(f"population: step_mode 'cuda_graph' needs CUDA and this pack runs on "
                          f"{device.type}: running it sync_free", RuntimeWarning, stacklevel=2)
            return "sync_free"
        why = step_mode_refusal(mode, cfg["regularizer"], device)
        if why:
            raise ValueError(f"population: {why}")
        return mode
    mode = resolve_step_mode(cfg, device)
    if step_mode_refusal(mode, cfg["regularizer"], device):
        return "sync_free"
    return mode


class _GraphedStep:
    """The pack's ``_core`` captured as one CUDA graph (``torch.cuda.graphs``).

    Static inputs: the real batches, z and (gp) interpolation weights of one iteration, filled
    before each replay by ``Population._draw`` from every member's own generators (outside the
    graph, so the draws are the eager ones); Adam's bias corrections are device tensors written
    by ``StackedOptimizer.prepare``. Parameters, optimizer states, SN u/v, BN statistics, the
    step counter and the divergence flags are updated in place by the graph (fixed addresses).
    The first ``WARMUP`` iterations run ``_core`` eagerly on a side stream (real training steps,
    as the capture rules ask), the next one is captured and then replayed, and every later one
    is a replay; the returned tensors are the graph's outputs (valid until the next step)."""

    WARMUP = 3

    def __init__(self, pop: "Population"):
        self.pop = pop
        self.graph: torch.cuda.CUDAGraph | None = None
        self.done = 0
        self.real, self.z, self.u = pop._inputs()  # static: filled before every replay
        self.out: dict[str, torch.Tensor] | None = None

    def body(self) -> None:
        """What the graph holds: one ``_core`` on the static inputs (outputs kept in ``out``)."""
        self.out = self.pop._core(self.real, self.z, self.u)

    def step(self) -> dict[str, torch.Tensor]:
        pop = self.pop
        pop._draw(self.real, self.z, self.u)
        if self.graph is not None:
            self.graph.replay()
            return self.out
        side = torch.cuda.Stream(device=pop.device)
        side.wait_stream(torch.cuda.current_stream(pop.device))
        if self.done < self.WARMUP:
            with torch.cuda.stream(side):
                self.body()
            torch.cuda.current_stream(pop.device).wait_stream(side)
            self.done += 1
            return self.out
        torch.cuda.synchronize(pop.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=side):
            self.body()
        self.graph.replay()  # capture records without running: this iteration runs now
        return self.out


# -------------------------------------------------------------------------------------- population


_MALLOC_TUNED = False


def _tune_malloc() -> None:
    """Keep freed heap memory for reuse (glibc only; once per process): mmap threshold 32 MiB,
    trim threshold 512 MiB. A pack's tensors are P times a trial's: (P, 128, 128) float32 is
    1 MiB, above glibc's initial 128 KiB mmap threshold, and with its default trimming every
    such temporary comes back as fresh pages from the kernel: on this 2-core box an elementwise
    op on one took ~300 µs instead of ~22 µs, ~4 ms of a ring8 P = 16 step (16 → 12 ms). A
    trial's own tensors (64 KiB) stay under the threshold. Allocation only: no value changes."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _member_rng(seed: int, device: torch.device, state: torch.Tensor | None = None,
                cuda_state: torch.Tensor | None = None, step: int = 0) -> torch.Generator:
    """What torch's global RNG of ``device`` would be in the member's own trial. A member
    resumed on CUDA from a state without one (a CPU pack's) is re-seeded from (seed, step), as
    ``GANTrial.load_state_dict`` re-seeds a one-config trial's CUDA RNG."""
    if device.type == "cpu":
        g = torch.Generator()
        g.set_state(state if state is not None else torch.get_rng_state())
        return g
    g = torch.Generator(device=device).manual_seed(seed)
    if cuda_state is not None:
        g.set_state(cuda_state)
    elif state is not None:
        from trainables.streams import DEVICE_GLOBAL, reseed_value

        g.manual_seed(reseed_value(seed, DEVICE_GLOBAL, step))
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
        if self.device.type == "cpu":
            _tune_malloc()
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
                                             st.get("member_cuda_rng"), int(st["step"])))
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
        self.step_mode = resolve_pack_step_mode(cfg0, self.device)
        capturable = self.step_mode in CAPTURED_MODES
        self.opt_d = StackedOptimizer(cfg0["optimizer"], list(self.D.params.values()), self.cfgs,
                                      "lr_d", self.device, capturable=capturable,
                                      updates_per_step=self.n_dis)
        self.opt_g = StackedOptimizer(cfg0["optimizer"], list(self.G.params.values()), self.cfgs,
                                      "lr_g", self.device, capturable=capturable)
        for i, m in enumerate(self.members):
            self.opt_d.load_member(i, m.opt_d, list(m.D.parameters()))
            self.opt_g.load_member(i, m.opt_g, list(m.G.parameters()))
        # losses grouped by (name, α): each group computed by its members' own loss object
        groups: dict[tuple[str, float], list[int]] = {}
        for i, c in enumerate(self.cfgs):
            groups.setdefault((c["loss"], float(c["alpha"])), []).append(i)
        self.loss_groups = []  # (registered name, member indices as a tensor and a list)
        for (name, alpha), idx in groups.items():
            loss, key = self.members[idx[0]].loss, f"{name}:{alpha!r}"
            for term in ("d_real", "d_fake", "g"):
                register_member_fn(f"{key}:{term}", getattr(loss, term))
            self.loss_groups.append((key, torch.tensor(idx, device=self.device), idx))
        self._inv = torch.empty(self.P, dtype=torch.long, device=self.device)
        self._inv[torch.cat([g[1] for g in self.loss_groups])] = torch.arange(
            self.P, device=self.device)
        if self.regularizer == "gp":
            rp = [m.regularizer.params for m in self.members]
            self.gp_lambda = _per_member([r.gp_lambda for r in rp], self.device)
            self.k_gp = [float(r.k_gp) for r in rp]
            self.gp_one_sided = rp[0].gp_mode == "one-sided"
            zero = [k == 0 for k in self.k_gp]
            self._gp_zero = (torch.tensor(zero, device=self.device)[:, None] if any(zero)
                             else None)
            self._gp_k = (_per_member(self.k_gp, self.device) if not all(zero) else None)
            if isinstance(self._gp_k, torch.Tensor):
                self._gp_k = self._gp_k[:, None]
        # the draws' shapes (toys: data_lib.sample_toy's modes and std)
        self.z_dim = cfg0["z_dim"]
        self.sample_shape = tuple(m0.sample_shape)
        if self.toy:
            self.modes = toy_modes(cfg0["dataset"])
            self.toy_draw = toy_draw(cfg0["dataset"])
        # device-side divergence flags: step of the first non-finite loss (-1: none) and values
        self.div_step = torch.full((self.P,), -1, dtype=torch.long, device=self.device)
        self.div_vals = torch.zeros(self.P, 3, device=self.device)
        self._step_t = torch.tensor(self.step, dtype=torch.long, device=self.device)
        if self.step_mode == "compiled":
            self._compiled = torch.compile(self._core, backend=COMPILE_BACKEND, fullgraph=True,
                                           dynamic=False)
        elif self.step_mode == "cuda_graph":
            self._graph = _GraphedStep(self)

    # -- draws ----------------------------------------------------------------------------------
    def _inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Empty (real, z, u) for one iteration on the device (u None without gp)."""
        n, P, B = self.n_dis, self.P, self.batch
        real = torch.empty((n, P, B) + self.sample_shape, device=self.device)
        z = torch.empty((n, P, B, self.z_dim), device=self.device)
        u = (torch.empty((n, P, B) + (1,) * len(self.sample_shape), device=self.device)
             if self.regularizer == "gp" else None)
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
                    torch.randint(self.modes.shape[0], (B,), generator=m.data_gen, out=which[j, i])
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

    def _gp(self, real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor):
        """Eq. 18 per member: λ·mean((‖∇f(x̂)‖ − k_GP)²) (one-sided: relu; k_GP = 0: the
        squared norm itself, as ``GradientPenalty.penalty_at``), x̂ = u·real + (1 − u)·fake."""
        x_hat = (u * real.detach() + (1 - u) * fake.detach()).requires_grad_(True)
        f = self.D(x_hat)
        (grad,) = torch.autograd.grad(f.sum(), x_hat, create_graph=True)
        flat = grad.float().flatten(2)
        parts, norms = [], []
        if self._gp_zero is not None:  # k_GP = 0 members: per-sample squared norm
            sq = flat.pow(2).sum(dim=2)
            parts.append(sq)
            norms.append(sq.detach().sqrt())
        if self._gp_k is not None:  # the others: (‖∇f‖ − k)², one-sided (‖∇f‖ − k)₊²
            n = torch.linalg.vector_norm(flat, dim=2)
            dev = n - self._gp_k
            if self.gp_one_sided:
                dev = torch.relu(dev)
            parts.append(dev * dev)
            norms.append(n.detach())
        if len(parts) == 1:
            per_t, norms_t = parts[0], norms[0]
        else:  # row i from the member's own formula
            per_t = torch.where(self._gp_zero, parts[0], parts[1])
            norms_t = torch.where(self._gp_zero, norms[0], norms[1])
        self._gp_stash = (norms_t.mean(dim=1), norms_t.max(dim=1).values)
        return self.gp_lambda * per_t.mean(dim=1)

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
            if self.regularizer == "gp":
                penalty = self._gp(real, fake, us[j])
                total = loss_d + penalty
            else:
                penalty = torch.zeros_like(loss_d)
                total = loss_d
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
                "f_fake": f_fake.detach(), "f_gen": f_gen.detach(), "loss_d": loss_d.detach(),
                "loss_g": loss_g.detach(), "penalty": penalty.detach()}

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

    def measure(self, out: dict[str, Any], live: Sequence[int]) -> list[dict[str, float]]:
        """The stats records of members ``live`` at this step: what each one's
        ``GANTrial.measure`` records, measured for the whole pack at once
        (``trainables.stats.member_stats`` over the batched D in eval mode, the SN layers'
        SVDs over the stacked weights) and read in one device sync; Ω∪ and the regularizer's
        metrics then completed by each member's own trial."""
        extra: dict[str, torch.Tensor] = {}
        if self.regularizer == "sn":
            extra["sn_sigma"] = self._sn_sigmas(live)
        elif self.regularizer == "gp" and hasattr(self, "_gp_stash"):
            extra["gp_grad_norm_mean"], extra["gp_grad_norm_max"] = self._gp_stash
        values = member_stats(lambda x: self.D(x, training=False, detach=True), out["real"],
                              out["fake"], out["f_real"], out["f_fake"], out["f_gen"],
                              out["penalty"], [m.loss for m in self.members], extra=extra)
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
    from trainables.devices import apply_precision  # as train(): one precision per pack

    apply_precision(configs[0].get("precision", "fp32"), pop.device)
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
        if stats or evaluate or pop.step_mode == "eager":  # eager: a host read every step
            for i, (s, reason) in pop.divergences().items():
                if runs[i].result is None:
                    diverged(i, s, reason)
            live = [i for i in live if runs[i].result is None]
        if stats:
            for i, mt in zip(live, pop.measure(out, live)):
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
