"""What counts as a result: usable runs, learned and broken runs, the capped FID the tests use.

* Usable runs: status ``finished`` or ``diverged``. A diverged run (NaN/inf, Eq. 11's exp overflow at
  α = 1e11, …) is an *outcome* of its configuration and is kept; a ``crashed`` or ``running`` run is
  not an outcome (infrastructure) and is left out, and the report lists it.
* Quality (``analysis.scale``): 0 = untrained generator, 1 = real data, from each run's own FID
  scale (``fid_floor``, ``fid_init``; toys: modes covered and high-quality share).
* Broken: quality < ``q_broken`` (default ``scale.Q_LEARNED`` = 0.3, chosen a priori: on Inception
  features it is the Lipschitz paper's "FID ≥ 100 is broken", see ``analysis.scale``); a diverged
  run is broken; a published "did not reach FID < c" cell (``fid_censor``) is broken. Rows without a
  scale: with Inception features the paper's own rule, FID ≥ ``fid_cap`` (100); with any other
  extractor broken is *unknown* (``broken_known`` False) — only divergence counts. There is no
  relative-to-best cap any more (it made every ring8 run "broken").
* ``learned`` = not broken, where known (NA otherwise).
* ``fid_eff`` = min(FID, cap), and = cap for broken rows: tests on FID rank or average this capped
  value, so "broken" is one level and its exact size does not matter. The cap is the FID at quality
  ``q_broken`` on the run's scale (median over the runs of the same dataset, extractor, N,
  resolution and architecture); 100 for Inception rows without a scale; for toys and rows without
  a scale the worst FID observed on the same dataset and extractor.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import scale
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED
from trainables.names import (ARCH, DATASET, DIVERGED, FID, FID_EXTRACTOR, FID_FLOOR, FID_INIT,
                              FID_SAMPLES, RESOLUTION, SCIENCE_ROLES)

USABLE = ("finished", DIVERGED)

#: Scale groups: runs that share these share a floor and (up to the seed) an untrained FID.
SCALE_KEYS = (DATASET, FID_EXTRACTOR, FID_SAMPLES, RESOLUTION, ARCH)


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The science columns present in ``frame`` (roles ``stratum``/``factor`` in
    ``trainables.names.KEY_ROLES``): what defines a configuration. The seed (replicate), execution
    keys (device, step mode, cadences, …), measurement and derived columns never do."""
    from analysis.load import COLUMN_ROLES, PARAM_TYPES

    cols = [c for c in PARAM_TYPES if c in frame.columns and COLUMN_ROLES.get(c) in SCIENCE_ROLES]
    return ["origin", *cols] if "origin" in frame.columns else cols


def config_key(frame: pd.DataFrame) -> pd.Series:
    """A hashable key per row: the values of :func:`config_columns` (NA-safe)."""
    cols = config_columns(frame)
    return frame[cols].astype(object).where(frame[cols].notna(), None).apply(tuple, axis=1)


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"].isin(USABLE)]


def _keys(frame: pd.DataFrame, cols) -> list[pd.Series]:
    return [frame[c].astype(object).where(frame[c].notna(), "∅") if c in frame.columns
            else pd.Series("∅", index=frame.index, dtype=object) for c in cols]


def caps(frame: pd.DataFrame, fid_cap: float = FID_CAP_INCEPTION,
         q_broken: float = Q_LEARNED) -> pd.Series:
    """The FID cap of every row (see the module docstring)."""
    idx = frame.index
    out = pd.Series(np.nan, index=idx, dtype=float)
    if not len(frame):
        return out
    floor = scale.numeric(frame, FID_FLOOR)
    init = scale.numeric(frame, FID_INIT)
    per_run = pd.Series(scale.fid_at_quality(q_broken, floor.to_numpy(), init.to_numpy()), index=idx)
    toy = scale.is_toy(frame)
    has = per_run.notna() & ~toy
    if has.any():
        grp = per_run[has].groupby(_keys(frame[has], SCALE_KEYS)).transform("median")
        out[has] = grp
    ext = frame[FID_EXTRACTOR] if FID_EXTRACTOR in frame else pd.Series("inception", index=idx)
    ext = ext.fillna("inception")
    inc = out.isna() & (ext == "inception") & ~toy
    out[inc] = fid_cap
    rest = out.isna()
    if rest.any():
        fid = scale.numeric(frame, FID)
        fid = fid.where(np.isfinite(fid))
        worst = fid[rest].groupby(_keys(frame[rest], (DATASET, FID_EXTRACTOR))).transform("max")
        out[rest] = worst
    return out


def with_outcome(frame: pd.DataFrame, fid_cap: float = FID_CAP_INCEPTION,
                 q_broken: float = Q_LEARNED) -> pd.DataFrame:
    """Usable rows with the scale (``analysis.scale.run_quality`` columns), ``cap``, ``broken``,
    ``broken_known``, ``learned`` and ``fid_eff`` added (see the module docstring)."""
    df = usable(frame).copy()
    q = scale.run_quality(df)
    for c in q.columns:
        df[c] = q[c]
    if not len(df):
        for c in ("cap", "fid_eff"):
            df[c] = pd.Series(dtype=float)
        for c in ("broken", "broken_known"):
            df[c] = pd.Series(dtype=bool)
        df["learned"] = pd.Series(dtype="boolean")
        return df
    df["cap"] = caps(df, fid_cap, q_broken)
    fid = scale.numeric(df, FID)
    fid = fid.where(np.isfinite(fid))
    censor = scale.numeric(df, "fid_censor")
    div = df[DIVERGED].astype(bool)
    ext = df[FID_EXTRACTOR].fillna("inception") if FID_EXTRACTOR in df else pd.Series("inception", index=df.index)
    has_q = df["quality"].notna()
    inception_rule = ~has_q & (ext == "inception") & ~scale.is_toy(df)
    broken = div.copy()
    broken |= has_q & (df["quality"] < q_broken)
    broken |= inception_rule & (fid >= fid_cap)
    broken |= fid.isna() & censor.notna()
    broken |= censor.notna() & (censor >= df["cap"])
    known = div | has_q | (inception_rule & (fid.notna() | censor.notna())) | censor.notna()
    df["broken"] = broken.astype(bool)
    df["broken_known"] = known.astype(bool)
    df["learned"] = pd.array(np.where(known, ~broken, None), dtype="boolean")
    eff = np.minimum(fid, df["cap"])
    eff[df["broken"]] = df["cap"][df["broken"]]
    df["fid_eff"] = eff
    return df
