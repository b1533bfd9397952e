"""GAN loss library with domain scaling.

Every loss is three scalar base functions of the discriminator output ``t = f(.)``, each
*minimised*, with the sign conventions of Table 1 of "Lipschitz regularization in GAN
training" (Qin et al.):

* real term ``l_r(t)`` and fake term ``l_f(t)``: the discriminator minimises
  ``E[l_r(f(x))] + E[l_f(f(G(z)))]``;
* generator term ``l_g(t)``: the generator minimises ``E[l_g(f(G(z)))]``.

Domain scaling (Eq. 11) wraps every term: ``L_a(w) = L(a*w)/a``. Its gradient is ``L'(a*w)``, so
for ``a -> 0`` every loss degenerates to a linear one with slope ``grad L(0)`` (Eq. 13), while for
large ``a`` the loss is evaluated far out in its saturating/exploding parts.

Numerics (everything float32; lower-precision inputs are promoted to float32):

* ``a`` spans [1e-25, 1e11]. At ``a = 1e-25`` the value ``L(a*f)/a ~ L(0)/a ~ 1e25`` is finite in
  float32 and its gradient is exactly ``L'(a*f) ~ L'(0)``; stable forms (``F.softplus``, never
  ``log(sigmoid)``) keep every gradient free of NaN.
* The ``*_centered`` methods return ``(L(a*f) - L(0))/a``, computed without cancellation (log1p /
  expm1 / trigonometric / algebraic identities), so at ``a = 1e-25`` they are ``~ L'(0)*f``
  instead of ``0`` or ``inf``. They have the same gradient as the uncentred terms and are what the
  trainer logs as ``loss_d`` / ``loss_g``.
* Genuine overflow is *not* hidden: ``exp`` at ``a = 1e11`` returns ``inf`` (the paper's breakdown),
  which the trainer records as divergence. Overflow of an intermediate whose final value is
  representable is avoided (squares are evaluated as ``((a*f + b)/sqrt(a))**2``, linear terms as
  ``c*f``).

Like compare_gan's loss library every loss has the same signature and is selected by name::

    loss = get_loss("ns", alpha=1e-9)
    loss_d = loss.d_real(f_real).mean() + loss.d_fake(f_fake).mean()  # backprop this
    log_d = loss.d_real_centered(f_real).mean() + loss.d_fake_centered(f_fake).mean()  # log this
    loss_g = loss.g(f_fake).mean()

Adding a loss is one ``@register_loss`` class listing its three :class:`Term` s, its name in
``trainables.params.LOSS_NAMES`` (validation imports no torch), plus its test.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables import names
from trainables.params import LOSS_NAMES
from trainables.registry import claim

__all__ = [
    "LOSSES",
    "DomainScaledLoss",
    "Exp",
    "Hinge",
    "Linear",
    "NegCos",
    "Softplus",
    "Square",
    "Term",
    "get_loss",
    "register_loss",
]


def _as_float(t: Tensor) -> Tensor:
    """Promote half/bfloat16 (and integer) inputs to float32; keep float32/float64."""
    if not torch.is_floating_point(t) or t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------------------------
# Base functions l(t)
# --------------------------------------------------------------------------------------------


class Term:
    """One scalar base function ``l(t)`` of the discriminator output, applied elementwise.

    Subclasses implement ``__call__`` (``l(t)``) and, for numerical stability near 0,
    ``centered`` (``l(t) - l(0)``). The generic ``centered`` below cancels catastrophically for
    tiny ``t`` and is only a fallback for quick experiments.
    """

    formula: str = "l(t)"

    def __call__(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def centered(self, t: Tensor) -> Tensor:
        """``l(t) - l(0)`` (override with a cancellation-free form)."""
        return self(t) - self(torch.zeros_like(t))

    def scaled(self, f: Tensor, alpha: float) -> Tensor:
        """Domain-scaled term ``l(alpha*f)/alpha`` (Eq. 11)."""
        return self(alpha * f) / alpha

    def scaled_centered(self, f: Tensor, alpha: float) -> Tensor:
        """``(l(alpha*f) - l(0))/alpha``: finite and ``~ l'(0)*f`` as ``alpha -> 0``."""
        return self.centered(alpha * f) / alpha

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.formula})"


