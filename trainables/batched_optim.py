"""torch's RMSprop / Adam update over stacked (P, ...) parameters with per-member
hyper-parameters (``trainables.population``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch


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
