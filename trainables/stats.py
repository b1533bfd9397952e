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
* ``omega_bound`` — Theorem 1 / Eq. 7: |max Ω − min Ω| ≤ K·√(4·m·n·c) = K·2√(mnc) for inputs in
  [−1, 1]^{m×n×c} (Appendix A uses c = 3: √(12mn)); ``omega_within_bound`` says whether the running
  union Ω∪ fits in it.

Everything here is computed from detached tensors or with ``torch.autograd.grad`` w.r.t. inputs only:
no parameter gradient is touched, no RNG is drawn.
"""

from __future__ import annotations

import math

import torch
from torch import nn


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
    was_training = D.training
    D.eval()
    try:
        with torch.enable_grad():
            xi = x.detach().clone().requires_grad_(True)
            out = D(xi).reshape(-1)
            (grad,) = torch.autograd.grad(out.sum(), xi)
    finally:
        D.train(was_training)
    return grad.reshape(grad.shape[0], -1).norm(dim=1)


def theorem1_bound(lipschitz_k: float | None, sample_shape: tuple[int, ...]) -> float | None:
    """Theorem 1's bound on |max Ω − min Ω| for inputs in [−1, 1]^shape: K·‖x_white − x_black‖.

    ‖x_b − x_w‖ = √(2²·Π shape) (Eq. 15; = √(12mn) for m×n×3 images).
    """
    if lipschitz_k is None:
        return None
    return float(lipschitz_k) * math.sqrt(4.0 * math.prod(sample_shape))
