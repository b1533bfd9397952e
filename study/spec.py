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
That includes YAML traps (a key repeated in one mapping, yes/no/on/off read as booleans where a
number or a word is meant, alias bombs, deep nesting) and absurd sizes, refused before anything
is expanded: see the ``MAX_*`` limits below (at most MAX_TRIALS = 10,000 trials per study).
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import ScalarNode, SequenceNode

from trainables.config import ConfigError, all_keys, validate_trial

PRESETS_DIR = Path(__file__).parent / "presets"


#: Limits on what a study file may ask for. Each one turns a typo or a hostile file into one
#: StudyError line (exit 2) within a second or so, instead of a traceback, a hang or an
#: out-of-memory kill; each is far above anything a real study needs.
#: The file itself: the largest preset is ~4 KB; pure-Python YAML parses ~0.3 MB/s of dense
#: flow lists on one core, so 256 KiB is read in about a second.
MAX_FILE_BYTES = 256 * 1024
#: The document after expanding aliases, in nodes plus scalar characters: anchors and merge keys
#: (``&toy``, ``<<: *sn_img``) keep working, an alias bomb ("billion laughs": nine aliases of nine
#: aliases of ...) is refused before anything walks, copies or prints the expanded tree. A file
#: within MAX_FILE_BYTES and without aliases weighs at most ~2 x its size, well below this.
MAX_YAML_WEIGHT = 1_000_000
#: Nesting depth, the document's mapping being 1: a study needs 6 (``grid[1].k_sn[0]``,
#: ``space.k_sn.when.regularizer[0]``); the YAML composer is recursive and would hit Python's
#: recursion limit near 300.
MAX_YAML_DEPTH = 32
#: Integer literals: nothing in a study needs more than int64 (seeds, counts, iterations); larger
#: ones overflow in torch/numpy and past 4,300 digits Python cannot even print them.
MAX_INT = 2**63 - 1
#: Trials one study may declare: grid points x seeds, or num_samples x seeds; also the
#: categorical combinations a searched space expands into for validation. Every trial is a Ray
#: Tune trial held by the driver and an MLflow run; the largest shipped preset has 300. Checking
#: a study of this size takes about a second; beyond it, split the study into several.
MAX_TRIALS = 10_000
#: Seeds (replicate seeds and sampler_seed): numpy's RandomState takes seeds below 2**32.
MAX_SEED = 2**32 - 1
#: A message longer than this is cut (a 100 KB key name echoed back helps nobody).
MAX_MESSAGE = 2_000


def _one_line(message: str) -> str:
    """``message`` as one printable line: line breaks and other control characters escaped (a
    quoted YAML key may hold ``\\n``), cut to MAX_MESSAGE characters."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                  for c in message)
    return out if len(out) <= MAX_MESSAGE else out[: MAX_MESSAGE - 1] + "…"


class StudyError(ValueError):
    """A study file is wrong; ``str(err)`` is one line naming where and what."""

    def __init__(self, message: object = ""):
        super().__init__(_one_line(str(message)))


_BOOL_HINT = ("a YAML boolean (the unquoted words yes/no/on/off/true/false are booleans; quote "
              "the word if you mean it)")


def _bool_word(value: bool) -> str:
    return "true" if value else "false"


class _YamlLimit(yaml.YAMLError):
    """A study-specific refusal while reading YAML; ``where`` is a line (and key path) prefix."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _StudyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses what PyYAML accepts silently or dies on:

    * a key repeated in one mapping (PyYAML keeps the last value without a word);
    * alias expansion beyond MAX_YAML_WEIGHT and recursive aliases (``&a [*a]``);
    * nesting beyond MAX_YAML_DEPTH (the composer would raise RecursionError);
    * integers beyond MAX_INT; values whose constructor raises a plain Python error (e.g.
      ``!!timestamp 2024-13-45`` → ValueError) become YAML errors with their line.

    Unquoted dates stay strings (no study key is a date; ``name: 2024-01-01`` is a name).
    Anchors, aliases and merge keys (``<<:``) work as in SafeLoader.
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._path: list[str] = []
        self._weight: dict[int, int] = {}  # id(node) -> nodes + scalar chars, aliases expanded

    # -- composing: depth, aliases, duplicate keys ----------------------------------------------
    def _where(self, mark) -> str:
        path = "".join(self._path).lstrip(".")
        path = path if len(path) <= 80 else path[:77] + "..."
        return f"line {mark.line + 1}" + (f" ({path})" if path else "")

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and id(node) not in self._weight:
                raise _YamlLimit(self._where(event.start_mark),
                                 f"alias *{event.anchor} refers to the anchor that contains it "
                                 "(a recursive structure)")
            return super().compose_node(parent, index)
        if isinstance(index, ScalarNode):
            self._path.append(f".{index.value[:80]}")
        elif isinstance(index, int):
            self._path.append(f"[{index}]")
        else:
            self._path.append("")  # the document or a mapping key
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlLimit(self._where(self.peek_event().start_mark),
                                 f"nested deeper than {MAX_YAML_DEPTH} levels")
            node = super().compose_node(parent, index)
            if isinstance(node, ScalarNode):
                weight = 1 + len(node.value)
                if node.tag == "tag:yaml.org,2002:int":
                    self._check_int(node)
            elif isinstance(node, SequenceNode):
                weight = 1 + sum(self._weight[id(child)] for child in node.value)
            else:
                weight = 1 + sum(self._weight[id(k)] + self._weight[id(v)] for k, v in node.value)
            if weight > MAX_YAML_WEIGHT:
                raise _YamlLimit(self._where(node.start_mark),
                                 f"expands to more than {MAX_YAML_WEIGHT:,} nodes and characters "
                                 "(aliases of aliases?)")
        finally:
            self._depth -= 1
            self._path.pop()
        self._weight[id(node)] = weight
        return node

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # unhashable keys are refused by the constructor; merges may override
            key = self.construct_object(key_node)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue
            if first is not key_node:
                raise _YamlLimit(
                    self._where(key_node.start_mark),
                    f"key {key_node.value[:80]!r} repeated in one mapping (first at line "
                    f"{first.start_mark.line + 1}); YAML would silently keep only the last value")
        return node

    # -- constructing: integers, plain Python errors --------------------------------------------
    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as err:
            raise ConstructorError(None, None, f"cannot read this value ({err})",
                                   node.start_mark) from None

    def _check_int(self, node) -> None:
        """An integer literal beyond MAX_INT (checked while composing, where its key path is
        known; int() of thousands of digits is slow, and refused past 4,300)."""
        digits = node.value.replace("_", "").lstrip("+-")
        try:
            value = None if len(digits) > 40 else SafeConstructor.construct_yaml_int(self, node)
        except ValueError:  # ``!!int 1.5``: the constructor reports it
            return
        if value is None or abs(value) > MAX_INT:
            shown = node.value[:20] + "..." if value is None else str(value)
            raise _YamlLimit(self._where(node.start_mark),
                             f"integer {shown} is too large (limit {MAX_INT:,})")


