"""What the hypotheses share: the linear losses, the Ω width, level selection (grid or sampled)
and the reference configurations the learning guard checks (``analysis.guard``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.frames import close, col, is_continuous
from analysis.guard import Reference
from trainables.names import (ALPHA, FID, GRAN_K, K_SN, LOSS, OMEGA_FAKE_MAX, OMEGA_FAKE_MIN,
                              OMEGA_REAL_MAX, OMEGA_REAL_MIN, OMEGA_UNION_MAX, OMEGA_UNION_MIN,
                              REGULARIZER, SEED)

#: Losses whose gradient does not depend on f (Table 1: WGAN is linear; Ψ is a single point).
LINEAR_LOSSES = frozenset({"wgan"})


def k_of(d: pd.DataFrame, name: str = K_SN) -> pd.Series:
    """The Lipschitz scale column ``name`` (k_SN by default) as floats."""
    return col(d, name).astype(float)


def omega_width(df: pd.DataFrame, kind: str) -> pd.Series:
    """Ω width: ``union`` (Ω∪ over training, Fig. 1b), ``last`` (Ω_i at the last step, real ∪ fake)."""
    if kind == "union":
        return col(df, OMEGA_UNION_MAX).astype(float) - col(df, OMEGA_UNION_MIN).astype(float)
    hi = np.fmax(col(df, OMEGA_REAL_MAX).astype(float), col(df, OMEGA_FAKE_MAX).astype(float))
    lo = np.fmin(col(df, OMEGA_REAL_MIN).astype(float), col(df, OMEGA_FAKE_MIN).astype(float))
    return hi - lo


def rows_at(d: pd.DataFrame, name: str, target: float, notes: list[str], band: float = 10.0) -> pd.Series:
    """Rows at ``d[name]`` = target: the exact level on a grid; for a sampled (continuous) column
    the rows within ×/÷ ``band`` of it (noted in ``notes``)."""
    x = col(d, name, np.nan).astype(float)
    if name == ALPHA:
        x = x.fillna(1.0)
    if is_continuous(d, name):
        notes.append(f"{name} is sampled: runs within ×/÷ {band:g} of {target:g} stand for {name} = {target:g}")
        return (x >= target / band) & (x <= target * band)
    return close(x, target)


# ------------------------------------------------------------------------------------ references
def _sn(d):
    return d[REGULARIZER] == "sn"


REF_SN_DEFAULT = Reference(
    "SN, α = 1, k_SN = 1: the paper's standard set-up, in which every loss trains (Table 2)",
    lambda d: _sn(d) & close(d[ALPHA], 1.0) & close(k_of(d), 1.0))
REF_WGAN_K1 = Reference(
    "WGAN-SN, k_SN = 1, α = 1: the α-invariant control (Eq. 11), trains in Table 2",
    lambda d: _sn(d) & d[LOSS].isin(LINEAR_LOSSES) & close(d[ALPHA], 1.0) & close(k_of(d), 1.0))
REF_WGAN_SN = Reference(
    "WGAN-SN at any k_SN and α: the comparator, trains at every k_SN in Table 2",
    lambda d: _sn(d) & d[LOSS].isin(LINEAR_LOSSES))
REF_SN_K1 = Reference(
    "SN, k_SN = 1: the runs the small-k_SN ones are compared with",
    lambda d: _sn(d) & close(k_of(d), 1.0))
REF_GRAN_K1 = Reference(
    "GraN at K = 1: the (1, ε/K) side of every pair",
    lambda d: (d[REGULARIZER] == "gran") & close(k_of(d, GRAN_K), 1.0))
REF_WGAN_GP = Reference(
    "WGAN-GP: the baseline (ALR paper Table 1: FID 18.86)",
    lambda d: (d[REGULARIZER] == "gp") & d[LOSS].isin(LINEAR_LOSSES))


# ------------------------------------------------------------------------------------ evidence rules
#: Losses whose D terms are convex in f, so ∇L is monotone on Ω and Eq. 9 (Ψ from Ω's ends) holds.
#: COS is not convex (−cos); WGAN is linear (Ψ a single point, excluded as the paper does).
CONVEX_LOSSES = frozenset({"ns", "mm", "ls", "ls0", "exp", "hinge", "softhinge"})


def uncapped_fid(df: pd.DataFrame) -> pd.Series:
    """FID as measured for runs that are not broken; NaN for broken ones (diverged, below the
    quality threshold). Equivalence tests use this, never the capped ``fid_eff``: two broken runs
    set to the same cap are equal by construction, not by evidence."""
    fid = pd.to_numeric(col(df, FID), errors="coerce").astype(float)
    return fid.where(np.isfinite(fid) & (fid > 0) & ~col(df, "broken", False).astype(bool))


def drop_alpha_copies(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """A linear loss ignores α (Eq. 11: L_α(ω) = L(αω)/α = ω), so a WGAN run at α ≠ 1 is a copy of
    the WGAN run at α = 1 with the same everything else: keep one per (config, seed), preferring
    α = 1, and say how many copies were left out (a copy is no evidence)."""
    from analysis.outcome import config_key

    lin = df[LOSS].isin(LINEAR_LOSSES)
    if not lin.any():
        return df
    d = df.assign(_a=np.where(lin, 1.0, df[ALPHA].astype(float)))
    key = config_key(d.drop(columns=[ALPHA]).rename(columns={"_a": ALPHA})).map(repr) \
        + "|" + d[SEED].astype(str)
    order = np.abs(np.log10(d[ALPHA].astype(float).clip(lower=1e-300)))
    keep = ~key.loc[order.sort_values(kind="stable").index].duplicated()
    keep = keep.reindex(df.index)
    n = int((~keep).sum())
    if n:
        notes.append(f"WGAN ignores α (Eq. 11: L_α(ω) = ω): {n} WGAN run(s) at α ≠ 1 are copies of "
                     "α = 1 runs and are left out (a copy is no evidence)")
    return df[keep]
