"""Statistics fit for a handful of runs per configuration (seeds are replicates).

* :func:`bootstrap_ci` — percentile bootstrap CI of a statistic (median by default).
* :func:`trend_test` — monotone trend: Spearman ρ within strata (e.g. per loss × dataset), pooled
  as the n-weighted mean, with an exact (small designs) or Monte-Carlo permutation p-value that
  permutes y within each stratum. Also returns ``p_min``, the smallest p-value the design could
  produce (the p of a perfect trend): a flat result only counts against a trend when the design
  could have shown one.
* :func:`tost` — two one-sided t-tests for equivalence of a mean to 0 within ±margin (on log-FID
  ratios: "close to WGAN"), with the 90 % CI that goes with a 5 % TOST.
* :func:`welch` — one-sided Welch t-tests and a CI for a difference of means.
* :func:`friedman` — Friedman test over blocks with Kendall's W as effect size.

All functions are deterministic (fixed seeds) and return plain dataclasses.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


def bootstrap_ci(values: Sequence[float], stat: Callable[[np.ndarray], float] = np.median,
                 level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat``; (nan, nan) with fewer than 2 finite values."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if x.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    boots = np.apply_along_axis(stat, 1, x[idx])
    a = (1 - level) / 2
    return (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)))


@dataclass
class TrendResult:
    rho: float          # pooled Spearman ρ (n-weighted mean over strata)
    p: float            # one-sided permutation p for the predicted direction
    p_opposite: float   # one-sided p for the opposite direction
    p_min: float        # smallest p this design can give (a perfect trend)
    n: int
    n_groups: int
    rhos: list[float]


def _ranks(a: np.ndarray) -> np.ndarray:
    return sps.rankdata(a)


def _rho_from_ranks(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Pearson correlation of rank vectors; ``ry`` may be (n_perm, n)."""
    rxc = rx - rx.mean()
    ryc = ry - ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((rxc ** 2).sum() * (ryc ** 2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ryc * rxc).sum(axis=-1) / den
    return np.where(den > 0, r, 0.0)


def trend_test(groups: Sequence[tuple[Sequence[float], Sequence[float]]], direction: int = 1,
               n_perm: int = 20000, seed: int = 0) -> TrendResult:
    """Stratified Spearman trend test of y on x.

    ``groups``: (x, y) per stratum; strata with fewer than 2 points or a constant x carry no
    information and are dropped. ``direction`` +1 predicts y increasing with x, −1 decreasing.
    The statistic is Σ n_g ρ_g / Σ n_g; its null distribution permutes y within every stratum
    (exact enumeration when Π n_g! ≤ n_perm, Monte-Carlo otherwise, p = (1 + #≥) / (1 + n_perm)).
    """
    use = []
    for x, y in groups:
        x, y = np.asarray(x, float), np.asarray(y, float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if x.size >= 2 and np.unique(x).size >= 2:
            use.append((_ranks(x), _ranks(y)))
    if not use:
        return TrendResult(math.nan, math.nan, math.nan, math.nan, 0, 0, [])
    ns = np.array([len(rx) for rx, _ in use], float)
    w = ns / ns.sum()
    rhos = [float(_rho_from_ranks(rx, ry)) for rx, ry in use]
    stat = float(np.dot(w, rhos)) * direction
    # best achievable statistic in the predicted direction: y ranks sorted along x
    best_terms = []
    for rx, ry in use:
        order = np.argsort(rx, kind="stable")
        aligned = np.empty_like(ry)
        aligned[order] = np.sort(ry) if direction > 0 else np.sort(ry)[::-1]
        best_terms.append(float(_rho_from_ranks(rx, aligned)) * direction)
    best = float(np.dot(w, best_terms))
    total = math.prod(math.factorial(len(rx)) for rx, _ in use)
    if total <= n_perm:
        perm_stats = np.zeros(1)
        for (rx, ry), wg in zip(use, w):
            vals = np.array([_rho_from_ranks(rx, ry[list(p)])
                             for p in itertools.permutations(range(len(ry)))]) * direction * wg
            perm_stats = (perm_stats[:, None] + vals[None, :]).ravel()
        n_tot = perm_stats.size
        p = float(np.mean(perm_stats >= stat - 1e-12))
        p_opp = float(np.mean(perm_stats <= stat + 1e-12))
        p_min = float(np.mean(perm_stats >= best - 1e-12))
    else:
        rng = np.random.default_rng(seed)
        perm_stats = np.zeros(n_perm)
        for (rx, ry), wg in zip(use, w):
            perms = np.argsort(rng.random((n_perm, len(ry))), axis=1)
            perm_stats += _rho_from_ranks(rx, ry[perms]) * direction * wg
        n_tot = n_perm
        p = float((1 + np.sum(perm_stats >= stat - 1e-12)) / (1 + n_tot))
        p_opp = float((1 + np.sum(perm_stats <= stat + 1e-12)) / (1 + n_tot))
        p_min = float((1 + np.sum(perm_stats >= best - 1e-12)) / (1 + n_tot))
    return TrendResult(rho=stat * direction, p=p, p_opposite=p_opp, p_min=p_min,
                       n=int(ns.sum()), n_groups=len(use), rhos=rhos)


@dataclass
class TostResult:
    mean: float
    sd: float
    n: int
    margin: float
    p_tost: float        # max of the two one-sided p-values; < α ⇒ equivalent within ±margin
    ci90: tuple[float, float]
    outside: bool        # the whole 90 % CI lies beyond +margin or below −margin


def tost(d: Sequence[float], margin: float) -> TostResult:
    """One-sample TOST: is the mean of ``d`` within (−margin, +margin)? (t-based, n ≥ 2)."""
    x = np.asarray([v for v in d if np.isfinite(v)], float)
    n = x.size
    if n < 2:
        m = float(x.mean()) if n else math.nan
        return TostResult(m, math.nan, n, margin, math.nan, (math.nan, math.nan), False)
    m, sd = float(x.mean()), float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0:
        inside = -margin < m < margin
        return TostResult(m, sd, n, margin, 0.0 if inside else 1.0, (m, m), not inside)
    df = n - 1
    p_lower = float(sps.t.sf((m + margin) / se, df))   # H0: mean ≤ −margin
    p_upper = float(sps.t.cdf((m - margin) / se, df))  # H0: mean ≥ +margin
    t95 = float(sps.t.ppf(0.95, df))
    ci = (m - t95 * se, m + t95 * se)
    return TostResult(m, sd, n, margin, max(p_lower, p_upper), ci,
                      bool(ci[0] > margin or ci[1] < -margin))


@dataclass
class WelchResult:
    diff: float                # mean(a) − mean(b)
    p_less: float              # one-sided p for mean(a) < mean(b)
    p_greater: float
    ci90: tuple[float, float]  # 90 % CI of the difference
    n_a: int
    n_b: int


def welch(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's unequal-variance t-test, both one-sided p-values and the 90 % CI (n ≥ 2 each)."""
    a = np.asarray([v for v in a if np.isfinite(v)], float)
    b = np.asarray([v for v in b if np.isfinite(v)], float)
    if a.size < 2 or b.size < 2:
        diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
        return WelchResult(diff, math.nan, math.nan, (math.nan, math.nan), a.size, b.size)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    se = math.sqrt(va + vb)
    if se == 0:
        return WelchResult(diff, 0.0 if diff < 0 else 1.0, 0.0 if diff > 0 else 1.0,
                           (diff, diff), a.size, b.size)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    t = diff / se
    t95 = float(sps.t.ppf(0.95, df))
    return WelchResult(diff, float(sps.t.cdf(t, df)), float(sps.t.sf(t, df)),
                       (diff - t95 * se, diff + t95 * se), a.size, b.size)


@dataclass
class FriedmanResult:
    chi2: float
    p: float
    w: float          # Kendall's W = χ² / (b (k − 1)), 0 (no effect) … 1 (same order in every block)
    n_blocks: int
    n_treatments: int
    mean_ranks: dict[str, float]


def friedman(table: "np.ndarray | Sequence[Sequence[float]]", treatments: Sequence[str]) -> FriedmanResult:
    """Friedman test: rows are blocks, columns treatments (lower value = rank 1)."""
    x = np.asarray(table, float)
    b, k = x.shape if x.ndim == 2 else (0, len(treatments))
    if b < 2 or k < 2:
        return FriedmanResult(math.nan, math.nan, math.nan, b, k, {})
    ranks = np.apply_along_axis(sps.rankdata, 1, x)
    mean_ranks = {t: float(r) for t, r in zip(treatments, ranks.mean(axis=0))}
    # tie-corrected statistic (Conover); all-tied blocks contribute nothing
    rbar = (k + 1) / 2
    ss = b * np.sum((ranks.mean(axis=0) - rbar) ** 2)
    ties = sum(np.sum(np.unique(row, return_counts=True)[1] ** 3 - np.unique(row, return_counts=True)[1])
               for row in x)
    denom = k * (k + 1) / 12 - ties / (12 * b * (k - 1))
    if denom <= 0:
        return FriedmanResult(0.0, 1.0, 0.0, b, k, mean_ranks)
    chi2 = float(ss / denom)
    p = float(sps.chi2.sf(chi2, k - 1))
    return FriedmanResult(chi2, p, float(chi2 / (b * (k - 1))), b, k, mean_ranks)
