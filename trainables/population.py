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
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainables import data as data_lib
from trainables.evaluation import final_evaluation, initial_scale
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

#: Regularizers a population trial can batch; the others run one config per trial.
POPULATION_REGULARIZERS: tuple[str, ...] = ("none", "sn", "gp")

#: Trial keys in which members of one pack may differ (everything else is a shape key, equal).
MEMBER_KEYS: frozenset[str] = frozenset({
    "loss", "alpha", "k_sn", "k_gp", "gp_lambda", "eps", "lr_d", "lr_g", "beta1", "beta2",
    "rmsprop_decay", "seed",
})


def unsupported_reason(cfg: dict[str, Any]) -> str | None:
    """Why ``cfg`` cannot be a pack member (None when it can)."""
    if cfg.get("regularizer") not in POPULATION_REGULARIZERS:
        return (f"regularizer {cfg.get('regularizer')!r} runs one config per trial (population "
                f"supports {', '.join(POPULATION_REGULARIZERS)})")
    return None


def pack_signature(cfg: dict[str, Any]) -> tuple:
    """The shape keys of a config: configs with equal signatures can share a pack."""
    return tuple(sorted((k, repr(v)) for k, v in cfg.items() if k not in MEMBER_KEYS))


def pack_configs(configs: Sequence[dict[str, Any]], population: int) -> list[list[int]]:
    """Indices of ``configs`` grouped into packs of at most ``population`` members sharing shape
    keys, in first-appearance order; unsupported configs (``unsupported_reason``) get a pack of
    their own. Groups of n > P members are split into ceil(n/P) packs of near-equal size."""
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    groups: dict[tuple, list[int]] = {}
    order: list[tuple] = []
    for i, cfg in enumerate(configs):
        key = ("__solo__", i) if unsupported_reason(cfg) or population == 1 else pack_signature(cfg)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(i)
    packs: list[list[int]] = []
    for key in order:
        idx = groups[key]
        n_packs = math.ceil(len(idx) / population)
        size = math.ceil(len(idx) / n_packs)
        packs.extend(idx[j:j + size] for j in range(0, len(idx), size))
    return packs


# ------------------------------------------------------------------------------------ batched nets

_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU,
           nn.LeakyReLU, nn.Tanh)


