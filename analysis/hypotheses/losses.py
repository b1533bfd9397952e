"""H1: is keeping ‖∇f‖ small (1-Lipschitz regularization) the key, the loss contributing little?
(Lipschitz paper Sec. 2, Table 2.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats
from analysis.frames import col, groupby, ids, prep, strata, studied
from analysis.hypotheses.common import REF_SN_DEFAULT, rows_at
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED
from analysis.verdict import SIG, Verdict, bare_verdict, missing, register, render_notes
from trainables.names import ALPHA, K_SN, LOSS, REGULARIZER, SEED


@register(
    "H1",
    "Keeping ‖∇f‖ small by 1-Lipschitz regularization is the key to GAN training and the choice of "
    "loss contributes little (so at large k_SN all losses should fare alike).",
    "Lipschitz paper Sec. 2, Hypothesis 1; evidence Table 2 (WGAN-SN outlier at k_SN ≥ 5)",
    groups=("h1",), reference=REF_SN_DEFAULT,
)
def h1(frame: pd.DataFrame, *, large_k: float = 5.0, sig: float = SIG, w_large: float = 0.3,
       w_small: float = 0.1, e2_large: float = 0.06, e2_small: float = 0.01,
       fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED) -> Verdict:
    """Friedman test of the loss effect on capped FID at k_SN ≥ ``large_k`` (α = 1, SN).

    Blocks = (origin, dataset, extractor, k_SN, seed); treatments = losses. Effect = Kendall's W.
    contradicted ⇔ p < sig and W ≥ w_large (the loss matters, e.g. WGAN stays good while others
    break); supported ⇔ p ≥ sig, W < w_small and the design could have detected a perfect loss
    effect; inconclusive otherwise. W: 0.1 small, 0.3 moderate, 0.5 large (Cohen's conventions).

    Without complete blocks (a search: k_SN and α sampled, no two runs share a k_SN): Kruskal-Wallis
    over losses on capped-FID ranks taken within each stratum, effect ε² = H/(n − 1) with the same
    rule (e2_large 0.06 moderate, e2_small 0.01 small: the η² conventions); α within ×/÷ 10 of 1.
    """
    df = prep(frame, fid_cap, q_broken)
    notes: list[str] = []
    df = df[(df[REGULARIZER] == "sn") & (col(df, K_SN).astype(float) >= large_k)]
    df = df[rows_at(df, ALPHA, 1.0, notes) & df["fid_eff"].notna()]
    if df.empty:
        return missing(f"no SN runs with α = 1 and k_SN ≥ {large_k}: H1 needs runs of ≥ 2 losses there")
    block_cols = strata(df, [K_SN, SEED, *studied(LOSS)], notes)
    pivot = (df.astype({c: object for c in block_cols}).fillna({c: "∅" for c in block_cols})
             .pivot_table(index=block_cols, columns=LOSS, values="fid_eff", aggfunc="median"))
    present = pivot.notna().sum()
    pivot = pivot.loc[:, present >= present.max() / 2].dropna()
    losses = list(pivot.columns)
    used = df[df[LOSS].isin(losses)]
    if len(losses) < 2 or len(pivot) < 2:
        v = _h1_rank_test(df, large_k, sig, e2_large, e2_small, notes)
        if v is not None:
            return v
        return missing(f"need ≥ 2 losses in ≥ 2 complete blocks (dataset × k_SN ≥ {large_k} × seed), "
                       f"or ≥ 2 runs of each of ≥ 2 losses for a rank test; have {len(losses)} "
                       f"loss{'' if len(losses) == 1 else 'es'} in {len(pivot)} "
                       f"block{'' if len(pivot) == 1 else 's'}", run_ids=ids(df), n=len(df))
    fr = stats.friedman(pivot.to_numpy(), losses)
    b, k = len(pivot), len(losses)
    p_min = friedman_p_min(pivot.to_numpy())
    broken = used.groupby(LOSS)["broken"].mean()
    best = min(fr.mean_ranks, key=fr.mean_ranks.get)
    detail = (f"{b} blocks × {k} losses at k_SN ≥ {large_k}: Friedman χ² = {fr.chi2:.2f}, p = {fr.p:.3g}, "
              f"Kendall W = {fr.w:.2f}; smallest p this design can give with its ties {p_min:.3g}. Mean rank (1 = best): "
              + ", ".join(f"{l} {r:.2f}" for l, r in sorted(fr.mean_ranks.items(), key=lambda t: t[1]))
              + ". Broken share (quality below threshold, FID ≥ cap, or diverged): "
              + ", ".join(f"{l} {broken[l]:.0%}" for l in losses)
              + f". Best-ranked loss: {best}." + render_notes(notes))
    kw = dict(statistic=fr.chi2, statistic_name="Friedman χ²", effect_size=fr.w,
              effect_name="Kendall's W", p_value=fr.p, n=len(used), run_ids=ids(used), details=detail)
    verdict = h1_rule(fr.p, fr.w, p_min, sig, w_large, w_small)
    if verdict != "inconclusive":
        return bare_verdict(verdict, **kw)
    return bare_verdict("inconclusive", missing="loss effect neither clearly large nor clearly absent"
                        + ("" if p_min < sig else f"; too few blocks to reach p < {sig}"), **kw)


def h1_rule(p: float, effect: float, p_min: float, sig: float, large: float, small: float) -> str:
    """H1's decision: contradicted ⇔ p < sig and the effect ≥ large (the loss matters);
    supported ⇔ p ≥ sig, effect < small and the design could have shown an effect (p_min < sig)."""
    if p < sig and effect >= large:
        return "contradicted"
    if p >= sig and effect < small and p_min < sig:
        return "supported"
    return "inconclusive"


def friedman_p_min(table: np.ndarray) -> float:
    """The smallest Friedman p a (blocks × treatments) table can give with its own ties: every
    block keeps its multiset of values (capped, broken runs tie at the cap), sorted into the same
    treatment order in every block — the most consistent ranking those ties allow."""
    aligned = np.sort(np.asarray(table, float), axis=1)
    return float(stats.friedman(aligned, [str(i) for i in range(aligned.shape[1])]).p)


def _h1_rank_test(df, large_k, sig, e2_large, e2_small, notes) -> Verdict | None:
    """H1 without blocks: Kruskal-Wallis on within-stratum ranks (see :func:`h1`)."""
    keys = strata(df, studied(LOSS, K_SN, SEED, ALPHA), notes)
    y = groupby(df, keys)["fid_eff"].rank(pct=True)
    counts = df[LOSS].value_counts()
    losses = sorted(counts[counts >= 2].index)
    if len(losses) < 2:
        return None
    used = df[df[LOSS].isin(losses)]
    samples = [y[used.index[used[LOSS] == l]].to_numpy() for l in losses]
    h, p = sps.kruskal(*samples) if np.ptp(np.concatenate(samples)) > 0 else (0.0, 1.0)
    n = len(used)
    e2 = float(h) / (n - 1)
    # the smallest p this design can give with its ties: the observed values sorted into the groups
    cuts = np.cumsum([len(x) for x in samples])[:-1]
    pooled = np.sort(np.concatenate(samples))
    p_min = float(sps.kruskal(*np.split(pooled, cuts))[1]) if np.ptp(pooled) > 0 else 1.0
    med = used.groupby(LOSS)["fid_eff"].median()
    broken = used.groupby(LOSS)["broken"].mean()
    detail = (f"no complete (k_SN, seed) blocks, so a rank test: Kruskal-Wallis over {len(losses)} "
              f"losses at k_SN ≥ {large_k} on capped-FID ranks within strata, H = {h:.2f}, p = {p:.3g}, "
              f"ε² = {e2:.2f} (smallest p this design can give {p_min:.3g}); n = {n}. Median capped FID: "
              + ", ".join(f"{l} {med[l]:.4g}" for l in losses) + ". Broken share: "
              + ", ".join(f"{l} {broken[l]:.0%}" for l in losses) + "." + render_notes(notes))
    kw = dict(statistic=float(h), statistic_name="Kruskal-Wallis H", effect_size=e2,
              effect_name="ε² (rank)", p_value=float(p), n=n, run_ids=ids(used), details=detail)
    if p < sig and e2 >= e2_large:
        return bare_verdict("contradicted", **kw)
    if p >= sig and e2 < e2_small and p_min < sig:
        return bare_verdict("supported", **kw)
    return bare_verdict("inconclusive", missing="loss effect neither clearly large nor clearly absent"
                        + ("" if p_min < sig else f"; too few runs per loss to reach p < {sig}"), **kw)
