"""Lipschitz regularizers of the discriminator: one registered class per regularizer.

Each regularizer is a subclass of :class:`Regularizer` registered under its config name with
:func:`register_regularizer`, against its ``Params`` declared without torch in
:mod:`trainables.params` (keys, defaults, validation, ``extra="forbid"`` so a key that does not
belong to it is an error; the K key; whether a pack batches it and which captured step modes run
it). A regularizer that packs carries its batched form as ``Pack``
(:class:`~trainables.gan.regularizer_base.PackForm`: the gradient penalty's batched penalty; spectral
norm's batched weight is reached through its parametrization, :mod:`trainables.gan.spectral_norm`).
It hooks into the train loop at four points:

``apply(D)``
    once, before training and **before the optimizer is built** (SN moves each weight to
    ``parametrizations.weight.original``; the optimizer must see that parameter). Returns the
    module whose output the loss sees (SN: D itself, parametrized in place; GraN will return a
    wrapper). Every later hook receives that returned module as ``D``.
``penalty(D, real, fake, *, step, total_steps)``
    a scalar added to D's loss each D step, plus float diagnostics (default: 0, {}).
``after_d_step(D)``
    after each D optimizer step (weight clipping); default no-op.
``lipschitz_k(D)`` / ``metrics(D)``
    the Lipschitz constant the regularizer aims at (by default the value of its declared
    ``k_key``, the key holding K; None when it has none) and float diagnostics for MLflow (flat
    names, prefixed by the regularizer's name; by default the tensors a penalty left in
    ``self._stash``).

Registered here (paper and equation next to each class): ``none``; ``sn`` (Eq. 1 of the Lipschitz
paper); ``gp`` (its Eq. 18, Appendix C / WGAN-GP, with the one-sided LP variant); ``r1``
(Mescheder et al.'s R1); ``gran`` (GraN-GAN Eq. 16-20); ``alr`` (ALR Eq. 15-17); ``js`` (Roth et al.
Eq. 20/28, Algorithm 1); ``clip`` (WGAN weight clipping). The interface and the registry are in
:mod:`trainables.gan.regularizer_base`, the four penalties in :mod:`trainables.gan.penalties`, spectral
norm in :mod:`trainables.gan.spectral_norm`; docs/design.md, "Adding a regularizer", walks through
adding one.

Conventions shared by the penalties: they are computed in float32 (half inputs are promoted;
float64 is kept, for tests), input gradients come from ``torch.autograd.grad`` with
``create_graph=True`` (double backprop) on the *sum* of D's outputs, which is the per-sample
gradient as long as D treats samples independently (true without BatchNorm; with BN in train mode
the cross-sample terms of the batch statistics are included, as every GP implementation with BN
does). Everything is vectorised over the batch. Random draws (GP interpolation weights, ALR start
directions and ε) come from torch's global RNG on the batch's device, which the trainer
checkpoints. Diagnostics that need a device sync are kept as detached tensors and turned into
floats only in ``metrics(D)``, which the trainer calls at stats steps; ``penalty`` returns only
values that are already Python floats.

Usage::

    reg = get_regularizer("sn", k_sn=5.0)       # ValueError on unknown name / bad or foreign key
    D = reg.apply(build_discriminator("dcgan32", channels=3))
    opt = build_optimizer("rmsprop", D.parameters(), lr=5e-5, eps=1e-8)
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.params import ClipParams, GraNParams, NoParams
from trainables.gan.penalties import AdversarialLipschitz, GradientPenalty, JSRegularizer, R1Penalty
from trainables.gan.regularizer_base import (  # noqa: F401 - the interface is importable from here
    REGULARIZERS, PackForm, Regularizer, RegularizerParams, f32, get_regularizer, has_bn,
    keys_by_regularizer, per_sample_norm, positive_finite, register_regularizer, to_floats,
)
from trainables.gan.spectral_norm import SpectralNorm, sn_layers  # noqa: F401

__all__ = [
    "REGULARIZERS",
    "AdversarialLipschitz",
    "GradientNormalized",
    "GradientPenalty",
    "JSRegularizer",
    "NoRegularizer",
    "R1Penalty",
    "Regularizer",
    "RegularizerParams",
    "SpectralNorm",
    "WeightClipping",
    "get_regularizer",
    "register_regularizer",
    "keys_by_regularizer",
    "sn_layers",
]


# ----------------------------------------------------------------------------------------- none


class NoRegularizer(Regularizer):
    """No Lipschitz regularization."""

    Params = NoParams
    Pack = PackForm


# ----------------------------------------------------------------------------------------- gran


class GraNDiscriminator(nn.Module):
    """g(x) = K·f(x)·‖∇ₓf(x)‖ / (‖∇ₓf(x)‖² + ε)  (GraN-GAN Eq. 16 with τ = 1/K, Eq. 20).

    ``self.f`` is the wrapped piecewise-linear network. ∇ₓf is the per-sample input gradient
    (gradient of Σᵢ f(xᵢ); D must treat samples independently, hence no BatchNorm). In grad mode
    the gradient is taken with ``create_graph=True`` so that g is differentiable w.r.t. D's
    parameters (D step) and w.r.t. x (G step, where the trainer has frozen D's parameters; the
    input gradient does not need them). Under ``torch.no_grad`` g is computed (grad enabled
    locally) and returned detached. Works in train and eval mode alike (the mode reaches f).

    The GraND/GraNC distinction is the loss's: with ``ns`` the loss sees σ(g) (a GraND), with
    ``wgan``/``hinge``/``softhinge`` it sees g itself (a GraNC).
    """

    def __init__(self, f: nn.Module, k: float, eps: float):
        super().__init__()
        self.f = f
        self.k = float(k)
        self.eps = float(eps)
        self.last: dict[str, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f"K={self.k:g}, eps={self.eps:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            xin = x if x.requires_grad else x.detach().requires_grad_(True)
            f = self.f(xin).reshape(x.shape[0])
            (grad,) = torch.autograd.grad(f.sum(), xin, create_graph=outer)
        n = per_sample_norm(grad)
        if not outer:
            f, n = f.detach(), n.detach()
        g = self.k * f32(f) * n / (n * n + self.eps)
        if self.training and any(p.requires_grad for p in self.f.parameters()):
            # a D step: keep ‖∇f‖ for the metrics (no sync here)
            nd = n.detach()
            self.last = {"norm": nd, "slope": self.k * nd * nd / (nd * nd + self.eps)}
        return g


class GradientNormalized(Regularizer):
    """Gradient normalization (GraN-GAN, Bhaskara et al., Eq. 16-20): ``apply`` wraps D so the loss
    sees g(x) = K·f(x)·‖∇f(x)‖/(‖∇f(x)‖² + ε). For piecewise-linear f (LeakyReLU, no BN),
    ‖∇ₓg‖ = K·‖∇f‖²/(‖∇f‖² + ε) < K almost everywhere (Eq. 19), ≈ K when ‖∇f‖² ≫ ε.

    Keys: ``gran_k`` = K = 1/τ (Eq. 20), default 1 (the paper's "default value of one"; Fig. 3
    uses K = 0.83); ``gran_eps`` = ε of Eq. 16, default 1e-8 — the paper's text gives no value
    ("a fixed constant for numerical stability"), so this is our choice, not a published setting:
    it is far below ‖∇f‖² of the paper-width DCGAN D at initialisation (measured 3e-4 … 2e-3), so
    g is normalized from the first step; Fig. 3's spread < 1e-6 around K needs ε/‖∇f‖² < 1e-6.
    No penalty term. Refuses a D with BatchNorm: the per-sample input gradient that Eq. 16
    normalizes by is not defined when batch statistics couple the samples.

    Under Adam, K only rescales the gradients of a linear loss, so (K, ε_Adam) trains exactly like
    (1, ε_Adam/K) (Eq. 21).
    """

    Params = GraNParams

    def apply(self, D: nn.Module) -> nn.Module:
        if isinstance(D, GraNDiscriminator):
            raise ValueError(  # noqa: TRY004 - a misuse, reported like sn's double apply
                "regularizer 'gran': D is already gradient-normalized (applied twice?)"
            )
        if has_bn(D):
            raise ValueError(
                "regularizer 'gran' cannot be combined with d_norm='bn' (GraN normalizes by the "
                "per-sample input gradient, which BatchNorm's batch statistics couple)"
            )
        return GraNDiscriminator(D, self.params.gran_k, self.params.gran_eps)

    def metrics(self, D: nn.Module) -> dict[str, float]:
        """gran_f_grad_norm_mean / _min: ‖∇f‖ of the unnormalized f at the last D step;
        gran_slope_min / _mean: K·‖∇f‖²/(‖∇f‖² + ε), i.e. ‖∇g‖ by Eq. 19 (≈ K when ε is
        negligible)."""
        last = getattr(D, "last", None) or {}
        if not last:
            return {}
        n, s = last["norm"], last["slope"]
        return to_floats({"gran_f_grad_norm_mean": n.mean(), "gran_f_grad_norm_min": n.min(),
                        "gran_slope_mean": s.mean(), "gran_slope_min": s.min()})


# ----------------------------------------------------------------------------------------- clip


class WeightClipping(Regularizer):
    """WGAN weight clipping (Arjovsky et al., 2017): every D parameter clamped to [−c, c] after
    each D step, and once in ``apply`` so training starts inside the box. Every parameter, BN
    scale/shift included, as in the WGAN reference code. Default c = 0.01 (WGAN's).
    No target K (``lipschitz_k`` None: c bounds K only through the architecture)."""

    Params = ClipParams

    def apply(self, D: nn.Module) -> nn.Module:
        self.after_d_step(D)
        return D

    @torch.no_grad()
    def after_d_step(self, D: nn.Module) -> None:
        c = self.params.clip_c
        for p in D.parameters():
            p.clamp_(-c, c)

    def metrics(self, D: nn.Module) -> dict[str, float]:
        """clip_frac_at_bound: share of D's parameters sitting at ±c."""
        c = self.params.clip_c
        with torch.no_grad():
            at = sum((p.abs() >= c).sum() for p in D.parameters())
            n = sum(p.numel() for p in D.parameters())
        return {"clip_frac_at_bound": float(at) / max(n, 1)}


# ------------------------------------------------------------------------------------- registry


# Registered against their declared Params (trainables.params: the names, in its order).
for _cls in (NoRegularizer, SpectralNorm, GradientPenalty, R1Penalty, GradientNormalized,
             AdversarialLipschitz, JSRegularizer, WeightClipping):
    register_regularizer(_cls.Params.name)(_cls)
del _cls
