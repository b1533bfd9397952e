"""Lipschitz regularizers of the discriminator: one registered class per regularizer.

Each regularizer is a subclass of :class:`Regularizer` registered under its config name with
:func:`register_regularizer`. It declares its own keys in a nested pydantic model ``Params``
(defaults, validation, ``extra="forbid"`` so a key that does not belong to it is an error) and
hooks into the train loop at four points:

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
    the Lipschitz constant the regularizer aims at (None when it has none) and float
    diagnostics for MLflow (flat names, prefixed by the regularizer's name).

Registered here (paper and equation next to each class): ``none``; ``sn`` (Eq. 1 of the Lipschitz
paper); ``gp`` (its Eq. 18, Appendix C / WGAN-GP, with the one-sided LP variant); ``r1``
(Mescheder et al.'s R1); ``gran`` (GraN-GAN Eq. 16-20); ``alr`` (ALR Eq. 15-17); ``js`` (Roth et al.
Eq. 20/28, Algorithm 1); ``clip`` (WGAN weight clipping).

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

import math
from typing import Any, ClassVar, Literal

import pydantic
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from trainables.models import d_weight_layers

__all__ = [
    "REGULARIZERS",
    "AdversarialLipschitz",
    "GradientNormalized",
    "GradientPenalty",
    "JSRegularizer",
    "NoRegularizer",
    "R1Penalty",
    "Regularizer",
    "SpectralNorm",
    "WeightClipping",
    "get_regularizer",
    "register_regularizer",
    "regularizer_keys",
    "sn_layers",
]


class _NoParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Regularizer:
    """Base class: a regularizer that does nothing. Subclass, set ``Params``, register."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[pydantic.BaseModel]] = _NoParams

    def __init__(self, params: pydantic.BaseModel | None = None):
        if params is None:
            params = self.Params()
        if not isinstance(params, self.Params):
            raise TypeError(
                f"{type(self).__name__} expects {self.Params.__name__}, got {type(params).__name__}"
            )
        self.params = params

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The config keys that belong to this regularizer."""
        return tuple(cls.Params.model_fields)

    def apply(self, D: nn.Module) -> nn.Module:
        return D

    def penalty(
        self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, step: int, total_steps: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return real.new_zeros(()), {}

    def after_d_step(self, D: nn.Module) -> None:
        return None

    def lipschitz_k(self, D: nn.Module) -> float | None:
        return None

    def metrics(self, D: nn.Module) -> dict[str, float]:
        return {}

    def __repr__(self) -> str:
        kv = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({kv})"


REGULARIZERS: dict[str, type[Regularizer]] = {}


def register_regularizer(name: str):
    """Class decorator: register a :class:`Regularizer` subclass under ``name`` (sets ``cls.name``)."""

    def deco(cls: type[Regularizer]) -> type[Regularizer]:
        if not (isinstance(cls, type) and issubclass(cls, Regularizer)):
            raise TypeError(f"{cls!r} is not a Regularizer subclass")
        if name in REGULARIZERS:
            raise ValueError(f"regularizer {name!r} is already registered ({REGULARIZERS[name]!r})")
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, pydantic.BaseModel)):
            raise TypeError(f"{cls.__name__}.Params must be a pydantic BaseModel subclass")
        if cls.Params.model_config.get("extra") != "forbid":
            raise TypeError(f"{cls.__name__}.Params must set model_config extra='forbid'")
        cls.name = name
        REGULARIZERS[name] = cls
        return cls

    return deco


def get_regularizer(name: str, **params: Any) -> Regularizer:
    """Instantiate the regularizer registered as ``name`` with its keys.

    Raises ValueError naming an unknown regularizer, and pydantic's ValidationError (a ValueError
    subclass) naming each bad or foreign key.
    """
    try:
        cls = REGULARIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown regularizer {name!r}; expected one of {', '.join(REGULARIZERS)}"
        ) from None
    return cls(cls.Params(**params))


def regularizer_keys() -> dict[str, tuple[str, ...]]:
    """Regularizer name → the config keys that belong to it (for config validation)."""
    return {name: cls.param_names() for name, cls in REGULARIZERS.items()}


# --------------------------------------------------------------------------------------- none


@register_regularizer("none")
class NoRegularizer(Regularizer):
    """No Lipschitz regularization."""


# ----------------------------------------------------------------------------------------- sn


class _Scale(nn.Module):
    """Parametrization W ↦ k·W, chained after torch's spectral norm: W̄ = k·W/σ(W) (Eq. 1).

    ``k`` is a plain attribute, not a buffer: it is configuration, so it stays out of the
    state dict and loading a state saved at another k keeps this module's k.
    """

    def __init__(self, k: float):
        super().__init__()
        self.k = float(k)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.k

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w / self.k

    def extra_repr(self) -> str:
        return f"k={self.k:g}"


def sn_layers(D: nn.Module) -> list[nn.Module]:
    """D's weight layers that carry the SN parametrization, in forward order."""
    out = []
    for m in d_weight_layers(D):
        if parametrize.is_parametrized(m, "weight") and any(
            type(p).__name__ == "_SpectralNorm" for p in m.parametrizations.weight
        ):
            out.append(m)
    return out


