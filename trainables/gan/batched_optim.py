"""torch's RMSprop / Adam update over stacked (P, ...) parameters with per-member
hyper-parameters (``trainables.pack.population``).

The update is torch's single-tensor one (what ``torch.optim`` runs on CPU), member by member and
bit for bit: every parameter of a member sees the same float32 operations in the same order
(tests/trainables/pack/test_population.py checks ``torch.equal`` against ``torch.optim`` over
several steps). It is issued as ``torch._foreach_*`` calls over all stacked parameters (one call per
arithmetic step instead of one per parameter, the sequence of ``torch.optim``'s own foreach
implementation). A hyper-parameter equal for all members is a Python scalar (torch's own
arithmetic); one that differs is a (P,) float32 tensor broadcast over each parameter, folded into
a tensor operand so that the rounding matches the scalar form: ``addcmul_(g·w, g)`` for
``addcmul_(g, g, value=w)``, ``addcdiv_(g·(−lr), d)`` for ``addcdiv_(g, d, value=−lr)``.

``capturable=True`` (the pack's compiled / CUDA-graph steps) keeps everything that changes from
step to step on the device: Adam's step size lr/(1−β₁ᵗ) and √(1−β₂ᵗ) are (P,) tensors written by
:meth:`StackedOptimizer.prepare` *before* the captured step (computed on the host in double, as
torch computes them, then rounded to float32 as torch's scalar arithmetic rounds them), so a
captured update never bakes a step count in.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from trainables import names
from trainables.params import optimizer_defaults


def per_member(values: Sequence[float], device: torch.device):
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
    (ε outside the square root, see ``trainables.gan.optim``); see the module docstring."""

    def __init__(self, name: str, params: Sequence[torch.Tensor], cfgs: Sequence[dict[str, Any]],
                 lr_key: str, device: torch.device, *, capturable: bool = False,
                 updates_per_step: int = 1):
        self.name = name
        self.params = list(params)
        self.device = device
        self.capturable = capturable
        self.updates_per_step = updates_per_step
        self.P = len(cfgs)
        self.lr_values = [float(c[lr_key]) for c in cfgs]
        self.lr = per_member(self.lr_values, device)
        self.eps = per_member([c[names.EPS] for c in cfgs], device)
        self._eps_b = self._lists(self.eps)
        keys = [{**optimizer_defaults(name), **c} for c in cfgs]  # the declared defaults filled
        if name == "rmsprop":
            rho = [float(c[names.RMSPROP_DECAY]) for c in keys]
            self.rho = per_member(rho, device)
            self._rho_b = self._lists(self.rho)
            self._w_b = self._lists(per_member([1 - r for r in rho], device))
            self._neg_lr_b = self._lists(per_member([-lr for lr in self.lr_values], device))
            self.state = [{"square_avg": torch.zeros_like(p)} for p in self.params]
        elif name == "adam":
            self.betas = ([float(c[names.BETA1]) for c in keys],
                          [float(c[names.BETA2]) for c in keys])
            b1s, b2s = self.betas
            self._w1_b = self._lists(per_member([1 - b for b in b1s], device))
            self._b2_b = self._lists(per_member(b2s, device))
            self._w2_b = self._lists(per_member([1 - b for b in b2s], device))
            self.state = [{"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                          for p in self.params]
            if capturable:  # row j: the iteration's j-th update; written by prepare()
                f32 = dict(dtype=torch.float32, device=device)
                self._neg_ss = torch.zeros(updates_per_step, self.P, **f32)
                self._bc2 = torch.ones(updates_per_step, self.P, **f32)
                self._neg_ss_b = [[_bcast(r, p) for p in self.params] for r in self._neg_ss]
                self._bc2_b = [[_bcast(r, p) for p in self.params] for r in self._bc2]
        else:
            raise ValueError(f"population: unknown optimizer {name!r}")
        self.steps = [0] * self.P  # per member (identical for all live members)

    def _lists(self, v):
        """A scalar, or one broadcast view of the (P,) tensor per parameter."""
        if isinstance(v, torch.Tensor):
            return [_bcast(v, p) for p in self.params]
        return v

    # -- the update -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Host side of one iteration's ``updates_per_step`` updates, before a capturable
        (compiled / graphed) iteration: counts them and writes a capturable Adam's bias
        corrections for each into row j of the device tensors that :meth:`update` ``(grads, j)``
        reads."""
        if not self.capturable:
            raise RuntimeError("StackedOptimizer.prepare: not capturable (use step)")
        rows = []
        for _ in range(self.updates_per_step):
            self.steps = [s + 1 for s in self.steps]
            if self.name == "adam":
                ss, bc2 = self._bias_corrections()
                rows.append(([-s for s in ss], bc2))
        if rows:
            vals = torch.tensor(rows, dtype=torch.float32)  # (K, 2, P)
            self._neg_ss.copy_(vals[:, 0], non_blocking=True)
            self._bc2.copy_(vals[:, 1], non_blocking=True)

    def _bias_corrections(self) -> tuple[list[float], list[float]]:
        """Per member: torch's step_size = lr / (1 − β₁ᵗ) and √(1 − β₂ᵗ), in double."""
        b1s, b2s = self.betas
        ss = [lr / (1 - b1 ** s) for lr, b1, s in zip(self.lr_values, b1s, self.steps)]
        bc2 = [(1 - b2 ** s) ** 0.5 for b2, s in zip(b2s, self.steps)]
        return ss, bc2

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        """One eager update: count it, then update with this step's hyper-parameters."""
        if self.capturable:
            raise RuntimeError("StackedOptimizer.step: capturable (use prepare + update)")
        self.steps = [s + 1 for s in self.steps]
        self.update(grads)

    @torch.no_grad()
    def update(self, grads: Sequence[torch.Tensor], j: int = 0) -> None:
        """The device side of an update (no host read); capturable: the iteration's j-th
        update, with the bias corrections :meth:`prepare` wrote."""
        grads = list(grads)
        if self.name == "rmsprop":
            self._rmsprop(grads)
        else:
            self._adam(grads, j)

    def _rmsprop(self, grads: list[torch.Tensor]) -> None:
        sqs = [st["square_avg"] for st in self.state]
        # square_avg.mul_(ρ).addcmul_(g, g, value=1 − ρ)
        torch._foreach_mul_(sqs, self._rho_b)
        _add_weighted_squares(sqs, grads, self._w_b)
        avg = torch._foreach_sqrt(sqs)
        torch._foreach_add_(avg, self._eps_b)
        # param.addcdiv_(g, avg, value=−lr)
        if isinstance(self._neg_lr_b, float):
            torch._foreach_addcdiv_(self.params, grads, avg, value=self._neg_lr_b)
        else:
            torch._foreach_addcdiv_(self.params, torch._foreach_mul(grads, self._neg_lr_b), avg)

    def _adam(self, grads: list[torch.Tensor], j: int) -> None:
        ms = [st["exp_avg"] for st in self.state]
        vs = [st["exp_avg_sq"] for st in self.state]
        # exp_avg.lerp_(g, 1 − β₁); exp_avg_sq.mul_(β₂).addcmul_(g, g, value=1 − β₂)
        torch._foreach_lerp_(ms, grads, self._w1_b)
        torch._foreach_mul_(vs, self._b2_b)
        _add_weighted_squares(vs, grads, self._w2_b)
        # denom = (exp_avg_sq.sqrt() / √(1 − β₂ᵗ)).add_(ε); param.addcdiv_(m, denom, value=−ss)
        denom = torch._foreach_sqrt(vs)
        if self.capturable:
            torch._foreach_div_(denom, self._bc2_b[j])
            torch._foreach_add_(denom, self._eps_b)
            torch._foreach_addcdiv_(self.params, torch._foreach_mul(ms, self._neg_ss_b[j]), denom)
            return
        ss, bc2 = self._bias_corrections()
        if len(set(ss)) == 1 and len(set(bc2)) == 1:
            torch._foreach_div_(denom, bc2[0])
            torch._foreach_add_(denom, self._eps_b)
            torch._foreach_addcdiv_(self.params, ms, denom, value=-ss[0])
            return
        f32 = dict(dtype=torch.float32, device=self.device)
        bc2_t = torch.tensor(bc2, **f32)
        neg_ss = torch.tensor([-s for s in ss], **f32)
        torch._foreach_div_(denom, [_bcast(bc2_t, p) for p in self.params])
        torch._foreach_add_(denom, self._eps_b)
        torch._foreach_addcdiv_(self.params,
                                torch._foreach_mul(ms, [_bcast(neg_ss, p) for p in self.params]),
                                denom)

    # -- members ---------------------------------------------------------------------------------
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


def _add_weighted_squares(acc: list[torch.Tensor], grads: list[torch.Tensor],
                          w: float | list[torch.Tensor]) -> None:
    """``acc += w·g²`` for every tensor (RMSprop's and Adam's second moment): ``w`` one float
    shared by every member, or per-member weights broadcast over each tensor."""
    if isinstance(w, float):
        torch._foreach_addcmul_(acc, grads, grads, value=w)
    else:
        torch._foreach_addcmul_(acc, torch._foreach_mul(grads, w), grads)
