"""Identity checks: two configurations the theory says run the same computation, one of them with
its outputs scaled by a known factor — Eq. 3 (k_SN with ε·k_SN^n against k_SN = 1) and GraN-GAN
Eq. 21 ((K, ε) against (1, ε/K) under Adam).

An identity is checked, not estimated: per matched pair (same config and seed) every quantity the
theory predicts must agree to a relative tolerance — quantities of D's output (Ω ends, a linear
loss's value) after dividing by the scale, quantities of G's samples (FID) as they are. When the
scale is a power of 2 every multiplication by it is exact in floating point, so the runs agree at
every step; with any other factor rounding differs in the last bit and training amplifies it, so
only early steps (per-step ``histories``) can be compared. No learning guard: the identity is a
property of the computation, whether or not the GAN learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.frames import ids
from analysis.verdict import Verdict, bare_verdict, missing
from trainables.names import FID, OMEGA_FAKE_MAX, OMEGA_FAKE_MIN, OMEGA_REAL_MAX, OMEGA_REAL_MIN

#: Quantities that scale with D's output (divided by the pair's scale before comparing).
SCALED = (OMEGA_REAL_MIN, OMEGA_REAL_MAX, OMEGA_FAKE_MIN, OMEGA_FAKE_MAX)
#: Quantities of the samples (G is the same computation): compared as they are.
UNSCALED = (FID,)


def exact_scale(s: float) -> bool:
    """A power of 2 (multiplying by it is exact in binary floating point)."""
    m, _ = math.frexp(float(s))
    return s > 0 and m == 0.5


@dataclass
class Pair:
    a: str          # run id of the scaled configuration
    b: str          # run id of the reference configuration
    scale: float    # a's D outputs = scale × b's
    label: str


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    den = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-12)
    return np.abs(a - b) / den


def _final_diff(ra: pd.Series, rb: pd.Series, scale: float, extra_scaled) -> float | None:
    diffs = []
    for c in (*SCALED, *extra_scaled):
        if c in ra and np.isfinite(ra[c]) and np.isfinite(rb[c]):
            diffs.append(float(_rel(np.array([ra[c] / scale]), np.array([rb[c]]))[0]))
    for c in UNSCALED:
        if c in ra and np.isfinite(ra[c]) and np.isfinite(rb[c]):
            diffs.append(float(_rel(np.array([ra[c]]), np.array([rb[c]]))[0]))
    return max(diffs) if diffs else None


def _early_diff(h: pd.DataFrame, p: Pair, n_early: int, extra_scaled) -> float | None:
    cols = (*SCALED, *extra_scaled)
    sub = h[h["run_id"].isin((p.a, p.b)) & h["metric"].isin(cols)]
    if sub.empty:
        return None
    wide = sub.pivot_table(index=["metric", "step"], columns="run_id", values="value", aggfunc="last")
    if p.a not in wide or p.b not in wide:
        return None
    wide = wide.dropna()
    steps = sorted(wide.index.get_level_values("step").unique())[:n_early]
    wide = wide[wide.index.get_level_values("step").isin(steps)]
    if wide.empty:
        return None
    return float(_rel(wide[p.a].to_numpy() / p.scale, wide[p.b].to_numpy()).max())


def identity_rule(n_bad: int, n_compared: int, min_pairs: int) -> str:
    """An identity's decision: one pair beyond its tolerance contradicts; ≥ min_pairs compared
    pairs, all within, support."""
    if n_bad:
        return "contradicted"
    return "supported" if n_compared >= min_pairs else "inconclusive"


def identity_verdict(df: pd.DataFrame, pairs: list[Pair], *, tol: float, early_tol: float,
                     n_early: int, min_pairs: int, histories: pd.DataFrame | None,
                     what: str, extra_scaled: tuple[str, ...] = (), notes: str = "") -> Verdict:
    """The identity check over ``pairs`` (module docstring). supported ⇔ ≥ min_pairs pairs were
    compared and every one agrees within its tolerance; contradicted ⇔ a pair disagrees where the
    identity must hold (an exact scale at any step, or any scale at the early steps); inconclusive
    otherwise (too few comparable pairs, or only inexact pairs without histories)."""
    rows = df.set_index(df["run_id"].astype(str))
    lines, worst, compared, bad, uncomparable, used = [], 0.0, 0, [], 0, []
    have_h = histories is not None and len(histories) > 0
    for p in pairs:
        exact = exact_scale(p.scale)
        early = _early_diff(histories, p, n_early, extra_scaled) if have_h else None
        final = _final_diff(rows.loc[p.a], rows.loc[p.b], p.scale, extra_scaled) if exact else None
        parts = []
        if early is not None:
            parts.append(f"first {n_early} logged steps ×/÷ {early:.2g}")
            if early > early_tol:
                bad.append(p.label)
        if final is not None:
            parts.append(f"final values {final:.2g}")
            if final > tol:
                bad.append(p.label)
        if not parts:
            uncomparable += 1
            continue
        compared += 1
        used += [p.a, p.b]
        worst = max(worst, *(x for x in (early, final) if x is not None))
        lines.append(f"{p.label}: relative difference " + ", ".join(parts))
    sub = df[df["run_id"].astype(str).isin(used)]
    detail = (f"{compared} pair(s) compared ({what}); tolerance {tol:g} (exact scales), {early_tol:g} "
              f"(first {n_early} logged steps)" + "".join(". " + x if i == 0 else "; " + x for i, x in enumerate(lines[:12]))
              + (f"; … (+{len(lines) - 12})" if len(lines) > 12 else "")
              + (f". {uncomparable} pair(s) with an inexact scale (not a power of 2) and no per-step "
                 "histories could not be compared: rounding differs in the last bit and training "
                 "amplifies it, so only their early steps are evidence" if uncomparable else "")
              + "." + notes)
    kw = dict(statistic=worst if compared else None, statistic_name="max relative difference",
              effect_size=worst if compared else None, effect_name="max relative difference",
              n=compared, run_ids=ids(sub) if len(sub) else ids(df), details=detail)
    verdict = identity_rule(len(bad), compared, min_pairs)
    if verdict == "contradicted":
        return bare_verdict("contradicted", **{**kw, "details": detail + f" Not identical: {', '.join(dict.fromkeys(bad))}."})
    if verdict == "supported":
        return bare_verdict("supported", **kw)
    return missing(f"need ≥ {min_pairs} comparable pairs; have {compared}"
                   + (f" ({uncomparable} with an inexact scale and no histories: use powers of 2, or "
                      "give per-step histories)" if uncomparable else ""), **kw)
