"""Domain statistics of the loss function: Ω, Ψ, input-gradient norms, Theorem 1's bound.

Lipschitz paper, Sec. 4: with D(x) = L(f(x)), the loss only ever sees f's outputs Ω (its domain) and
backpropagates the gradient values Ψ = ∇L(Ω). We record, per measured batch:

* ``omega_{real,fake}_{min,max}`` — the outputs f(x) on the real and the generated batch (raw f,
  i.e. the domain of L_α in Eq. 11; α is inside the loss).
* ``psi_min``/``psi_max`` — Eq. 9: ∂L_α/∂ω at the two ends of Ω = [min, max] over real ∪ fake, on the
  loss term the paper uses for Fig. 1b (``loss.psi_term``). Eq. 9 assumes ∇L is monotone (convex L);
  for the non-convex ones (cos) we take min/max of the two end values — for convex losses this is
  exactly Eq. 9.
* ``psi_attained_{min,max,mean}`` — the per-sample gradients the discriminator loss actually
  back-propagated this batch: ∂ℓ_r,α/∂f at the real outputs and ∂ℓ_f,α/∂f at the fake outputs.
* ``grad_norm_{real,fake}`` — mean ‖∇ₓf(x)‖ over the batch (the quantity Hypothesis 1 is about).
* ``grad_norm_{real,fake}_{min,q25,median,q75,max}`` — the distribution of ‖∇ₓh(x)‖ over the
  batch (GraN-GAN Fig. 3's boxplots), h = the function the loss sees (f, or g = GraN(f)); the
  quantiles interpolate linearly between order statistics (``torch.quantile``'s default).
* ``fd_lipschitz_<δ>`` — GraN-GAN Sec. 7 / Fig. 4's finite-difference Lipschitz probe
  Δᵢ = |h(xᵢ + δnᵢ) − h(xᵢ)|/δ along the unit input-gradient direction nᵢ = ∇h(xᵢ)/‖∇h(xᵢ)‖, for
  δ ∈ {0.01, 0.1, 1, 10}: the median over real ∪ fake (``_real``/``_fake``: per side, ``_max``: the
  largest). A lower bound on the local Lipschitz constant at scale δ.
* ``loss_d``/``loss_g``/``penalty`` — the losses centred by L(0)/α
  (``DomainScaledLoss.*_centered``).
* ``omega_bound`` — Theorem 1 / Eq. 7: |max Ω − min Ω| ≤ K·√(4·m·n·c) = K·2√(mnc) for inputs in
  [−1, 1]^{m×n×c} (Appendix A uses c = 3: √(12mn)); ``omega_within_bound`` says whether the running
  union Ω∪ fits in it (kept by the trial, ``GANTrial.record_stats``).

**Members.** Everything is computed for P members at once (:func:`member_stats`): inputs carry a
leading member axis, D maps (P, N, …) → (P, N), member i has its own loss; the P × K values come
to the host in ONE device sync. A one-config trial is the case P = 1 (``GANTrial.measure``), a
pack (``trainables.pack.population``) passes its batched D. Each member's numbers are bit for bit those
of the same computation on the member's own tensors: reductions and transcendental functions go
through :func:`trainables.nets.batched_net.member_apply` / ``member_mean`` (the batched op where it
reproduces the per-member op for that shape on this CPU, else a loop); the rest is exactly
rounded elementwise arithmetic and order statistics (min, max, median, sort).

Everything here is computed from detached tensors or with ``torch.autograd.grad`` w.r.t. inputs only:
no parameter ``.grad`` is touched, no RNG is drawn, and D is measured in eval mode (spectral norm
does not advance its power iteration; BatchNorm uses — and does not update — its running
statistics, so with ``d_norm: bn`` the probes describe the eval-mode D, the only one in which a
per-sample input gradient is defined).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from trainables.nets.batched_net import member_apply, member_mean, register_member_fn
from trainables.nets.models import eval_mode
from trainables.names import (
    GRAD_NORM_FAKE, GRAD_NORM_REAL, LOSS_D, LOSS_G, OMEGA_FAKE_MAX, OMEGA_FAKE_MIN, OMEGA_REAL_MAX,
    OMEGA_REAL_MIN, PENALTY, PSI_ATTAINED_MAX, PSI_ATTAINED_MEAN, PSI_ATTAINED_MIN, PSI_MAX,
    PSI_MIN,
)

#: A batched discriminator: (P, N, …) → (P, N), member i's D on row i, in eval mode.
MemberD = Callable[[torch.Tensor], torch.Tensor]
#: Names of one stats part and its (P, K) values.
Part = tuple[Sequence[str], torch.Tensor]

DOMAIN_KEYS = (OMEGA_REAL_MIN, OMEGA_REAL_MAX, OMEGA_FAKE_MIN, OMEGA_FAKE_MAX, PSI_MIN, PSI_MAX,
               PSI_ATTAINED_MIN, PSI_ATTAINED_MAX, PSI_ATTAINED_MEAN)
LOSS_KEYS = (LOSS_D, LOSS_G, PENALTY)
_LOSS_TERMS = ("d_real", "d_fake", "d_real_centered", "d_fake_centered", "g_centered")


def _row_norm(g: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(g, dim=-1)


def _sigma_max(w: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(w, ord=2)


def _per_member(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """fn on each member's row of x, bit for bit as on the member's own tensor (``member_apply``;
    registered at the call: the registry is the batched-ops module's, read at every call)."""
    key = f"stats:{fn.__name__}"
    register_member_fn(key, fn)
    return member_apply(key, x)


def _loss_groups(losses: Sequence) -> list[tuple[str, object, list[int]]]:
    """Members grouped by (loss, α): (key of the registered terms, the loss, member indices)."""
    groups: dict[tuple[str, float], list[int]] = {}
    for i, loss in enumerate(losses):
        groups.setdefault((loss.name, float(loss.alpha)), []).append(i)
    out = []
    for (name, alpha), idx in groups.items():
        key, loss = f"stats:{name}:{alpha!r}", losses[idx[0]]
        for term in _LOSS_TERMS:
            register_member_fn(f"{key}:{term}", getattr(loss, term))
        out.append((key, loss, idx))
    return out


def _by_loss(losses: Sequence, x: torch.Tensor,
             fn: Callable[[str, object, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """fn(key, loss, rows of x) for each (loss, α) group of members, back in member order."""
    groups = _loss_groups(losses)
    if len(groups) == 1:
        return fn(groups[0][0], groups[0][1], x)
    out = None
    for key, loss, idx in groups:
        it = _index(tuple(idx), x.device)
        y = fn(key, loss, x.index_select(0, it))
        if out is None:
            out = y.new_empty((x.shape[0],) + tuple(y.shape[1:]))
        out.index_copy_(0, it, y)
    return out


@functools.lru_cache(maxsize=256)
def _index(idx: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Member indices as a device tensor, made once per (indices, device): a host-to-device
    copy waits for the device, so it is not repeated at every stats step."""
    return torch.tensor(idx, device=device)


def _term_grad(term: str) -> Callable[[str, object, torch.Tensor], torch.Tensor]:
    """Per-sample ∂(loss term)/∂f at the rows of f (the gradient the D loss back-propagates)."""
    def grad(key: str, loss, f: torch.Tensor) -> torch.Tensor:
        t = term if term != "psi" else ("d_real" if loss.psi_term == "real" else "d_fake")
        with torch.enable_grad():
            fi = f.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(member_apply(f"{key}:{t}", fi).sum(), fi)
        return g
    return grad


def _domain_part(f_real: torch.Tensor, f_fake: torch.Tensor, losses: Sequence) -> Part:
    """Ω and Ψ (see the module docstring): (P, 9)."""
    P = f_real.shape[0]
    fr = f_real.detach().float().reshape(P, -1)
    ff = f_fake.detach().float().reshape(P, -1)
    lo = torch.minimum(fr.min(dim=1).values, ff.min(dim=1).values)
    hi = torch.maximum(fr.max(dim=1).values, ff.max(dim=1).values)
    ends = _by_loss(losses, torch.stack([lo, hi], dim=1), _term_grad("psi"))
    attained = torch.cat([_by_loss(losses, fr, _term_grad("d_real")),
                          _by_loss(losses, ff, _term_grad("d_fake"))], dim=1)
    vals = torch.stack([fr.min(dim=1).values, fr.max(dim=1).values, ff.min(dim=1).values,
                        ff.max(dim=1).values, ends.min(dim=1).values, ends.max(dim=1).values,
                        attained.min(dim=1).values, attained.max(dim=1).values,
                        member_mean(attained)], dim=1)
    return DOMAIN_KEYS, vals


def _loss_part(f_real: torch.Tensor, f_fake: torch.Tensor, f_gen: torch.Tensor,
               penalty: torch.Tensor, losses: Sequence) -> Part:
    """Centred losses (L(αf) − L(0))/α: loss_d, loss_g, and the penalty: (P, 3)."""
    P = f_real.shape[0]

    def mean_of(term: str) -> Callable[[str, object, torch.Tensor], torch.Tensor]:
        return lambda key, _loss, f: member_mean(member_apply(f"{key}:{term}", f))

    with torch.no_grad():
        fr, ff, fg = (t.detach().reshape(P, -1) for t in (f_real, f_fake, f_gen))
        loss_d = _by_loss(losses, fr, mean_of("d_real_centered")) + _by_loss(
            losses, ff, mean_of("d_fake_centered"))
        loss_g = _by_loss(losses, fg, mean_of("g_centered"))
    vals = torch.stack([loss_d.float(), loss_g.float(),
                        penalty.detach().reshape(P).float()], dim=1)
    return LOSS_KEYS, vals


#: Perturbation sizes of GraN-GAN Fig. 4's finite-difference probe (inputs live in [−1, 1]).
FD_DELTAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
_Q_NAMES = ("min", "q25", "median", "q75", "max")


def fd_key(delta: float) -> str:
    """Metric name of the probe at δ, e.g. ``fd_lipschitz_0.01``, ``fd_lipschitz_10``."""
    return f"fd_lipschitz_{delta:g}"


def probe_keys(deltas: Sequence[float] = FD_DELTAS) -> list[str]:
    """The probe's metric names, in the order of :func:`_probe_part`'s columns."""
    return ([GRAD_NORM_REAL] + [f"{GRAD_NORM_REAL}_{n}" for n in _Q_NAMES]
            + [GRAD_NORM_FAKE] + [f"{GRAD_NORM_FAKE}_{n}" for n in _Q_NAMES]
            + [fd_key(d) for d in deltas] + [fd_key(d) + "_real" for d in deltas]
            + [fd_key(d) + "_fake" for d in deltas] + [fd_key(d) + "_max" for d in deltas])


def _quantiles(x: torch.Tensor) -> torch.Tensor:
    """(P, 5) quantiles :data:`_QUANTILES` of each row of x (P, N): ``torch.quantile``'s linear
    interpolation between order statistics (its ``lerp`` form; a row with a NaN gives NaN),
    written with Python positions so that no device value is read (``torch.quantile`` checks q
    on the host) and with separately rounded products and sums (the same bits at any P)."""
    s = x.sort(dim=1).values
    n = s.shape[1]
    cols = []
    for q in _QUANTILES:
        pos = q * (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        w = pos - lo
        below, above = s[:, lo], s[:, hi]
        if w == 0:
            cols.append(below)
        elif w < 0.5:
            cols.append(below + w * (above - below))
        else:
            cols.append(above - (above - below) * (1 - w))
    out = torch.stack(cols, dim=1)
    return torch.where(s[:, -1:].isnan(), s[:, -1:], out)


def _probe_part(D: MemberD, real: torch.Tensor, fake: torch.Tensor,
                deltas: Sequence[float] = FD_DELTAS) -> Part:
    """Input-gradient norm distribution and the finite-difference probe at real ∪ fake: one
    forward + input-gradient pass, then one gradient-free forward per δ (all members at once)."""
    nr = real.shape[1]
    x = torch.cat([real.detach(), fake.detach()], dim=1)
    P, N = x.shape[0], x.shape[1]
    with torch.enable_grad():
        xi = x.clone().requires_grad_(True)
        h = D(xi).reshape(P, N)
        (grad,) = torch.autograd.grad(h.sum(), xi)
    h = h.detach().float()
    flat = grad.reshape(P, N, -1)
    norms = _per_member(_row_norm, flat)
    direction = (flat / norms.clamp_min(torch.finfo(flat.dtype).tiny)[..., None]).view_as(x)
    with torch.no_grad():
        fd = torch.stack([(D(x + d * direction).reshape(P, N).float() - h).abs() / d
                          for d in deltas], dim=1)  # (P, len(deltas), N)
    nf = norms.float()
    sides = [nf[:, :nr].contiguous(), nf[:, nr:].contiguous()]
    vals = torch.cat([member_mean(sides[0])[:, None], _quantiles(sides[0]),
                      member_mean(sides[1])[:, None], _quantiles(sides[1]),
                      fd.median(dim=2).values, fd[:, :, :nr].median(dim=2).values,
                      fd[:, :, nr:].median(dim=2).values, fd.max(dim=2).values], dim=1)
    return probe_keys(deltas), vals


def _to_host(parts: Sequence[Part], extra: Mapping[str, torch.Tensor] | None = None
             ) -> list[tuple[dict[str, float], dict[str, list[float]]]]:
    """Every part's (P, K) values and the ``extra`` (P, …) tensors in ONE device sync: per
    member (the parts' values by name, each extra's row as a list of floats)."""
    extra = dict(extra or {})
    keys = [k for names, _ in parts for k in names]
    cols = [t.reshape(t.shape[0], -1).float() for _, t in parts]
    widths = [t.reshape(t.shape[0], -1).shape[1] for t in extra.values()]
    cols += [t.reshape(t.shape[0], -1).float() for t in extra.values()]
    rows = torch.cat(cols, dim=1).tolist()  # the one device sync
    out = []
    for row in rows:
        ex, j = {}, len(keys)
        for name, w in zip(extra, widths):
            ex[name] = row[j:j + w]
            j += w
        out.append((dict(zip(keys, row[:len(keys)])), ex))
    return out


def member_stats(D: MemberD, real: torch.Tensor, fake: torch.Tensor, f_real: torch.Tensor,
                 f_fake: torch.Tensor, f_gen: torch.Tensor, penalty: torch.Tensor,
                 losses: Sequence, *, extra: Mapping[str, torch.Tensor] | None = None,
                 deltas: Sequence[float] = FD_DELTAS
                 ) -> list[tuple[dict[str, float], dict[str, list[float]]]]:
    """The stats of one step for P members (module docstring), in one device sync.

    ``D``: the members' discriminators batched, in eval mode; ``real``/``fake`` (P, B, …) the
    step's batches, ``f_real``/``f_fake``/``f_gen`` (P, B) D's outputs on them (``f_gen``: the G
    step's), ``penalty`` (P,); ``losses[i]`` member i's ``DomainScaledLoss``; ``extra``: more
    device values (P, …) to bring back in the same sync (a regularizer's). Returns per member
    (Ω/Ψ, probe and loss metrics by name, each extra's row as a list of floats)."""
    P = real.shape[0]
    if len(losses) != P or any(t.shape[0] != P for t in (fake, f_real, f_fake, f_gen)):
        raise ValueError(f"member_stats: {P} members but {len(losses)} losses and leading "
                         f"sizes {[t.shape[0] for t in (fake, f_real, f_fake, f_gen)]}")
    parts = [_domain_part(f_real, f_fake, losses), _probe_part(D, real, fake, deltas),
             _loss_part(f_real, f_fake, f_gen, penalty, losses)]
    return _to_host(parts, extra)


def one_member(D: nn.Module) -> MemberD:
    """A one-config trial's D as the P = 1 batched D of :func:`member_stats`."""
    return lambda x: D(x[0]).reshape(1, -1)


def trial_stats(D: nn.Module, out: Mapping[str, torch.Tensor], loss) -> dict[str, float]:
    """:func:`member_stats` of a one-config trial's step (``GANTrial.train_step``'s ``out``),
    D in eval mode for the measurement (its mode restored afterwards)."""
    with eval_mode(D):
        ((m, _),) = member_stats(one_member(D), *(out[k][None] for k in (
            "real", "fake", "f_real", "f_fake", "f_gen", PENALTY)), [loss])
    return m


def spectral_norms(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """(P, L) σ_max of every member's L weights, each (P, out, …) taken as the (out, rest)
    matrix that spectral norm normalizes (SVD; ``torch.linalg.matrix_norm(ord=2)`` per member,
    batched where that is bit for bit the same)."""
    return torch.stack([_per_member(_sigma_max, w.reshape(w.shape[0], w.shape[1], -1).float())
                        for w in weights], dim=1)


def domain_stats(f_real: torch.Tensor, f_fake: torch.Tensor, loss) -> dict[str, float]:
    """Ω and Ψ statistics of one discriminator batch (see the module docstring)."""
    ((m, _),) = _to_host([_domain_part(f_real[None], f_fake[None], [loss])])
    return m


def input_grad_norms(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖∇ₓ f(x)‖₂ of the discriminator output f = D(x).

    D is put in eval mode for the measurement (spectral norm does not advance its power
    iteration, BatchNorm uses running statistics) and restored afterwards; only the input gradient
    is computed, parameter ``.grad`` fields are left untouched.
    """
    with eval_mode(D), torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        out = D(xi).reshape(-1)
        (grad,) = torch.autograd.grad(out.sum(), xi)
    return grad.reshape(grad.shape[0], -1).norm(dim=1)


def theorem1_bound(lipschitz_k: float | None, sample_shape: tuple[int, ...]) -> float | None:
    """Theorem 1's bound on |max Ω − min Ω| for inputs in [−1, 1]^shape: K·‖x_white − x_black‖.

    ‖x_b − x_w‖ = √(2²·Π shape) (Eq. 15; = √(12mn) for m×n×3 images).
    """
    if lipschitz_k is None:
        return None
    return float(lipschitz_k) * math.sqrt(4.0 * math.prod(sample_shape))


def lipschitz_probe(D: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                    deltas: tuple[float, ...] = FD_DELTAS) -> dict[str, float]:
    """Input-gradient norm distribution and finite-difference probe at real and fake samples.

    One forward + input-gradient pass over real ∪ fake, then one gradient-free forward per δ.
    Returns ``grad_norm_{real,fake}`` (mean) and ``_{min,q25,median,q75,max}``, and for every δ
    ``fd_lipschitz_<δ>`` (median over real ∪ fake), ``…_real``, ``…_fake`` (medians), ``…_max``.
    Eval mode, restored afterwards; no parameter ``.grad`` is written; one device sync.
    """
    with eval_mode(D):
        ((m, _),) = _to_host([_probe_part(one_member(D), real[None], fake[None], deltas)])
    return m
