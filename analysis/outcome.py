"""What counts as a result: usable runs, broken runs, the capped FID the tests use.

* Usable runs: status ``finished`` or ``diverged``. A diverged run (NaN/inf, Eq. 11's exp overflow at
  α = 1e11, …) is an *outcome* of its configuration and is kept; a ``crashed`` or ``running`` run is
  not an outcome (infrastructure) and is left out, and the report lists it.
* Broken: the Lipschitz paper calls FID "≥ 100" broken (Sec. 2.1, Table 2). That threshold is on
  the Inception scale; for another feature extractor (``domain``, ``data-space``) the cap is
  ``rel_cap`` × the best configuration's median FID on the same dataset and extractor (default 3,
  chosen a priori: Table 2's k_SN ≥ 5 breakdowns are ≥ 3× the best FID of their dataset). A
  diverged run, and a published "did not reach FID < c" cell (``fid_censor``), is broken.
* ``fid_eff`` = min(FID, cap), and = cap for broken-without-FID rows: tests on FID rank or
  average this capped value, so "broken" is one level and its exact size does not matter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The paper's "≥ 100 is broken" (Lipschitz paper Sec. 2.1), Inception FID.
FID_CAP_INCEPTION = 100.0
#: For other extractors: cap = REL_CAP × best configuration's median FID (same dataset, extractor).
REL_CAP = 3.0

USABLE = ("finished", "diverged")

#: Columns that identify a configuration apart from its seed (replicates share all of these).
NON_CONFIG = {"seed", "device", "data_root", "download", "g_params", "d_params", "fid_ref_split",
              "run_id", "run_name", "parent_run_id", "status", "diverged", "diverged_step",
              "diverged_reason", "source", "experiment", "study", "mlflow_status", "start_time",
              "end_time", "notes", "method", "table", "paper", "fid_std", "is_std", "is_best",
              "n_seeds", "stats_every", "eval_every"}


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The param columns present in ``frame`` that define a configuration (seed excluded)."""
    from analysis.load import METRICS, PARAM_TYPES

    cols = [c for c in PARAM_TYPES if c in frame.columns and c not in NON_CONFIG and c not in METRICS
            and c not in ("fid_censor", "is_score")]
    return ["origin", *cols] if "origin" in frame.columns else cols


def config_key(frame: pd.DataFrame) -> pd.Series:
    """A hashable key per row: the values of :func:`config_columns` (NA-safe)."""
    cols = config_columns(frame)
    return frame[cols].astype(object).where(frame[cols].notna(), None).apply(tuple, axis=1)


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"].isin(USABLE)]


def caps(frame: pd.DataFrame, fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> pd.Series:
    """The FID cap of every row (by dataset and extractor)."""
    ext = frame.get("fid_extractor", pd.Series(index=frame.index, dtype=object)).fillna("inception")
    ds = frame.get("dataset", pd.Series(index=frame.index, dtype=object)).fillna("?")
    out = pd.Series(fid_cap, index=frame.index, dtype=float)
    other = ext != "inception"
    if other.any():
        ok = (frame["status"] == "finished") & frame["fid"].notna() if "fid" in frame else other & False
        sub = frame[ok & other].copy()
        if len(sub):
            sub["_key"] = config_key(sub)
            best = (sub.groupby([ds[sub.index], ext[sub.index], sub["_key"]])["fid"].median()
                    .groupby(level=[0, 1]).min())
            for i in frame.index[other]:
                b = best.get((ds[i], ext[i]))
                out[i] = rel_cap * b if b is not None and np.isfinite(b) and b > 0 else np.nan
        else:
            out[other] = np.nan
    return out


def with_outcome(frame: pd.DataFrame, fid_cap: float = FID_CAP_INCEPTION,
                 rel_cap: float = REL_CAP) -> pd.DataFrame:
    """Usable rows with ``cap``, ``broken`` and ``fid_eff`` added (see module docstring)."""
    df = usable(frame).copy()
    if not len(df):
        for c in ("cap", "broken", "fid_eff"):
            df[c] = pd.Series(dtype=float)
        return df
    df["cap"] = caps(df, fid_cap, rel_cap)
    fid = df["fid"].astype(float) if "fid" in df else pd.Series(np.nan, index=df.index)
    censor = df["fid_censor"].astype(float) if "fid_censor" in df else pd.Series(np.nan, index=df.index)
    broken = df["diverged"].astype(bool) | (fid >= df["cap"]) | (fid.isna() & censor.notna())
    broken |= censor.notna() & (censor >= df["cap"])
    df["broken"] = broken.astype(bool)
    eff = np.minimum(fid, df["cap"])
    eff[df["broken"]] = df["cap"][df["broken"]]
    df["fid_eff"] = eff
    return df