class BatchedNet:
    """P copies of one ``Generator`` / ``Discriminator`` (``.net`` a Sequential of
    :data:`_LAYERS`, optionally SN-parametrized) as stacked tensors keyed by state-dict names.

    ``params``: name → leaf tensor (P, …) with ``requires_grad``; ``buffers``: SN u/v, BN running
    statistics (P, …). Inputs and outputs are member-major: (P, B, …)."""

    def __init__(self, members: Sequence[nn.Module], device: torch.device, image: bool):
        self.P = len(members)
        self.image = image
        self.device = device
        m0 = members[0]
        self.out_shape = getattr(m0, "out_shape", None)
        self.z_dim = getattr(m0, "z_dim", None)
        self.is_d = self.z_dim is None
        states = [m.state_dict() for m in members]
        pnames = [n for n, _ in m0.named_parameters()]
        self.params = {n: torch.stack([s[n] for s in states]).to(device).requires_grad_(True)
                       for n in pnames}
        self.buffers = {n: torch.stack([s[n] for s in states]).to(device)
                        for n in states[0] if n not in self.params}
        self.layers: list[tuple[str, str, dict[str, Any]]] = []
        for i, mod in enumerate(m0.net):
            if not isinstance(mod, _LAYERS):
                raise TypeError(f"population: unsupported layer {type(mod).__name__}")
            pre = f"net.{i}."
            info: dict[str, Any] = {}
            if isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                from torch.nn.utils import parametrize

                if parametrize.is_parametrized(mod, "weight"):
                    plist = mod.parametrizations.weight
                    info["sn"] = True
                    info["w"] = pre + "parametrizations.weight.original"
                    info["u"] = pre + "parametrizations.weight.0._u"
                    info["v"] = pre + "parametrizations.weight.0._v"
                    info["sn_eps"] = plist[0].eps
                    ks = [float(m.net[i].parametrizations.weight[1].k) for m in members]
                    info["k"] = ks[0] if len(set(ks)) == 1 else torch.tensor(
                        ks, device=device, dtype=torch.float32)
                else:
                    info["w"] = pre + "weight"
                info["b"] = pre + "bias" if (pre + "bias") in self.params else None
                if isinstance(mod, nn.Linear):
                    self.layers.append(("linear", pre, info))
                else:
                    info.update(stride=mod.stride, padding=mod.padding)
                    self.layers.append(("conv" if isinstance(mod, nn.Conv2d) else "deconv",
                                        pre, info))
            elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                info.update(eps=mod.eps, momentum=mod.momentum)
                self.layers.append(("bn", pre, info))
            elif isinstance(mod, nn.ReLU):
                self.layers.append(("relu", pre, info))
            elif isinstance(mod, nn.LeakyReLU):
                self.layers.append(("lrelu", pre, {"slope": mod.negative_slope}))
            else:
                self.layers.append(("tanh", pre, info))

    # -- parameters ---------------------------------------------------------------------------
    def weight(self, info: dict[str, Any], training: bool, detach: bool) -> torch.Tensor:
        """The weight the layer's forward uses: W, or SN's k·W/σ(W) after one power iteration in
        train mode (``torch.nn.utils.parametrizations.spectral_norm``, batched over members)."""
        w = self.params[info["w"]]
        if detach:
            w = w.detach()
        if not info.get("sn"):
            return w
        P = self.P
        wm = w.reshape(P, w.shape[1], -1)  # dim 0 of each member's weight (Linear / Conv2d)
        u, v = self.buffers[info["u"]], self.buffers[info["v"]]
        if training:
            with torch.no_grad():
                wd = wm.detach()
                # batched mat-vec as multiply-and-sum (bmm with a vector is ~5x slower on CPU)
                u.copy_(F.normalize((wd * v.unsqueeze(1)).sum(2), dim=1, eps=info["sn_eps"]))
                v.copy_(F.normalize((wd * u.unsqueeze(2)).sum(1), dim=1, eps=info["sn_eps"]))
        uc, vc = u.clone(), v.clone()
        sigma = (uc * (wm * vc.unsqueeze(1)).sum(2)).sum(1)
        wn = w / sigma.reshape((P,) + (1,) * (w.dim() - 1))
        k = info["k"]
        if isinstance(k, torch.Tensor):
            k = k.reshape((P,) + (1,) * (w.dim() - 1))
        return wn * k

    # -- forward --------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, *, training: bool = True, detach: bool = False
                 ) -> torch.Tensor:
        """x: (P, B, …) member-major → (P, B, …) (D: (P, B))."""
        P, B = x.shape[0], x.shape[1]
        p = self.params
        if self.image:
            if x.dim() == 3:  # G input z (P, B, z) → (B, P·z, 1, 1)
                h = x.transpose(0, 1).reshape(B, -1, 1, 1)
            else:  # (P, B, C, H, W) → (B, P·C, H, W)
                h = x.transpose(0, 1).reshape(B, -1, x.shape[-2], x.shape[-1])
        else:
            h = x
        for kind, _pre, info in self.layers:
            if kind == "linear":
                w = self.weight(info, training, detach)
                b = info["b"]
                if b is not None:
                    bb = p[b].detach() if detach else p[b]
                    h = torch.baddbmm(bb.unsqueeze(1), h, w.transpose(1, 2))
                else:
                    h = torch.bmm(h, w.transpose(1, 2))
            elif kind in ("conv", "deconv"):
                w = self.weight(info, training, detach)
                b = info["b"]
                bias = None
                if b is not None:
                    bias = (p[b].detach() if detach else p[b]).reshape(-1)
                wf = w.reshape((-1,) + tuple(w.shape[2:]))
                if kind == "conv":
                    h = F.conv2d(h, wf, bias, info["stride"], info["padding"], groups=P)
                else:
                    h = F.conv_transpose2d(h, wf, bias, info["stride"], info["padding"],
                                           groups=P)
            elif kind == "bn":
                pre = _pre
                wt, bs = p[pre + "weight"], p[pre + "bias"]
                if detach:
                    wt, bs = wt.detach(), bs.detach()
                rm, rv = self.buffers[pre + "running_mean"], self.buffers[pre + "running_var"]
                if h.dim() == 3:  # mlp (P, B, C) → (B, P·C)
                    hh = h.transpose(0, 1).reshape(B, -1)
                    hh = F.batch_norm(hh, rm.view(-1), rv.view(-1), wt.reshape(-1),
                                      bs.reshape(-1), training, info["momentum"], info["eps"])
                    h = hh.reshape(B, P, -1).transpose(0, 1)
                else:
                    h = F.batch_norm(h, rm.view(-1), rv.view(-1), wt.reshape(-1), bs.reshape(-1),
                                     training, info["momentum"], info["eps"])
                if training:
                    nbt = self.buffers.get(pre + "num_batches_tracked")
                    if nbt is not None:
                        nbt.add_(1)
            elif kind == "relu":
                h = F.relu(h)
            elif kind == "lrelu":
                h = F.leaky_relu(h, info["slope"])
            else:
                h = torch.tanh(h)
        if self.is_d:  # (B, P, 1, 1) or (P, B, 1) → (P, B)
            return h.reshape(B, P).transpose(0, 1) if self.image else h.reshape(P, B)
        if self.image:  # (B, P·c, H, W) → (P, B, c, H, W)
            return h.reshape((B, P, -1) + tuple(h.shape[2:])).transpose(0, 1)
        return h

    # -- members ----------------------------------------------------------------------------------
    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        out = {n: t[i].detach() for n, t in self.params.items()}
        out.update({n: t[i] for n, t in self.buffers.items()})
        return out


