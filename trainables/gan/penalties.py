"""The penalties added to D's loss: gradient penalty (``gp``), R1 (``r1``), the adversarial
Lipschitz penalty (``alr``) and Roth et al.'s JS regularizer (``js``). Registered, with the
others, in :mod:`trainables.gan.regularizers` (its docstring has the conventions they share).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trainables.gan.batched_optim import per_member
from trainables.params import ALRParams, GPParams, JSParams, R1Params
from trainables.gan.regularizer_base import (
    PackForm, Regularizer, check_pair, f32, has_bn, output_and_input_grad,
    pair_output_and_input_grad, per_sample_norm, per_sample_sq,
)

__all__ = ["AdversarialLipschitz", "GradientPenalty", "GradientPenaltyPack", "JSRegularizer",
           "R1Penalty"]


# ------------------------------------------------------------------------------------------- gp


def _zero_centred(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k_GP = 0 (Eq. 18 zero-centred): ‖∇f‖² per sample as a sum of squares over the last axis
    (no square root, whose gradient is undefined at 0; (‖∇f‖ − 0)₊² is the same), and ‖∇f‖."""
    sq = flat.pow(2).sum(dim=-1)
    return sq, sq.detach().sqrt()


def _deviation(flat: torch.Tensor, k, one_sided: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖∇f‖ − k_GP)² per sample over the last axis (Eq. 18; one-sided: (‖∇f‖ − k_GP)₊², the LP
    penalty), and ‖∇f‖. ``k`` a number, or a tensor broadcasting against the norms."""
    n = torch.linalg.vector_norm(flat, dim=-1)
    dev = n - k
    if one_sided:
        dev = torch.relu(dev)
    return dev * dev, n.detach()


def _norm_stash(mean: torch.Tensor, mx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradient penalty's diagnostics: mean and max ‖∇f(x̂)‖ of the last D step."""
    return {"gp_grad_norm_mean": mean, "gp_grad_norm_max": mx}


