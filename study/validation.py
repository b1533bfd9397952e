"""Checking a parsed study completely (trial keys, YAML booleans, sizes, each trial's config, FID
reference sizes) and expanding it into trial configs, without running anything."""

from __future__ import annotations

import itertools
from typing import Any

from study.limits import (BOOL_HINT, MAX_TRIALS, StudyError, bool_word, check_size, did_you_mean,
                          duration_text)
from study.schema import SpaceEntry, StudySpec
from trainables.config import ConfigError, all_keys, validate_trial
from trainables.names import (ARCH, DATASET, DATA_ROOT, DEVICE, DOWNLOAD, EVAL_EVERY,
                              FID_EXTRACTOR, FID_FINAL_SAMPLES, FID_REF_SPLIT, FID_SAMPLES,
                              ITERATIONS, LOSS, OPTIMIZER, REGULARIZER, RESOLUTION, SEED,
                              TRIAL_PARAM_TYPES)


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
                configs.append((i, {**point, SEED: seed}))
    return configs


def _grid_blocks(spec: StudySpec, known) -> list[tuple[Any, dict[str, Any]]]:
    """A grid study's (block, trial config) pairs, after refusing keys and values a grid cannot
    take."""
    if spec.space:
        raise StudyError("space: only for search optuna/random; a grid study uses `grid`")
    for i, block in enumerate(spec.grid_blocks):
        for key, values in block.items():
            where = f"grid[{i}].{key}" if isinstance(spec.grid, list) else f"grid.{key}"
            if key not in known:
                raise StudyError(f"{where}: unknown trial key{did_you_mean(key, known)}")
            if key == SEED:
                raise StudyError(f"{where}: use the study's `seeds` (replicates) instead")
            if not values:
                raise StudyError(f"{where}: an empty list makes no trials")
    _refuse_yaml_bools(spec)
    check_size(spec)
    blocks = _expand_blocks(spec)
    if spec.num_samples != 1:
        raise StudyError("num_samples: a grid study runs each grid point; use `seeds` for replicates")
    return blocks


def _searched_blocks(spec: StudySpec, known) -> list[tuple[Any, dict[str, Any]]]:
    """An optuna/random study's representative configs (and its points to evaluate), after
    refusing a space that cannot be searched."""
    if spec.grid:
        raise StudyError(f"grid: only for search grid; a {spec.search} study uses `space`")
    if not spec.space:
        raise StudyError(f"space: a {spec.search} study needs at least one searched key")
    for key, entry in spec.space.items():
        if key not in known:
            raise StudyError(f"space.{key}: unknown trial key{did_you_mean(key, known)}")
        if key in spec.fixed:
            raise StudyError(f"space.{key}: also in fixed; a key is either searched or fixed")
        for cond in entry.when or {}:
            if cond not in spec.space or list(spec.space).index(cond) >= list(spec.space).index(key):
                raise StudyError(f"space.{key}.when: {cond!r} must be a searched key listed before {key!r}")
    _refuse_yaml_bools(spec)
    check_size(spec)
    configs = representative_configs(spec) + _check_points(spec)
    return [(None, cfg) for cfg in configs]


def _validate_trials(spec: StudySpec, blocks) -> None:
    """Every config through ``validate_trial``; a data set is checked on disk once."""
    seen_data: set[tuple] = set()
    for block, cfg in blocks:
        data_key = (cfg.get(DATASET), cfg.get(DATA_ROOT), cfg.get(RESOLUTION), cfg.get(DOWNLOAD))
        try:
            fresh = data_key not in seen_data
        except TypeError:  # an unhashable value (``dataset: [a]``): validate_trial refuses it
            fresh = True
        try:
            validate_trial(cfg, check_data=fresh)
        except ConfigError as err:
            raise _study_error(spec, err, block) from None
        if fresh:
            seen_data.add(data_key)


