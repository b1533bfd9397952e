"""The regularizer interface and registry, and the helpers the penalties share.

:class:`Regularizer` (hooks ``apply``, ``penalty``, ``after_d_step``, ``lipschitz_k``, ``metrics``;
see :mod:`trainables.gan.regularizers`, where the regularizers are registered) and its batched form
for a population pack, :class:`PackForm`; the registry :data:`REGULARIZERS` with
:func:`register_regularizer` (against the torch-free declarations of :mod:`trainables.params`,
whose :class:`RegularizerParams` and :func:`keys_by_regularizer` are importable from here),
:func:`get_regularizer`; then the input-gradient helpers (double backprop, per-sample norms in
float32) of the gradient penalties.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import pydantic
import torch
from torch import nn

from trainables import names
from trainables.params import (  # noqa: F401 - importable from here
    REGULARIZER_PARAMS, RegularizerParams, keys_by_regularizer, positive_finite,
)
from trainables.registry import claim

__all__ = [
    "REGULARIZERS",
    "PackForm",
    "Regularizer",
    "RegularizerParams",
    "check_pair",
    "f32",
    "get_regularizer",
    "has_bn",
    "output_and_input_grad",
    "pair_output_and_input_grad",
    "per_sample_norm",
    "per_sample_sq",
    "positive_finite",
    "keys_by_regularizer",
    "register_regularizer",
    "to_floats",
]


class PackForm:
    """A regularizer's batched form for a pack of P members (``trainables.pack.population``), built by
    :meth:`Regularizer.pack` from the members' own regularizers (their ``params`` may differ).

    ``penalty(D, real, fake, u)`` is the D-step penalty of every member at once on the batched D
    (inputs member-major, (P, B, …); ``u`` the per-sample uniform draws of the step when
    :attr:`draws_u`, else None): a (P,) tensor, or None for a regularizer without a penalty
    term. It leaves the detached (P,) diagnostics of the step in :attr:`stash` (metric name →
    tensor); :meth:`member_stash` is member i's share, the stash its own trial would hold."""

    #: Whether the pack's D step draws per-sample uniform weights (shape (B, 1, …, 1) per member,
    #: from the member's stand-in for torch's global RNG) and passes them to ``penalty``.
    draws_u: ClassVar[bool] = False

    def __init__(self, members: Sequence["Regularizer"], device: torch.device):
        self.members = list(members)
        self.device = device
        self.stash: dict[str, torch.Tensor] = {}

    def penalty(self, D, real: torch.Tensor, fake: torch.Tensor,
                u: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def member_stash(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's diagnostics of the last D step (what its own ``penalty`` stashes)."""
        return {k: v[i] for k, v in self.stash.items()}


class Regularizer:
    """Base class: a regularizer that does nothing. Subclass, set ``Params``, register."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[pydantic.BaseModel]] = RegularizerParams
    #: The batched form of a pack (:class:`PackForm` or a subclass), or None when the
    #: regularizer runs one config per trial (:attr:`packs` is derived from it).
    Pack: ClassVar[type[PackForm] | None] = None
    #: The key of ``Params`` holding the Lipschitz target K (``lipschitz_k`` reads it; run names
    #: show it), or None: taken from the declared ``Params`` when the class is registered.
    k_key: ClassVar[str | None] = None

    def __init__(self, params: pydantic.BaseModel | None = None):
        if params is None:
            params = self.Params()
        if not isinstance(params, self.Params):
            raise TypeError(
                f"{type(self).__name__} expects {self.Params.__name__}, got {type(params).__name__}"
            )
        self.params = params
        #: Detached diagnostics of the last D step (tensors: no device sync in ``penalty``),
        #: turned into floats by ``metrics``.
        self._stash: dict[str, torch.Tensor] = {}

    @classmethod
    def packs(cls) -> bool:
        """Whether a population pack can batch this regularizer (it has a :attr:`Pack` form)."""
        return cls.Pack is not None

    @classmethod
    def pack(cls, members: Sequence["Regularizer"], device: torch.device) -> PackForm:
        """The batched form for a pack of ``members`` (each one an instance of this class)."""
        if cls.Pack is None:
            raise ValueError(f"regularizer {cls.name!r} runs one config per trial (no pack form)")
        if any(type(m) is not cls for m in members):
            raise TypeError(f"{cls.__name__}.pack: every member must be a {cls.__name__}")
        return cls.Pack(members, device)

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
        """The K the regularizer aims at: the value of its ``k_key`` (None without one)."""
        return None if self.k_key is None else getattr(self.params, self.k_key)

    def metrics(self, D: nn.Module) -> dict[str, float]:
        """The stashed diagnostics of the last D step, as floats (one device sync)."""
        return to_floats(self._stash)

    def __repr__(self) -> str:
        kv = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({kv})"


REGULARIZERS: dict[str, type[Regularizer]] = {}


def register_regularizer(name: str):
    """Class decorator: register a :class:`Regularizer` subclass under ``name`` (sets ``cls.name``)
    against its declaration in ``trainables.params``: ``cls.Params`` must be the ``Params``
    declared as ``name`` there, and the class has a ``Pack`` form exactly when that declares
    ``packs``. ``cls.k_key`` is the declared one."""

    def deco(cls: type[Regularizer]) -> type[Regularizer]:
        if not (isinstance(cls, type) and issubclass(cls, Regularizer)):
            raise TypeError(f"{cls!r} is not a Regularizer subclass")
        claim(REGULARIZERS, names.REGULARIZER, name)
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, pydantic.BaseModel)):
            raise TypeError(f"{cls.__name__}.Params must be a pydantic BaseModel subclass")
        if cls.Params.model_config.get("extra") != "forbid":
            raise TypeError(f"{cls.__name__}.Params must set model_config extra='forbid'")
        k_key = cls.k_key or getattr(cls.Params, "k_key", None)
        if k_key is not None and k_key not in cls.Params.model_fields:
            raise TypeError(f"{cls.__name__}.k_key {k_key!r} is not one of its Params keys")
        declared = REGULARIZER_PARAMS.get(name)
        if cls.Params is not declared:
            raise TypeError(f"{cls.__name__}.Params must be the Params declared as {name!r} in "
                            "trainables.params (declare_regularizer)")
        if declared.packs != cls.packs():
            raise TypeError(f"{cls.__name__}: Params.packs is {declared.packs} but the class "
                            f"{'has' if cls.packs() else 'has no'} Pack form")
        if cls.k_key not in (None, declared.k_key):
            raise TypeError(f"{cls.__name__}.k_key {cls.k_key!r} is not the declared "
                            f"{declared.k_key!r}")
        cls.name, cls.k_key = name, declared.k_key
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


# -------------------------------------------------------------------------------------- helpers


def f32(t: torch.Tensor) -> torch.Tensor:
    """Promote half / bfloat16 to float32 (penalties are computed in float32); keep float64."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def has_bn(D: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """‖t_i‖₂ over all but the batch dimension, in float32 (safe backward at 0: gradient 0)."""
    return torch.linalg.vector_norm(f32(t).flatten(1), dim=1)


def per_sample_sq(t: torch.Tensor) -> torch.Tensor:
    """‖t_i‖₂² over all but the batch dimension, in float32 (smooth everywhere)."""
    return f32(t).flatten(1).pow(2).sum(dim=1)


def output_and_input_grad(D: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f = D(x) (shape (B,)) and ∇ₓf per sample, differentiable w.r.t. D's parameters
    (``create_graph=True``): the double backprop every gradient penalty needs. ``x`` is detached
    first: a penalty is a function of D only (the trainer passes the fake batch detached)."""
    x = x.detach().requires_grad_(True)
    f = D(x).reshape(x.shape[0])
    (grad,) = torch.autograd.grad(f.sum(), x, create_graph=True)
    return f, grad


def pair_output_and_input_grad(D: nn.Module, real: torch.Tensor, fake: torch.Tensor):
    """(f_real, ∇f_real, f_fake, ∇f_fake): one forward of the concatenated batch when D has no
    BatchNorm (samples independent, as the trainer does), two forwards with BN (the trainer's
    convention too, so real and fake are normalised by their own batch statistics)."""
    if has_bn(D):
        fr, gr = output_and_input_grad(D, real)
        ff, gf = output_and_input_grad(D, fake)
        return fr, gr, ff, gf
    b = real.shape[0]
    f, g = output_and_input_grad(D, torch.cat([real.detach(), fake.detach()]))
    return f[:b], g[:b], f[b:], g[b:]


def check_pair(name: str, real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape != fake.shape:
        raise ValueError(
            f"regularizer {name!r}: real and fake batches must have the same shape, got "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )


def to_floats(stash: dict[str, torch.Tensor]) -> dict[str, float]:
    """Detached diagnostics → floats, one device sync for all of them."""
    if not stash:
        return {}
    keys = list(stash)
    vals = torch.stack([stash[k].detach().double().reshape(()) for k in keys]).cpu().tolist()
    return dict(zip(keys, vals))