def _load_yaml(text: str, label: str) -> Any:
    """The YAML document in ``text`` (SafeLoader plus the refusals of :class:`_StudyLoader`)."""
    if len(text) > MAX_FILE_BYTES:
        raise StudyError(f"{label}: {len(text):,} characters; a study file is at most "
                         f"{MAX_FILE_BYTES:,} (MAX_FILE_BYTES)")
    loader = None
    try:
        loader = _StudyLoader(text)  # the reader refuses control characters right here
        return loader.get_single_data()
    except _YamlLimit as err:
        raise StudyError(f"{label}: {err.where}: {err.message}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise StudyError(f"{label}: not valid YAML{where}: {problem}") from None
    except RecursionError:  # a backstop: MAX_YAML_DEPTH is meant to come first
        raise StudyError(f"{label}: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _not_bool(value: Any) -> Any:
    """Refuse a YAML boolean where a number is expected (pydantic would read true as 1)."""
    if isinstance(value, bool):
        raise ValueError(f"got {_bool_word(value)}, {_BOOL_HINT}; a number is expected here")
    return value


def _is_finite(x: Any) -> bool:
    """Floats: not inf/nan; ints always (math.isfinite would overflow on a huge one)."""
    return not isinstance(x, float) or math.isfinite(x)


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

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

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

    @field_validator("reduction_factor")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


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


def _pydantic_message(err: ValidationError) -> str:
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
        msg = "unknown key"
    elif isinstance(e.get("input"), bool) and "YAML boolean" not in msg:
        msg = f"{msg} (got {_bool_word(e['input'])}, {_BOOL_HINT})"
    return f"{loc}: {msg}" if loc else msg


def load_study(source: str | Path) -> tuple[StudySpec, str]:
    """Read a study file (or a preset name such as ``default``); return (spec, file text).

    Raises :class:`StudyError` for unreadable, empty, non-YAML or schema-violating files.
    """
    path = Path(source)
    try:
        if not path.exists() and not str(source).endswith((".yaml", ".yml")):
            preset = PRESETS_DIR / f"{source}.yaml"
            if preset.exists():
                path = preset
        exists = path.exists()
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        raise StudyError(f"{source}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    if not exists:
        presets = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise StudyError(f"{source}: no such study file or preset (presets: {presets})")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # bounded: /dev/zero or a huge file reads no more
    except OSError as err:
        raise StudyError(f"{path}: cannot read ({err.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise StudyError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes; a study file is a few "
                         "KB (MAX_FILE_BYTES)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise StudyError(f"{path}: not UTF-8 text (byte {data[err.start]:#04x} at offset "
                         f"{err.start})") from None
    return parse_study(text, str(path)), text


def parse_study(text: str, label: str = "study") -> StudySpec:
    """Parse and validate study-file text (``label`` prefixes error messages).

    Raises :class:`StudyError` (one line) for anything wrong, including the YAML traps listed in
    :class:`_StudyLoader` and the size limits (MAX_FILE_BYTES, MAX_TRIALS, ...)."""
    raw = _load_yaml(text, label)
    if raw is None:
        raise StudyError(f"{label}: the file is empty")
    if not isinstance(raw, dict):
        raise StudyError(f"{label}: a study file must be a YAML mapping, got {type(raw).__name__}")
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise StudyError(f"{label}: {_pydantic_message(err)}") from None
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
        _refuse_yaml_bools(spec)
        _check_size(spec)
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
        _refuse_yaml_bools(spec)
        _check_size(spec)
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
            fresh = data_key not in seen_data
        except TypeError:  # an unhashable value (``dataset: [a]``): validate_trial refuses it
            fresh = True
        try:
            validate_trial(cfg, check_data=fresh)
        except ConfigError as err:
            where = _where(spec, err.key, block)
            raise StudyError(f"{where}: {err.problem}") from None
        if fresh:
            seen_data.add(data_key)
    fid_plans(spec, configs)  # refuses reference sets too small for the extractor
    return configs


def _check_size(spec: StudySpec) -> None:
    """Refuse a study of more than MAX_TRIALS trials, counted from the list lengths before
    anything is expanded (a grid of 1e12 points is refused in microseconds)."""
    seeds = spec.n_seeds
    per_seed = f" x {seeds:,} seeds" if seeds != 1 else ""
    cap = f"a study runs at most {MAX_TRIALS:,} trials (MAX_TRIALS); split it into several studies"
    if spec.search != "grid":
        trials = spec.num_samples * seeds
        if trials > MAX_TRIALS:
            total = f" = {trials:,} trials" if seeds != 1 else " trials"
            raise StudyError(f"num_samples: {spec.num_samples:,}{per_seed}{total}; {cap}")
        return
    listed = isinstance(spec.grid, list)
    total = 0
    for i, block in enumerate(spec.grid_blocks):
        points = math.prod(len(values) for values in block.values())
        total += points * seeds
        if points * seeds > MAX_TRIALS:
            sizes = " x ".join(f"{len(v):,} {k}" for k, v in block.items())
            trials = f"{per_seed} = {points * seeds:,} trials" if seeds != 1 else " (trials)"
            raise StudyError(f"{f'grid[{i}]' if listed else 'grid'}: {sizes} = {points:,} "
                             f"configurations{trials}; {cap}")
    if total > MAX_TRIALS:
        raise StudyError(f"grid: its {len(spec.grid_blocks)} blocks make {total:,} trials; {cap}")


def _refuse_yaml_bools(spec: StudySpec) -> None:
    """A YAML 1.1 boolean (unquoted yes/no/on/off/true/false) given to a trial key that is no
    true/false key: ``k_sn: yes`` would be read as 1.0, ``loss: no`` as False."""
    from trainables.names import TRIAL_PARAM_TYPES

    def check(where: str, key: Any, value: Any) -> None:
        kind = TRIAL_PARAM_TYPES.get(key) if isinstance(key, str) else None
        if isinstance(value, bool) and kind not in (None, bool):
            what = "a number" if kind in (int, float) else "a string"
            raise StudyError(f"{where}: got {_bool_word(value)}, {_BOOL_HINT}; {key} takes {what}")

    for key, value in spec.fixed.items():
        check(f"fixed.{key}", key, value)
    listed = isinstance(spec.grid, list)
    for i, block in enumerate(spec.grid_blocks):
        for key, values in block.items():
            for value in values:
                check(f"grid[{i}].{key}" if listed else f"grid.{key}", key, value)
    for key, entry in spec.space.items():
        for value in entry.choice or []:
            check(f"space.{key}.choice", key, value)
        for cond, allowed in (entry.when or {}).items():
            for value in allowed if isinstance(allowed, list) else [allowed]:
                check(f"space.{key}.when.{cond}", cond, value)
    for i, point in enumerate(spec.points_to_evaluate):
        for key, value in point.items() if isinstance(point, dict) else ():
            check(f"points_to_evaluate[{i}].{key}", key, value)


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
        raw = _load_yaml(text, "study")
        return StudySpec.model_validate(raw) if isinstance(raw, dict) else None
    except (StudyError, ValidationError):
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
        if entry.choice is not None:
            n = sum(len(entry.choice) if entry.active(p) else 1 for p in partials)
            if n > MAX_TRIALS:
                raise StudyError(
                    f"space.{key}: the choices up to here combine into {n:,} configurations to "
                    f"check; at most {MAX_TRIALS:,} (MAX_TRIALS)")
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
