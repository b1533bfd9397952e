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

Registered here: ``none`` and ``sn`` (Eq. 1). Planned: gp, r1, gran, alr, js, clip.

Usage::

    reg = get_regularizer("sn", k_sn=5.0)       # ValueError on unknown name / bad or foreign key
    D = reg.apply(build_discriminator("dcgan32", channels=3))
    opt = build_optimizer("rmsprop", D.parameters(), lr=5e-5, eps=1e-8)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pydantic
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from trainables.models import d_weight_layers

__all__ = [
    "REGULARIZERS",
    "NoRegularizer",
    "Regularizer",
    "SpectralNorm",
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