def check_study(spec: StudySpec) -> list[dict[str, Any]]:
    """Validate a study completely without running anything; return its complete trial configs
    (grid) or representative ones (optuna/random: every categorical combination with numeric
    keys at their low and high ends)."""
    known = all_keys()
    for key in spec.fixed:
        if key not in known:
            raise StudyError(f"fixed.{key}: unknown trial key{did_you_mean(key, known)}")
    if SEED in spec.fixed:
        raise StudyError("fixed.seed: use the study's `seeds` (replicates) instead")
    blocks = _grid_blocks(spec, known) if spec.search == "grid" else _searched_blocks(spec, known)
    configs = [cfg for _, cfg in blocks]
    if spec.search == "grid" and (spec.points_to_evaluate or spec.optuna_storage):
        key = "points_to_evaluate" if spec.points_to_evaluate else "optuna_storage"
        raise StudyError(f"{key}: only for search optuna/random")
    if spec.scheduler == "asha":
        for key in (ITERATIONS, EVAL_EVERY):
            varied = key in spec.space or any(key in b for b in spec.grid_blocks)
            if varied:
                raise StudyError(f"{_where(spec, key)}: ASHA compares FID at the same iterations in "
                                 "every trial; fix iterations and eval_every")
    _check_names(spec, blocks)
    _validate_trials(spec, blocks)
    fid_plans(spec, configs)  # refuses reference sets too small for the extractor
    return configs


def _check_names(spec: StudySpec, blocks: list[tuple[int | None, dict[str, Any]]]) -> None:
    """Unknown names (dataset, arch, loss, regularizer, optimizer) before any cross-key check: a
    misspelt name is what a user fixes first, and the cross-key checks (``arch: mlp`` is for the
    2-D toys) assume known names. Values that are no string are left to ``validate_trial``."""
    from trainables.data import datasets as data_lib
    from trainables.params import (ARCH_RESOLUTION as ARCHS, LOSS_NAMES as LOSSES,
                                   OPTIMIZER_PARAMS as OPTIMIZERS,
                                   REGULARIZER_PARAMS as REGULARIZERS)

    registries = {DATASET: data_lib.DATASETS, ARCH: ARCHS, LOSS: LOSSES,
                  REGULARIZER: REGULARIZERS, OPTIMIZER: OPTIMIZERS}
    for block, cfg in blocks:
        for key, known in registries.items():
            value = cfg.get(key)
            if not isinstance(value, str) or value in known and key != DATASET:
                continue
            if key != DATASET:
                raise StudyError(f"{_where(spec, key, block)}: unknown {key} {value!r}"
                                 f"{did_you_mean(value, known)}; known: {', '.join(sorted(known))}")
            try:
                data_lib.dataset_entry(value)
            except data_lib.DatasetError as err:
                unknown = f"unknown dataset {value!r}"
                problem = str(err).replace(unknown, unknown + did_you_mean(value, known), 1)
                raise StudyError(f"{_where(spec, key, block)}: {problem}") from None


def _study_error(spec: StudySpec, err: ConfigError, block: int | None) -> StudyError:
    """The study's one line for a trial's :class:`ConfigError`: where the bad value comes from, or,
    for a key the study never sets, that the value is that key's default and how to change it."""
    from trainables.config import BaseTrial

    set_keys = set(spec.fixed).union(*spec.grid_blocks, spec.space)
    field = BaseTrial.model_fields.get(err.key) if err.key else None
    if field is None or err.key in set_keys or field.default is None:
        return StudyError(f"{_where(spec, err.key, block)}: {err.problem}")
    return StudyError(f"{err.key} (not set in this study, so the default {field.default}): "
                      f"{err.problem}; set fixed.{err.key} to change it")


def _refuse_yaml_bools(spec: StudySpec) -> None:
    """A YAML 1.1 boolean (unquoted yes/no/on/off/true/false) given to a trial key that is no
    true/false key: ``k_sn: yes`` would be read as 1.0, ``loss: no`` as False."""
    def check(where: str, key: Any, value: Any) -> None:
        kind = TRIAL_PARAM_TYPES.get(key) if isinstance(key, str) else None
        if isinstance(value, bool) and kind not in (None, bool):
            what = "a number" if kind in (int, float) else "a string"
            raise StudyError(f"{where}: got {bool_word(value)}, {BOOL_HINT}; {key} takes {what}")

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