# -------------------------------------------------------------------------------------- optimizer


def _per_member(values: Sequence[float], device: torch.device):
    """A Python scalar when all members agree (torch's own arithmetic), else a (P,) float32."""
    vals = [float(v) for v in values]
    if len(set(vals)) == 1:
        return vals[0]
    return torch.tensor(vals, dtype=torch.float32, device=device)


def _bcast(v, like: torch.Tensor):
    if isinstance(v, torch.Tensor):
        return v.reshape((-1,) + (1,) * (like.dim() - 1))
    return v


class StackedOptimizer:
    """torch's RMSprop (no momentum, not centred) or Adam over stacked (P, …) parameters with
    per-member lr, ε, ρ / betas: the single-tensor update of ``torch.optim`` member by member
    (ε outside the square root, see ``trainables.optim``)."""

    def __init__(self, name: str, params: Sequence[torch.Tensor], cfgs: Sequence[dict[str, Any]],
                 lr_key: str, device: torch.device):
        self.name = name
        self.params = list(params)
        self.lr = _per_member([c[lr_key] for c in cfgs], device)
        self.eps = _per_member([c["eps"] for c in cfgs], device)
        if name == "rmsprop":
            self.rho = _per_member([c.get("rmsprop_decay", 0.99) for c in cfgs], device)
            self.state = [{"square_avg": torch.zeros_like(p)} for p in self.params]
        elif name == "adam":
            self.betas = ([float(c.get("beta1", 0.5)) for c in cfgs],
                          [float(c.get("beta2", 0.999)) for c in cfgs])
            self.state = [{"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                          for p in self.params]
        else:
            raise ValueError(f"population: unknown optimizer {name!r}")
        self.steps = [0] * len(cfgs)  # per member (identical for all live members)
        self.device = device

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        self.steps = [s + 1 for s in self.steps]
        if self.name == "rmsprop":
            for p, g, st in zip(self.params, grads, self.state):
                sq = st["square_avg"]
                rho = _bcast(self.rho, p)
                if isinstance(rho, float):
                    sq.mul_(rho).addcmul_(g, g, value=1 - rho)
                else:
                    sq.mul_(rho).add_((1 - rho) * (g * g))
                avg = sq.sqrt().add_(_bcast(self.eps, p))
                lr = _bcast(self.lr, p)
                if isinstance(lr, float):
                    p.addcdiv_(g, avg, value=-lr)
                else:
                    p.sub_(lr * (g / avg))
            return
        b1s, b2s = self.betas
        uniform = (len(set(b1s)) == 1 and len(set(b2s)) == 1 and len(set(self.steps)) == 1
                   and isinstance(self.lr, float))
        if uniform:  # torch's own scalar arithmetic
            b1, b2, step = b1s[0], b2s[0], self.steps[0]
            step_size, bc2s = self.lr / (1 - b1 ** step), (1 - b2 ** step) ** 0.5
            for p, g, st in zip(self.params, grads, self.state):
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / bc2s).add_(_bcast(self.eps, p))
                p.addcdiv_(m, denom, value=-step_size)
            return
        lrs = self.lr.tolist() if isinstance(self.lr, torch.Tensor) else [self.lr] * len(b1s)
        f32 = dict(dtype=torch.float32, device=self.device)
        w1 = torch.tensor([1 - b for b in b1s], **f32)
        b2t = torch.tensor(b2s, **f32)
        ss = torch.tensor([lr / (1 - b1 ** s) for lr, b1, s in zip(lrs, b1s, self.steps)], **f32)
        bc2 = torch.tensor([(1 - b2 ** s) ** 0.5 for b2, s in zip(b2s, self.steps)], **f32)
        for p, g, st in zip(self.params, grads, self.state):
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m.lerp_(g, _bcast(w1, p))
            bv = _bcast(b2t, p)
            v.mul_(bv).add_((1 - bv) * (g * g))
            denom = (v.sqrt() / _bcast(bc2, p)).add_(_bcast(self.eps, p))
            p.sub_(_bcast(ss, p) * (m / denom))

    def member_state(self, i: int, member_params: Sequence[torch.nn.Parameter]) -> dict:
        """Member i's state in torch's format for ``member_params`` (same order as stacked)."""
        out = {}
        for j, (st, mp) in enumerate(zip(self.state, member_params)):
            s = {"step": torch.tensor(float(self.steps[i]))}
            s.update({k: v[i].detach().clone() for k, v in st.items()})
            out[mp] = s
        return out

    def load_member(self, i: int, opt: torch.optim.Optimizer,
                    member_params: Sequence[torch.nn.Parameter]) -> None:
        """Copy member i's torch optimizer state (a resumed trial) into the stack."""
        for st, mp in zip(self.state, member_params):
            s = opt.state.get(mp)
            if not s:
                continue
            self.steps[i] = int(float(s["step"]))
            with torch.no_grad():
                for k, v in st.items():
                    v[i].copy_(s[k].to(v.device))


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
