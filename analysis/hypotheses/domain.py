"""The domain hypotheses: K as an output scale (Eq. 3) and the domain restriction — Ω and Ψ shrink
with k_SN, Ω obeys Theorem 1's bound, Ω of NS/LS stays put while WGAN's shifts (Thm 1, Cor. 1.1,
Fig. 1). Properties of D, not of the samples: no learning guard (``kind="domain"``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats
from analysis.frames import close, col, groupby, ids, is_continuous, prep, strata, studied
from analysis.hypotheses.common import CONVEX_LOSSES, LINEAR_LOSSES, omega_width
from analysis.hypotheses.identity import Pair, identity_verdict
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED
from analysis.verdict import SIG, Verdict, bare_verdict, missing, register, tost_verdict, trend_verdict
from trainables.names import (ALPHA, ARCH, DATASET, D_BIAS, D_NORM, EPS, FID, FID_EXTRACTOR,
                              GRAD_NORM_FAKE, GRAD_NORM_FAKE_MAX, GRAD_NORM_REAL,
                              GRAD_NORM_REAL_MAX, K_SN, LIPSCHITZ_CERTIFIED, LIPSCHITZ_K, LOSS,
                              N_D_LAYERS, OMEGA_BOUND, OMEGA_FAKE_MAX, OMEGA_FAKE_MIN,
                              OMEGA_REAL_MAX, OMEGA_REAL_MIN, PSI_MAX, PSI_MIN, REGULARIZER, SEED,
                              SN_SIGMA_PRODUCT)


# ------------------------------------------------------------------------------------ Eq. 3
@register(
    "k-output-scale",
    "K is only an output scale: with a bias-free D and the optimizer's ε scaled by k_SN^n, the run "
    "at k_SN is the run at k_SN = 1 with D's outputs scaled by k_SN^n (same samples, Ω × k_SN^n).",
    "Lipschitz paper Eq. 3-5 (Sec. 3)",
    groups=("k-scale", "eq3"), kind="domain",
)
def k_output_scale(frame: pd.DataFrame, *, tol: float = 1e-4, early_tol: float = 1e-3,
                   n_early: int = 3, min_pairs: int = 3, require_bias_free: bool = True,
                   losses: tuple[str, ...] = ("wgan",), fid_cap: float = FID_CAP_INCEPTION,
                   q_broken: float = Q_LEARNED, histories: pd.DataFrame | None = None) -> Verdict:
    """Identity check (``analysis.hypotheses.identity``) over pairs (same config and seed): the run
    at k_SN = k with ε = ε₁·k^n against the run at k_SN = 1 with ε₁, scale k^n (n SN layers).

    Linear losses only (a non-linear loss sees f, not f/k^n). Pairs whose ε was not scaled are left
    out and counted: with ε unscaled the runs differ by Eq. 5's ε/k^{2m} term (the claim's own
    precondition fails). k a power of 2 makes k^n exact, so the runs agree at every step."""
    df = prep(frame, fid_cap, q_broken)
    df = df[(df[REGULARIZER] == "sn") & df[LOSS].isin(losses)]
    if require_bias_free:
        df = df[col(df, D_BIAS, True).astype("boolean").fillna(True) == False]  # noqa: E712
    df = df.assign(k=col(df, K_SN).astype(float), n_layers=col(df, N_D_LAYERS).astype(float),
                   eps_=col(df, EPS, 0.0).astype(float).fillna(0.0), fid=pd.to_numeric(col(df, FID), errors="coerce"))
    df = df[df["n_layers"].notna() & df["k"].notna()]
    if df.empty:
        return missing("no bias-free (d_bias = false) SN runs of a linear loss with n_d_layers")
    pairs, unscaled = [], 0
    for _, g in groupby(df, strata(df, [SEED, *studied(K_SN, EPS)])):
        ref = g[close(g["k"], 1.0)]
        if ref.empty:
            continue
        ref = ref.iloc[0]
        for _, row in g[~close(g["k"], 1.0)].iterrows():
            scale = row["k"] ** row["n_layers"]
            if not np.isclose(row["eps_"], ref["eps_"] * scale, rtol=1e-6, atol=0):
                unscaled += 1
                continue
            pairs.append(Pair(str(row["run_id"]), str(ref["run_id"]), scale,
                              f"k_SN {row['k']:g} seed {row[SEED]}"))
    note = (f" {unscaled} pair(s) ran with ε not scaled by k^n (against the claim's precondition, "
            "Eq. 5): left out." if unscaled else "")
    return identity_verdict(df, pairs, tol=tol, early_tol=early_tol, n_early=n_early,
                            min_pairs=min_pairs, histories=histories,
                            what="k_SN with ε·k^n vs k_SN = 1, outputs ÷ k^n", notes=note)


# ------------------------------------------------------------------------------------ domain
def _domain_trend(frame, *, regularizer: str, kcol: str, metric: str, losses_exclude, sig, rho_min,
                  fid_cap, q_broken, log_x: bool, losses_only=None) -> Verdict:
    df = prep(frame, fid_cap, q_broken)
    df = df[(df[REGULARIZER] == regularizer) & ~df[LOSS].isin(losses_exclude)]
    notes: list[str] = []
    if losses_only is not None:
        out = sorted(set(df[LOSS]) - set(losses_only))
        df = df[df[LOSS].isin(losses_only)]
        if out:
            notes.append(f"losses {', '.join(out)} left out: Eq. 9 (Ψ from Ω's ends) needs a convex loss")
    if is_continuous(df, ALPHA):   # a search: α sampled; Ω is f's range (α acts inside L)
        notes.append(ALPHA)
    else:
        df = df[close(df[ALPHA], 1.0)]
    if metric == "omega":
        y = omega_width(df, "union")
    else:
        y = col(df, PSI_MAX).astype(float) - col(df, PSI_MIN).astype(float)
    df = df.assign(y=np.log(y.where(y > 0)), x=col(df, kcol).astype(float))
    df = df[np.isfinite(df["y"]) & df["x"].notna()]
    if log_x:
        df = df[df["x"] > 0].assign(x=lambda d: np.log(d["x"]))
    groups = [(g["x"].to_numpy(), g["y"].to_numpy())
              for _, g in groupby(df, strata(df, [LOSS, f"-{kcol}"], notes))]
    res = stats.trend_test(groups, direction=+1)
    name = "Ω∪ width" if metric == "omega" else "Ψ width"
    return trend_verdict(res, sig, rho_min, kcol, df, f"ρ({kcol}, log {name})", notes)


def trend_hypothesis(name: str, claim: str, source: str, groups: tuple[str, ...], doc: str,
                     **how) -> Callable[..., Verdict]:
    """Register a domain-trend hypothesis: :func:`_domain_trend` with ``how`` (regularizer, kcol,
    metric, losses_exclude, log_x); its thresholds ``sig`` and ``rho_min``; ``doc`` its docstring."""
    def test(frame: pd.DataFrame, *, sig: float = SIG, rho_min: float = 0.5,
             fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED) -> Verdict:
        return _domain_trend(frame, sig=sig, rho_min=rho_min, fid_cap=fid_cap, q_broken=q_broken, **how)
    test.__doc__ = doc
    return register(name, claim, source, groups, kind="domain")(test)


omega_shrinks = trend_hypothesis(
    "domain-omega-shrinks",
    "The loss's domain Ω (range of D over training) shrinks as k_SN decreases.",
    "Lipschitz paper Theorem 1, Eq. 7, Fig. 1a/1b", ("domain-restriction", "domain"),
    "Stratified Spearman of log width(Ω∪) on log k_SN (per loss × dataset …), predicted ρ > 0.",
    regularizer="sn", kcol=K_SN, metric="omega", losses_exclude=(), log_x=True)

psi_shrinks = trend_hypothesis(
    "domain-psi-shrinks",
    "The interval Ψ of attainable loss gradients shrinks as k_SN decreases (convex non-linear losses).",
    "Lipschitz paper Corollary 1.1, Eq. 8-9, Fig. 1b", ("domain-restriction", "domain"),
    "Stratified Spearman of log width(Ψ) (Eq. 9: ∇L at the ends of Ω) on log k_SN; convex losses\n"
    "    only (Eq. 9 holds where ∇L is monotone); WGAN excluded (Ψ a point).",
    regularizer="sn", kcol=K_SN, metric="psi", losses_exclude=tuple(LINEAR_LOSSES), log_x=True,
    losses_only=tuple(CONVEX_LOSSES))


def _bound_measures(df: pd.DataFrame, tol: float) -> SimpleNamespace:
    """Per SN run: Ω_i's width against K_certified·2√(mnc) (ours), Ω∪ against the paper's bound
    (published rows), and the paper's K ≈ Π σ beside the certified K and ‖∇ₓf‖."""
    num = lambda c: pd.to_numeric(col(df, c), errors="coerce").astype(float)  # noqa: E731
    nominal = num(LIPSCHITZ_K)
    diam = num(OMEGA_BOUND) / nominal.where(nominal > 0)
    width = omega_width(df, "last")
    cert, sigma = num(LIPSCHITZ_CERTIFIED), num(SN_SIGMA_PRODUCT)
    grad = np.fmax(num(GRAD_NORM_REAL_MAX), num(GRAD_NORM_FAKE_MAX))
    grad = grad.where(np.isfinite(grad), np.fmax(num(GRAD_NORM_REAL), num(GRAD_NORM_FAKE)))
    ours = df["origin"] == "run"
    k_paper = sigma.where(np.isfinite(sigma) & (sigma > 0), nominal)
    tested = ours & np.isfinite(width) & np.isfinite(cert) & (cert > 0) & np.isfinite(diam)
    ratio = width / (cert * diam)
    pub_ratio = omega_width(df, "union") / num(OMEGA_BOUND)
    return SimpleNamespace(
        width=width, cert=cert, sigma=sigma, grad=grad, ours=ours, tested=tested, ratio=ratio,
        viol=tested & (ratio > 1 + tol),
        pub_ok=~ours & np.isfinite(pub_ratio) & (pub_ratio <= 1 + tol),
        paper_over=ours & np.isfinite(width) & (width / (k_paper * diam) > 1 + tol))