class GradientPenaltyPack(PackForm):
    """Eq. 18 for a pack: member i's λ_i·mean_b((‖∇f_i(x̂_ib)‖ − k_i)²) on the batched D, with
    the members' own λ and k_GP (k_GP = 0 members by the sum of squares, as
    :meth:`GradientPenalty.penalty_at`); ``gp_mode`` is shared. x̂ = u·real + (1 − u)·fake with
    the step's drawn u (member i's draws are those its own trial takes from the global RNG), and
    the input gradient is double backprop through the batched D (Σ over all members' outputs:
    members are independent). Each member's penalty, norms and gradients are those of its own
    trial, op for op."""

    draws_u = True

    def __init__(self, members: Sequence["GradientPenalty"], device: torch.device):
        super().__init__(members, device)
        rp = [m.params for m in members]
        modes = {r.gp_mode for r in rp}
        if len(modes) != 1:
            raise ValueError(f"gp: a pack's members share gp_mode, got {sorted(modes)}")
        self.one_sided = rp[0].gp_mode == "one-sided"
        self.gp_lambda = per_member([r.gp_lambda for r in rp], device)
        zero = [r.k_gp == 0 for r in rp]
        self.zero = torch.tensor(zero, device=device)[:, None] if any(zero) else None
        k = per_member([float(r.k_gp) for r in rp], device) if not all(zero) else None
        self.k = k[:, None] if isinstance(k, torch.Tensor) else k

    def penalty(self, D, real: torch.Tensor, fake: torch.Tensor,
                u: torch.Tensor | None) -> torch.Tensor:
        """(P,) penalties; real, fake (P, B, …), u (P, B, 1, …, 1)."""
        x_hat = (u * real.detach() + (1 - u) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
        flat = f32(grad).flatten(2)
        parts = []
        if self.zero is not None:
            parts.append(_zero_centred(flat))
        if self.k is not None:
            parts.append(_deviation(flat, self.k, self.one_sided))
        if len(parts) == 1:
            per_sample, norms = parts[0]
        else:  # row i from the member's own formula
            per_sample = torch.where(self.zero, parts[0][0], parts[1][0])
            norms = torch.where(self.zero, parts[0][1], parts[1][1])
        self.stash = _norm_stash(norms.mean(dim=1), norms.max(dim=1).values)
        return self.gp_lambda * per_sample.mean(dim=1)


class GradientPenalty(Regularizer):
    """Gradient penalty, Eq. 18 of the Lipschitz paper (Appendix C) / WGAN-GP (Gulrajani et al.):

        λ · E_{x̂}[(‖∇ₓ̂ f(x̂)‖ − k_GP)²],   x̂ = u·x_real + (1 − u)·x_fake,  u ~ U[0, 1] per sample.

    ``gp_mode: one-sided`` penalizes only ‖∇f‖ > k_GP: λ·E[(‖∇f‖ − k_GP)₊²] (the LP penalty of
    Petzka et al., ALR paper Eq. 9). k_GP = 0 is the zero-centred penalty λ·E‖∇f(x̂)‖²
    (computed as a sum of squares: no square root whose gradient is undefined at 0).

    Defaults: λ = 10 (Appendix C: "Similar to Gulrajani et al. (2017) and Fedus et al. (2018), we
    use λ = 10"), k_GP = 1 (WGAN-GP's one-centred penalty), two-sided (WGAN-GP, Eq. 18).
    Works with Appendix C's BatchNorm discriminator (``d_norm: bn``): D(x̂) is then a forward of
    the interpolate batch alone, in D's current mode.

    lipschitz_k = k_GP: the gradient norm the penalty aims at (the paper notes there is no exact
    relation between k_GP and K; it is the nominal target). Metrics: ``gp_grad_norm_mean`` /
    ``_max``, ‖∇f‖ at the last D step's interpolates.
    """

    Params = GPParams
    Pack = GradientPenaltyPack

    def interpolates(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """x̂ = u·real + (1 − u)·fake with u = torch.rand(B, 1, …, 1) drawn from the global RNG on
        the batch's device (one draw per sample)."""
        check_pair("gp", real, fake)
        shape = (real.shape[0],) + (1,) * (real.dim() - 1)
        u = torch.rand(shape, device=real.device, dtype=real.dtype)
        return u * real.detach() + (1 - u) * fake.detach()

    def penalty_at(self, D: nn.Module, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penalty, ‖∇f(x̂)‖ per sample) at given points; the penalty is differentiable in D."""
        p = self.params
        _, grad = output_and_input_grad(D, x_hat)
        flat = f32(grad).flatten(1)
        if p.k_gp == 0:
            per_sample, norms = _zero_centred(flat)
        else:
            per_sample, norms = _deviation(flat, p.k_gp, p.gp_mode == "one-sided")
        return p.gp_lambda * per_sample.mean(), norms

    def penalty(self, D, real, fake, *, step, total_steps):
        pen, norms = self.penalty_at(D, self.interpolates(real, fake))
        self._stash = _norm_stash(norms.mean(), norms.max())
        return pen, {}


# ------------------------------------------------------------------------------------------- r1


class R1Penalty(Regularizer):
    """R1 (Mescheder et al., 2018, "Which training methods for GANs actually converge?"):
    γ/2 · E_{x~P_real}‖∇ₓf(x)‖², the zero-centred penalty on real data only.

    Default γ = 10: the value Mescheder et al. use for their CelebA-HQ/LSUN experiments (that
    paper is not in papers/; none of the four papers fixes an R1 γ). No target K
    (``lipschitz_k`` is None): R1 pushes the gradient at the data to 0, it does not aim at a K.
    Metric: ``r1_grad_norm_mean``, mean ‖∇f‖ at the last D step's real batch.
    """

    Params = R1Params

    def penalty(self, D, real, fake, *, step, total_steps):
        _, grad = output_and_input_grad(D, real)
        sq = per_sample_sq(grad)
        self._stash = {"r1_grad_norm_mean": sq.detach().sqrt().mean()}
        return 0.5 * self.params.r1_gamma * sq.mean(), {}


# ------------------------------------------------------------------------------------------ alr


class AdversarialLipschitz(Regularizer):
    """Adversarial Lipschitz penalty (ALR paper, Terjék 2020, Eq. 15-17), on real and fake:

        λ · E_{x ~ P_{r,g}} [ ((|f(x) − f(x + r_adv)| / ‖r_adv‖₂ − K)₊)² ],

    r_adv = ε·r_k with r_k from ``alr_iters`` power iterations (Eq. 16):
    r_{i+1} = ∇_r |f(x) − f(x + r)| at r = ξ·r_i, normalised per sample; r_0 a random unit vector;
    ε ~ U[alr_eps_min, alr_eps_max] per sample. f(x) is not held fixed (Sec. 3: "it is best to
    minimize (15) without keeping f(x) fixed"); r_adv is a constant of the penalty.

    Defaults = WGAN-ALP on CIFAR-10 (Sec. 4): K = 1, λ = 100, ξ = 10, P_ε = U[0.1, 10], k = 1 power
    iteration, both P_r and P_g batches regularized. The penalty is Eq. 17's expectation of the
    square (Sec. 3.2's text says "the square of the expectation"; we follow the equation).

    Reported (Sec. 3.2 recommends monitoring it for tuning): ``alr_violations``, the number of
    samples in the last D step (real + fake, at most 2·batch) whose ratio exceeds K, also split
    into ``alr_violations_real`` / ``_fake``; ``alr_ratio_mean`` / ``_max``.
    """

    Params = ALRParams

    @staticmethod
    def _unit(t: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
        shape = (t.shape[0],) + (1,) * (t.dim() - 1)
        n = per_sample_norm(t).reshape(shape).to(t.dtype)
        u = t / n.clamp_min(torch.finfo(t.dtype).tiny)
        if fallback is not None:  # a zero gradient (flat region): keep the previous direction
            u = torch.where(n > 0, u, fallback)
        return u

    def direction(self, D: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The approximate adversarial direction r_k (unit norm per sample) by Eq. 16."""
        x = x.detach()
        with torch.no_grad():
            fx = D(x).reshape(x.shape[0])
        d = self._unit(torch.randn_like(x))
        for _ in range(self.params.alr_iters):
            with torch.enable_grad():
                r = (self.params.alr_xi * d).requires_grad_(True)
                dist = (D(x + r).reshape(x.shape[0]) - fx).abs().sum()
                (grad,) = torch.autograd.grad(dist, r)
            d = self._unit(grad.detach(), fallback=d)
        return d

    def perturbation(self, D: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """r_adv = ε·r_k, ε ~ U[eps_min, eps_max] per sample (global RNG on x's device)."""
        d = self.direction(D, x)
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        lo, hi = self.params.alr_eps_min, self.params.alr_eps_max
        eps = lo + (hi - lo) * torch.rand(shape, device=x.device, dtype=d.dtype)
        return eps * d

    def ratios(self, D: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """|f(x) − f(x + r_adv)| / ‖r_adv‖₂ per sample, differentiable in D (f(x) not fixed)."""
        x = x.detach()
        r = self.perturbation(D, x)
        b = x.shape[0]
        if has_bn(D):
            fx, fxr = D(x).reshape(b), D(x + r).reshape(b)
        else:
            out = D(torch.cat([x, x + r])).reshape(2 * b)
            fx, fxr = out[:b], out[b:]
        return (f32(fx) - f32(fxr)).abs() / per_sample_norm(r)

    def penalty(self, D, real, fake, *, step, total_steps):
        check_pair("alr", real, fake)
        p = self.params
        b = real.shape[0]
        if has_bn(D):  # real and fake normalised by their own batch statistics
            ratio = torch.cat([self.ratios(D, real), self.ratios(D, fake)])
        else:
            ratio = self.ratios(D, torch.cat([real.detach(), fake.detach()]))
        viol = torch.relu(ratio - p.alr_k)
        pen = p.alr_lambda * (viol * viol).mean()
        over = (ratio.detach() > p.alr_k).sum(dtype=torch.float32)
        over_real = (ratio.detach()[:b] > p.alr_k).sum(dtype=torch.float32)
        self._stash = {
            "alr_violations": over, "alr_violations_real": over_real,
            "alr_violations_fake": over - over_real,
            "alr_ratio_mean": ratio.detach().mean(), "alr_ratio_max": ratio.detach().max(),
        }
        return pen, {}



# ------------------------------------------------------------------------------------------- js


class JSRegularizer(Regularizer):
    """Roth et al.'s noise-induced regularizer for the JS-GAN (Eq. 20, logit form Eq. 28):

        Ω_JS = E_P[(1 − σ(f))²‖∇ₓf‖²] + E_Q[σ(f)²‖∇ₓf‖²],   added to D's loss as γ/2·Ω_JS,

    with f the logit (D's raw output; ``alpha`` domain scaling is not applied to it) and the
    annealing of Algorithm 1: γ = γ0·decay^(t/T), t = 1…T (t = step + 1 for the trainer's 0-based
    step, T = iterations). Defaults γ0 = 2.0, decay (Algorithm 1's α) = 0.01; ``js_decay: 1``
    disables annealing (Algorithm 1's "γ = 0.1 without annealing" is js_gamma0 0.1, js_decay 1).
    The weights are derived for the NS/JS loss; with another loss it is a weighted gradient
    penalty. Metrics: ``js_gamma`` (this step's γ), ``js_omega`` (Ω_JS at the last D step).
    """

    Params = JSParams

    def gamma(self, step: int, total_steps: int) -> float:
        """γ at the trainer's 0-based ``step`` (Algorithm 1's t = step + 1) of ``total_steps``."""
        t = min(step + 1, total_steps)
        return self.params.js_gamma0 * self.params.js_decay ** (t / total_steps)

    @staticmethod
    def omega(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Ω_JS of Eq. 28 (differentiable in D)."""
        fr, gr, ff, gf = pair_output_and_input_grad(D, real, fake)
        w_real = torch.sigmoid(-f32(fr)) ** 2  # (1 − σ(f))², computed stably
        w_fake = torch.sigmoid(f32(ff)) ** 2
        return (w_real * per_sample_sq(gr)).mean() + (w_fake * per_sample_sq(gf)).mean()

    def penalty(self, D, real, fake, *, step, total_steps):
        check_pair("js", real, fake)
        gamma = self.gamma(step, total_steps)
        om = self.omega(D, real, fake)
        self._stash = {"js_omega": om.detach()}
        return 0.5 * gamma * om, {"js_gamma": gamma}
