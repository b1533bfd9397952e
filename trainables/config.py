"""The trial configuration: one flat, validated mapping whose keys are also the MLflow param names.

The base keys below are shared by every trial (docs/design.md, "The trial"); the keys of a regularizer
and of an optimizer live on its declared ``Params`` model (``trainables.params``, which imports no
torch: neither does this module). A key that does not belong to the chosen regularizer or optimizer
is an error, not silently ignored. Keys marked ``member_field`` may differ between the members of a
population pack. Defaults are the paper's setup (Appendix B): RMSprop, lr 5e-5,
batch 64, n_dis 1, 1e5 iterations, z ∈ R^100.

``validate_trial(raw)`` returns the complete config (defaults filled in, only the keys that apply)
or raises :class:`ConfigError` whose message names the key and the problem, in one line.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trainables.data import datasets as data_lib
from trainables import names
from trainables.params import (ARCH_RESOLUTION, LOSS_NAMES, OPTIMIZER_PARAMS, PRECISIONS,
                               REGULARIZER_PARAMS, member_field, optimizer_defaults)
from trainables.step_modes import step_mode_problem


class ConfigError(ValueError):
    """A trial or study key is wrong. ``str(err)`` is one line naming the key and the problem."""

    def __init__(self, key: str | None, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)


#: Keys that belong to one optimizer only (name → {key: default}), from its declared Params.
OPTIMIZER_KEYS: dict[str, dict[str, float]] = {name: optimizer_defaults(name)
                                               for name in OPTIMIZER_PARAMS}


#: The choices that own keys of their own: the trial key → name → its Params model.
_CHOICES: dict[str, dict[str, type[BaseModel]]] = {names.REGULARIZER: REGULARIZER_PARAMS,
                                                   names.OPTIMIZER: OPTIMIZER_PARAMS}


class BaseTrial(BaseModel):
    """Keys every trial has (see docs/design.md's trial table for their meaning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # data
    dataset: str = "fashion_mnist_mini"
    data_root: str | None = None
    download: bool = False
    resolution: int | None = Field(None, gt=0)
    # model
    arch: str = "dcgan32"
    width: float = Field(1.0, gt=0, le=16)
    d_bias: bool = True
    d_norm: Literal["none", "bn"] = "none"
    z_dim: int = Field(100, gt=0)
    # loss
    loss: str = member_field("ns")
    alpha: float = member_field(1.0, gt=0)
    # regularizer (its own keys are validated against its registered Params)
    regularizer: str = "sn"
    # optimizer
    optimizer: str = "rmsprop"
    lr_d: float = member_field(5e-5, gt=0)
    lr_g: float = member_field(5e-5, gt=0)
    eps: float = member_field(1e-8, ge=0)
    n_dis: int = Field(1, ge=1)
    # run
    iterations: int = Field(100_000, ge=1)
    batch_size: int = Field(64, ge=2)
    seed: int = member_field(0, ge=0)
    stats_every: int = Field(100, ge=1)
    eval_every: int = Field(10_000, ge=1)
    fid_samples: int = Field(5_000, ge=2)
    # the end-of-training FID/KID (fid_final, kid_final); None = fid_samples (paper scale: 50_000)
    fid_final_samples: int | None = Field(None, ge=2)
    # FID∞ (Chong & Forsyth 2020) from the final features, logged as fid_inf
    fid_inf: bool = False
    fid_extractor: Literal["auto", "inception", "domain"] = "auto"
    fid_ref_split: Literal["train", "test"] = "test"
    device: str = "auto"
    # how the training step executes (same arithmetic, docs/design.md "Throughput"): "eager"
    # checks divergence on the host every step; "sync_free" flags it on the device, read at stats
    # steps; "compiled" (torch.compile) and "cuda_graph" (captured step, CUDA only) also capture
    # the step; "auto" picks per device (trainables.train.resolve_step_mode); trainables.step_modes
    # holds what each mode refuses
    step_mode: Literal["auto", "eager", "sync_free", "compiled", "cuda_graph"] = "auto"
    # float32 numerics of matmuls and convolutions, an execution key like device and step_mode
    # (trainables.devices): "fp32" full float32 (the papers'), "tf32" TF32 tensor cores on CUDA
    precision: str = "fp32"

    @field_validator(names.LOSS, names.REGULARIZER, names.OPTIMIZER, names.ARCH)
    @classmethod
    def _registered(cls, v: str, info) -> str:
        known = {names.LOSS: LOSS_NAMES, names.ARCH: ARCH_RESOLUTION, **_CHOICES}[info.field_name]
        if v not in known:
            raise ValueError(f"unknown {info.field_name} {v!r}; known: {', '.join(sorted(known))}")
        return v

    @field_validator(names.ALPHA, names.LR_D, names.LR_G, names.EPS, names.WIDTH)
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator(names.PRECISION)
    @classmethod
    def _known_precision(cls, v: str) -> str:
        if v not in PRECISIONS:
            raise ValueError(f"unknown precision {v!r}; use "
                             + " or ".join(f"{k} ({what})" for k, what in PRECISIONS.items()))
        return v

    @field_validator(names.DEVICE)
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError(f"unknown device {v!r}; use auto, cpu, cuda or cuda:<index>")
        return v


BASE_KEYS: frozenset[str] = frozenset(BaseTrial.model_fields)


def _owner_of_key(models: dict[str, type[BaseModel]]) -> dict[str, str]:
    return {key: name for name, cls in models.items() for key in cls.model_fields}


def regularizer_of_key() -> dict[str, str]:
    """Every regularizer-specific key → the regularizer it belongs to."""
    return _owner_of_key(REGULARIZER_PARAMS)


def optimizer_of_key() -> dict[str, str]:
    """Every optimizer-specific key → the optimizer it belongs to."""
    return _owner_of_key(OPTIMIZER_PARAMS)


def all_keys() -> frozenset[str]:
    """Every key a trial may carry (for any choice of regularizer/optimizer)."""
    return BASE_KEYS | frozenset(regularizer_of_key()) | frozenset(optimizer_of_key())


def _first_error(err: ValidationError, prefix: str = "") -> ConfigError:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or None
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "input" in e and e["type"] not in ("extra_forbidden", "missing"):
        msg = f"{msg} (got {e['input']!r})"
    return ConfigError(f"{prefix}{key}" if key else None, msg)


def validate_trial(raw: dict[str, Any], *, check_data: bool = True) -> dict[str, Any]:
    """Validate one trial config; return it complete (defaults filled, only applicable keys).

    Raises :class:`ConfigError` (one line: key and problem) for unknown keys, keys of another
    regularizer/optimizer, bad values, an arch/resolution/dataset mismatch, or (``check_data``)
    a dataset missing on disk.
    """
    if not isinstance(raw, dict):
        raise ConfigError(None, f"a trial config must be a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    base = _base(raw)
    chosen = {kind: models[getattr(base, kind)] for kind, models in _CHOICES.items()}
    _refuse_foreign_keys(raw, base, chosen)
    params = [_validated(raw, model) for model in chosen.values()]
    out = base.model_dump()
    _check_shapes(out)
    problem = step_mode_problem(out)
    if problem:
        raise ConfigError(names.STEP_MODE, problem)
    if check_data and out[names.DATASET] not in data_lib.TOY_DATASETS:
        try:
            data_lib.check_dataset(
                out[names.DATASET], out[names.DATA_ROOT], out[names.RESOLUTION],
                download=out[names.DOWNLOAD],
            )
        except data_lib.DatasetError as err:
            raise ConfigError(names.DATASET, str(err)) from None
    for p in params:
        out.update(p)
    return out


def _base(raw: dict[str, Any]) -> BaseTrial:
    """The base keys of ``raw`` validated; an unknown key (of no model) refused first."""
    owners = regularizer_of_key() | optimizer_of_key()
    unknown = [k for k in raw if k not in BASE_KEYS and k not in owners]
    if unknown:
        known = ", ".join(sorted(all_keys()))
        raise ConfigError(unknown[0], f"unknown key (known keys: {known})")
    try:
        return BaseTrial(**{k: v for k, v in raw.items() if k in BASE_KEYS})
    except ValidationError as err:
        raise _first_error(err) from None


def _refuse_foreign_keys(raw: dict[str, Any], base: BaseTrial,
                         chosen: dict[str, type[BaseModel]]) -> None:
    """A key of a regularizer / optimizer other than the chosen one is refused, naming whose it
    is. ``chosen``: the trial key (regularizer, optimizer) → the chosen one's Params model."""
    owners = {kind: _owner_of_key(models) for kind, models in _CHOICES.items()}
    for key in raw:
        for kind, model in chosen.items():
            if key in owners[kind] and key not in model.model_fields:
                raise ConfigError(key, f"belongs to {kind} {owners[kind][key]!r}, but the "
                                       f"trial's {kind} is {getattr(base, kind)!r}")


def _validated(raw: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s keys of ``raw`` validated, defaults filled."""
    try:
        return model(**{k: v for k, v in raw.items() if k in model.model_fields}).model_dump()
    except ValidationError as err:
        raise _first_error(err) from None


def _check_shapes(cfg: dict[str, Any]) -> None:
    """Cross-key checks: arch ↔ dataset kind ↔ resolution, evaluation cadence."""
    toy = cfg[names.DATASET] in data_lib.TOY_DATASETS
    if toy != (cfg[names.ARCH] == "mlp"):
        if toy:
            raise ConfigError(names.ARCH,
                              f"the 2-D toy dataset {cfg[names.DATASET]!r} needs arch 'mlp'")
        raise ConfigError(names.ARCH,
                          f"arch 'mlp' is for the 2-D toys ({', '.join(data_lib.TOY_DATASETS)})")
    if not toy:
        try:
            native = data_lib.native_resolution(cfg[names.DATASET])
        except data_lib.DatasetError as err:
            raise ConfigError(names.DATASET, str(err)) from None
        made = ARCH_RESOLUTION[cfg[names.ARCH]]
        if cfg[names.RESOLUTION] is None:
            cfg[names.RESOLUTION] = made if made is not None else native
        if made is not None and cfg[names.RESOLUTION] != made:
            raise ConfigError(
                names.RESOLUTION,
                f"arch {cfg[names.ARCH]!r} makes {made}x{made} images, not "
                f"{cfg[names.RESOLUTION]}x{cfg[names.RESOLUTION]}",
            )
    elif cfg[names.RESOLUTION] is not None:
        raise ConfigError(names.RESOLUTION, "2-D toy datasets have no resolution")
    if cfg[names.D_NORM] == "bn" and cfg[names.REGULARIZER] == "sn":
        raise ConfigError(names.D_NORM,
                          "BatchNorm in D is Appendix C's GP set-up; it is not used with sn")
    if cfg[names.D_NORM] == "bn" and cfg[names.REGULARIZER] == "gran":
        raise ConfigError(
            names.D_NORM,
            "gran normalizes by the per-sample input gradient, which BatchNorm couples "
            "across the batch; use d_norm none",
        )
    if cfg[names.EVAL_EVERY] > cfg[names.ITERATIONS]:
        # FID is also computed at the end; eval_every beyond the run is almost certainly a typo.
        raise ConfigError(
            names.EVAL_EVERY,
            f"{cfg[names.EVAL_EVERY]} exceeds iterations ({cfg[names.ITERATIONS]})",
        )