def _bound_details(df: pd.DataFrame, m: SimpleNamespace) -> tuple[list[str], pd.Series]:
    """The sentences of :func:`omega_bound`'s details, and the gap Π σ / K_certified per run."""
    ours, tested, ratio, viol, pub_ok = m.ours, m.tested, m.ratio, m.viol, m.pub_ok
    width, sigma, cert, grad, paper_over = m.width, m.sigma, m.cert, m.grad, m.paper_over
    parts = [f"Certified K for {int(tested.sum())} of {int(ours.sum())} of our SN runs"
             + (f": widest Ω_i / (K_certified·2√(mnc)) = {ratio[tested].max():.3g} (median "
                f"{ratio[tested].median():.3g}), {int(viol.sum())} beyond the bound" if tested.any() else "")]
    if pub_ok.any() or (~ours).any():
        parts.append(f"published rows: {int(pub_ok.sum())} of {int((~ours).sum())} with Ω∪ inside the paper's bound")
    gap_sc = (sigma / cert)[tested & np.isfinite(sigma)]
    gap_gs = (grad / sigma)[ours & np.isfinite(grad) & (sigma > 0)]
    parts.append("gap of the paper's approximation K ≈ Π σ (not a verdict on the theorem): "
                 + (f"Π σ / K_certified {_rng_txt(gap_sc)}; " if len(gap_sc) else "")
                 + (f"max ‖∇ₓf‖ / Π σ {_rng_txt(gap_gs)}; " if len(gap_gs) else "")
                 + f"with the paper's K, {int(paper_over.sum())} of {int((ours & np.isfinite(width)).sum())} runs "
                 "exceed its bound (" + _by_arch(df, paper_over, ours & np.isfinite(width)) + ")")
    return parts, gap_sc


