"""The study file's schema (pydantic models) and the one-line messages made of its errors."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from study.limits import BOOL_HINT, MAX_INT, MAX_SEED, MAX_TRIALS, bool_word, did_you_mean
from trainables.names import REGULARIZER, SEED


def _not_bool(value: Any) -> Any:
    """Refuse a YAML boolean where a number is expected (pydantic would read true as 1)."""
    if isinstance(value, bool):
        raise ValueError(f"got {bool_word(value)}, {BOOL_HINT}; a number is expected here")
    return value


def _is_finite(x: Any) -> bool:
    """Floats: not inf/nan; ints always (math.isfinite would overflow on a huge one)."""
    return not isinstance(x, float) or math.isfinite(x)



def _finite(cls, v: float) -> float:
    """Field validator (``field_validator(name)(_finite)``): refuse inf and nan."""
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v

#: A file or directory name's limit in bytes on Linux and macOS file systems (ext4, xfs, btrfs,
#: tmpfs, APFS: ``pathconf(PC_NAME_MAX)``); S3 keys allow more per segment, so this is the bound.
NAME_MAX = 255
#: ``time.strftime`` format of the suffix that makes a study directory's name unique when one of
#: the study's name exists (``study.tuner.study_run_name``), and an example of its length.
RUN_STAMP = "%Y%m%d-%H%M%S"
RUN_STAMP_EXAMPLE = "20260101-000000"


def study_dir_name(name: str, stamp: str | None = None) -> str:
    """The study directory's name under the storage path: the study's name, or
    ``<name>-<stamp>`` for a later execution (the longest name derived from a study's name;
    trial directories are named by their configuration, never by the study)."""
    return f"{name}-{stamp}" if stamp else name


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


class SpaceEntry(BaseModel):
    """One searched key: exactly one of choice / uniform / loguniform / int, optionally ``when``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    choice: list[Any] | None = None
    uniform: tuple[Float, Float] | None = None
    loguniform: tuple[Float, Float] | None = None
    int_: tuple[Int, Int] | None = Field(None, alias="int")
    when: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "SpaceEntry":
        kinds = [k for k in ("choice", "uniform", "loguniform", "int_") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of choice, uniform, loguniform, int")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        for kind in ("uniform", "loguniform", "int_"):
            rng = getattr(self, kind)
            if rng is not None:
                lo, hi = rng
                if not (_is_finite(lo) and _is_finite(hi)) or lo > hi:
                    raise ValueError(f"{kind.rstrip('_')} needs [low, high] with low <= high")
                if kind == "loguniform" and lo <= 0:
                    raise ValueError("loguniform needs low > 0")
                if kind == "int_" and max(abs(lo), abs(hi)) > MAX_INT:
                    raise ValueError(f"int bounds beyond {MAX_INT:,}")
        return self

    def extremes(self) -> list[Any]:
        """Values that span the entry (for validating a space without sampling it)."""
        if self.choice is not None:
            return list(self.choice)
        lo, hi = self.uniform or self.loguniform or self.int_
        return [lo, hi]

    def active(self, params: dict[str, Any]) -> bool:
        if not self.when:
            return True
        for key, allowed in self.when.items():
            allowed = allowed if isinstance(allowed, list) else [allowed]
            if params.get(key) not in allowed:
                return False
        return True


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: Float = Field(1.0, gt=0)
    gpu: float | Literal["auto"] = "auto"
    custom: dict[str, Float] = {}  # Ray custom resources per trial (node labels, accelerator types)

    @field_validator("custom")
    @classmethod
    def _custom(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU", "cpu", "gpu", "memory"):
                raise ValueError(f"{name!r} is not a custom resource; use resources.cpu / gpu")
            if not (amount > 0 and math.isfinite(amount)):
                raise ValueError(f"{name!r} needs a positive amount")
        return v

    _cpu = field_validator("cpu")(_finite)

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu_not_bool(cls, v):
        return _not_bool(v)

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v):
        if v != "auto" and not math.isfinite(v):
            raise ValueError("must be a finite number or auto")
        if v != "auto" and not (0 <= v <= 1 or float(v).is_integer()):
            raise ValueError("a GPU share must be a fraction in [0, 1] or a whole number of GPUs")
        if v != "auto" and v < 0:
            raise ValueError("must be >= 0")
        return v


class AshaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period: Int = Field(1, ge=1)  # in FID evaluations
    reduction_factor: Float = Field(3.0, gt=1)

    _reduction_factor = field_validator("reduction_factor")(_finite)


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    hypotheses: list[str] = []
    search: Literal["grid", "random", "optuna"] = "grid"
    sampler_seed: Int = Field(0, ge=0, le=MAX_SEED)
    fixed: dict[str, Any] = {}
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = {}
    space: dict[str, SpaceEntry] = {}
    num_samples: Int = Field(1, ge=1)
    sampler: Literal["tpe", "random", "qmc"] = "tpe"
    points_to_evaluate: list[dict[str, Any]] = []
    optuna_storage: str | None = None
    seeds: int | list[int] = 1
    scheduler: Literal["fifo", "asha"] = "fifo"
    asha: AshaConfig = AshaConfig()
    resources: Resources = Resources()
    max_concurrent: Int | None = Field(None, ge=1)
    max_failures: Int = Field(2, ge=0)
    checkpoints_to_keep: Int = Field(2, ge=1)  # per trial (one checkpoint per FID evaluation)
    storage_path: str = "./lipstudy_results"
    tracking_uri: str | None = None
    # configs sharing shape keys packed into one Ray trial of at most P members
    population: Int = Field(1, ge=1, le=1024)

    @field_validator("population")
    @classmethod
    def _population(cls, v, info):
        """A searched study packs asked configurations (``study.search.PackedOptunaSearch``):
        every member of a pack shares the shape keys, so none may be searched, and a pack holds
        every seed of its configurations. A fixed regularizer the population cannot batch runs
        one config per trial (``study.packs.population_notes`` says so): nothing to refuse."""
        if v <= 1 or info.data.get("search", "grid") == "grid":
            return v
        from trainables.config import BaseTrial
        from trainables.pack.packing import MEMBER_KEYS, POPULATION_REGULARIZERS

        space = info.data.get("space") or {}
        fixed = info.data.get("fixed") or {}
        regularizer = fixed.get(REGULARIZER, BaseTrial.model_fields[REGULARIZER].default)
        if REGULARIZER not in space and regularizer not in POPULATION_REGULARIZERS:
            return v
        shape = [k for k in space if k not in MEMBER_KEYS]
        if shape:
            keys = ", ".join(repr(k) for k in shape)
            members = ", ".join(sorted(MEMBER_KEYS - {SEED}))
            raise ValueError(
                f"searched key(s) {keys} change what a pack's members must share (shapes, "
                f"regularizer kind); a pack's members may differ only in {members}: fix "
                f"{'it' if len(shape) == 1 else 'them'} or set population: 1")
        seeds = info.data.get("seeds", 1)
        n_seeds = seeds if isinstance(seeds, int) else len(seeds)
        if n_seeds > v:
            raise ValueError(f"{n_seeds} seeds do not fit in a pack of {v}: a pack runs every "
                             f"seed of its configurations (set population >= {n_seeds})")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '_', '.', '-' (it names the MLflow experiment)")
        longest = len(study_dir_name(v, RUN_STAMP_EXAMPLE).encode())
        if longest > NAME_MAX:
            raise ValueError(
                f"{len(v)} characters; it names the study directory, at most "
                f"'<name>-{RUN_STAMP_EXAMPLE}' ({longest} bytes), and a file name may have at "
                f"most {NAME_MAX} bytes (NAME_MAX): use at most "
                f"{NAME_MAX - len(study_dir_name('', RUN_STAMP_EXAMPLE))} characters")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_not_bool(cls, v):
        if isinstance(v, list):
            for s in v:
                _not_bool(s)
        return _not_bool(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if isinstance(v, int):
            if v < 1:
                raise ValueError("a seed count must be >= 1")
            if v > MAX_TRIALS:
                raise ValueError(f"{v:,} replicates per configuration; a study runs at most "
                                 f"{MAX_TRIALS:,} trials (MAX_TRIALS)")
        elif not v or any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError("a seed list must be non-empty, distinct, non-negative")
        elif len(v) > MAX_TRIALS:
            raise ValueError(f"{len(v):,} seeds; a study runs at most {MAX_TRIALS:,} trials "
                             "(MAX_TRIALS)")
        elif max(v) > MAX_SEED:
            raise ValueError(f"seed {max(v)} is beyond {MAX_SEED:,} (numpy's seed range)")
        return v

    @property
    def n_seeds(self) -> int:
        return self.seeds if isinstance(self.seeds, int) else len(self.seeds)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def grid_blocks(self) -> list[dict[str, list[Any]]]:
        return self.grid if isinstance(self.grid, list) else ([self.grid] if self.grid else [])


#: Fields typed as a union: pydantic puts the branch's name (``int``, ``list[int]``,
#: ``dict[str,list[any]]``) into the error location after the field; it is no key of the file.
_UNION_FIELDS = {("seeds",), ("grid",), ("resources", "gpu")}


def _error_loc(e: dict) -> tuple:
    loc = tuple(e["loc"])
    for field in _UNION_FIELDS:
        n = len(field)
        if loc[:n] == field and len(loc) > n and isinstance(loc[n], str):
            return loc[:n] + loc[n + 1:]
    return loc


def _known_keys(parts: tuple) -> list[str]:
    """The keys the study file allows where the unknown key ``parts[-1]`` stands."""
    model = {(): StudySpec, ("resources",): Resources, ("asha",): AshaConfig}.get(parts[:-1])
    if model is None and len(parts) == 3 and parts[0] == "space":
        model = SpaceEntry
    return [f.alias or name for name, f in model.model_fields.items()] if model else []


def pydantic_message(err: ValidationError) -> str:
    """One line for a study file's schema error: where it is and what is wrong."""
    errors = err.errors()
    first = _error_loc(errors[0])
    # of a union's branches, the one that got furthest into the value says what is wrong
    same = [e for e in errors if _error_loc(e)[:1] == first[:1]]
    e = max(same, key=lambda e: len(_error_loc(e)))
    parts = _error_loc(e)
    msg = e["msg"].removeprefix("Value error, ")
    if parts and parts[-1] == "[key]":  # a mapping key that is no string (``3: 4``, ``null: x``)
        parts = parts[:-1]
        loc = ".".join(str(p) for p in parts)
        msg = f"key {parts[-1]!r} is not a string" if parts else msg
    elif e["type"] in ("extra_forbidden", "invalid_key"):  # the last part is a key, not an index
        loc = ".".join(str(p) for p in parts)
        if e["type"] == "invalid_key":
            msg = f"key {e['input']!r} is not a string"
    else:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    if e["type"] == "extra_forbidden":
        msg = "unknown key" + did_you_mean(parts[-1], _known_keys(tuple(parts)))
    elif isinstance(e.get("input"), bool) and "YAML boolean" not in msg:
        msg = f"{msg} (got {bool_word(e['input'])}, {BOOL_HINT})"
    return f"{loc}: {msg}" if loc else msg