def _effective_weight(m: nn.Module) -> torch.Tensor:
    """The weight the layer's forward uses (k·W/σ̂(W)), without advancing the power iteration.

    In train mode, evaluating torch's spectral-norm parametrization runs a power-iteration step
    and updates u, v in place; for a read-only diagnostic we evaluate it in eval mode (the stored
    u, v give σ̂ = uᵀ W v) and restore the modes afterwards.
    """
    plist = m.parametrizations.weight
    modes = [p.training for p in plist]
    try:
        for p in plist:
            p.train(False)
        with torch.no_grad():
            return m.weight.detach().clone()
    finally:
        for p, mode in zip(plist, modes):
            p.train(mode)


@register_regularizer("sn")
class SpectralNorm(Regularizer):
    """Spectral normalization scaled by k_SN (Eq. 1): W̄ = k_SN · W / σ(W) on every D layer.

    Built on ``torch.nn.utils.parametrizations.spectral_norm`` (σ estimated by one power
    iteration per forward in train mode, as Miyato et al.; u, v frozen in eval mode) followed by a
    second registered parametrization multiplying by k_SN. The trainable parameter is the
    unnormalized W (``parametrizations.weight.original``).

    σ is that of the weight reshaped to a matrix (out_channels, in_channels·kh·kw), which is what
    torch (and Miyato et al.) normalize — not the operator norm of the convolution. So
    K ≈ k_SN^n (n = number of SN layers; Eq. 3 writes (k_SN)^{N+1}) is the paper's approximation,
    not a certified bound. With bias-free layers and LeakyReLU the scaling itself is exact:
    D at k_SN equals k_SN^n · D at 1 (Eq. 3), and for a linear loss every gradient carries k_SN^n.

    Refuses a D with BatchNorm (d_norm="bn" is Appendix C's GP discriminator): BN undoes the
    per-layer scale and breaks Eq. 3.
    """

    class Params(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
        k_sn: float = pydantic.Field(
            1.0, gt=0, allow_inf_nan=False, description="k_SN of Eq. 1; K ≈ k_SN^n"
        )

    def apply(self, D: nn.Module) -> nn.Module:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules()):
            raise ValueError(
                "regularizer 'sn' cannot be combined with d_norm='bn' (BatchNorm in D breaks "
                "K ≈ k_sn^n; Appendix C uses BN only with the gradient penalty)"
            )
        layers = d_weight_layers(D)
        if not layers:
            raise ValueError("regularizer 'sn': D has no conv/linear layers")
        if sn_layers(D) or any(parametrize.is_parametrized(m, "weight") for m in layers):
            raise ValueError("regularizer 'sn': D is already parametrized (applied twice?)")
        for m in layers:
            spectral_norm(m, name="weight", n_power_iterations=1)
            parametrize.register_parametrization(m, "weight", _Scale(self.params.k_sn))
        return D

    def n_layers(self, D: nn.Module) -> int:
        """n: the number of SN layers (D's weight layers, whether or not SN is applied yet)."""
        return len(sn_layers(D)) or len(d_weight_layers(D))

    def lipschitz_k(self, D: nn.Module) -> float:
        try:
            return self.params.k_sn ** self.n_layers(D)
        except OverflowError:
            return math.inf

    def metrics(self, D: nn.Module) -> dict[str, float]:
        """sn_sigma_<i>: σ(W̄) of layer i, computed exactly (SVD of the reshaped effective weight,
        with σ̂ from the stored u, v); sn_sigma_product: their product (≈ k_SN^n once the power
        iteration has converged); sn_k_product: k_SN^n, the target."""
        out: dict[str, float] = {}
        log_prod = 0.0
        for i, m in enumerate(sn_layers(D)):
            w = _effective_weight(m)
            s = float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1).float(), ord=2))
            out[f"sn_sigma_{i}"] = s
            log_prod += math.log(s) if s > 0 else -math.inf
        out["sn_sigma_product"] = math.exp(log_prod) if log_prod < 709 else math.inf
        out["sn_k_product"] = self.lipschitz_k(D)
        return out


