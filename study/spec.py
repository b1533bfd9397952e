"""Study files: their schema, loading, validation, and expansion into trial configs.

A study is a YAML mapping::

    name: default                 # MLflow experiment name and Ray Tune run name
    description: ...
    hypotheses: [H1, domain]      # which hypotheses (analysis.hypotheses) it feeds
    search: grid                  # grid | random | optuna
    fixed: {dataset: fashion_mnist_mini, arch: dcgan32, width: 0.125, iterations: 600}
    grid:                         # search: grid — the product of the lists (or a list of such
      loss: [ns, ls, wgan]        #   blocks, whose products are concatenated: conditional grids)
      k_sn: [0.5, 1.0, 10.0]
    space:                        # search: optuna / random — define-by-run, in order
      loss: {choice: [ns, ls, wgan]}
      regularizer: {choice: [sn, none]}
      k_sn: {loguniform: [0.1, 100], when: {regularizer: sn}}
      alpha: {loguniform: [1.0e-25, 1.0e11]}
    num_samples: 20               # optuna / random: configurations to sample
    sampler: tpe                  # optuna: tpe (default) | random | qmc
    points_to_evaluate:           # optuna / random: configurations tried first (the papers'
      - {loss: ns, regularizer: sn, k_sn: 1.0, alpha: 1.0}   #   defaults), then the sampler's
    optuna_storage: null          # default: <study dir>/optuna.journal (JournalStorage); or an
                                  #   RDB URL (sqlite:///..., postgresql://...) or a .journal path
    seeds: 3                      # replicates per configuration: a count (0..n-1) or a list
    scheduler: fifo               # fifo (reproductions) | asha (searches, on intermediate FID)
    resources: {cpu: 1, gpu: auto, custom: {}}   # gpu auto: 0.25 when the cluster has GPUs
    max_concurrent: null
    max_failures: 2               # a crashed trial is retried from its last checkpoint
    checkpoints_to_keep: 2
    storage_path: ./lipstudy_results
    tracking_uri: null            # default: sqlite:///<cwd>/mlflow.db, or $MLFLOW_TRACKING_URI

Every problem is reported as one :class:`StudyError` line naming the key, before Ray or MLflow start.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.config import ConfigError, all_keys, validate_trial

PRESETS_DIR = Path(__file__).parent / "presets"


class StudyError(ValueError):
    """A study file is wrong; ``str(err)`` is one line naming where and what."""


class SpaceEntry(BaseModel):
    """One searched key: exactly one of choice / uniform / loguniform / int, optionally ``when``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int")
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
                if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                    raise ValueError(f"{kind.rstrip('_')} needs [low, high] with low <= high")
                if kind == "loguniform" and lo <= 0:
                    raise ValueError("loguniform needs low > 0")
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

    cpu: float = Field(1.0, gt=0)
    gpu: float | Literal["auto"] = "auto"
    custom: dict[str, float] = {}  # Ray custom resources per trial (node labels, accelerator types)

    @field_validator("custom")
    @classmethod
    def _custom(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU", "cpu", "gpu", "memory"):
                raise ValueError(f"{name!r} is not a custom resource; use resources.cpu / gpu")
            if not (amount > 0 and math.isfinite(amount)):
                raise ValueError(f"{name!r} needs a positive amount")
        return v

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v):
        if v != "auto" and not (0 <= v <= 1 or float(v).is_integer()):
            raise ValueError("a GPU share must be a fraction in [0, 1] or a whole number of GPUs")
        if v != "auto" and v < 0:
            raise ValueError("must be >= 0")
        return v


class AshaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period: int = Field(1, ge=1)  # in FID evaluations
    reduction_factor: float = Field(3.0, gt=1)


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    hypotheses: list[str] = []
    search: Literal["grid", "random", "optuna"] = "grid"
    sampler_seed: int = 0
    fixed: dict[str, Any] = {}
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = {}
    space: dict[str, SpaceEntry] = {}
    num_samples: int = Field(1, ge=1)
    sampler: Literal["tpe", "random", "qmc"] = "tpe"
    points_to_evaluate: list[dict[str, Any]] = []
    optuna_storage: str | None = None
    seeds: int | list[int] = 1
    scheduler: Literal["fifo", "asha"] = "fifo"
    asha: AshaConfig = AshaConfig()
    resources: Resources = Resources()
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0)
    checkpoints_to_keep: int = Field(2, ge=1)  # per trial (one checkpoint per FID evaluation)
    storage_path: str = "./lipstudy_results"
    tracking_uri: str | None = None
    # configs sharing shape keys packed into one Ray trial of at most P members (#12)
    population: Int = Field(1, ge=1, le=1024)

    @field_validator("population")
    @classmethod
    def _population(cls, v, info):
        if v > 1 and info.data.get("search", "grid") != "grid":
            raise ValueError("packs apply to grid studies; optuna/random run one config per "
                             "trial (set population: 1)")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '_', '.', '-' (it names the MLflow experiment)")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if isinstance(v, int):
            if v < 1:
                raise ValueError("a seed count must be >= 1")
        elif not v or any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError("a seed list must be non-empty, distinct, non-negative")
        return v

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def grid_blocks(self) -> list[dict[str, list[Any]]]:
        return self.grid if isinstance(self.grid, list) else ([self.grid] if self.grid else [])