@register(
    "domain-omega-bound",
    "Ω obeys Theorem 1: with f k-Lipschitz, the width of Ω_i never exceeds k·2·√(m·n·c); tested with "
    "a certified k (the product of D's layers' operator norms).",
    "Lipschitz paper Theorem 1 / Eq. 7 (Appendix A)",
    groups=("domain-restriction", "domain"), kind="domain",
)
def omega_bound(frame: pd.DataFrame, *, tol: float = 0.01, min_runs: int = 3,
                fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED) -> Verdict:
    """Theorem 1 is an implication: *if* f is k-Lipschitz, Ω is at most k·2√(mnc) wide. It is
    tested with a k that is one: ``lipschitz_certified`` (``trainables.metrics.lipschitz_bound``, logged at
    the end of SN trials), against the last logged Ω_i (real ∪ fake outputs of the batch at the end,
    the same D); 2√(mnc) = ``omega_bound`` / ``lipschitz_k``. A width above the certified bound
    (beyond ``tol``) contradicts; supported with ≥ ``min_runs`` runs inside. SN runs without
    normalisation layers only (a soft penalty guarantees no bound; BatchNorm is not a fixed map).

    The paper's K ≈ Π σ (reshaped-kernel σ, what SN normalises) is an approximation, not a bound
    for a convolutional D: its gap is reported — Π σ / K_certified and max ‖∇ₓf‖ / Π σ — and so is
    how many runs exceed the paper's bound, never as a verdict on the theorem. Published rows (Fig.
    1b) carry only the paper's K and Ω∪: a union inside that bound puts every Ω_i inside (evidence),
    a wider one says nothing. Our runs without ``lipschitz_certified`` (logged before it existed)
    leave the test inconclusive."""
    df = prep(frame, fid_cap, q_broken)
    sn = (col(df, REGULARIZER).astype(str) == "sn") & (col(df, OMEGA_BOUND).astype(float) > 0)
    sn &= col(df, D_NORM, "none").fillna("none").astype(str) != "bn"
    df = df[sn]
    if df.empty:
        return missing("no SN runs with Ω and omega_bound (Theorem 1 needs a hard K: SN runs)")
    m = _bound_measures(df, tol)
    ours, tested, ratio, viol, pub_ok = m.ours, m.tested, m.ratio, m.viol, m.pub_ok
    parts, gap_sc = _bound_details(df, m)
    used = df[tested | pub_ok]
    kw = dict(statistic=float(ratio[tested].max()) if tested.any() else None,
              statistic_name="max width(Ω_i) / certified bound",
              effect_size=float(gap_sc.median()) if len(gap_sc) else None,
              effect_name="median Π σ / K_certified", n=int(tested.sum() + pub_ok.sum()),
              run_ids=ids(used if len(used) else df), details="; ".join(parts) + ".")
    verdict = bound_rule(ratio[tested].to_numpy(), int(pub_ok.sum()), tol, min_runs)
    if verdict == "contradicted":  # n and the runs listed stay the tested ones; name the violators
        kw["details"] += (f" Beyond the certified bound ({int(viol.sum())} of n = {kw['n']}): "
                          + ", ".join(f"`{r}`" for r in ids(df[viol])) + ".")
    if verdict != "inconclusive":
        return bare_verdict(verdict, **kw)
    if (ours & ~tested).any():
        return missing(f"runs predate certified K: {int((ours & ~tested).sum())} SN run(s) without "
                       "lipschitz_certified (logged at the end of SN trials by current code)", **kw)
    return missing(f"need ≥ {min_runs} runs; have {int(tested.sum() + pub_ok.sum())}", **kw)


