"""The regularizers' own claims: ALR beats GP (ALR paper), JS stabilizes (Roth et al.), and Ω
shrinks with k_GP under a gradient penalty (Lipschitz paper Appendix C)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from analysis import stats
from analysis.frames import groupby, ids, prep
from analysis.hypotheses.common import REF_WGAN_GP
from analysis.hypotheses.domain import trend_hypothesis
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED
from analysis.verdict import SIG, Reference, Verdict, bare_verdict, missing, register
from trainables.names import ARCH, DATASET, FID, FID_EXTRACTOR, K_GP, LOSS, REGULARIZER


# ------------------------------------------------------------------------------------ ALR / JS / GP
REF_JS = Reference(
    "the JS-regularized runs under test: the claim is that they train without collapse (Roth et al. "
    "Sec. 5), so they must have learned for FIDs to compare",
    lambda d: d[REGULARIZER] == "js")

def _superiority(frame, *, a_sel, b_sel, strata_extra, margin, sig, fid_cap, q_broken, what) -> Verdict:
    df = prep(frame, fid_cap, q_broken)
    df = df[df["fid_eff"].notna()]
    a, b = df[a_sel(df)], df[b_sel(df)]
    both = pd.concat([a.assign(_g="a"), b.assign(_g="b")])
    if both.empty:
        return missing(f"no runs of {what}")
    keys = ["origin", DATASET, FID_EXTRACTOR, *([ARCH] if ARCH in df.columns else []), *strata_extra]
    raw = pd.to_numeric(both[FID], errors="coerce").astype(float) if FID in both else both["fid_eff"]
    capped = ~(np.isfinite(raw) & (raw > 0))       # diverged / no FID: the cap stands in (worst)
    both["y"] = np.log(raw.where(~capped, both["cap"]).astype(float))
    both["_capped"] = capped
    both["y"] -= groupby(both, keys)["y"].transform("mean")   # remove dataset/extractor level
    ok = groupby(both, keys)["_g"].transform(lambda s: s.nunique() == 2).astype(bool)
    both = both[ok]
    ya, yb = both[both["_g"] == "a"]["y"], both[both["_g"] == "b"]["y"]
    w = stats.welch(ya, yb)
    kw = dict(statistic=w.diff, statistic_name="Δ mean log FID (A − B)", effect_size=w.diff,
              effect_name="Δ mean log FID (A − B)", ci=w.ci90, p_value=w.p_less, n=len(both),
              run_ids=ids(both))
    if w.n_a < 2 or w.n_b < 2:
        return missing(f"need ≥ 2 runs of each ({what}) on the same dataset, architecture and "
                       f"extractor; have {w.n_a} and {w.n_b}", **kw)
    kw["details"] = (f"Uncapped FIDs (diverged runs at the cap: {int(both['_capped'].sum())}). A: n={w.n_a}, B: n={w.n_b}; Δ = {w.diff:+.3f} (FID ×{math.exp(w.diff):.3f}), "
                     f"90% CI [{w.ci90[0]:+.3f}, {w.ci90[1]:+.3f}]; one-sided p(A better) = {w.p_less:.3g}. "
                     f"Broken share A {both[both['_g'] == 'a']['broken'].mean():.0%}, "
                     f"B {both[both['_g'] == 'b']['broken'].mean():.0%}.")
    verdict = superiority_rule(w, margin, sig, bool(both["_capped"].any()))
    if verdict != "inconclusive":
        return bare_verdict(verdict, **kw)
    if w.p_greater >= sig and -math.log1p(margin) < w.ci90[0] and w.ci90[1] < math.log1p(margin):
        return bare_verdict("inconclusive", missing=f"equivalent within the margin only through {int(both['_capped'].sum())} "
                            "capped (diverged) runs: no evidence of equivalence", **kw)
    return bare_verdict("inconclusive", missing="difference not significant and CI wider than the margin", **kw)


def superiority_rule(w: stats.WelchResult, margin: float, sig: float, capped: bool) -> str:
    """"A beats B": supported ⇔ A significantly better (one-sided Welch); contradicted ⇔ A
    significantly worse, or equivalent within ×/÷ (1 + margin) — unless capped values are in the
    comparison (equal by construction, no evidence of equivalence)."""
    m = math.log1p(margin)
    if w.p_less < sig:
        return "supported"
    if w.p_greater < sig or (-m < w.ci90[0] and w.ci90[1] < m and not capped):
        return "contradicted"
    return "inconclusive"


def superiority_hypothesis(name: str, claim: str, source: str, groups: tuple[str, ...],
                           reference: Reference, doc: str, **how) -> Callable[..., Verdict]:
    """Register an "A beats B" hypothesis: :func:`_superiority` with ``how`` (a_sel, b_sel,
    strata_extra, what); its thresholds ``margin`` and ``sig``; ``doc`` its docstring."""
    def test(frame: pd.DataFrame, *, margin: float = 0.1, sig: float = SIG,
             fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED) -> Verdict:
        return _superiority(frame, margin=margin, sig=sig, fid_cap=fid_cap, q_broken=q_broken, **how)
    test.__doc__ = doc
    return register(name, claim, source, groups, reference=reference)(test)


alr_beats_gp = superiority_hypothesis(
    "alr-beats-gp",
    "WGAN with the adversarial Lipschitz penalty (ALP) reaches a lower FID than WGAN-GP.",
    "ALR paper Sec. 4, Eq. 17, Table 1 (12.96 vs 18.86 on CIFAR-10)", ("alr",), REF_WGAN_GP,
    "Welch on log FID, WGAN-ALR (A) vs WGAN-GP (B), centred per dataset × extractor. contradicted\n"
    "    if ALR is significantly worse or equivalent within ×/÷ (1 + margin) (no real improvement).",
    a_sel=lambda d: (d[LOSS] == "wgan") & (d[REGULARIZER] == "alr"),
    b_sel=lambda d: (d[LOSS] == "wgan") & (d[REGULARIZER] == "gp"),
    strata_extra=[], what="WGAN-ALR and WGAN-GP")

js_stabilizes = superiority_hypothesis(
    "js-stabilizes",
    "The noise-induced JS regularizer Ω_JS (annealed γ) stabilizes GAN training: lower FID and fewer "
    "broken runs than the same GAN unregularized.",
    "Roth et al. Eq. 20/28, Algorithm 1, Sec. 5 (Figs. 1-4)", ("js",), REF_JS,
    "Welch on capped log FID (broken = cap), JS (A) vs none (B), same loss, dataset, extractor.",
    a_sel=lambda d: d[REGULARIZER] == "js", b_sel=lambda d: d[REGULARIZER] == "none",
    strata_extra=[LOSS], what="JS-regularized and unregularized GANs")

gp_omega_shrinks = trend_hypothesis(
    "gp-omega-shrinks",
    "With a gradient penalty the domain Ω also shrinks as k_GP decreases (less strongly than with k_SN).",
    "Lipschitz paper Appendix C, Eq. 18, Fig. 3", ("gp",),
    "Stratified Spearman of log width(Ω∪) on k_GP (k_GP = 0 allowed: ranks), predicted ρ > 0.",
    regularizer="gp", kcol=K_GP, metric="omega", losses_exclude=(), log_x=False)