def _pydantic_message(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{loc}: {msg}" if loc else msg


def load_study(source: str | Path) -> tuple[StudySpec, str]:
    """Read a study file (or a preset name such as ``default``); return (spec, file text).

    Raises :class:`StudyError` for unreadable, empty, non-YAML or schema-violating files.
    """
    path = Path(source)
    if not path.exists() and not str(source).endswith((".yaml", ".yml")):
        preset = PRESETS_DIR / f"{source}.yaml"
        if preset.exists():
            path = preset
    if not path.exists():
        presets = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise StudyError(f"{source}: no such study file or preset (presets: {presets})")
    try:
        text = path.read_text()
    except OSError as err:
        raise StudyError(f"{path}: cannot read ({err.strerror})") from None
    return parse_study(text, str(path)), text


def parse_study(text: str, label: str = "study") -> StudySpec:
    """Parse and validate study-file text (``label`` prefixes error messages)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise StudyError(f"{label}: not valid YAML{where}") from None
    if raw is None:
        raise StudyError(f"{label}: the file is empty")
    if not isinstance(raw, dict):
        raise StudyError(f"{label}: a study file must be a YAML mapping, got {type(raw).__name__}")
    try:
        spec = StudySpec(**raw)
    except ValidationError as err:
        raise StudyError(f"{label}: {_pydantic_message(err)}") from None
    except TypeError as err:  # non-string keys
        raise StudyError(f"{label}: {err}") from None
    try:
        check_study(spec)
    except StudyError as err:
        raise StudyError(f"{label}: {err}") from None
    return spec


def expand_grid(spec: StudySpec) -> list[dict[str, Any]]:
    """All trial configs of a grid study (fixed keys + each grid point + each seed)."""
    return [cfg for _, cfg in _expand_blocks(spec)]


def _expand_blocks(spec: StudySpec) -> list[tuple[int, dict[str, Any]]]:
    """(grid block index, trial config) for every trial of a grid study."""
    configs: list[tuple[int, dict[str, Any]]] = []
    for i, block in enumerate(spec.grid_blocks or [{}]):
        keys = list(block)
        for values in itertools.product(*(block[k] for k in keys)):
            point = {**spec.fixed, **dict(zip(keys, values))}
            for seed in spec.seed_list:
                configs.append((i, {**point, "seed": seed}))
    return configs


def check_study(spec: StudySpec) -> list[dict[str, Any]]:
    """Validate a study completely without running anything; return its complete trial configs
    (grid) or representative ones (optuna/random: every categorical combination with numeric
    keys at their low and high ends)."""
    known = all_keys()
    for key in spec.fixed:
        if key not in known:
            raise StudyError(f"fixed.{key}: unknown trial key")
    if "seed" in spec.fixed:
        raise StudyError("fixed.seed: use the study's `seeds` (replicates) instead")
    if spec.search == "grid":
        if spec.space:
            raise StudyError("space: only for search optuna/random; a grid study uses `grid`")
        for i, block in enumerate(spec.grid_blocks):
            for key, values in block.items():
                where = f"grid[{i}].{key}" if isinstance(spec.grid, list) else f"grid.{key}"
                if key not in known:
                    raise StudyError(f"{where}: unknown trial key")
                if key == "seed":
                    raise StudyError(f"{where}: use the study's `seeds` (replicates) instead")
                if not values:
                    raise StudyError(f"{where}: an empty list makes no trials")
        blocks = _expand_blocks(spec)
        configs = [cfg for _, cfg in blocks]
        if spec.num_samples != 1:
            raise StudyError("num_samples: a grid study runs each grid point; use `seeds` for replicates")
    else:
        if spec.grid:
            raise StudyError(f"grid: only for search grid; a {spec.search} study uses `space`")
        if not spec.space:
            raise StudyError(f"space: a {spec.search} study needs at least one searched key")
        for key, entry in spec.space.items():
            if key not in known:
                raise StudyError(f"space.{key}: unknown trial key")
            if key in spec.fixed:
                raise StudyError(f"space.{key}: also in fixed; a key is either searched or fixed")
            for cond in entry.when or {}:
                if cond not in spec.space or list(spec.space).index(cond) >= list(spec.space).index(key):
                    raise StudyError(f"space.{key}.when: {cond!r} must be a searched key listed before {key!r}")
        configs = representative_configs(spec)
        configs += _check_points(spec)
        blocks = [(None, cfg) for cfg in configs]
    if spec.search == "grid" and (spec.points_to_evaluate or spec.optuna_storage):
        key = "points_to_evaluate" if spec.points_to_evaluate else "optuna_storage"
        raise StudyError(f"{key}: only for search optuna/random")
    if spec.scheduler == "asha":
        for key in ("iterations", "eval_every"):
            varied = key in spec.space or any(key in b for b in spec.grid_blocks)
            if varied:
                raise StudyError(f"{_where(spec, key)}: ASHA compares FID at the same iterations in "
                                 "every trial; fix iterations and eval_every")
    seen_data: set[tuple] = set()
    for block, cfg in blocks:
        data_key = (cfg.get("dataset"), cfg.get("data_root"), cfg.get("resolution"), cfg.get("download"))
        try:
            validate_trial(cfg, check_data=data_key not in seen_data)
        except ConfigError as err:
            where = _where(spec, err.key, block)
            raise StudyError(f"{where}: {err.problem}") from None
        seen_data.add(data_key)
    fid_plans(spec, configs)  # refuses reference sets too small for the extractor
    return configs


def _where(spec: StudySpec, key: str | None, block: int | None = None) -> str:
    """Where a trial key's bad value comes from: the grid block that made the failing trial
    (``block``), else ``fixed``, else the first block or the space naming it."""
    listed = isinstance(spec.grid, list)
    if block is not None and spec.search == "grid" and spec.grid_blocks:
        here = f"grid[{block}]" if listed else "grid"
        if key is not None and key in spec.grid_blocks[block]:
            return f"{here}.{key}"
        if key is not None and key in spec.fixed:
            return f"fixed.{key} (in {here})" if listed else f"fixed.{key}"
        return f"{here}.{key}" if key else here
    if key is None:
        return "trial"
    if key in spec.fixed:
        return f"fixed.{key}"
    if spec.search == "grid":
        for i, block in enumerate(spec.grid_blocks):
            if key in block:
                return f"grid[{i}].{key}" if listed else f"grid.{key}"
    elif key in spec.space:
        return f"space.{key}"
    return key


def parse_study_unchecked(text: str) -> StudySpec | None:
    """The study's schema-level content without checking its trials (data may be absent), or
    None when even that fails; for listings such as ``lipstudy presets``."""
    try:
        raw = yaml.safe_load(text)
        return StudySpec(**raw) if isinstance(raw, dict) else None
    except (yaml.YAMLError, ValidationError, TypeError):
        return None


def fid_plans(spec: StudySpec, configs: list[dict[str, Any]]) -> list[str]:
    """How FID will be measured, one line per (dataset, extractor, split): the resolved extractor,
    its feature dimension and the reference size. Raises :class:`StudyError` when a reference set
    is smaller than the extractor's dimension: its covariance is then singular and the FID is
    mostly estimation error (e.g. 30 held-out images of a small folder vs Inception's 2,048-d)."""
    from trainables import data as data_lib
    from trainables import fid as fid_lib

    plans: dict[tuple, str] = {}
    for cfg in configs:
        dataset = cfg.get("dataset", "fashion_mnist_mini")
        if cfg.get("arch") == "mlp" or dataset in ("ring8", "grid25"):
            plans.setdefault(("toy", dataset), f"{dataset}: data-space Fréchet distance, "
                                                "modes covered and high-quality share")
            continue
        setting = cfg.get("fid_extractor", "auto")
        split = cfg.get("fid_ref_split", "test")
        key = (dataset, cfg.get("data_root"), setting, split)
        if key in plans:
            continue
        n_ref = data_lib.reference_size(dataset, cfg.get("data_root"), split)
        name = fid_lib.resolve_extractor(setting, n_ref)
        dim = fid_lib.EXTRACTORS[name].dim
        where = _where(spec, "fid_extractor") if setting != "auto" else _where(spec, "dataset")
        if n_ref is not None and n_ref < dim:
            raise StudyError(
                f"{where}: FID of {dataset!r} would compare against {n_ref} {split!r} images "
                f"with the {name!r} extractor ({dim}-d features, from fid_extractor: {setting}); "
                f"a reference needs at least {dim} images (more images, or fid_extractor: domain "
                "for Fashion-MNIST-like data)")
        size = f"{n_ref:,}" if n_ref is not None else f"the full {split!r} split"
        plans[key] = (f"{dataset}: FID with {name!r} ({dim}-d"
                      f"{', resolved from auto' if setting == 'auto' else ''}) against {size} "
                      f"{split!r} images")
    return list(plans.values())


def describe_fid(spec: StudySpec, configs: list[dict[str, Any]]) -> str:
    return "; ".join(fid_plans(spec, configs))


def _in_entry(entry: SpaceEntry, value: Any) -> bool:
    if entry.choice is not None:
        return value in entry.choice
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    lo, hi = entry.uniform or entry.loguniform or entry.int_
    if entry.int_ is not None and not float(value).is_integer():
        return False
    return lo <= value <= hi


def _check_points(spec: StudySpec) -> list[dict[str, Any]]:
    """``points_to_evaluate``: each names exactly the searched keys active for it, inside the
    space; returns them as trial configs (validated with the rest)."""
    configs = []
    for i, point in enumerate(spec.points_to_evaluate):
        where = f"points_to_evaluate[{i}]"
        if not isinstance(point, dict):
            raise StudyError(f"{where}: a point is a mapping of searched keys to values")
        for key in point:
            if key not in spec.space:
                hint = "fixed (not searched)" if key in spec.fixed else "not a searched key"
                raise StudyError(f"{where}.{key}: {hint}; a point sets searched keys only")
        chosen: dict[str, Any] = {}
        for key, entry in spec.space.items():
            active = entry.active(chosen)
            if active and key not in point:
                raise StudyError(f"{where}: missing searched key {key!r}")
            if not active and key in point:
                raise StudyError(f"{where}.{key}: inactive here (its `when` does not hold)")
            if active:
                if not _in_entry(entry, point[key]):
                    raise StudyError(f"{where}.{key}: {point[key]!r} is outside the space")
                chosen[key] = point[key]
        configs.append({**spec.fixed, **chosen, "seed": spec.seed_list[0]})
    return configs


def representative_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """For a searched space: configs covering every categorical combination (respecting ``when``)
    with each numeric key at its low, then its high end."""
    partials: list[dict[str, Any]] = [{}]
    for key, entry in spec.space.items():
        nxt = []
        for p in partials:
            if not entry.active(p):
                nxt.append(p)
            elif entry.choice is not None:
                nxt.extend({**p, key: v} for v in entry.choice)
            else:
                nxt.append({**p, key: entry})  # numeric: filled below
        partials = nxt
    configs = []
    for p in partials:
        for end in (0, 1):
            cfg = {**spec.fixed, "seed": spec.seed_list[0]}
            for k, v in p.items():
                cfg[k] = v.extremes()[end] if isinstance(v, SpaceEntry) else v
            configs.append(cfg)
    return configs