class Softplus(Term):
    """``weight * softplus(sign*t + shift)``; ``softplus(-t) = -log(sigmoid(t))``."""

    def __init__(self, sign: float, shift: float = 0.0, weight: float = 1.0):
        self.sign, self.shift, self.weight = float(sign), float(shift), float(weight)
        w = "" if weight == 1 else "-" if weight == -1 else f"{weight:g}*"
        s = "-t" if sign == -1 else "t" if sign == 1 else f"{sign:g}*t"
        arg = f"{shift:g} {'-' if sign < 0 else '+'} {s.lstrip('-')}" if shift else s
        self.formula = f"{w}softplus({arg})"

    def __call__(self, t: Tensor) -> Tensor:
        return self.weight * F.softplus(self.sign * t + self.shift)

    def centered(self, t: Tensor) -> Tensor:
        # softplus(b + u) - softplus(b), exact and cancellation-free for every u:
        #   u <= 0:  log1p(sigmoid(b) * expm1(u))
        #   u >  0:  u + log1p(sigmoid(-b) * expm1(-u))
        # Each branch gets an input clamped to its own half-line so the unselected branch never
        # overflows (no inf*0 = NaN in the backward of torch.where).
        u = self.sign * t
        b = self.shift
        # (torch.where, not clamp: clamp's gradient is 0 at the boundary u = 0)
        pos_side = u > 0
        zero = torch.zeros_like(u)
        u_neg, u_pos = torch.where(pos_side, zero, u), torch.where(pos_side, u, zero)
        neg = torch.log1p(torch.expm1(u_neg) * _sigmoid(b))
        pos = u_pos + torch.log1p(torch.expm1(-u_pos) * _sigmoid(-b))
        return self.weight * torch.where(pos_side, pos, neg)


class Square(Term):
    """``(t + shift)**2``."""

    def __init__(self, shift: float = 0.0):
        self.shift = float(shift)
        self.formula = f"(t {'+' if shift >= 0 else '-'} {abs(shift):g})^2" if shift else "t^2"

    def __call__(self, t: Tensor) -> Tensor:
        return (t + self.shift) ** 2

    def centered(self, t: Tensor) -> Tensor:
        return t * (t + 2.0 * self.shift)

    def scaled(self, f: Tensor, alpha: float) -> Tensor:
        # (a f + b)^2 / a without overflowing the intermediate square (a = 1e11, large f).
        return ((alpha * f + self.shift) / math.sqrt(alpha)) ** 2

    def scaled_centered(self, f: Tensor, alpha: float) -> Tensor:
        # ((a f + b)^2 - b^2) / a = f * (a f + 2 b)
        return f * (alpha * f + 2.0 * self.shift)


class Linear(Term):
    """``slope * t`` (exactly scale invariant: ``l(a f)/a = slope * f``)."""

    def __init__(self, slope: float):
        self.slope = float(slope)
        self.formula = "t" if slope == 1 else "-t" if slope == -1 else f"{slope:g}*t"

    def __call__(self, t: Tensor) -> Tensor:
        return self.slope * t

    def centered(self, t: Tensor) -> Tensor:
        return self.slope * t

    def scaled(self, f: Tensor, alpha: float) -> Tensor:
        return self.slope * f

    def scaled_centered(self, f: Tensor, alpha: float) -> Tensor:
        return self.slope * f


class Exp(Term):
    """``exp(sign * t)``; overflows to ``inf`` for ``sign*t > ~88.7`` (not clamped)."""

    def __init__(self, sign: float):
        self.sign = float(sign)
        self.formula = "exp(t)" if sign == 1 else "exp(-t)" if sign == -1 else f"exp({sign:g}*t)"

    def __call__(self, t: Tensor) -> Tensor:
        return torch.exp(self.sign * t)

    def centered(self, t: Tensor) -> Tensor:
        return torch.expm1(self.sign * t)