def bound_rule(ratios: np.ndarray, n_other: int, tol: float, min_runs: int) -> str:
    """Theorem 1's decision: a width / certified-bound ratio beyond 1 + tol contradicts; ≥ min_runs
    runs (tested ratios plus ``n_other`` published unions inside) and none beyond: supported."""
    if (np.asarray(ratios) > 1 + tol).any():
        return "contradicted"
    return "supported" if len(ratios) + n_other >= min_runs else "inconclusive"


def _rng_txt(v: pd.Series) -> str:
    return f"median {v.median():.3g} [{v.min():.3g}–{v.max():.3g}]"


def _by_arch(df: pd.DataFrame, hit: pd.Series, among: pd.Series) -> str:
    arch = col(df, ARCH, "unknown arch").fillna("unknown arch").astype(str)
    return ", ".join(f"{a}: {int((hit & (arch == a)).sum())} of {int((among & (arch == a)).sum())}"
                     for a in sorted(set(arch[among]))) or "none"


_OMEGA_STEP = (OMEGA_REAL_MIN, OMEGA_REAL_MAX, OMEGA_FAKE_MIN, OMEGA_FAKE_MAX)


def _drift(df: pd.DataFrame, histories: pd.DataFrame | None, min_steps: int = 3) -> pd.Series:
    """Per run: range of Ω_i's centre over the logged steps ÷ Ω_i's median width."""
    if histories is None or histories.empty or not set(_OMEGA_STEP) <= set(histories["metric"]):
        return pd.Series(dtype=float)
    h = histories[histories["run_id"].isin(set(df["run_id"])) & histories["metric"].isin(_OMEGA_STEP)]
    if h.empty:
        return pd.Series(dtype=float)
    w = h.pivot_table(index=["run_id", "step"], columns="metric", values="value", aggfunc="last").dropna()
    hi = np.fmax(w[OMEGA_REAL_MAX], w[OMEGA_FAKE_MAX])
    lo = np.fmin(w[OMEGA_REAL_MIN], w[OMEGA_FAKE_MIN])
    t = pd.DataFrame({"c": (hi + lo) / 2, "w": hi - lo}).groupby(level="run_id")
    out = (t["c"].max() - t["c"].min()) / t["w"].median()
    out = out[(t.size() >= min_steps) & (t["w"].median() > 0)]
    return out.rename(index=str)


