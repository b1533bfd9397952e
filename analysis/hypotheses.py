"""The hypotheses (DESIGN.md, "The analysis"): a registry of functions frame → :class:`Verdict`.

Every hypothesis states its claim in one sentence, cites where it comes from, selects the runs it
needs, and answers *supported*, *contradicted* or *inconclusive* (saying what data is missing) with
its statistic, effect size, n and the run ids behind it. Thresholds are keyword parameters with the
defaults below, fixed before looking at any data (never tuned to reach a verdict); override them
with ``evaluate(frame, overrides={"H1": {"large_k": 10}})``.

Shared rules (``analysis.stats`` for the tests, ``analysis.outcome`` for broken runs):

* Runs: finished and diverged ones (diverged = broken, FID = cap); crashed/running are left out.
  FID is used capped (``fid_eff``); only FIDs of the same dataset and feature extractor are ever
  compared (every grouping below includes ``origin``, ``dataset`` and ``fid_extractor``; our runs
  pool across experiments, published rows stay within their paper).
* Monotone trends ("shrinks with k_SN", "FID grows with α"): stratified Spearman permutation test.
  supported ⇔ p < ``sig`` and ρ ≥ ``rho_min``; contradicted ⇔ a significant trend the other way, or
  ρ ≤ 0 although the design could have shown the trend (its smallest attainable p < ``sig``);
  inconclusive otherwise.
* "Close to" claims: TOST on log-FID ratios with a stated margin (ratio within ×/÷ (1 + margin)).
  supported ⇔ TOST p < ``sig``; contradicted ⇔ the 90 % CI lies wholly outside the margin.
* "A is better than B" claims: Welch on log FID. supported ⇔ one-sided p < ``sig``; contradicted ⇔
  significantly worse, or equivalent within the margin (no meaningful improvement).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats
from analysis.outcome import FID_CAP_INCEPTION, REL_CAP, config_columns, with_outcome

VerdictKind = Literal["supported", "contradicted", "inconclusive"]

#: Losses whose gradient does not depend on f (Table 1: WGAN is linear; Ψ is a single point).
LINEAR_LOSSES = frozenset({"wgan"})
#: Default significance level of every test.
SIG = 0.05


@dataclass
class Verdict:
    name: str
    claim: str
    source: str
    verdict: VerdictKind
    statistic: float | None = None
    statistic_name: str = ""
    effect_size: float | None = None
    effect_name: str = ""
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    n: int = 0
    run_ids: list[str] = field(default_factory=list)
    missing: str = ""
    details: str = ""
    thresholds: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hypothesis:
    name: str
    claim: str
    source: str
    func: Callable[..., Verdict]
    groups: tuple[str, ...] = ()

    @property
    def defaults(self) -> dict[str, Any]:
        sig = inspect.signature(self.func)
        return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect._empty}

    def __call__(self, frame: pd.DataFrame, **params: Any) -> Verdict:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(f"{self.name}: unknown threshold(s) {sorted(unknown)}; "
                            f"known: {sorted(self.defaults)}")
        th = {**self.defaults, **params}
        v = self.func(frame, **th)
        v.name, v.claim, v.source = self.name, self.claim, self.source
        v.thresholds = th
        return v


HYPOTHESES: dict[str, Hypothesis] = {}
#: Names a study file may list (``hypotheses:``) that stand for several registered hypotheses.
GROUPS: dict[str, list[str]] = {}


def register(name: str, claim: str, source: str, groups: Iterable[str] = ()):
    def deco(func):
        HYPOTHESES[name] = Hypothesis(name, claim, source, func, tuple(groups))
        for g in groups:
            GROUPS.setdefault(g, []).append(name)
        return func
    return deco


def resolve(names: Iterable[str] | None) -> list[str]:
    """Registered names for ``names`` (group names expand; case-insensitive); all when None."""
    if names is None:
        return list(HYPOTHESES)
    lower = {n.lower(): n for n in HYPOTHESES}
    glower = {g.lower(): m for g, m in GROUPS.items()}
    out: list[str] = []
    for raw in names:
        key = raw.strip().lower()
        if not key:
            continue
        if key in lower:
            hits = [lower[key]]
        elif key in glower:
            hits = glower[key]
        else:
            raise KeyError(f"unknown hypothesis {raw!r}; known: {', '.join(HYPOTHESES)}; "
                           f"groups: {', '.join(GROUPS)}")
        out.extend(h for h in hits if h not in out)
    return out


def evaluate(frame: pd.DataFrame, names: Iterable[str] | None = None,
             overrides: dict[str, dict[str, Any]] | None = None) -> list[Verdict]:
    """Run the named (default: all) hypotheses on ``frame``."""
    overrides = overrides or {}
    return [HYPOTHESES[n](frame, **overrides.get(n, {})) for n in resolve(names)]


# ------------------------------------------------------------------------------------ helpers
def _v(verdict: VerdictKind, **kw) -> Verdict:
    return Verdict(name="", claim="", source="", verdict=verdict, **kw)


def _missing(text: str, **kw) -> Verdict:
    return _v("inconclusive", missing=text, **kw)


def _close(a: pd.Series, value: float, rtol: float = 1e-6) -> pd.Series:
    return np.isclose(a.astype(float), value, rtol=rtol, atol=0)


def _col(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(default, index=df.index, dtype=object if isinstance(default, str) else float)


def _prep(frame: pd.DataFrame, fid_cap: float, rel_cap: float) -> pd.DataFrame:
    df = with_outcome(frame, fid_cap, rel_cap)
    df["alpha"] = _col(df, "alpha", 1.0).astype(float).fillna(1.0)
    df["fid_extractor"] = _col(df, "fid_extractor", "inception").fillna("inception")
    df["seed"] = _col(df, "seed", 0).fillna(0).astype(int)
    df["origin"] = _col(df, "origin", "run").fillna("run")
    # our runs pool across experiments; published/external rows stay within their paper/source
    exp = _col(df, "experiment", "").fillna("").astype(str)
    df["origin"] = np.where(df["origin"] == "run", "run", df["origin"].astype(str) + ":" + exp)
    for c in ("loss", "regularizer", "dataset"):
        df[c] = _col(df, c, "").fillna("")
    return df


def _ids(df: pd.DataFrame) -> list[str]:
    return [str(r) for r in df["run_id"]]


def _width(df: pd.DataFrame, kind: str) -> pd.Series:
    """Ω width: ``union`` (Ω∪ over training, Fig. 1b), ``last`` (Ω_i at the last step, real ∪ fake)."""
    if kind == "union":
        return _col(df, "omega_union_max").astype(float) - _col(df, "omega_union_min").astype(float)
    hi = np.fmax(_col(df, "omega_real_max").astype(float), _col(df, "omega_fake_max").astype(float))
    lo = np.fmin(_col(df, "omega_real_min").astype(float), _col(df, "omega_fake_min").astype(float))
    return hi - lo


def _strata(df: pd.DataFrame, extra: list[str]) -> list[str]:
    """Grouping columns: origin, dataset, extractor, the listed ones, and every other config column
    that varies inside them except those the hypothesis studies (passed in ``extra`` with '-')."""
    drop = {c[1:] for c in extra if c.startswith("-")}
    keep = [c for c in extra if not c.startswith("-")]
    base = ["origin", "dataset", "fid_extractor", *keep]
    cols = [c for c in config_columns(df) if c not in drop and c not in base
            and c not in ("lipschitz_k", "omega_bound", "n_d_layers")]
    return base + [c for c in cols if df[c].astype(object).nunique(dropna=False) > 1]


def _groupby(df: pd.DataFrame, cols: list[str]):
    return df.astype({c: object for c in cols}).fillna({c: "∅" for c in cols}).groupby(cols, sort=True)


def _trend_verdict(res: stats.TrendResult, sig: float, rho_min: float, what: str,
                   df: pd.DataFrame, stat_name: str) -> Verdict:
    kw = dict(statistic=res.rho, statistic_name=stat_name, effect_size=res.rho,
              effect_name="pooled Spearman ρ", p_value=res.p, n=res.n, run_ids=_ids(df))
    if res.n_groups == 0:
        return _missing(f"no stratum with ≥ 2 distinct levels of {what}", **kw)
    detail = (f"{res.n_groups} strata, n = {res.n}; ρ per stratum = "
              f"{', '.join(f'{r:.2f}' for r in res.rhos)}; one-sided permutation p = {res.p:.3g} "
              f"(opposite direction {res.p_opposite:.3g}; smallest p this design can give "
              f"{res.p_min:.3g}).")
    if res.p < sig and res.rho >= rho_min:
        return _v("supported", details=detail, **kw)
    if res.p_opposite < sig or (res.p_min < sig and res.rho <= 0):
        return _v("contradicted", details=detail, **kw)
    miss = ""
    if res.p_min >= sig:
        miss = (f"the design cannot reach p < {sig} even with a perfect trend: more levels of "
                f"{what} or more seeds per level are needed")
    return _v("inconclusive", details=detail, missing=miss or "trend too weak to decide", **kw)


def _tost_verdict(d: list[float], margin_ratio: float, sig: float, df: pd.DataFrame,
                  what: str, min_n: int = 2) -> tuple[Verdict, stats.TostResult]:
    margin = math.log1p(margin_ratio)
    res = stats.tost(d, margin)
    kw = dict(statistic=res.p_tost, statistic_name="TOST p", effect_size=res.mean,
              effect_name=f"mean log FID ratio ({what})", ci=res.ci90, p_value=res.p_tost,
              n=res.n, run_ids=_ids(df))
    detail = (f"mean log ratio {res.mean:+.3f} (×{math.exp(res.mean) if np.isfinite(res.mean) else float('nan'):.3f}), "
              f"90% CI [{res.ci90[0]:+.3f}, {res.ci90[1]:+.3f}], margin ±{margin:.3f} "
              f"(ratio within ×/÷ {1 + margin_ratio:.2f}), n = {res.n}.")
    if res.n < min_n:
        return _missing(f"need ≥ {min_n} matched comparisons ({what}); have {res.n}",
                        details=detail, **kw), res
    if res.outside:
        return _v("contradicted", details=detail, **kw), res
    if res.p_tost < sig:
        return _v("supported", details=detail, **kw), res
    return _v("inconclusive", details=detail, missing="CI too wide for the margin: more seeds",
              **kw), res


def _log(x: pd.Series) -> pd.Series:
    return np.log(x.astype(float))


# ------------------------------------------------------------------------------------ H1
@register(
    "H1",
    "Keeping ‖∇f‖ small by 1-Lipschitz regularization is the key to GAN training and the choice of "
    "loss contributes little (so at large k_SN all losses should fare alike).",
    "Lipschitz paper Sec. 2, Hypothesis 1; evidence Table 2 (WGAN-SN outlier at k_SN ≥ 5)",
    groups=("h1",),
)
def h1(frame: pd.DataFrame, *, large_k: float = 5.0, sig: float = SIG, w_large: float = 0.3,
       w_small: float = 0.1, fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Friedman test of the loss effect on capped FID at k_SN ≥ ``large_k`` (α = 1, SN).

    Blocks = (origin, dataset, extractor, k_SN, seed); treatments = losses. Effect = Kendall's W.
    contradicted ⇔ p < sig and W ≥ w_large (the loss matters, e.g. WGAN stays good while others
    break); supported ⇔ p ≥ sig, W < w_small and the design could have detected a perfect loss
    effect; inconclusive otherwise. W: 0.1 small, 0.3 moderate, 0.5 large (Cohen's conventions).
    """
    df = _prep(frame, fid_cap, rel_cap)
    df = df[(df["regularizer"] == "sn") & _close(df["alpha"], 1.0) & (_col(df, "k_sn").astype(float) >= large_k)]
    df = df[df["fid_eff"].notna()]
    if df.empty:
        return _missing(f"no SN runs with α = 1 and k_SN ≥ {large_k}")
    block_cols = _strata(df, ["k_sn", "seed", "-loss"])
    pivot = (df.astype({c: object for c in block_cols}).fillna({c: "∅" for c in block_cols})
             .pivot_table(index=block_cols, columns="loss", values="fid_eff", aggfunc="median"))
    present = pivot.notna().sum()
    pivot = pivot.loc[:, present >= present.max() / 2].dropna()
    losses = list(pivot.columns)
    used = df[df["loss"].isin(losses)]
    if len(losses) < 2 or len(pivot) < 2:
        return _missing(f"need ≥ 2 losses in ≥ 2 complete blocks (dataset × k_SN ≥ {large_k} × seed); "
                        f"have {len(losses)} losses, {len(pivot)} blocks", run_ids=_ids(used), n=len(used))
    fr = stats.friedman(pivot.to_numpy(), losses)
    b, k = len(pivot), len(losses)
    p_min = float(sps.chi2.sf(b * (k - 1), k - 1))
    broken = used.groupby("loss")["broken"].mean()
    best = min(fr.mean_ranks, key=fr.mean_ranks.get)
    detail = (f"{b} blocks × {k} losses at k_SN ≥ {large_k}: Friedman χ² = {fr.chi2:.2f}, p = {fr.p:.3g}, "
              f"Kendall W = {fr.w:.2f}. Mean rank (1 = best): "
              + ", ".join(f"{l} {r:.2f}" for l, r in sorted(fr.mean_ranks.items(), key=lambda t: t[1]))
              + ". Broken share (FID ≥ cap or diverged): "
              + ", ".join(f"{l} {broken[l]:.0%}" for l in losses)
              + f". Best-ranked loss: {best}.")
    kw = dict(statistic=fr.chi2, statistic_name="Friedman χ²", effect_size=fr.w,
              effect_name="Kendall's W", p_value=fr.p, n=len(used), run_ids=_ids(used), details=detail)
    if fr.p < sig and fr.w >= w_large:
        return _v("contradicted", **kw)
    if fr.p >= sig and fr.w < w_small and p_min < sig:
        return _v("supported", **kw)
    return _v("inconclusive", missing="loss effect neither clearly large nor clearly absent"
              + ("" if p_min < sig else f"; too few blocks to reach p < {sig}"), **kw)