class NegCos(Term):
    """``-cos(t + shift)``."""

    def __init__(self, shift: float):
        self.shift = float(shift)
        self.formula = f"-cos(t {'+' if shift >= 0 else '-'} {abs(shift):g})"

    def __call__(self, t: Tensor) -> Tensor:
        return -torch.cos(t + self.shift)

    def centered(self, t: Tensor) -> Tensor:
        # cos(b) - cos(t + b) = 2 sin(b + t/2) sin(t/2)
        half = 0.5 * t
        return 2.0 * torch.sin(half + self.shift) * torch.sin(half)


class Hinge(Term):
    """``relu(1 + sign * t)`` (margin 1)."""

    def __init__(self, sign: float):
        self.sign = float(sign)
        self.formula = {-1.0: "relu(1 - t)", 1.0: "relu(1 + t)"}.get(
            self.sign, f"relu(1 + {sign:g}*t)"
        )

    def __call__(self, t: Tensor) -> Tensor:
        return F.relu(1.0 + self.sign * t)

    def centered(self, t: Tensor) -> Tensor:
        # relu(1 + u) - 1 = max(u, -1); torch.where gives gradient 0 at the kink u = -1 exactly
        # like relu'(0) = 0, so the centred and uncentred gradients agree everywhere.
        u = self.sign * t
        return torch.where(u > -1.0, u, torch.full_like(u, -1.0))


# --------------------------------------------------------------------------------------------
# Domain-scaled loss and registry
# --------------------------------------------------------------------------------------------

LOSSES: dict[str, type[DomainScaledLoss]] = {}


def _term_method(term: str, centered: bool, doc: str) -> Callable[..., Tensor]:
    """A per-sample method of :class:`DomainScaledLoss`: its ``term`` (``real_term``,
    ``fake_term`` or ``gen_term``) at ``f`` under the loss's ``alpha``, scaled (Eq. 11) or
    scaled and centred."""

    def method(self: "DomainScaledLoss", f: Tensor) -> Tensor:
        t: Term = getattr(self, term)
        return (t.scaled_centered if centered else t.scaled)(_as_float(f), self.alpha)

    method.__doc__ = doc
    return method


class DomainScaledLoss:
    """A GAN loss (three :class:`Term` s) with domain scaling ``L_a(w) = L(a*w)/a`` (Eq. 11).

    Subclasses are registered with :func:`register_loss` and set the class attributes
    ``real_term``, ``fake_term``, ``gen_term`` and ``psi_term`` (``'real'``, the default, or
    ``'fake'``: the D term on which Fig. 1b computes Psi). All methods take a float tensor of D outputs of any shape on
    any device and return per-sample terms of the same shape; their means are Table 1's losses::

        loss_D = loss.d_real(f_real).mean() + loss.d_fake(f_fake).mean()
        loss_G = loss.g(f_fake).mean()
    """

    name: str = ""
    real_term: Term
    fake_term: Term
    gen_term: Term
    psi_term: str = "real"

    def __init__(self, alpha: float = 1.0):
        self.alpha = _check_alpha(alpha)

    # -- per-sample terms l(a f)/a, and centred terms (l(a f) - l(0))/a: the same gradient,
    # stable for tiny a
    d_real = _term_method("real_term", False, "Discriminator real term ``l_r(a f)/a``.")
    d_fake = _term_method("fake_term", False, "Discriminator fake term ``l_f(a f)/a``.")
    g = _term_method("gen_term", False,
                     "Generator term ``l_g(a f)/a`` (f = D output on generated samples).")
    d_real_centered = _term_method("real_term", True, "``(l_r(a f) - l_r(0))/a``.")
    d_fake_centered = _term_method("fake_term", True, "``(l_f(a f) - l_f(0))/a``.")
    g_centered = _term_method("gen_term", True, "``(l_g(a f) - l_g(0))/a``.")

    # -- Psi (Eq. 9) -----------------------------------------------------------------------
    def psi_at(self, omega: Tensor) -> Tensor:
        """``dL_a/dw = l'(a w)`` of the ``psi_term`` D term at the points ``omega`` (Eq. 9).

        Computed (in float32, on ``omega``'s device) by autograd of the same scaled term that
        training differentiates, so it is exactly the gradient training sees. Pass the ends of
        Omega to get the ends of Psi for the convex losses.
        """
        term = self.real_term if self.psi_term == "real" else self.fake_term
        w = torch.as_tensor(omega, dtype=torch.float32).detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y = term.scaled(w, self.alpha)
            (grad,) = torch.autograd.grad(y, w, grad_outputs=torch.ones_like(y))
        return grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, alpha={self.alpha:g})"


