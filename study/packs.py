"""How a study's configurations become Tune trials: population packs, and the counts of Tune
trials and MLflow runs a study makes.

With ``population: P`` > 1 a grid study's configurations sharing shape keys are packed into
trials of at most P members (``trainables.pack.population.pack_configs``); a searched study asks
⌊P / n_seeds⌋ configurations per pack, each with every seed (``study.search.configs_per_pack``).
Regularizers the population cannot batch run one configuration per trial.
"""

from __future__ import annotations

import math
from typing import Any

from study.search import configs_per_pack, fixed_regularizer
from study.spec import StudySpec, check_study
from trainables.names import REGULARIZER


def study_packs(spec: StudySpec) -> list[list[dict[str, Any]]]:
    """A grid study's configs packed into population trials (``population.pack_configs``: at
    most ``spec.population`` members sharing shape keys; regularizers the population cannot
    batch run one config per trial)."""
    from trainables.config import validate_trial
    from trainables.pack.population import pack_configs

    configs = check_study(spec)
    full = [validate_trial(c, check_data=False) for c in configs]
    return [[configs[i] for i in p] for p in pack_configs(full, spec.population)]


def population_notes(spec: StudySpec) -> list[str]:
    """One line per kind of config that runs alone although ``population`` > 1; for a searched
    study that packs, one line on what a pack holds."""
    if spec.population <= 1:
        return []
    from trainables.pack.population import unsupported_reason

    if spec.search != "grid":
        k = configs_per_pack(spec)
        if not k:
            return [unsupported_reason({REGULARIZER: fixed_regularizer(spec)})]
        n = spec.n_seeds
        return [f"population {spec.population}: each pack asks {k} configuration(s) x {n} "
                f"seed(s) = {k * n} members; {spec.num_samples} configurations in "
                f"{n_trials(spec)} pack(s)"]
    from trainables.config import validate_trial

    reasons = {unsupported_reason(validate_trial(c, check_data=False)) for c in check_study(spec)}
    return sorted(r for r in reasons if r)


def n_trials(spec: StudySpec) -> int:
    """Tune trials of the study (a pack is one)."""
    if spec.search == "grid":
        if spec.population > 1:
            return len(study_packs(spec))
        return len(check_study(spec))
    k = configs_per_pack(spec)
    if k:
        return math.ceil(spec.num_samples / k)
    return spec.num_samples * len(spec.seed_list)


def n_runs(spec: StudySpec) -> int:
    """MLflow child runs of the study: configurations x seeds (a pack member is one)."""
    if spec.search == "grid":
        return len(check_study(spec))
    return spec.num_samples * len(spec.seed_list)
