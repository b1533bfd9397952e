"""The declared choices of a trial, without torch: what a study is validated against.

One registry per kind of choice, each the only list of its names:

* :data:`REGULARIZER_PARAMS`: regularizer name → its ``Params`` (pydantic: keys, defaults,
  bounds; ``extra="forbid"``) carrying the regularizer's declarations as class variables:
  ``k_key`` (the key holding the Lipschitz target K, or None), ``packs`` (whether a population
  pack batches it) and ``capture`` ((step mode, packed) → None where that captured mode captures
  its D step, else the reason it cannot; a pair not listed is refused);
* :data:`OPTIMIZER_PARAMS`: optimizer name → its ``Params`` (the one home of the optimizer
  defaults: RMSprop's ρ 0.99, Adam's β 0.5 / 0.999);
* :data:`LOSS_NAMES`, :data:`ARCH_RESOLUTION`, :data:`PRECISIONS`, :data:`STEP_MODES`.

The torch implementations register against these (``trainables.gan.regularizers``,
``trainables.gan.losses``: a name not declared here is refused there), so validating a trial
(``trainables.config``) imports no torch. A field marked :func:`member_field` may differ
between the members of a population pack (``trainables.pack.packing.MEMBER_KEYS``).

Adding a regularizer: its ``Params`` here (:func:`declare_regularizer`), its class in one
module registered under the same name (docs/design.md, "Adding a regularizer").
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pydantic

from trainables import names
from trainables.registry import claim

__all__ = [
    "ARCH_RESOLUTION", "CAPTURED_MODES", "LOSS_NAMES", "OPTIMIZER_PARAMS", "PRECISIONS",
    "REGULARIZER_PARAMS", "STEP_MODES", "OptimizerParams", "RegularizerParams",
    "declare_regularizer", "k_field", "keys_by_regularizer", "member_field", "member_keys",
    "optimizer_defaults", "positive_finite",
]

#: What ``step_mode`` resolves to (``auto`` picks one of these per device).
STEP_MODES: tuple[str, ...] = ("eager", "sync_free", "compiled", "cuda_graph")
#: Modes whose step is traced / captured: every per-step value lives in device tensors.
CAPTURED_MODES: frozenset[str] = frozenset({"compiled", "cuda_graph"})
#: The losses (Table 1 of the Lipschitz paper; hinge / soft hinge from GraN-GAN), implemented in
#: ``trainables.gan.losses``.
LOSS_NAMES: tuple[str, ...] = ("ns", "mm", "ls", "ls0", "wgan", "cos", "exp", "hinge",
                               "softhinge")
#: Architecture → the image side it makes and takes (Appendix B tables (a)/(b)), None for the
#: 2-D toys' mlp; built in ``trainables.nets.models``.
ARCH_RESOLUTION: dict[str, int | None] = {"dcgan32": 32, "dcgan64": 64, "mlp": None}
#: The values of the ``precision`` trial key and what each means (``trainables.devices``).
PRECISIONS: dict[str, str] = {
    "fp32": "full float32, TF32 off: the papers' numerics",
    "tf32": "TF32 tensor cores for float32 matmuls and cuDNN convolutions, Ampere or newer",
}


def member_field(default: Any, **kw: Any) -> Any:
    """A pydantic field that may differ between the members of a pack."""
    return pydantic.Field(default, json_schema_extra={"per_member": True}, **kw)


def k_field(default: float, *, per_member: bool, **kw: Any) -> Any:
    """The field holding a regularizer's Lipschitz target K (its ``k_key``), per member or not
    (``per_member``: for a regularizer that packs, as :func:`member_field`)."""
    return pydantic.Field(default, json_schema_extra={"per_member": per_member, "k": True}, **kw)


def _marked(model: type[pydantic.BaseModel], mark: str) -> list[str]:
    return [k for k, f in model.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get(mark)]


def member_keys(model: type[pydantic.BaseModel]) -> frozenset[str]:
    """The fields of ``model`` marked :func:`member_field` (or :func:`k_field`)."""
    return frozenset(_marked(model, "per_member"))


def positive_finite(**kw: Any) -> Any:
    return pydantic.Field(gt=0, allow_inf_nan=False, **kw)


# ---------------------------------------------------------------------------------- optimizers


class OptimizerParams(pydantic.BaseModel):
    """Base of an optimizer's keys: frozen, a foreign key is an error, strict numbers (a bool or
    a string is not a rate)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)


