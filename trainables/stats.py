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
  batch (GraN-GAN Fig. 3's boxplots), h = the function the loss sees (f, or g = GraN(f)).
* ``fd_lipschitz_<δ>`` — GraN-GAN Sec. 7 / Fig. 4's finite-difference Lipschitz probe
  Δᵢ = |h(xᵢ + δnᵢ) − h(xᵢ)|/δ along the unit input-gradient direction nᵢ = ∇h(xᵢ)/‖∇h(xᵢ)‖, for
  δ ∈ {0.01, 0.1, 1, 10}: the median over real ∪ fake (``_real``/``_fake``: per side, ``_max``: the
  largest). A lower bound on the local Lipschitz constant at scale δ.
* ``omega_bound`` — Theorem 1 / Eq. 7: |max Ω − min Ω| ≤ K·√(4·m·n·c) = K·2√(mnc) for inputs in
  [−1, 1]^{m×n×c} (Appendix A uses c = 3: √(12mn)); ``omega_within_bound`` says whether the running
  union Ω∪ fits in it.

Everything here is computed from detached tensors or with ``torch.autograd.grad`` w.r.t. inputs only:
no parameter ``.grad`` is touched, no RNG is drawn, and D is measured in eval mode (spectral norm
does not advance its power iteration; BatchNorm uses — and does not update — its running
statistics, so with ``d_norm: bn`` the probes describe the eval-mode D, the only one in which a
per-sample input gradient is defined).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.models import eval_mode


def domain_stats(f_real: torch.Tensor, f_fake: torch.Tensor, loss) -> dict[str, float]:
    """Ω and Ψ statistics of one discriminator batch (see the module docstring)."""
    fr = f_real.detach().float().reshape(-1)
    ff = f_fake.detach().float().reshape(-1)
    lo = torch.minimum(fr.min(), ff.min())
    hi = torch.maximum(fr.max(), ff.max())
    ends = loss.psi_at(torch.stack([lo, hi]))
    with torch.enable_grad():
        r = fr.clone().requires_grad_(True)
        f = ff.clone().requires_grad_(True)
        g_r, g_f = torch.autograd.grad(
            (loss.d_real(r).sum(), loss.d_fake(f).sum()), (r, f), allow_unused=False
        )
    attained = torch.cat([g_r, g_f])
    values = torch.stack(
        [fr.min(), fr.max(), ff.min(), ff.max(), ends.min(), ends.max(),
         attained.min(), attained.max(), attained.mean()]
    ).tolist()  # one device sync for all of them
    keys = ("omega_real_min", "omega_real_max", "omega_fake_min", "omega_fake_max", "psi_min",
            "psi_max", "psi_attained_min", "psi_attained_max", "psi_attained_mean")
    return dict(zip(keys, values))


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


#: Perturbation sizes of GraN-GAN Fig. 4's finite-difference probe (inputs live in [−1, 1]).
FD_DELTAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
_Q_NAMES = ("min", "q25", "median", "q75", "max")


def fd_key(delta: float) -> str:
    """Metric name of the probe at δ, e.g. ``fd_lipschitz_0.01``, ``fd_lipschitz_10``."""
    return f"fd_lipschitz_{delta:g}"


def lipschitz_probe(D: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                    deltas: tuple[float, ...] = FD_DELTAS) -> dict[str, float]:
    """Input-gradient norm distribution and finite-difference probe at real and fake samples.

    One forward + input-gradient pass over real ∪ fake, then one gradient-free forward per δ.
    Returns ``grad_norm_{real,fake}`` (mean) and ``_{min,q25,median,q75,max}``, and for every δ
    ``fd_lipschitz_<δ>`` (median over real ∪ fake), ``…_real``, ``…_fake`` (medians), ``…_max``.
    Eval mode, restored afterwards; no parameter ``.grad`` is written; one device sync.
    """
    nr = real.shape[0]
    x = torch.cat([real.detach(), fake.detach()])
    with eval_mode(D):
        with torch.enable_grad():
            xi = x.clone().requires_grad_(True)
            h = D(xi).reshape(-1)
            (grad,) = torch.autograd.grad(h.sum(), xi)
        h = h.detach().float()
        flat = grad.reshape(grad.shape[0], -1)
        norms = flat.norm(dim=1)
        direction = (flat / norms.clamp_min(torch.finfo(flat.dtype).tiny)[:, None]).view_as(x)
        fds = []
        with torch.no_grad():
            for d in deltas:
                hd = D(x + d * direction).reshape(-1).float()
                fds.append((hd - h).abs() / d)
    fd = torch.stack(fds)  # len(deltas) × (n_real + n_fake)
    q = torch.tensor(_QUANTILES, dtype=norms.dtype, device=norms.device)
    nf = norms.float()
    parts = [nf[:nr].mean()[None], torch.quantile(nf[:nr], q.float()),
             nf[nr:].mean()[None], torch.quantile(nf[nr:], q.float()),
             fd.median(dim=1).values, fd[:, :nr].median(dim=1).values,
             fd[:, nr:].median(dim=1).values, fd.max(dim=1).values]
    vals = torch.cat(parts).tolist()  # one device sync
    keys = (["grad_norm_real"] + [f"grad_norm_real_{n}" for n in _Q_NAMES]
            + ["grad_norm_fake"] + [f"grad_norm_fake_{n}" for n in _Q_NAMES]
            + [fd_key(d) for d in deltas] + [fd_key(d) + "_real" for d in deltas]
            + [fd_key(d) + "_fake" for d in deltas] + [fd_key(d) + "_max" for d in deltas])
    return dict(zip(keys, vals))