# ------------------------------------------------------------------------------------ helpers


def _f32(t: torch.Tensor) -> torch.Tensor:
    """Promote half / bfloat16 to float32 (penalties are computed in float32); keep float64."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _has_bn(D: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """‖t_i‖₂ over all but the batch dimension, in float32 (safe backward at 0: gradient 0)."""
    return torch.linalg.vector_norm(_f32(t).flatten(1), dim=1)


def _per_sample_sq(t: torch.Tensor) -> torch.Tensor:
    """‖t_i‖₂² over all but the batch dimension, in float32 (smooth everywhere)."""
    return _f32(t).flatten(1).pow(2).sum(dim=1)


def _output_and_input_grad(D: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f = D(x) (shape (B,)) and ∇ₓf per sample, differentiable w.r.t. D's parameters
    (``create_graph=True``): the double backprop every gradient penalty needs. ``x`` is detached
    first: a penalty is a function of D only (the trainer passes the fake batch detached)."""
    x = x.detach().requires_grad_(True)
    f = D(x).reshape(x.shape[0])
    (grad,) = torch.autograd.grad(f.sum(), x, create_graph=True)
    return f, grad


def _pair_output_and_input_grad(D: nn.Module, real: torch.Tensor, fake: torch.Tensor):
    """(f_real, ∇f_real, f_fake, ∇f_fake): one forward of the concatenated batch when D has no
    BatchNorm (samples independent, as the trainer does), two forwards with BN (the trainer's
    convention too, so real and fake are normalised by their own batch statistics)."""
    if _has_bn(D):
        fr, gr = _output_and_input_grad(D, real)
        ff, gf = _output_and_input_grad(D, fake)
        return fr, gr, ff, gf
    b = real.shape[0]
    f, g = _output_and_input_grad(D, torch.cat([real.detach(), fake.detach()]))
    return f[:b], g[:b], f[b:], g[b:]


def _check_pair(name: str, real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape != fake.shape:
        raise ValueError(
            f"regularizer {name!r}: real and fake batches must have the same shape, got "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )


def _floats(stash: dict[str, torch.Tensor]) -> dict[str, float]:
    """Detached diagnostics → floats, one device sync for all of them."""
    if not stash:
        return {}
    keys = list(stash)
    vals = torch.stack([stash[k].detach().double().reshape(()) for k in keys]).cpu().tolist()
    return dict(zip(keys, vals))


def _positive_finite(**kw):
    return pydantic.Field(gt=0, allow_inf_nan=False, **kw)


# ----------------------------------------------------------------------------------------- gp


@register_regularizer("gp")
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
    relation between k_GP and K; it is the nominal target).
    """

    class Params(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
        k_gp: float = pydantic.Field(
            1.0, ge=0, allow_inf_nan=False,
            description="target gradient norm k_GP of Eq. 18 (0 = zero-centred)",
        )
        gp_lambda: float = _positive_finite(default=10.0, description="λ of Eq. 18")
        gp_mode: Literal["two-sided", "one-sided"] = pydantic.Field(
            "two-sided", description="one-sided penalizes only ‖∇f‖ > k_GP (LP)"
        )

    def __init__(self, params: pydantic.BaseModel | None = None):
        super().__init__(params)
        self._stash: dict[str, torch.Tensor] = {}

    def interpolates(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """x̂ = u·real + (1 − u)·fake with u = torch.rand(B, 1, …, 1) drawn from the global RNG on
        the batch's device (one draw per sample)."""
        _check_pair("gp", real, fake)
        shape = (real.shape[0],) + (1,) * (real.dim() - 1)
        u = torch.rand(shape, device=real.device, dtype=real.dtype)
        return u * real.detach() + (1 - u) * fake.detach()

    def penalty_at(self, D: nn.Module, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penalty, ‖∇f(x̂)‖ per sample) at given points; the penalty is differentiable in D."""
        p = self.params
        _, grad = _output_and_input_grad(D, x_hat)
        if p.k_gp == 0:
            sq = _per_sample_sq(grad)
            norms = sq.detach().sqrt()
            per_sample = sq  # (‖∇f‖ − 0)² and (‖∇f‖ − 0)₊² alike
        else:
            n = _per_sample_norm(grad)
            norms = n.detach()
            dev = n - p.k_gp
            if p.gp_mode == "one-sided":
                dev = torch.relu(dev)
            per_sample = dev * dev
        return p.gp_lambda * per_sample.mean(), norms

    def penalty(self, D, real, fake, *, step, total_steps):
        pen, norms = self.penalty_at(D, self.interpolates(real, fake))
        self._stash = {"gp_grad_norm_mean": norms.mean(), "gp_grad_norm_max": norms.max()}
        return pen, {}

    def lipschitz_k(self, D: nn.Module) -> float:
        return self.params.k_gp

    def metrics(self, D: nn.Module) -> dict[str, float]:
        """gp_grad_norm_mean / _max: ‖∇f‖ at the last D step's interpolates."""
        return _floats(self._stash)