@register(
    "domain-omega-shift",
    "During training Ω_i of NS/LS stays put (strictly convex loss, unique minimum) while WGAN's Ω_i "
    "shifts: its centre drifts further, relative to its width.",
    "Lipschitz paper Sec. 4.1 remark on Ω_i, Fig. 1a",
    groups=("domain-restriction", "domain"), kind="domain",
)
def omega_shift(frame: pd.DataFrame, *, sig: float = SIG, r_min: float = 0.5,
                convex_losses: tuple[str, ...] = ("ns", "mm", "ls", "ls0"),
                fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED,
                histories: pd.DataFrame | None = None) -> Verdict:
    """Drift index S per run, from the per-step histories: the range of Ω_i's centre over the
    logged steps divided by Ω_i's median width (Ω_i = real ∪ fake outputs of the batch at step i) —
    0 when Ω_i stays put, ≫ 1 when it slides by more than its own width (Fig. 1a).

    S(WGAN) > S(NS/LS) within each stratum (origin, dataset, architecture, extractor: a ring8 toy
    is never pooled with images): Wilcoxon-Mann-Whitney per stratum, combined by the stratified
    permutation test of ``stats.trend_test`` on the WGAN indicator; effect = rank-biserial r
    (n-weighted over strata). supported ⇔ p < sig and r ≥ r_min; contradicted ⇔ significant the
    other way, or r ≤ 0 where the design could detect it. Without histories: inconclusive (final
    metrics hold one Ω_i, and Ω∪ mixes drift with growth).
    """
    df = prep(frame, fid_cap, q_broken)
    df = df[df[LOSS].isin(set(convex_losses) | LINEAR_LOSSES)]
    drift = _drift(df, histories)
    if drift.empty:
        return missing("need per-step histories of Ω_i (omega_real/fake_min/max at ≥ 3 logged steps) "
                       "of WGAN and NS/LS runs: the drift of Ω_i's centre is read from them",
                       n=len(df), run_ids=ids(df))
    s = df["run_id"].astype(str).map(drift)
    df = df.assign(S=s)[np.isfinite(s.astype(float))]
    df = df.assign(lin=df[LOSS].isin(LINEAR_LOSSES).astype(float))
    keys = ["origin", DATASET, FID_EXTRACTOR] + ([ARCH] if ARCH in df.columns else [])
    groups, rs, ns, lines, used = [], [], [], [], []
    for key, g in groupby(df, keys):
        a, b = g[g["lin"] == 1]["S"].to_numpy(), g[g["lin"] == 0]["S"].to_numpy()
        if len(a) and len(b):
            groups.append((g["lin"].to_numpy(), g["S"].to_numpy()))
            u = sps.mannwhitneyu(a, b, alternative="greater")
            rs.append(2 * u.statistic / (len(a) * len(b)) - 1)
            ns.append(len(g))
            used.append(g)
            name = "/".join(str(k) for k in key[1:] if k != "∅")
            lines.append(f"{name}: median drift WGAN {np.median(a):.3f} (n={len(a)}), NS/LS "
                         f"{np.median(b):.3f} (n={len(b)}), r = {rs[-1]:+.2f}")
    if not groups:
        return missing("need runs of WGAN and of NS/LS in the same stratum (dataset, architecture, "
                       "extractor) with Ω∪ and last-step Ω (real/fake min/max)", n=len(df), run_ids=ids(df))
    used = pd.concat(used)
    res = stats.trend_test(groups, direction=+1)
    r = float(np.average(rs, weights=ns))
    kw = dict(statistic=res.rho, statistic_name="stratified rank correlation (WGAN vs NS/LS)",
              effect_size=r, effect_name="rank-biserial r", p_value=res.p, n=len(used), run_ids=ids(used),
              details=f"{len(groups)} strat{'um' if len(groups) == 1 else 'a'}: " + "; ".join(lines) + f". One-sided stratified permutation "
              f"p = {res.p:.3g} (opposite {res.p_opposite:.3g}; smallest attainable p {res.p_min:.3g}).")
    verdict = shift_rule(res, r, sig, r_min)
    if verdict != "inconclusive":
        return bare_verdict(verdict, **kw)
    return bare_verdict("inconclusive", missing="more runs of each loss" if res.p_min >= sig else "effect too weak",
                        **kw)


def shift_rule(res: stats.TrendResult, r: float, sig: float, r_min: float) -> str:
    """domain-omega-shift's decision from the stratified test and the rank-biserial r."""
    if res.p < sig and r >= r_min:
        return "supported"
    if res.p_opposite < sig or (res.p_min < sig and r <= 0):
        return "contradicted"
    return "inconclusive"
