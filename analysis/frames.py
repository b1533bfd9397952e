"""Frame helpers shared by the hypotheses, the learning guard and the report: the prepared frame,
strata (origin, dataset, architecture, extractor, …), sampled (continuous) columns, labels.

A continuous column — an Optuna/random search's k_SN, α, ε — is ranked as sampled and never used as
a stratum (every run would be its own); whether a column is continuous is judged on the whole
design (:func:`prep` stores it in ``attrs``), not on the subset a hypothesis selects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import UNKNOWN_VERSION, check_versions, code_versions
from analysis.outcome import config_columns, config_key, with_outcome
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED
from trainables.names import (ALPHA, ALR_K, ARCH, CLIP_C, DATASET, D_BIAS, EPS, FID_EXTRACTOR,
                              GRAN_K, K_GP, K_SN, LIPSCHITZ_K, LOSS, N_D_LAYERS, OMEGA_BOUND,
                              OPTIMIZER, REGULARIZER, SEED)

#: Strata of the learning guard (and of every comparison): FIDs of different datasets,
#: architectures or feature extractors are never compared.
GUARD_KEYS = ("origin", DATASET, ARCH, FID_EXTRACTOR)
#: "Continuous" (sampled, not a grid level: ranked, never a stratum) needs this many levels
CONTINUOUS_MIN_LEVELS = 6
#: (A float column with at least that many distinct values, each typically used by one
#: configuration only.)



def col(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(default, index=df.index, dtype=object if isinstance(default, str) else float)


def close(a: pd.Series, value: float, rtol: float = 1e-6) -> pd.Series:
    return pd.Series(np.isclose(a.astype(float), value, rtol=rtol, atol=0), index=a.index)


def _origin(df: pd.DataFrame) -> pd.Series:
    """Our runs pool across experiments; published/external rows stay within their paper/source."""
    o = col(df, "origin", "run").fillna("run").astype(str)
    exp = col(df, "experiment", "").fillna("").astype(str)
    return pd.Series(np.where(o == "run", "run", o + ":" + exp), index=df.index)


def prep(frame: pd.DataFrame, fid_cap: float = FID_CAP_INCEPTION,
         q_broken: float = Q_LEARNED) -> pd.DataFrame:
    """Usable runs with the outcome columns and the defaults the hypotheses rely on. Runs of
    several code versions are refused (``analysis.load.check_versions``: one line naming them)
    unless the frame was marked as pooled."""
    check_versions(frame, pool="pooled_versions" in frame.attrs)
    df = with_outcome(frame, fid_cap, q_broken)
    df[ALPHA] = col(df, ALPHA, 1.0).astype(float).fillna(1.0)
    df[FID_EXTRACTOR] = col(df, FID_EXTRACTOR, "inception").fillna("inception")
    df[SEED] = col(df, SEED, 0).fillna(0).astype(int)
    df["origin"] = _origin(df)
    for c in (LOSS, REGULARIZER, DATASET):
        df[c] = col(df, c, "").fillna("")
    # sampled columns are judged on the whole design, not on the subset a hypothesis selects
    # (4 sampled k_SN values near 1 are still sampled values); subsets inherit attrs
    df.attrs["continuous"] = frozenset(
        c for c in config_columns(df) if pd.api.types.is_float_dtype(df[c]) and _continuous(df, c))
    return df


def versions_note(frame: pd.DataFrame) -> str | None:
    """One sentence listing the code versions of a frame that pools several, or saying that the
    code of runs without a provenance tag is unknown; None for runs of one known version."""
    pooled = frame.attrs.get("pooled_versions")
    if not pooled or len(pooled) < 2:
        mine = code_versions(frame)
        if len(mine) and (mine == UNKNOWN_VERSION).all():
            return (f"Code version unknown for all {len(mine)} runs (no provenance tag: made "
                    f"before runs recorded it), so whether they ran on one code cannot be "
                    f"checked.")
        return None
    listed = "; ".join(f"{v}: {n} runs" for v, n in pooled.items())
    return (f"Pooled runs of {len(pooled)} code versions (--pool-versions; runs without a "
            f"provenance tag are 'unknown'): {listed}.")


def guard_key(frame: pd.DataFrame) -> pd.Series:
    """The stratum (:data:`GUARD_KEYS`) of every row of a *raw* frame (not a :func:`prep` one), as
    a tuple (origin, dataset, arch, extractor)."""
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    def filled(name, default):
        s = col(frame, name, default).astype(object)
        return s.where(s.notna() & (s != ""), default)
    keys = zip(_origin(frame), filled(DATASET, ""), filled(ARCH, "∅"),
               filled(FID_EXTRACTOR, "inception"))
    return pd.Series(list(keys), index=frame.index, dtype=object)


def in_strata(frame: pd.DataFrame, keys: Iterable[tuple]) -> pd.Series:
    wanted = set(keys)
    return guard_key(frame).map(lambda k: k in wanted).astype(bool)


def stratum_name(key: tuple) -> str:
    origin, ds, arch, ext = key
    where = "our runs" if origin == "run" else origin
    return f"{ds or '?'} / {arch if arch != '∅' else 'arch ?'} / {ext} ({where})"


def ids(df: pd.DataFrame) -> list[str]:
    return [str(r) for r in df["run_id"]]


def is_continuous(df: pd.DataFrame, c: str) -> bool:
    """Is ``c`` sampled (an Optuna/random search's k_SN, α, ε) rather than laid out on a grid?
    Yes when it takes ≥ :data:`CONTINUOUS_MIN_LEVELS` distinct values and a value is typically
    used by a single configuration (a grid level is shared by every combination of the others).
    On a :func:`prep` frame (or a subset of one) the answer is the whole design's."""
    if "continuous" in df.attrs:
        return c in df.attrs["continuous"]
    return _continuous(df, c)


def _continuous(df: pd.DataFrame, c: str) -> bool:
    if c not in df.columns or not pd.api.types.is_numeric_dtype(df[c]):
        return False
    v = pd.to_numeric(df[c], errors="coerce")
    ok = v.notna()
    if not ok.any():
        return False
    level = v[ok].map(lambda x: float(f"{x:.9g}"))
    if level.nunique() < CONTINUOUS_MIN_LEVELS:
        return False
    configs = config_key(df[ok]).map(repr)
    per_level = configs.groupby(level).nunique()
    return float(per_level.median()) <= 1


def studied(*keys: str) -> list[str]:
    """``keys`` as :func:`strata` takes the columns a hypothesis studies (never strata)."""
    return [f"-{k}" for k in keys]


def strata(df: pd.DataFrame, extra: list[str], notes: list[str] | None = None) -> list[str]:
    """Grouping columns: origin, dataset, architecture, extractor, the listed ones, and every other
    config column that varies inside them except those the hypothesis studies (passed in ``extra``
    with '-'). A continuous column is never a stratum (its name goes to ``notes``)."""
    drop = {c[1:] for c in extra if c.startswith("-")}
    keep = [c for c in extra if not c.startswith("-")]
    out = ["origin", DATASET, FID_EXTRACTOR] + ([ARCH] if ARCH in df.columns else [])
    others = [c for c in config_columns(df) if c not in drop and c not in out and c not in keep
              and c not in (LIPSCHITZ_K, OMEGA_BOUND, N_D_LAYERS)]
    for c in keep + others:
        if c not in df.columns or c in out:
            continue
        if c not in keep and df[c].astype(object).nunique(dropna=False) <= 1:
            continue
        if c != SEED and pd.api.types.is_float_dtype(df[c]) and is_continuous(df, c):
            if notes is not None:
                notes.append(c)
            continue
        out.append(c)
    return out


def groupby(df: pd.DataFrame, cols: list[str]):
    cols = [c for c in cols if c in df.columns]
    return df.astype({c: object for c in cols}).fillna({c: "∅" for c in cols}).groupby(cols, sort=True)


def config_label(rows: pd.DataFrame) -> str:
    """A short name for the configuration of ``rows`` (loss-regularizer, its K, α, ε …)."""
    r = rows.iloc[0]
    def has(c):
        return c in rows.columns and pd.notna(r.get(c))
    parts = [f"{r.get(LOSS) or '?'}-{r.get(REGULARIZER) or '?'}"]
    for c, sym in ((K_SN, "k_SN"), (K_GP, "k_GP"), (GRAN_K, "K"), (ALR_K, "K"), (CLIP_C, "c")):
        if has(c):
            parts.append(f"{sym} {float(r[c]):.3g}")
    if has(ALPHA) and not math.isclose(float(r[ALPHA]), 1.0):
        parts.append(f"α {float(r[ALPHA]):.3g}")
    if has(OPTIMIZER):
        parts.append(str(r[OPTIMIZER]))
    if has(EPS) and not math.isclose(float(r[EPS]), 1e-8):
        parts.append(f"ε {float(r[EPS]):.3g}")
    if has(D_BIAS) and r[D_BIAS] is False:
        parts.append("no bias")
    return " ".join(parts)