# ----------------------------------------------------------------------------------------- r1


@register_regularizer("r1")
class R1Penalty(Regularizer):
    """R1 (Mescheder et al., 2018, "Which training methods for GANs actually converge?"):
    γ/2 · E_{x~P_real}‖∇ₓf(x)‖², the zero-centred penalty on real data only.

    Default γ = 10: the value Mescheder et al. use for their CelebA-HQ/LSUN experiments (that
    paper is not in papers/; none of the four papers fixes an R1 γ). No target K
    (``lipschitz_k`` is None): R1 pushes the gradient at the data to 0, it does not aim at a K.
    """

    class Params(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
        r1_gamma: float = _positive_finite(default=10.0, description="γ of γ/2·E‖∇f(x_real)‖²")

    def __init__(self, params: pydantic.BaseModel | None = None):
        super().__init__(params)
        self._stash: dict[str, torch.Tensor] = {}

    def penalty(self, D, real, fake, *, step, total_steps):
        _, grad = _output_and_input_grad(D, real)
        sq = _per_sample_sq(grad)
        self._stash = {"r1_grad_norm_mean": sq.detach().sqrt().mean()}
        return 0.5 * self.params.r1_gamma * sq.mean(), {}

    def metrics(self, D: nn.Module) -> dict[str, float]:
        """r1_grad_norm_mean: mean ‖∇f‖ at the last D step's real batch."""
        return _floats(self._stash)


# --------------------------------------------------------------------------------------- gran


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
        n = _per_sample_norm(grad)
        if not outer:
            f, n = f.detach(), n.detach()
        g = self.k * _f32(f) * n / (n * n + self.eps)
        if self.training and any(p.requires_grad for p in self.f.parameters()):
            # a D step: keep ‖∇f‖ for the metrics (no sync here)
            nd = n.detach()
            self.last = {"norm": nd, "slope": self.k * nd * nd / (nd * nd + self.eps)}
        return g


@register_regularizer("gran")
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

    class Params(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
        gran_k: float = _positive_finite(default=1.0, description="K = 1/τ of Eq. 20")
        gran_eps: float = _positive_finite(default=1e-8, description="ε of Eq. 16")

    def apply(self, D: nn.Module) -> nn.Module:
        if isinstance(D, GraNDiscriminator):
            raise ValueError(  # noqa: TRY004 - a misuse, reported like sn's double apply
                "regularizer 'gran': D is already gradient-normalized (applied twice?)"
            )
        if _has_bn(D):
            raise ValueError(
                "regularizer 'gran' cannot be combined with d_norm='bn' (GraN normalizes by the "
                "per-sample input gradient, which BatchNorm's batch statistics couple)"
            )
        return GraNDiscriminator(D, self.params.gran_k, self.params.gran_eps)

    def lipschitz_k(self, D: nn.Module) -> float:
        return self.params.gran_k

    def metrics(self, D: nn.Module) -> dict[str, float]:
        """gran_f_grad_norm_mean / _min: ‖∇f‖ of the unnormalized f at the last D step;
        gran_slope_min / _mean: K·‖∇f‖²/(‖∇f‖² + ε), i.e. ‖∇g‖ by Eq. 19 (≈ K when ε is
        negligible)."""
        last = getattr(D, "last", None) or {}
        if not last:
            return {}
        n, s = last["norm"], last["slope"]
        return _floats({"gran_f_grad_norm_mean": n.mean(), "gran_f_grad_norm_min": n.min(),
                        "gran_slope_mean": s.mean(), "gran_slope_min": s.min()})


# ---------------------------------------------------------------------------------------- alr


@register_regularizer("alr")
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

    class Params(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
        alr_k: float = _positive_finite(default=1.0, description="target Lipschitz constant K")
        alr_lambda: float = _positive_finite(default=100.0, description="λ of Eq. 17")
        alr_xi: float = _positive_finite(default=10.0, description="ξ of the power iteration")
        alr_eps_min: float = _positive_finite(default=0.1, description="low end of P_ε = U[min, max]")
        alr_eps_max: float = _positive_finite(default=10.0, description="high end of P_ε")
        alr_iters: int = pydantic.Field(1, ge=1, le=100, description="power iterations k")

        @pydantic.field_validator("alr_eps_max")
        @classmethod
        def _eps_order(cls, v: float, info: pydantic.ValidationInfo) -> float:
            lo = info.data.get("alr_eps_min")
            if lo is not None and v < lo:
                raise ValueError(f"must be >= alr_eps_min ({lo})")
            return v

    def __init__(self, params: pydantic.BaseModel | None = None):
        super().__init__(params)
        self._stash: dict[str, torch.Tensor] = {}

    @staticmethod
    def _unit(t: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
        shape = (t.shape[0],) + (1,) * (t.dim() - 1)
        n = _per_sample_norm(t).reshape(shape).to(t.dtype)
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
        if _has_bn(D):
            fx, fxr = D(x).reshape(b), D(x + r).reshape(b)
        else:
            out = D(torch.cat([x, x + r])).reshape(2 * b)
            fx, fxr = out[:b], out[b:]
        return (_f32(fx) - _f32(fxr)).abs() / _per_sample_norm(r)

    def penalty(self, D, real, fake, *, step, total_steps):
        _check_pair("alr", real, fake)
        p = self.params
        b = real.shape[0]
        if _has_bn(D):  # real and fake normalised by their own batch statistics
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

    def lipschitz_k(self, D: nn.Module) -> float:
        return self.params.alr_k

    def metrics(self, D: nn.Module) -> dict[str, float]:
        return _floats(self._stash)


# ----------------------------------------------------------------------------------------- js


@register_regularizer("js")
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

    class Params(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
        js_gamma0: float = _positive_finite(default=2.0, description="γ0 of Algorithm 1")
        js_decay: float = pydantic.Field(
            0.01, gt=0, le=1, allow_inf_nan=False,
            description="annealing rate α of Algorithm 1: γ = γ0·α^(t/T); 1 = no annealing",
        )

    def __init__(self, params: pydantic.BaseModel | None = None):
        super().__init__(params)
        self._stash: dict[str, torch.Tensor] = {}

    def gamma(self, step: int, total_steps: int) -> float:
        """γ at the trainer's 0-based ``step`` (Algorithm 1's t = step + 1) of ``total_steps``."""
        t = min(step + 1, total_steps)
        return self.params.js_gamma0 * self.params.js_decay ** (t / total_steps)

    @staticmethod
    def omega(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Ω_JS of Eq. 28 (differentiable in D)."""
        fr, gr, ff, gf = _pair_output_and_input_grad(D, real, fake)
        w_real = torch.sigmoid(-_f32(fr)) ** 2  # (1 − σ(f))², computed stably
        w_fake = torch.sigmoid(_f32(ff)) ** 2
        return (w_real * _per_sample_sq(gr)).mean() + (w_fake * _per_sample_sq(gf)).mean()

    def penalty(self, D, real, fake, *, step, total_steps):
        _check_pair("js", real, fake)
        gamma = self.gamma(step, total_steps)
        om = self.omega(D, real, fake)
        self._stash = {"js_omega": om.detach()}
        return 0.5 * gamma * om, {"js_gamma": gamma}

    def metrics(self, D: nn.Module) -> dict[str, float]:
        return _floats(self._stash)


# --------------------------------------------------------------------------------------- clip


@register_regularizer("clip")
class WeightClipping(Regularizer):
    """WGAN weight clipping (Arjovsky et al., 2017): every D parameter clamped to [−c, c] after
    each D step, and once in ``apply`` so training starts inside the box. Every parameter, BN
    scale/shift included, as in the WGAN reference code. Default c = 0.01 (WGAN's).
    No target K (``lipschitz_k`` None: c bounds K only through the architecture)."""

    class Params(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
        clip_c: float = _positive_finite(default=0.01, description="clipping box [−c, c]")

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