# ------------------------------------------------------------------------------------ Eq. 3
@register(
    "k-output-scale",
    "K is only an output scale: with a bias-free D and an optimizer whose ε is negligible or scaled, "
    "the run at k_SN is the run at k_SN = 1 with outputs scaled by k_SN^n (same FID, Ω × k_SN^n).",
    "Lipschitz paper Eq. 3-5 (Sec. 3)",
    groups=("k-scale", "eq3"),
)
def k_output_scale(frame: pd.DataFrame, *, tol: float = 0.1, sig: float = SIG,
                   require_bias_free: bool = True, losses: tuple[str, ...] = ("wgan",),
                   fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """TOST on r = log(width_Ω(k) / (k^n · width_Ω(1))) over pairs (same config and seed, k ≠ 1).

    Only linear losses (the claim is exact for them: Eq. 3 + RMSprop/Adam normalisation); pairs with
    k < 1 count only when ε was scaled by k^n (else ε is not negligible: that is Eq. 5's remark).
    Ω = last-step Ω_i (real ∪ fake). tol: |r| within log(1 + tol).
    """
    df = _prep(frame, fid_cap, rel_cap)
    df = df[(df["regularizer"] == "sn") & df["loss"].isin(losses)]
    if require_bias_free:
        df = df[_col(df, "d_bias", True).astype("boolean").fillna(True) == False]  # noqa: E712
    df = df.assign(_omega_w=_width(df, "last"), k=_col(df, "k_sn").astype(float),
                   n_layers=_col(df, "n_d_layers").astype(float), eps_=_col(df, "eps", 0.0).astype(float))
    df = df[np.isfinite(df["_omega_w"]) & (df["_omega_w"] > 0) & df["n_layers"].notna()]
    if df.empty:
        return _missing("no bias-free (d_bias = false) SN runs of a linear loss with Ω and n_d_layers")
    keys = _strata(df, ["seed", "-k_sn", "-eps"])
    r, ids = [], []
    for _, g in _groupby(df, keys):
        ref = g[_close(g["k"], 1.0)]
        if ref.empty:
            continue
        ref = ref.iloc[0]
        for _, row in g[~_close(g["k"], 1.0)].iterrows():
            scale = row["k"] ** row["n_layers"]
            eps_ok = row["k"] >= 1 or np.isclose(row["eps_"], ref["eps_"] * scale, rtol=1e-3, atol=0)
            if not eps_ok:
                continue
            r.append(math.log(row["_omega_w"] / (scale * ref["_omega_w"])))
            ids += [row["run_id"], ref["run_id"]]
    used = df[df["run_id"].isin(ids)]
    v, _ = _tost_verdict(r, tol, sig, used, "Ω(k) / (k^n Ω(1))")
    v.effect_name = "mean log(Ω(k) / (k^n Ω(1)))"
    if not r:
        v.missing = ("need k_SN = 1 and k_SN ≠ 1 runs of the same config and seed (k < 1 only with "
                     "ε scaled by k^n)")
    return v


# ------------------------------------------------------------------------------------ domain
def _domain_trend(frame, *, regularizer: str, kcol: str, metric: str, losses_exclude, sig, rho_min,
                  fid_cap, rel_cap, log_x: bool) -> Verdict:
    df = _prep(frame, fid_cap, rel_cap)
    df = df[(df["regularizer"] == regularizer) & _close(df["alpha"], 1.0) & ~df["loss"].isin(losses_exclude)]
    if metric == "omega":
        y = _width(df, "union")
    else:
        y = _col(df, "psi_max").astype(float) - _col(df, "psi_min").astype(float)
    df = df.assign(y=np.log(y.where(y > 0)), x=_col(df, kcol).astype(float))
    df = df[np.isfinite(df["y"]) & df["x"].notna()]
    if log_x:
        df = df[df["x"] > 0].assign(x=lambda d: np.log(d["x"]))
    groups = [(g["x"].to_numpy(), g["y"].to_numpy()) for _, g in _groupby(df, _strata(df, ["loss", f"-{kcol}"]))]
    res = stats.trend_test(groups, direction=+1)
    name = "Ω∪ width" if metric == "omega" else "Ψ width"
    return _trend_verdict(res, sig, rho_min, kcol, df, f"ρ({kcol}, log {name})")


@register(
    "domain-omega-shrinks",
    "The loss's domain Ω (range of D over training) shrinks as k_SN decreases.",
    "Lipschitz paper Theorem 1, Eq. 7, Fig. 1a/1b",
    groups=("domain-restriction", "domain"),
)
def omega_shrinks(frame: pd.DataFrame, *, sig: float = SIG, rho_min: float = 0.5,
                  fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Stratified Spearman of log width(Ω∪) on log k_SN (per loss × dataset …), predicted ρ > 0."""
    return _domain_trend(frame, regularizer="sn", kcol="k_sn", metric="omega", losses_exclude=(),
                         sig=sig, rho_min=rho_min, fid_cap=fid_cap, rel_cap=rel_cap, log_x=True)


@register(
    "domain-psi-shrinks",
    "The interval Ψ of attainable loss gradients shrinks as k_SN decreases (non-linear losses).",
    "Lipschitz paper Corollary 1.1, Eq. 8-9, Fig. 1b",
    groups=("domain-restriction", "domain"),
)
def psi_shrinks(frame: pd.DataFrame, *, sig: float = SIG, rho_min: float = 0.5,
                fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Stratified Spearman of log width(Ψ) (Eq. 9: ∇L at the ends of Ω) on log k_SN; WGAN excluded."""
    return _domain_trend(frame, regularizer="sn", kcol="k_sn", metric="psi",
                         losses_exclude=tuple(LINEAR_LOSSES), sig=sig, rho_min=rho_min,
                         fid_cap=fid_cap, rel_cap=rel_cap, log_x=True)


@register(
    "domain-omega-bound",
    "Ω obeys Theorem 1: its width never exceeds K·2·√(m·n·c) with K = k_SN^n.",
    "Lipschitz paper Theorem 1 / Eq. 7 (Appendix A)",
    groups=("domain-restriction", "domain"),
)
def omega_bound(frame: pd.DataFrame, *, tol: float = 0.01, min_runs: int = 3,
                fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Ratio width/bound per run (last-step Ω_i; Ω∪ when Ω_i was not logged — a union inside the bound
    puts every Ω_i inside). Any ratio > 1 + tol contradicts (a bound admits no exceptions; tol
    absorbs power-iteration error in σ). supported with ≥ min_runs runs and no violation."""
    df = _prep(frame, fid_cap, rel_cap)
    # Theorem 1 needs a hard Lipschitz bound: only SN sets one (K = k_SN^n). GP/ALR/GraN log the K
    # they aim at as lipschitz_k/omega_bound too, but a soft penalty guarantees nothing.
    df = df[(_col(df, "regularizer").astype(str) == "sn") & (_col(df, "omega_bound").astype(float) > 0)]
    last, union = _width(df, "last"), _width(df, "union")
    width = last.where(np.isfinite(last), union)
    from_union = ~np.isfinite(last)
    ratio = width / df["omega_bound"].astype(float) if len(df) else pd.Series(dtype=float)
    ok = np.isfinite(ratio)
    # a union wider than the bound says nothing about each Ω_i: not counted either way
    ok &= ~(from_union & (ratio > 1 + tol))
    df, ratio = df[ok], ratio[ok]
    if df.empty:
        return _missing("no runs with Ω and omega_bound (Theorem 1 needs K: SN runs)")
    viol = ratio > 1 + tol
    kw = dict(statistic=float(ratio.max()), statistic_name="max width/bound",
              effect_size=float(ratio.median()), effect_name="median width/bound", n=len(df),
              run_ids=_ids(df), details=f"{int(viol.sum())} of {len(df)} runs exceed the bound "
              f"(tolerance {tol:.0%}); widths are {ratio.median():.2e} of the bound at the median.")
    if viol.any():
        kw["run_ids"] = _ids(df[viol])
        return _v("contradicted", **kw)
    if len(df) < min_runs:
        return _missing(f"need ≥ {min_runs} runs; have {len(df)}", **kw)
    return _v("supported", **kw)


@register(
    "domain-omega-shift",
    "During training Ω_i of NS/LS stays put (strictly convex loss, unique minimum) while WGAN's Ω_i shifts.",
    "Lipschitz paper Sec. 4.1 remark on Ω_i, Fig. 1a",
    groups=("domain-restriction", "domain"),
)
def omega_shift(frame: pd.DataFrame, *, sig: float = SIG, r_min: float = 0.5,
                convex_losses: tuple[str, ...] = ("ns", "mm", "ls", "ls0"),
                fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Shift index S = log(width(Ω∪) / width(Ω_last)) — 0 when Ω never moved, large when it slid.

    One-sided Mann-Whitney, S(WGAN) > S(NS/LS); effect = rank-biserial r. supported ⇔ p < sig and
    r ≥ r_min; contradicted ⇔ significant the other way, or r ≤ 0 where the design could detect it.
    """
    df = _prep(frame, fid_cap, rel_cap)
    df = df[df["loss"].isin(set(convex_losses) | LINEAR_LOSSES)]
    s = np.log(_width(df, "union") / _width(df, "last"))
    df = df.assign(S=s)[np.isfinite(s)]
    a = df[df["loss"].isin(LINEAR_LOSSES)]["S"].to_numpy()
    b = df[df["loss"].isin(convex_losses)]["S"].to_numpy()
    if len(a) < 1 or len(b) < 1:
        return _missing("need runs of WGAN and of NS/LS with Ω∪ and last-step Ω (real/fake min/max)",
                        n=len(df), run_ids=_ids(df))
    u = sps.mannwhitneyu(a, b, alternative="greater")
    u_opp = sps.mannwhitneyu(a, b, alternative="less")
    r = 2 * u.statistic / (len(a) * len(b)) - 1
    p_min = 1 / math.comb(len(a) + len(b), len(a))
    kw = dict(statistic=float(u.statistic), statistic_name="Mann-Whitney U", effect_size=float(r),
              effect_name="rank-biserial r", p_value=float(u.pvalue), n=len(df), run_ids=_ids(df),
              details=f"median S: WGAN {np.median(a):.3f} (n={len(a)}), NS/LS {np.median(b):.3f} "
              f"(n={len(b)}); one-sided p = {u.pvalue:.3g}; smallest attainable p {p_min:.3g}.")
    if u.pvalue < sig and r >= r_min:
        return _v("supported", **kw)
    if u_opp.pvalue < sig or (p_min < sig and r <= 0):
        return _v("contradicted", **kw)
    return _v("inconclusive", missing="more runs of each loss" if p_min >= sig else "effect too weak",
              **kw)


# ------------------------------------------------------------------------------------ α (Table 5)
def _alpha_trend(frame, *, k_pred, alpha_pred, sig, rho_min, fid_cap, rel_cap):
    df = _prep(frame, fid_cap, rel_cap)
    k = _col(df, "k_sn").astype(float)
    df = df[(df["regularizer"] == "sn") & k_pred(k) & alpha_pred(df["alpha"]) & ~df["loss"].isin(LINEAR_LOSSES)]
    df = df[df["fid_eff"].notna()].assign(x=lambda d: np.log10(d["alpha"]))
    groups = [(g["x"].to_numpy(), g["fid_eff"].to_numpy())
              for _, g in _groupby(df, _strata(df, ["loss", "k_sn", "-alpha"]))]
    return df, stats.trend_test(groups, direction=+1)


@register(
    "alpha-compensates-k",
    "At a large k_SN (50), a small domain scale α restores training: FID falls as α decreases.",
    "Lipschitz paper Eq. 10-11, Table 5a (Appendix D)",
    groups=("alpha", "alpha-k"),
)
def alpha_compensates(frame: pd.DataFrame, *, large_k: float = 5.0, sig: float = SIG,
                      rho_min: float = 0.5, restore_share: float = 0.5,
                      fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Trend of capped FID on log α (α ≤ 1, k_SN ≥ large_k, non-linear losses), predicted ρ > 0;
    and the share of strata whose smallest α is not broken ≥ restore_share."""
    df, res = _alpha_trend(frame, k_pred=lambda k: k >= large_k, alpha_pred=lambda a: a <= 1.0,
                           sig=sig, rho_min=rho_min, fid_cap=fid_cap, rel_cap=rel_cap)
    v = _trend_verdict(res, sig, rho_min, "α", df, "ρ(log α, FID)")
    if res.n_groups:
        keys = _strata(df, ["loss", "k_sn", "-alpha"])
        restored = [not g[g["alpha"] == g["alpha"].min()]["broken"].mean() >= 0.5
                    for _, g in _groupby(df, keys) if g["alpha"].nunique() >= 2]
        share = float(np.mean(restored)) if restored else math.nan
        v.details += f" Smallest α not broken in {sum(restored)}/{len(restored)} strata."
        if v.verdict == "supported" and not share >= restore_share:
            v.verdict, v.missing = "inconclusive", "FID falls with α but training is not restored"
        elif v.verdict != "contradicted" and res.p_min < sig and share == 0:
            v.verdict = "contradicted"
    return v


@register(
    "alpha-large-breaks",
    "At k_SN = 1, enlarging the domain scale α (≥ 1) worsens FID for every non-linear loss, while "
    "WGAN is unaffected.",
    "Lipschitz paper Table 5b (Appendix D)",
    groups=("alpha", "alpha-k"),
)
def alpha_large_breaks(frame: pd.DataFrame, *, k_sn: float = 1.0, sig: float = SIG,
                       rho_min: float = 0.5, wgan_margin: float = 0.2, break_alpha: float = 1e5,
                       fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Trend of capped FID on log α (α ≥ 1, k_SN = k_sn), predicted ρ > 0. WGAN (α-invariant by
    Eq. 11: L_α(ω) = ω) must not move: if WGAN runs at α > 1 and α = 1 exist, a TOST of their log
    ratio (margin ×/÷ 1 + wgan_margin) whose CI lies outside contradicts. Broken share at
    α ≥ break_alpha is reported (the paper's literal "breaks")."""
    df, res = _alpha_trend(frame, k_pred=lambda k: _close(k, k_sn), alpha_pred=lambda a: a >= 1.0,
                           sig=sig, rho_min=rho_min, fid_cap=fid_cap, rel_cap=rel_cap)
    v = _trend_verdict(res, sig, rho_min, "α", df, "ρ(log α, FID)")
    big = df[df["alpha"] >= break_alpha]
    if len(big):
        per = big.groupby(["dataset", "loss"])["broken"].mean()
        v.details += (f" At α ≥ {break_alpha:g}: broken in {int((per >= 0.5).sum())}/{len(per)} "
                      f"loss × dataset cells" + (" (not broken: " + ", ".join(
                          f"{l}/{d}" for (d, l), b in per.items() if b < 0.5) + ")" if (per < 0.5).any() else "") + ".")
    full = _prep(frame, fid_cap, rel_cap)
    w = full[(full["regularizer"] == "sn") & (full["loss"].isin(LINEAR_LOSSES))
             & _close(_col(full, "k_sn").astype(float), k_sn) & (full["alpha"] >= 1.0)]
    d = []
    for _, g in _groupby(w, _strata(w, ["seed", "-alpha"])):
        base = g[_close(g["alpha"], 1.0)]["fid_eff"]
        if len(base):
            d += list(np.log(g[g["alpha"] > 1.0]["fid_eff"].astype(float)) - math.log(float(base.median())))
    if len(d) >= 2:
        t = stats.tost(d, math.log1p(wgan_margin))
        v.details += f" WGAN α>1 vs α=1: mean log ratio {t.mean:+.3f}, 90% CI [{t.ci90[0]:+.3f}, {t.ci90[1]:+.3f}]."
        if t.outside:
            v.verdict = "contradicted"
            v.details += " WGAN moved with α."
    return v


# ------------------------------------------------------------------------------------ Eq. 13
@register(
    "degenerate-losses",
    "With an extremely small domain scale (α = 1e-25) every loss degenerates to a linear one and "
    "performs close to WGAN.",
    "Lipschitz paper Eq. 13 and the degenerate-loss table (Sec. 4.3)",
    groups=("degenerate",),
)
def degenerate_close_to_wgan(frame: pd.DataFrame, *, alpha_max: float = 1e-15, margin: float = 0.2,
                             sig: float = SIG, fid_cap: float = FID_CAP_INCEPTION,
                             rel_cap: float = REL_CAP) -> Verdict:
    """TOST on d = mean log FID(loss, α ≤ alpha_max) − mean log FID(WGAN) per (dataset, k_SN, loss)
    cell; margin: FID ratio within ×/÷ (1 + margin) (default 20 %, about the seed-to-seed and
    k_SN ≤ 1 spread of Table 2). "Every loss": a loss whose own 90 % CI lies outside contradicts.
    WGAN runs of any α count (WGAN is α-invariant, Eq. 11)."""
    df = _prep(frame, fid_cap, rel_cap)
    df = df[(df["regularizer"] == "sn") & df["fid_eff"].notna()]
    deg = df[~df["loss"].isin(LINEAR_LOSSES) & (df["alpha"] <= alpha_max)]
    wg = df[df["loss"].isin(LINEAR_LOSSES)]
    keys = ["origin", "dataset", "fid_extractor", "k_sn"]
    wmean = _groupby(wg, keys)["fid_eff"].apply(lambda s: np.log(s.astype(float)).mean())
    d, per_loss, ids = [], {}, []
    for key, g in _groupby(deg, keys + ["loss"]):
        if key[:-1] not in wmean.index:
            continue
        val = float(np.log(g["fid_eff"].astype(float)).mean() - wmean[key[:-1]])
        d.append(val)
        per_loss.setdefault(key[-1], []).append(val)
        ids += list(g["run_id"])
        ids += list(wg[(wg[keys].astype(object).fillna("∅").apply(tuple, axis=1)) == key[:-1]]["run_id"])
    used = df[df["run_id"].isin(ids)]
    v, _ = _tost_verdict(d, margin, sig, used, "loss vs WGAN")
    if not d:
        v.missing = f"need runs at α ≤ {alpha_max:g} and WGAN runs on the same dataset, extractor and k_SN"
        return v
    lines, bad = [], []
    for loss, vals in sorted(per_loss.items()):
        t = stats.tost(vals, math.log1p(margin))
        ci = f"[{t.ci90[0]:+.3f}, {t.ci90[1]:+.3f}]" if t.n >= 2 else "(n=1)"
        lines.append(f"{loss}: {np.mean(vals):+.3f} {ci}")
        if t.outside or (t.n == 1 and abs(vals[0]) > math.log1p(margin) * 3):
            bad.append(loss)
    v.details += " Per loss: " + "; ".join(lines) + "."
    if bad:
        v.verdict = "contradicted"
        v.details += f" Not close to WGAN: {', '.join(bad)}."
    return v


# ------------------------------------------------------------------------------------ Eq. 5
@register(
    "eps-counterfactual",
    "The FID degradation at small k_SN is an ε effect: scaling the optimizer ε by k_SN^n removes it.",
    "Lipschitz paper Eq. 5 remark (Sec. 3); counterfactual not run in the paper",
    groups=("eps",),
)
def eps_counterfactual(frame: pd.DataFrame, *, small_k: float = 1.0, eps_power: float = 1.0,
                       margin: float = 0.2, sig: float = SIG, fid_cap: float = FID_CAP_INCEPTION,
                       rel_cap: float = REL_CAP) -> Verdict:
    """Runs at k_SN < small_k with ε = ε₀ (base) or ε = ε₀·k_SN^(n·eps_power) (scaled; torch puts
    ε outside the root, so eps_power 1; Eq. 5's inside-root form is 2), ε₀ = ε of the k_SN = 1 runs.
    D_scaled = log FID(scaled) − mean log FID(k = 1): TOST within ×/÷ (1 + margin) ⇒ degradation
    removed. Δ = log FID(base) − log FID(scaled), paired by seed: one-sided t > 0 ⇒ scaling helps.
    supported ⇔ both; contradicted ⇔ D_scaled's CI lies above the margin (degradation persists) or
    Δ significantly < 0."""
    df = _prep(frame, fid_cap, rel_cap)
    df = df[(df["regularizer"] == "sn") & df["fid_eff"].notna()]
    df = df.assign(k=_col(df, "k_sn").astype(float), eps_=_col(df, "eps").astype(float),
                   n_layers=_col(df, "n_d_layers").astype(float))
    df = df[df["eps_"].notna() & df["n_layers"].notna()]
    keys = _strata(df, ["loss", "-k_sn", "-eps", "-lipschitz_k", "-omega_bound"])
    d_scaled, d_base, delta, ids = [], [], [], []
    for _, g in _groupby(df, keys):
        ref = g[_close(g["k"], 1.0)]
        if ref.empty:
            continue
        eps0 = float(ref["eps_"].mode().iloc[0])
        ref = ref[_close(ref["eps_"], eps0)]
        ref_log = float(np.log(ref["fid_eff"].astype(float)).mean())
        small = g[g["k"] < small_k]
        target = eps0 * small["k"] ** (small["n_layers"] * eps_power)
        scaled = small[np.isclose(small["eps_"], target, rtol=1e-3, atol=0)]
        base = small[_close(small["eps_"], eps0)]
        if scaled.empty:
            continue
        ids += list(ref["run_id"]) + list(scaled["run_id"]) + list(base["run_id"])
        d_scaled += list(np.log(scaled["fid_eff"].astype(float)) - ref_log)
        d_base += list(np.log(base["fid_eff"].astype(float)) - ref_log)
        for (k, seed), sg in scaled.groupby(["k", "seed"]):
            bg = base[_close(base["k"], k) & (base["seed"] == seed)]
            if len(bg):
                delta.append(float(np.log(bg["fid_eff"].astype(float)).mean()
                                   - np.log(sg["fid_eff"].astype(float)).mean()))
    used = df[df["run_id"].isin(ids)]
    v, t = _tost_verdict(d_scaled, margin, sig, used, "scaled-ε small k vs k = 1")
    if not d_scaled:
        v.missing = (f"need k_SN < {small_k} runs with ε = ε₀·k_SN^(n·{eps_power:g}) and k_SN = 1 runs "
                     "of the same config")
        return v
    base_txt = (f" Base-ε degradation: mean log ratio {np.mean(d_base):+.3f} (n={len(d_base)})."
                if d_base else " No base-ε small-k runs to compare.")
    if len(delta) >= 2:
        tt = sps.ttest_1samp(delta, 0.0, alternative="greater")
        tl = sps.ttest_1samp(delta, 0.0, alternative="less")
        v.details += base_txt + f" Paired Δ(base − scaled) mean {np.mean(delta):+.3f}, one-sided p = {tt.pvalue:.3g} (n={len(delta)})."
        if tl.pvalue < sig:
            v.verdict = "contradicted"
        elif v.verdict == "supported" and not tt.pvalue < sig:
            v.verdict, v.missing = "inconclusive", "scaled ε matches k = 1 but does not beat base ε significantly"
    else:
        v.details += base_txt + " Fewer than 2 base/scaled pairs: the improvement over base ε is untested."
        if v.verdict == "supported":
            v.verdict, v.missing = "inconclusive", "need ≥ 2 (seed, k) pairs of base-ε and scaled-ε runs"
    return v


# ------------------------------------------------------------------------------------ GraN Eq. 21
@register(
    "gran-k-eps",
    "Under Adam, GraN's K acts like ε → ε/K: for a linear loss, runs with (K, ε) and (1, ε/K) coincide.",
    "GraN-GAN Eq. 21 (Sec. 6, Lipschitz constant analysis)",
    groups=("gran",),
)
def gran_k_eps(frame: pd.DataFrame, *, margin: float = 0.1, sig: float = SIG,
               losses: tuple[str, ...] = ("wgan",), fid_cap: float = FID_CAP_INCEPTION,
               rel_cap: float = REL_CAP) -> Verdict:
    """TOST on log FID(K, ε) − log FID(1, ε/K) over matched pairs (same config and seed, K ≠ 1);
    margin ×/÷ (1 + margin), 10 % by default: the claim is an identity up to float rounding."""
    df = _prep(frame, fid_cap, rel_cap)
    df = df[(df["regularizer"] == "gran") & (_col(df, "optimizer", "") == "adam") & df["loss"].isin(losses)]
    df = df.assign(K=_col(df, "gran_k").astype(float), eps_=_col(df, "eps").astype(float))
    df = df[df["K"].notna() & df["eps_"].notna() & df["fid_eff"].notna()]
    keys = _strata(df, ["seed", "-gran_k", "-eps"])
    d, ids = [], []
    for _, g in _groupby(df, keys):
        ones = g[_close(g["K"], 1.0)]
        for _, row in g[~_close(g["K"], 1.0)].iterrows():
            m = ones[np.isclose(ones["eps_"], row["eps_"] / row["K"], rtol=1e-3, atol=0)]
            if len(m):
                d.append(math.log(row["fid_eff"]) - float(np.log(m["fid_eff"].astype(float)).mean()))
                ids += [row["run_id"], *m["run_id"]]
    used = df[df["run_id"].isin(ids)]
    v, _ = _tost_verdict(d, margin, sig, used, "(K, ε) vs (1, ε/K)")
    if not d:
        v.missing = "need Adam GraN runs of a linear loss at (K, ε) and (1, ε/K) with the same seed"
    return v


# ------------------------------------------------------------------------------------ ALR / JS / GP
def _superiority(frame, *, a_sel, b_sel, strata_extra, margin, sig, fid_cap, rel_cap, what) -> Verdict:
    df = _prep(frame, fid_cap, rel_cap)
    df = df[df["fid_eff"].notna()]
    a, b = df[a_sel(df)], df[b_sel(df)]
    both = pd.concat([a.assign(_g="a"), b.assign(_g="b")])
    if both.empty:
        return _missing(f"no runs of {what}")
    keys = ["origin", "dataset", "fid_extractor", *strata_extra]
    both["y"] = np.log(both["fid_eff"].astype(float))
    both["y"] -= _groupby(both, keys)["y"].transform("mean")   # remove dataset/extractor level
    ok = _groupby(both, keys)["_g"].transform(lambda s: s.nunique() == 2).astype(bool)
    both = both[ok]
    ya, yb = both[both["_g"] == "a"]["y"], both[both["_g"] == "b"]["y"]
    w = stats.welch(ya, yb)
    kw = dict(statistic=w.diff, statistic_name="Δ mean log FID (A − B)", effect_size=w.diff,
              effect_name="Δ mean log FID (A − B)", ci=w.ci90, p_value=w.p_less, n=len(both),
              run_ids=_ids(both),
              details=f"A: n={w.n_a}, B: n={w.n_b}; Δ = {w.diff:+.3f} (FID ×{math.exp(w.diff) if np.isfinite(w.diff) else float('nan'):.3f}), "
              f"90% CI [{w.ci90[0]:+.3f}, {w.ci90[1]:+.3f}]; one-sided p(A better) = {w.p_less:.3g}. "
              f"Broken share A {both[both['_g'] == 'a']['broken'].mean():.0%}, "
              f"B {both[both['_g'] == 'b']['broken'].mean():.0%}.")
    if w.n_a < 2 or w.n_b < 2:
        return _missing(f"need ≥ 2 runs of each ({what}) on the same dataset and extractor; "
                        f"have {w.n_a} and {w.n_b}", **kw)
    if w.p_less < sig:
        return _v("supported", **kw)
    m = math.log1p(margin)
    if w.p_greater < sig or (-m < w.ci90[0] and w.ci90[1] < m):
        return _v("contradicted", **kw)
    return _v("inconclusive", missing="difference not significant and CI wider than the margin", **kw)


@register(
    "alr-beats-gp",
    "WGAN with the adversarial Lipschitz penalty (ALP) reaches a lower FID than WGAN-GP.",
    "ALR paper Sec. 4, Eq. 17, Table 1 (12.96 vs 18.86 on CIFAR-10)",
    groups=("alr",),
)
def alr_beats_gp(frame: pd.DataFrame, *, margin: float = 0.1, sig: float = SIG,
                 fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Welch on log FID, WGAN-ALR (A) vs WGAN-GP (B), centred per dataset × extractor. contradicted
    if ALR is significantly worse or equivalent within ×/÷ (1 + margin) (no real improvement)."""
    return _superiority(frame, a_sel=lambda d: (d["loss"] == "wgan") & (d["regularizer"] == "alr"),
                        b_sel=lambda d: (d["loss"] == "wgan") & (d["regularizer"] == "gp"),
                        strata_extra=[], margin=margin, sig=sig, fid_cap=fid_cap, rel_cap=rel_cap,
                        what="WGAN-ALR and WGAN-GP")


@register(
    "js-stabilizes",
    "The noise-induced JS regularizer Ω_JS (annealed γ) stabilizes GAN training: lower FID and fewer "
    "broken runs than the same GAN unregularized.",
    "Roth et al. Eq. 20/28, Algorithm 1, Sec. 5 (Figs. 1-4)",
    groups=("js",),
)
def js_stabilizes(frame: pd.DataFrame, *, margin: float = 0.1, sig: float = SIG,
                  fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Welch on capped log FID (broken = cap), JS (A) vs none (B), same loss, dataset, extractor."""
    return _superiority(frame, a_sel=lambda d: d["regularizer"] == "js",
                        b_sel=lambda d: d["regularizer"] == "none", strata_extra=["loss"],
                        margin=margin, sig=sig, fid_cap=fid_cap, rel_cap=rel_cap,
                        what="JS-regularized and unregularized GANs")


@register(
    "gp-omega-shrinks",
    "With a gradient penalty the domain Ω also shrinks as k_GP decreases (less strongly than with k_SN).",
    "Lipschitz paper Appendix C, Eq. 18, Fig. 3",
    groups=("gp",),
)
def gp_omega_shrinks(frame: pd.DataFrame, *, sig: float = SIG, rho_min: float = 0.5,
                     fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Verdict:
    """Stratified Spearman of log width(Ω∪) on k_GP (k_GP = 0 allowed: ranks), predicted ρ > 0."""
    return _domain_trend(frame, regularizer="gp", kcol="k_gp", metric="omega", losses_exclude=(),
                         sig=sig, rho_min=rho_min, fid_cap=fid_cap, rel_cap=rel_cap, log_x=False)
