"""The domain hypotheses: K as an output scale (Eq. 3) and the domain restriction — Ω and Ψ shrink
with k_SN, Ω obeys Theorem 1's bound, Ω of NS/LS stays put while WGAN's shifts (Thm 1, Cor. 1.1,
Fig. 1). Properties of D, not of the samples: no learning guard (``kind="domain"``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats
from analysis.frames import close, col, groupby, ids, is_continuous, prep, strata
from analysis.hypotheses.common import CONVEX_LOSSES, LINEAR_LOSSES, _width
from analysis.hypotheses.identity import Pair, identity_verdict
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED
from analysis.verdict import SIG, Verdict, _v, missing, register, tost_verdict, trend_verdict


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
    df = df[(df["regularizer"] == "sn") & df["loss"].isin(losses)]
    if require_bias_free:
        df = df[col(df, "d_bias", True).astype("boolean").fillna(True) == False]  # noqa: E712
    df = df.assign(k=col(df, "k_sn").astype(float), n_layers=col(df, "n_d_layers").astype(float),
                   eps_=col(df, "eps", 0.0).astype(float).fillna(0.0), fid=pd.to_numeric(col(df, "fid"), errors="coerce"))
    df = df[df["n_layers"].notna() & df["k"].notna()]
    if df.empty:
        return missing("no bias-free (d_bias = false) SN runs of a linear loss with n_d_layers")
    pairs, unscaled = [], 0
    for _, g in groupby(df, strata(df, ["seed", "-k_sn", "-eps"])):
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
                              f"k_SN {row['k']:g} seed {row['seed']}"))
    note = (f" {unscaled} pair(s) ran with ε not scaled by k^n (against the claim's precondition, "
            "Eq. 5): left out." if unscaled else "")
    return identity_verdict(df, pairs, tol=tol, early_tol=early_tol, n_early=n_early,
                            min_pairs=min_pairs, histories=histories,
                            what="k_SN with ε·k^n vs k_SN = 1, outputs ÷ k^n", notes=note)


# ------------------------------------------------------------------------------------ domain
def _domain_trend(frame, *, regularizer: str, kcol: str, metric: str, losses_exclude, sig, rho_min,
                  fid_cap, q_broken, log_x: bool, losses_only=None) -> Verdict:
    df = prep(frame, fid_cap, q_broken)
    df = df[(df["regularizer"] == regularizer) & ~df["loss"].isin(losses_exclude)]
    notes: list[str] = []
    if losses_only is not None:
        out = sorted(set(df["loss"]) - set(losses_only))
        df = df[df["loss"].isin(losses_only)]
        if out:
            notes.append(f"losses {', '.join(out)} left out: Eq. 9 (Ψ from Ω's ends) needs a convex loss")
    if is_continuous(df, "alpha"):   # a search: α sampled; Ω is f's range (α acts inside L)
        notes.append("alpha")
    else:
        df = df[close(df["alpha"], 1.0)]
    if metric == "omega":
        y = _width(df, "union")
    else:
        y = col(df, "psi_max").astype(float) - col(df, "psi_min").astype(float)
    df = df.assign(y=np.log(y.where(y > 0)), x=col(df, kcol).astype(float))
    df = df[np.isfinite(df["y"]) & df["x"].notna()]
    if log_x:
        df = df[df["x"] > 0].assign(x=lambda d: np.log(d["x"]))
    groups = [(g["x"].to_numpy(), g["y"].to_numpy())
              for _, g in groupby(df, strata(df, ["loss", f"-{kcol}"], notes))]
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
    regularizer="sn", kcol="k_sn", metric="omega", losses_exclude=(), log_x=True)

psi_shrinks = trend_hypothesis(
    "domain-psi-shrinks",
    "The interval Ψ of attainable loss gradients shrinks as k_SN decreases (convex non-linear losses).",
    "Lipschitz paper Corollary 1.1, Eq. 8-9, Fig. 1b", ("domain-restriction", "domain"),
    "Stratified Spearman of log width(Ψ) (Eq. 9: ∇L at the ends of Ω) on log k_SN; convex losses\n"
    "    only (Eq. 9 holds where ∇L is monotone); WGAN excluded (Ψ a point).",
    regularizer="sn", kcol="k_sn", metric="psi", losses_exclude=tuple(LINEAR_LOSSES), log_x=True,
    losses_only=tuple(CONVEX_LOSSES))


@register(
    "domain-omega-bound",
    "Ω obeys Theorem 1: its width never exceeds K·2·√(m·n·c) with K = k_SN^n.",
    "Lipschitz paper Theorem 1 / Eq. 7 (Appendix A)",
    groups=("domain-restriction", "domain"), kind="domain",
)
def omega_bound(frame: pd.DataFrame, *, tol: float = 0.01, min_runs: int = 3,
                fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED,
                histories: pd.DataFrame | None = None) -> Verdict:
    """Theorem 1 as it is stated, per iteration: at every logged step the batch's Ω_i (real ∪ fake
    outputs) is no wider than L·2√(mnc), L the Lipschitz constant of D *at that step*.

    The constant: the measured product of the SN layers' σ at that step (``sn_sigma_product``; the
    power iteration leaves it above k_SN^n — 1.06-1.17× in our runs), else the nominal
    K = k_SN^n (``lipschitz_k``); 2√(mnc) = ``omega_bound`` / ``lipschitz_k``. With ``histories``
    (per-step metrics) every logged step is checked; without them the last step (final metrics).
    Ω∪, the union over all iterations, is never compared with the bound (the bound holds per
    iteration); for rows that have only Ω∪ (published Fig. 1b) a union inside the bound puts every
    Ω_i inside, a wider one says nothing. Any ratio > 1 + tol contradicts; supported with ≥
    min_runs runs and no violation. Only SN runs without normalisation layers: a soft penalty
    (GP/ALR/GraN) guarantees no bound, and BatchNorm breaks K = Π σ. (σ is that of the reshaped
    kernel, as SN normalises it; a convolution's own operator norm can exceed it.)"""
    df = prep(frame, fid_cap, q_broken)
    sn = (col(df, "regularizer").astype(str) == "sn") & (col(df, "omega_bound").astype(float) > 0)
    sn &= col(df, "d_norm", "none").fillna("none").astype(str) != "bn"
    df = df[sn]
    if df.empty:
        return missing("no SN runs with Ω and omega_bound (Theorem 1 needs a hard K: SN runs)")
    nominal = col(df, "lipschitz_k").astype(float)
    diam = df["omega_bound"].astype(float) / nominal.where(nominal > 0)
    steps = _bound_steps(df, histories)
    if steps.empty:
        steps = pd.DataFrame({"run_id": df["run_id"], "width": _width(df, "last"),
                              "sigma": col(df, "sn_sigma_product").astype(float)})
    steps = steps[np.isfinite(steps["width"])]
    meta = pd.DataFrame({"run_id": df["run_id"], "diam": diam, "nominal": nominal,
                         "bound": df["omega_bound"].astype(float)}).drop_duplicates("run_id")
    steps = steps.merge(meta, on="run_id", how="inner")
    measured = np.isfinite(steps["sigma"]) & (steps["sigma"] > 0) & np.isfinite(steps["diam"])
    steps["limit"] = np.where(measured, steps["diam"] * steps["sigma"], steps["bound"])
    steps["ratio"] = steps["width"] / steps["limit"]
    per_run = steps.groupby("run_id").agg(ratio=("ratio", "max"), n_steps=("ratio", "size"),
                                          measured=("sigma", lambda s: bool(np.isfinite(s).any())))
    # rows with only Ω∪ (no per-step Ω_i): a union inside the bound is evidence, a wider one is not
    rest = df[~df["run_id"].isin(per_run.index)]
    union_ratio = (_width(rest, "union") / rest["omega_bound"].astype(float)) if len(rest) else pd.Series(dtype=float)
    ok_union = rest[np.isfinite(union_ratio) & (union_ratio <= 1 + tol)]
    if len(ok_union):
        extra = pd.DataFrame({"ratio": union_ratio[ok_union.index].to_numpy(), "n_steps": 0,
                              "measured": False}, index=ok_union["run_id"].astype(str))
        per_run = pd.concat([per_run, extra])
    if per_run.empty:
        return missing("no SN run with a per-step Ω_i (omega_real/fake_min/max) and omega_bound")
    per_run = per_run[np.isfinite(per_run["ratio"])]
    viol = per_run["ratio"] > 1 + tol
    used = df[df["run_id"].astype(str).isin(per_run.index.astype(str))]
    n_meas = int(per_run["measured"].sum())
    sig_ratio = (steps.loc[measured, "sigma"] / steps.loc[measured, "nominal"]).replace([np.inf, -np.inf], np.nan).dropna()
    const = (f"Constant: the measured SN σ-product at each step for {n_meas} of {len(per_run)} runs"
             + (f" (σ-product / k_SN^n: median {sig_ratio.median():.3g}, range "
                f"{sig_ratio.min():.3g}-{sig_ratio.max():.3g})" if len(sig_ratio) else "")
             + (f"; the nominal K = k_SN^n for the other {len(per_run) - n_meas} (sn_sigma_product not logged)"
                if n_meas < len(per_run) else "") + ".")
    where = (f"Per iteration: {int(per_run['n_steps'].sum())} logged steps of {int((per_run['n_steps'] > 0).sum())} runs "
             "(histories)" if histories is not None and len(steps) > len(per_run) else
             "Last logged step of each run (no per-step histories given)")
    if (per_run["n_steps"] == 0).any():
        where += f"; {int((per_run['n_steps'] == 0).sum())} runs by their Ω∪ only (inside the bound)"
    first = used.drop_duplicates("run_id")
    arch_of = pd.Series(col(first, "arch", "unknown arch").fillna("unknown arch").astype(str).to_numpy(),
                        index=first["run_id"].astype(str))
    run_arch = arch_of.reindex(per_run.index.astype(str)).fillna("unknown arch").to_numpy()
    archs = sorted(set(run_arch))
    by_arch = "; ".join(f"{a}: {int(viol[run_arch == a].sum())} of {int((run_arch == a).sum())} "
                        "runs exceed" for a in archs)
    conv_viol = [a for a in archs if a.startswith("dcgan") and viol[run_arch == a].any()]
    why = (" A violation in a convolutional D does not refute Theorem 1 as proved: σ is that of "
           "the reshaped kernel (what SN normalises, Miyato et al. 2018), and a convolution's "
           "operator norm can exceed it (Sedghi et al. 2019; Gouk et al. 2021), so K = Πσ is not "
           "that D's Lipschitz constant; it refutes K = k_SN^n as the paper computes it for "
           "conv nets." if conv_viol else "")
    kw = dict(statistic=float(per_run["ratio"].max()), statistic_name="max width(Ω_i)/bound",
              effect_size=float(per_run["ratio"].median()), effect_name="median over runs of max width/bound",
              n=len(per_run), run_ids=ids(used),
              details=f"{where}. {int(viol.sum())} of {len(per_run)} runs exceed the bound at some step "
                      f"(tolerance {tol:.0%}); the widest Ω_i per run is {per_run['ratio'].median():.2e} "
                      f"of the bound at the median. By architecture: {by_arch}. {const}{why}")
    if viol.any():
        kw["run_ids"] = [str(r) for r in per_run.index[viol]]
        return _v("contradicted", **kw)
    if len(per_run) < min_runs:
        return missing(f"need ≥ {min_runs} runs; have {len(per_run)}", **kw)
    return _v("supported", **kw)


_OMEGA_STEP = ("omega_real_min", "omega_real_max", "omega_fake_min", "omega_fake_max")


def _drift(df: pd.DataFrame, histories: pd.DataFrame | None, min_steps: int = 3) -> pd.Series:
    """Per run: range of Ω_i's centre over the logged steps ÷ Ω_i's median width."""
    if histories is None or histories.empty or not set(_OMEGA_STEP) <= set(histories["metric"]):
        return pd.Series(dtype=float)
    h = histories[histories["run_id"].isin(set(df["run_id"])) & histories["metric"].isin(_OMEGA_STEP)]
    if h.empty:
        return pd.Series(dtype=float)
    w = h.pivot_table(index=["run_id", "step"], columns="metric", values="value", aggfunc="last").dropna()
    hi = np.fmax(w["omega_real_max"], w["omega_fake_max"])
    lo = np.fmin(w["omega_real_min"], w["omega_fake_min"])
    t = pd.DataFrame({"c": (hi + lo) / 2, "w": hi - lo}).groupby(level="run_id")
    out = (t["c"].max() - t["c"].min()) / t["w"].median()
    out = out[(t.size() >= min_steps) & (t["w"].median() > 0)]
    return out.rename(index=str)


def _bound_steps(df: pd.DataFrame, histories: pd.DataFrame | None) -> pd.DataFrame:
    """Per (run, logged step): width of Ω_i and the σ-product in force (carried forward)."""
    if histories is None or histories.empty or not set(_OMEGA_STEP) & set(histories["metric"]):
        return pd.DataFrame(columns=["run_id", "width", "sigma"])
    h = histories[histories["run_id"].isin(set(df["run_id"]))
                  & histories["metric"].isin((*_OMEGA_STEP, "sn_sigma_product"))]
    if h.empty:
        return pd.DataFrame(columns=["run_id", "width", "sigma"])
    wide = h.pivot_table(index=["run_id", "step"], columns="metric", values="value",
                         aggfunc="last").reset_index().sort_values(["run_id", "step"])
    for c in (*_OMEGA_STEP, "sn_sigma_product"):
        if c not in wide:
            wide[c] = np.nan
    wide["sigma"] = wide.groupby("run_id")["sn_sigma_product"].ffill()
    hi = np.fmax(wide["omega_real_max"], wide["omega_fake_max"])
    lo = np.fmin(wide["omega_real_min"], wide["omega_fake_min"])
    wide["width"] = hi - lo
    return wide[["run_id", "width", "sigma"]]


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
    df = df[df["loss"].isin(set(convex_losses) | LINEAR_LOSSES)]
    drift = _drift(df, histories)
    if drift.empty:
        return missing("need per-step histories of Ω_i (omega_real/fake_min/max at ≥ 3 logged steps) "
                       "of WGAN and NS/LS runs: the drift of Ω_i's centre is read from them",
                       n=len(df), run_ids=ids(df))
    s = df["run_id"].astype(str).map(drift)
    df = df.assign(S=s)[np.isfinite(s.astype(float))]
    df = df.assign(lin=df["loss"].isin(LINEAR_LOSSES).astype(float))
    keys = ["origin", "dataset", "fid_extractor"] + (["arch"] if "arch" in df.columns else [])
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
    if res.p < sig and r >= r_min:
        return _v("supported", **kw)
    if res.p_opposite < sig or (res.p_min < sig and r <= 0):
        return _v("contradicted", **kw)
    return _v("inconclusive", missing="more runs of each loss" if res.p_min >= sig else "effect too weak",
              **kw)