class RMSpropParams(OptimizerParams):
    """torch RMSprop without momentum (the paper's optimizer, Appendix B)."""

    rmsprop_decay: float = member_field(0.99, ge=0, lt=1, allow_inf_nan=False,
                                        description="ρ (torch's alpha)")


class AdamParams(OptimizerParams):
    """torch Adam; β₁ 0.5 as the DCGAN papers."""

    beta1: float = member_field(0.5, ge=0, lt=1, allow_inf_nan=False, description="β₁")
    beta2: float = member_field(0.999, ge=0, lt=1, allow_inf_nan=False, description="β₂")


OPTIMIZER_PARAMS: dict[str, type[OptimizerParams]] = {"rmsprop": RMSpropParams,
                                                      "adam": AdamParams}


def optimizer_defaults(name: str) -> dict[str, float]:
    """The optimizer's keys with their defaults."""
    return OPTIMIZER_PARAMS[name]().model_dump()


# -------------------------------------------------------------------------------- regularizers


class RegularizerParams(pydantic.BaseModel):
    """Base of every regularizer's ``Params``: frozen, a key that does not belong to the
    regularizer is an error (``extra="forbid"``). Subclass it, declare the keys as fields and
    the class variables below, and :func:`declare_regularizer` it."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str] = ""
    #: The key holding the Lipschitz target K (run names show it): the field declared with
    #: :func:`k_field`, or None (set by :func:`declare_regularizer`).
    k_key: ClassVar[str | None] = None
    #: Whether a population pack batches the regularizer (its class then has a ``Pack`` form).
    packs: ClassVar[bool] = False
    #: (captured step mode, packed) → None where the mode captures the D step, else why not.
    capture: ClassVar[dict[tuple[str, bool], str | None]] = {}


#: Regularizer name → its declared ``Params``, in the order error messages list them.
REGULARIZER_PARAMS: dict[str, type[RegularizerParams]] = {}


def keys_by_regularizer() -> dict[str, tuple[str, ...]]:
    """Regularizer name → the trial keys that belong to it."""
    return {name: tuple(cls.model_fields) for name, cls in REGULARIZER_PARAMS.items()}


def declare_regularizer(name: str):
    """Class decorator: declare a :class:`RegularizerParams` subclass as regularizer ``name``."""

    def deco(cls: type[RegularizerParams]) -> type[RegularizerParams]:
        claim(REGULARIZER_PARAMS, "regularizer Params", name)
        if not (isinstance(cls, type) and issubclass(cls, RegularizerParams)):
            raise TypeError(f"regularizer {name!r}: Params must subclass RegularizerParams")
        ks = _marked(cls, "k")
        if len(ks) > 1:
            raise TypeError(f"regularizer {name!r}: one k_field at most, got {ks}")
        bad = [k for k in cls.capture if k[0] not in CAPTURED_MODES or not isinstance(k[1], bool)
               or (k[1] and not cls.packs)]
        if bad:
            raise TypeError(f"regularizer {name!r}: capture keys {bad} are not (captured mode, "
                            "packed) pairs of a regularizer that packs")
        cls.name, cls.k_key = name, (ks[0] if ks else None)
        REGULARIZER_PARAMS[name] = cls
        return cls

    return deco


_DOUBLE_BACKWARD = ("its penalty is a double backward (autograd.grad with create_graph=True), "
                    "which torch.compile's AOTAutograd does not support (pytorch/pytorch#91469)")
#: A plain forward / backward / optimizer update: captured by both modes, alone and packed.
_PLAIN = {(mode, packed): None for mode in ("compiled", "cuda_graph") for packed in (False, True)}


@declare_regularizer("none")
class NoParams(RegularizerParams):
    """No Lipschitz regularization."""

    packs = True
    capture = _PLAIN


@declare_regularizer("sn")
class SNParams(RegularizerParams):
    """Spectral normalization scaled by k_SN (Eq. 1): K ≈ k_SN^n for n layers (Eq. 3)."""

    packs = True
    capture = _PLAIN
    k_sn: float = k_field(1.0, per_member=True, gt=0, allow_inf_nan=False,
                          description="k_SN of Eq. 1; K ≈ k_SN^n")


@declare_regularizer("gp")
class GPParams(RegularizerParams):
    """Gradient penalty (Eq. 18, Appendix C; WGAN-GP), one-sided = the LP penalty."""

    packs = True
    capture = {
        ("compiled", False): _DOUBLE_BACKWARD,
        ("cuda_graph", False): (
            "its interpolation weights are drawn from torch's global RNG inside the step; the "
            "single-trial graph fills only the real batch and z from the trial's generators"),
        ("compiled", True): _DOUBLE_BACKWARD,
        ("cuda_graph", True): None,  # a pack draws the weights outside, into static inputs
    }
    k_gp: float = k_field(1.0, per_member=True, ge=0, allow_inf_nan=False,
                          description="target gradient norm k_GP of Eq. 18 (0 = zero-centred)")
    gp_lambda: float = member_field(10.0, gt=0, allow_inf_nan=False, description="λ of Eq. 18")
    gp_mode: Literal["two-sided", "one-sided"] = pydantic.Field(
        "two-sided", description="one-sided penalizes only ‖∇f‖ > k_GP (LP)")


@declare_regularizer("r1")
class R1Params(RegularizerParams):
    """R1 (Mescheder et al. 2018): γ/2·E‖∇f(x_real)‖²."""

    capture = {("compiled", False): _DOUBLE_BACKWARD,
               ("cuda_graph", False): "its double backward is not part of the captured "
                                      "single-trial step"}
    r1_gamma: float = positive_finite(default=10.0, description="γ of γ/2·E‖∇f(x_real)‖²")


@declare_regularizer("gran")
class GraNParams(RegularizerParams):
    """Gradient normalization (GraN-GAN Eq. 16-20)."""

    capture = {
        ("compiled", False): (
            "its D is a double backward (the input gradient with create_graph=True inside the "
            "forward), which torch.compile's AOTAutograd does not support (pytorch/pytorch#91469)"),
        ("cuda_graph", False): "its D is a double backward, not part of the captured "
                               "single-trial step",
    }
    gran_k: float = k_field(1.0, per_member=False, gt=0, allow_inf_nan=False,
                            description="K = 1/τ of Eq. 20")
    gran_eps: float = positive_finite(default=1e-8, description="ε of Eq. 16")


@declare_regularizer("alr")
class ALRParams(RegularizerParams):
    """Adversarial Lipschitz penalty (ALR paper Eq. 15-17); defaults WGAN-ALP on CIFAR-10."""

    capture = {
        ("compiled", False): (
            "its power iteration calls torch.autograd.grad inside the step, which dynamo does not "
            "trace (graph breaks cut the penalty into about ten graphs)"),
        ("cuda_graph", False): (
            "it draws its directions and ε from torch's global RNG inside the step and runs a "
            "power iteration; the graph fills only the real batch and z"),
    }
    alr_k: float = k_field(1.0, per_member=False, gt=0, allow_inf_nan=False,
                           description="target Lipschitz constant K")
    alr_lambda: float = positive_finite(default=100.0, description="λ of Eq. 17")
    alr_xi: float = positive_finite(default=10.0, description="ξ of the power iteration")
    alr_eps_min: float = positive_finite(default=0.1, description="low end of P_ε = U[min, max]")
    alr_eps_max: float = positive_finite(default=10.0, description="high end of P_ε")
    alr_iters: int = pydantic.Field(1, ge=1, le=100, description="power iterations k")

    @pydantic.field_validator(names.ALR_EPS_MAX)
    @classmethod
    def _eps_order(cls, v: float, info: pydantic.ValidationInfo) -> float:
        lo = info.data.get(names.ALR_EPS_MIN)
        if lo is not None and v < lo:
            raise ValueError(f"must be >= alr_eps_min ({lo})")
        return v


@declare_regularizer("js")
class JSParams(RegularizerParams):
    """Roth et al.'s JS regularizer (Eq. 20/28) annealed as Algorithm 1."""

    capture = {
        ("compiled", False): _DOUBLE_BACKWARD,
        ("cuda_graph", False): ("its weight γ changes every step as a Python number, which a "
                                "captured graph would freeze at the capture step"),
    }
    js_gamma0: float = positive_finite(default=2.0, description="γ0 of Algorithm 1")
    js_decay: float = pydantic.Field(
        0.01, gt=0, le=1, allow_inf_nan=False,
        description="annealing rate α of Algorithm 1: γ = γ0·α^(t/T); 1 = no annealing")


@declare_regularizer("clip")
class ClipParams(RegularizerParams):
    """WGAN weight clipping to [−c, c] (Arjovsky et al. 2017)."""

    capture = {("compiled", False): None, ("cuda_graph", False): None}  # an in-place clamp
    clip_c: float = positive_finite(default=0.01, description="clipping box [−c, c]")