def _check_alpha(alpha: float) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}") from None
    if not math.isfinite(a) or a <= 0:
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    a32 = torch.tensor(a, dtype=torch.float32).item()
    if a32 == 0 or not math.isfinite(a32) or not math.isfinite(1.0 / a32):
        raise ValueError(f"alpha={alpha!r} is not representable in float32 (needs ~1e-37..1e37)")
    return a


def register_loss(name: str) -> Callable[[type[DomainScaledLoss]], type[DomainScaledLoss]]:
    """Class decorator adding a :class:`DomainScaledLoss` subclass to :data:`LOSSES` as ``name``,
    one of the names declared in ``trainables.params.LOSS_NAMES`` (what a study validates)."""

    def deco(cls: type[DomainScaledLoss]) -> type[DomainScaledLoss]:
        claim(LOSSES, names.LOSS, name)
        if not (isinstance(cls, type) and issubclass(cls, DomainScaledLoss)):
            raise TypeError(f"@register_loss({name!r}) needs a DomainScaledLoss subclass")
        if name not in LOSS_NAMES:
            raise ValueError(f"loss {name!r} is not declared in trainables.params.LOSS_NAMES")
        for attr in ("real_term", "fake_term", "gen_term"):
            if not isinstance(getattr(cls, attr, None), Term):
                raise TypeError(f"loss {name!r}: class attribute {attr} must be a Term")
        if cls.psi_term not in ("real", "fake"):
            raise ValueError(f"loss {name!r}: psi_term must be 'real' or 'fake'")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return deco


def get_loss(name: str, alpha: float = 1.0) -> DomainScaledLoss:
    """The registered loss ``name`` with domain-scaling factor ``alpha`` (Eq. 11)."""
    try:
        cls = LOSSES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(LOSSES))
        raise ValueError(f"unknown loss {name!r}; known losses: {known}") from None
    return cls(alpha)


# --------------------------------------------------------------------------------------------
# The losses (Table 1 of Qin et al.; hinge / soft hinge from GraN-GAN, Bhaskara et al.)
# --------------------------------------------------------------------------------------------


@register_loss("ns")
class NonSaturatingLoss(DomainScaledLoss):
    """NS-GAN (Table 1): D: ``-log sigmoid(t)`` / ``-log(1 - sigmoid(t))``; G: ``-log sigmoid(t)``.

    As softplus: l_r = softplus(-t), l_f = softplus(t), l_g = softplus(-t). Psi (Fig. 1b) on the
    real term ``-log sigmoid(t)``.
    """

    real_term, fake_term, gen_term = Softplus(-1), Softplus(+1), Softplus(-1)


@register_loss("mm")
class MinimaxLoss(DomainScaledLoss):
    """Minimax GAN (Goodfellow et al. 2014): NS-GAN's D terms, G: ``log(1 - sigmoid(t))``.

    l_g = -softplus(t) (saturates where D rejects fakes). Psi on the real term (choice).
    """

    real_term, fake_term, gen_term = Softplus(-1), Softplus(+1), Softplus(+1, weight=-1)


@register_loss("ls")
class LeastSquaresLoss(DomainScaledLoss):
    """LS-GAN (Table 1): D: ``(t - 1)^2`` / ``t^2``; G: ``(t - 1)^2``.

    Psi on the fake term ``t^2`` (Fig. 1b: Omega = [-2.460, 12.020] -> Psi = [-4.921, 24.041]).
    Note l_f'(0) = 0: under strong domain scaling (Eq. 13) the fake term gives no gradient.
    """

    real_term, fake_term, gen_term = Square(-1.0), Square(0.0), Square(-1.0)
    psi_term = "fake"


