"""Packing a grid study's configs into population trials (``trainables.pack.population``): which
configs can be pack members, and which can share a pack (equal shape keys)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from trainables import names
from trainables.config import BaseTrial
from trainables.params import OPTIMIZER_PARAMS, REGULARIZER_PARAMS, member_keys

#: Regularizers a population trial can batch (declared ``packs``); the others run one config
#: per trial.
POPULATION_REGULARIZERS: tuple[str, ...] = tuple(
    name for name, params in REGULARIZER_PARAMS.items() if params.packs)

#: Trial keys in which members of one pack may differ (the fields marked ``member_field``;
#: every other key is a shape key, equal across the pack).
MEMBER_KEYS: frozenset[str] = member_keys(BaseTrial).union(
    *(member_keys(m) for m in (*REGULARIZER_PARAMS.values(), *OPTIMIZER_PARAMS.values())))


def unsupported_reason(cfg: dict[str, Any]) -> str | None:
    """Why ``cfg`` cannot be a pack member (None when it can)."""
    if cfg.get(names.REGULARIZER) not in POPULATION_REGULARIZERS:
        return (f"regularizer {cfg.get(names.REGULARIZER)!r} runs one config per trial (population "
                f"supports {', '.join(POPULATION_REGULARIZERS)})")
    return None


def pack_signature(cfg: dict[str, Any]) -> tuple:
    """The shape keys of a config: configs with equal signatures can share a pack."""
    return tuple(sorted((k, repr(v)) for k, v in cfg.items() if k not in MEMBER_KEYS))


def pack_configs(configs: Sequence[dict[str, Any]], population: int) -> list[list[int]]:
    """Indices of ``configs`` grouped into packs of at most ``population`` members sharing shape
    keys, in first-appearance order; unsupported configs (``unsupported_reason``) get a pack of
    their own. Groups of n > P members are split into ceil(n/P) packs of near-equal size."""
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    groups: dict[tuple, list[int]] = {}
    order: list[tuple] = []
    for i, cfg in enumerate(configs):
        key = ("__solo__", i) if unsupported_reason(cfg) or population == 1 else pack_signature(cfg)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(i)
    packs: list[list[int]] = []
    for key in order:
        idx = groups[key]
        n_packs = math.ceil(len(idx) / population)
        size = math.ceil(len(idx) / n_packs)
        packs.extend(idx[j:j + size] for j in range(0, len(idx), size))
    return packs