def fid_plans(spec: StudySpec, configs: list[dict[str, Any]]) -> list[str]:
    """How FID will be measured, one line per (dataset, extractor, split): the resolved extractor,
    its feature dimension and the reference size. Raises :class:`StudyError` when a reference set
    is smaller than the extractor's dimension: its covariance is then singular and the FID is
    mostly estimation error (e.g. 30 held-out images of a small folder vs Inception's 2,048-d)."""
    from trainables.data import datasets as data_lib
    from trainables.metrics import fid_choice

    plans: dict[tuple, str] = {}
    for cfg in configs:
        dataset = cfg.get(DATASET, "fashion_mnist_mini")
        if cfg.get(ARCH) == "mlp" or dataset in ("ring8", "grid25"):
            plans.setdefault(("toy", dataset), f"{dataset}: data-space Fréchet distance, "
                                                "modes covered and high-quality share")
            continue
        setting = cfg.get(FID_EXTRACTOR, "auto")
        split = cfg.get(FID_REF_SPLIT, "test")
        key = (dataset, cfg.get(DATA_ROOT), setting, split)
        if key in plans:
            continue
        n_ref = data_lib.reference_size(dataset, cfg.get(DATA_ROOT), split)
        name = fid_choice.resolve_extractor(setting, n_ref)
        dim = fid_choice.EXTRACTOR_DIMS[name]
        where = _where(spec, FID_EXTRACTOR) if setting != "auto" else _where(spec, DATASET)
        if n_ref is not None and n_ref < dim:
            raise StudyError(
                f"{where}: FID of {dataset!r} would compare against {n_ref} {split!r} images "
                f"with the {name!r} extractor ({dim}-d features, from fid_extractor: {setting}); "
                f"a reference needs at least {dim} images (more images, or fid_extractor: domain "
                "for Fashion-MNIST-like data)")
        images = f"{n_ref:,} {split!r} images" if n_ref is not None else f"the full {split!r} split"
        plans[key] = (f"{dataset}: FID with {name!r} ({dim}-d"
                      f"{', resolved from auto' if setting == 'auto' else ''}) against {images}"
                      + (_cpu_inception_time(cfg, n_ref, split)
                         if name == "inception" and _trials_on_cpu(spec, cfg) else ""))
    return list(plans.values())


#: Inception's speed on a CPU, in images per second per trial: between the loaded and the frozen
#: network's speeds on a 2-core CPU (docs/measurements.md, "Offline data and weights").
INCEPTION_CPU_IMAGES_PER_S = 5.0
#: A torchvision dataset's split whose size is not counted without loading it: at least this many.
SPLIT_SIZE_AT_LEAST = {"test": 10_000, "train": 50_000}


def _trials_on_cpu(spec: StudySpec, cfg: dict[str, Any]) -> bool:
    """Whether the trials will run on a CPU: ``device: cpu``, no GPU share asked
    (``resources.gpu: 0``), or ``gpu: auto`` on a machine where torch sees no CUDA device."""
    device = cfg.get(DEVICE, "auto")
    if device != "auto":
        return device == "cpu"
    if spec.resources.gpu != "auto":
        return spec.resources.gpu == 0
    from trainables.gpu_probe import nvidia_driver_present

    if not nvidia_driver_present():  # no GPU driver: CPU, without importing torch to ask
        return True
    import torch

    return not torch.cuda.is_available()


def _cpu_inception_time(cfg: dict[str, Any], n_ref: int | None, split: str) -> str:
    """How long Inception takes on a CPU (``"; Inception on a CPU: ..."``): a trial embeds
    ``fid_samples`` real images (``fid_floor``) and generated ones at step 0 (``fid_init``), every
    ``eval_every`` steps and at the end, and with ``fid_final_samples`` set the final scale's three
    sets (``trainables.metrics.evaluation``); the reference split is embedded once and cached."""
    from trainables.config import BaseTrial

    def get(key: str) -> int:
        value = cfg.get(key, BaseTrial.model_fields[key].default)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    evals = -(-get(ITERATIONS) // max(get(EVAL_EVERY), 1))
    per_trial = get(FID_SAMPLES) * (2 + evals) + 3 * get(FID_FINAL_SAMPLES)
    n = n_ref if n_ref is not None else SPLIT_SIZE_AT_LEAST[split]
    rate = INCEPTION_CPU_IMAGES_PER_S
    return (f"; Inception on a CPU: ≈ {per_trial:,} images per trial ≈ "
            f"{duration_text(per_trial / rate)} each, plus {'≥ ' if n_ref is None else ''}{n:,} "
            f"reference images once ≈ {duration_text(n / rate)} (then cached), at ≈ {rate:g} "
            "images/s")


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
        configs.append({**spec.fixed, **chosen, SEED: spec.seed_list[0]})
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
            cfg = {**spec.fixed, SEED: spec.seed_list[0]}
            for k, v in p.items():
                cfg[k] = v.extremes()[end] if isinstance(v, SpaceEntry) else v
            configs.append(cfg)
    return configs