@register_loss("ls0")
class ZeroCenteredLeastSquaresLoss(DomainScaledLoss):
    """LS-GAN# (zero-centred LS-GAN, Mao et al. 2017b; Lipschitz paper Sec. 4.3 and App. D):
    D: ``(t - 1)^2`` / ``(t + 1)^2``; G: ``(t - 1)^2``.

    Table 1's LS-GAN (labels a = 0, b = 1, generator target c = b = 1) with its domain centred on
    zero: a = -1, b = 1, and the generator still aims at the real label, c = b = 1. Why not Mao et
    al.'s other coding c = 0 (``t^2``, what this entry was up to 2026-12-05, and what DESIGN.md's
    "generator target 0" reads): its slope at 0 is zero, so by Eq. 13 the generator's gradient
    ``l_g'(a f)`` vanishes as a -> 0, as plain LS's fake term does. The paper's LS# trains at
    a = 1e-25 (FID 3.81 / 21.47 / 8.51 on MNIST / CIFAR-10 / CelebA, Sec. 4.3 table; Table 5a at
    1e-11: 4.25 / 20.16 / 6.66); a generator whose gradient carries the factor a cannot, since the
    optimizer's ε (RMSProp's 1e-8) swamps it. Measured here (hypotheses-cpu, k_SN 50, a 1e-25, FID
    at N 500): the c = 0 entry left the generator untrained in 3 of 3 seeds (1,725-1,746, at
    068e1fc) where NS, COS and EXP learned; this one learns (28.13-30.32, at 8e48e2b). Every term's
    slope at 0 is nonzero (-2 / +2 / -2), so as a -> 0 LS# degenerates to a linear loss, as the
    paper's table needs.

    Psi on the real term (choice).
    """

    real_term, fake_term, gen_term = Square(-1.0), Square(+1.0), Square(-1.0)


@register_loss("wgan")
class WassersteinLoss(DomainScaledLoss):
    """WGAN (Table 1): D: ``t`` / ``-t`` (real outputs pushed *down*); G: ``t``.

    Linear, hence exactly invariant to domain scaling; Psi (on the real term, choice) is the
    constant 1.
    """

    real_term, fake_term, gen_term = Linear(+1.0), Linear(-1.0), Linear(+1.0)


@register_loss("cos")
class CosLoss(DomainScaledLoss):
    """COS-GAN (Table 1): D: ``-cos(t - 1)`` / ``-cos(t + 1)``; G: ``-cos(t - 1)``.

    Psi on the real term (choice).
    """

    real_term, fake_term, gen_term = NegCos(-1.0), NegCos(+1.0), NegCos(-1.0)


@register_loss("exp")
class ExpLoss(DomainScaledLoss):
    """EXP-GAN (Table 1): D: ``exp(t)`` / ``exp(-t)`` (real outputs pushed down); G: ``exp(t)``.

    Overflows to inf once ``a*|t| > ~88.7`` (e.g. alpha = 1e11): left visible on purpose.
    Psi on the real term (choice).
    """

    real_term, fake_term, gen_term = Exp(+1.0), Exp(-1.0), Exp(+1.0)


@register_loss("hinge")
class HingeLoss(DomainScaledLoss):
    """Hinge loss (GraN-GAN Eq. 10 for D, Eq. 8 for G): D: ``relu(1 - t)`` / ``relu(1 + t)``;
    G: ``-t``.

    Psi on the real term (choice).
    """

    real_term, fake_term, gen_term = Hinge(-1.0), Hinge(+1.0), Linear(-1.0)


@register_loss("softhinge")
class SoftHingeLoss(DomainScaledLoss):
    """Soft hinge loss (GraN-GAN §3.1: Eq. 10 with ReLU -> softplus): D: ``softplus(1 - t)`` /
    ``softplus(1 + t)``; G: ``-t``.

    Psi on the real term (choice).
    """

    real_term, fake_term, gen_term = Softplus(-1, shift=1.0), Softplus(+1, shift=1.0), Linear(-1.0)
