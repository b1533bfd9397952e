"""The verdict machinery: :class:`Verdict`, the hypothesis registry, the shared decision rules and
the learning guard (issue #10). ``analysis.hypotheses`` holds the hypotheses themselves.

**The learning guard.** A verdict on sample quality means nothing when the runs never learned
(the CPU study at 400 iterations "supported" hypotheses with every FID near the untrained one).
Every hypothesis registers as one of two kinds:

* ``quality`` (FID, modes): it names its *reference configurations* — ones the papers report as
  training normally and that the hypothesis does not put under test (e.g. SN, α = 1, k_SN = 1).
  Per stratum (origin, dataset, architecture, feature extractor) the guard checks that the
  reference runs learned: median quality ≥ ``q_broken`` (``analysis.scale``; Inception rows
  without a scale: median FID < ``fid_cap``, the paper's rule). A stratum without the named
  reference configurations is checked on its best configuration instead, and the verdict says
  so. Strata whose references did not learn, or whose learning cannot be judged (no FID scale
  logged), are left out of the test; when that leaves the test without data, the verdict is
  *inconclusive* with the reason in numbers: "reference runs did not learn: median FID X,
  floor Y, untrained Z …".
* ``domain`` (Ω, Ψ, bounds — properties of D, not of the samples): no guard, but the verdict
  states the sample quality of the runs behind it.

Decision rules shared by the hypotheses (``analysis.stats`` for the tests):

* Monotone trends: stratified Spearman permutation test. supported ⇔ p < ``sig`` and ρ ≥
  ``rho_min``; contradicted ⇔ a significant trend the other way, or ρ ≤ 0 although the design
  could have shown the trend (its smallest attainable p < ``sig``); inconclusive otherwise.
  Continuous parameters (an Optuna search's k_SN, α, ε) are ranked as sampled; a continuous
  column is never a stratum (every run would be its own).
* "Close to" claims: TOST on log-FID ratios within ×/÷ (1 + margin).
* No verdict prints a NaN: a statistic that could not be computed is absent, and the verdict
  says in words what data it needs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysis import stats
from analysis.outcome import config_columns, config_key, with_outcome
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED, describe_scale, fmt

VerdictKind = Literal["supported", "contradicted", "inconclusive"]

#: Default significance level of every test.
SIG = 0.05
#: Strata of the learning guard (and of every comparison): FIDs of different datasets,
#: architectures or feature extractors are never compared.
GUARD_KEYS = ("origin", "dataset", "arch", "fid_extractor")
#: "Continuous" (sampled, not a grid level: ranked, never a stratum) needs this many levels
CONTINUOUS_MIN_LEVELS = 6
#: (A float column with at least that many distinct values, each typically used by one
#: configuration only.)


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
    kind: str = "quality"
    reference: str = ""
    guard: str = ""
    guard_status: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def clean(self) -> Verdict:
        """Non-finite numbers → None (a statistic that could not be computed is absent)."""
        for f in ("statistic", "effect_size", "p_value"):
            v = getattr(self, f)
            if v is not None and not (isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))):
                setattr(self, f, None)
            elif v is not None:
                setattr(self, f, float(v))
        if self.ci is not None and not all(np.isfinite(self.ci)):
            self.ci = None
        if self.verdict == "inconclusive" and not self.missing:
            self.missing = "the test did not reach a decision"
        return self


@dataclass(frozen=True)
class Reference:
    """The reference configurations of a quality hypothesis: ``select`` marks them on a
    :func:`prep` frame; None = no named configuration (the best one of each stratum is used)."""
    text: str
    select: Callable[[pd.DataFrame], pd.Series] | None = None


@dataclass
class Hypothesis:
    name: str
    claim: str
    source: str
    func: Callable[..., Verdict]
    groups: tuple[str, ...] = ()
    kind: str = "quality"
    reference: Reference | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        sig = inspect.signature(self.func)
        return {k: p.default for k, p in sig.parameters.items()
                if p.default is not inspect._empty and k != "histories"}

    @property
    def takes_histories(self) -> bool:
        return "histories" in inspect.signature(self.func).parameters

    def _run(self, frame, histories, th) -> Verdict:
        if self.takes_histories:
            return self.func(frame, histories=histories, **th)
        return self.func(frame, **th)

    def __call__(self, frame: pd.DataFrame, histories: pd.DataFrame | None = None,
                 **params: Any) -> Verdict:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(f"{self.name}: unknown threshold(s) {sorted(unknown)}; "
                            f"known: {sorted(self.defaults)}")
        th = {**self.defaults, **params}
        fid_cap = th.get("fid_cap", FID_CAP_INCEPTION)
        q_broken = th.get("q_broken", Q_LEARNED)
        if self.kind == "quality" and self.reference is not None:
            v = self._guarded(frame, histories, th, fid_cap, q_broken)
        else:
            v = self._run(frame, histories, th)
            v.guard, v.guard_status = quality_behind(frame, v.run_ids, fid_cap, q_broken)
        v.name, v.claim, v.source, v.kind = self.name, self.claim, self.source, self.kind
        v.reference = self.reference.text if self.reference else ""
        v.thresholds = th
        return v.clean()

    def _guarded(self, frame, histories, th, fid_cap, q_broken) -> Verdict:
        g = learning_guard(frame, self.reference, fid_cap, q_broken)
        keep = in_strata(frame, g.kept)
        v = self._run(frame[keep] if g.dropped else frame, histories, th)
        if not g.dropped:
            v.guard = g.text(g.strata_of(frame, v.run_ids))
            v.guard_status = "reference runs learned" if v.guard else ""
            return v
        full = self._run(frame, histories, th)
        relevant = [k for k in g.strata_of(frame, full.run_ids) if k in g.dropped]
        status = g.status(relevant)
        if v.n == 0 and relevant:
            reasons = "; ".join(g.info[k]["text"] for k in relevant)
            out = _v("inconclusive", missing=reasons, n=full.n, run_ids=full.run_ids,
                     details="Learning guard: the runs this test needs are in strata whose "
                             "reference runs did not learn (or whose learning cannot be judged). "
                             + g.text(relevant))
            out.guard_status = status
            return out
        kept = g.strata_of(frame, v.run_ids)
        v.guard = g.text(kept + relevant)
        v.guard_status = (f"reference runs learned in {len(kept)} of {len(kept) + len(relevant)} strata"
                          if relevant else ("reference runs learned" if kept else ""))
        if relevant and v.verdict == "inconclusive":
            v.missing += "; left out by the learning guard: " + "; ".join(g.info[k]["text"] for k in relevant)
        return v


HYPOTHESES: dict[str, Hypothesis] = {}
#: Names a study file may list (``hypotheses:``) that stand for several registered hypotheses.
GROUPS: dict[str, list[str]] = {}


def register(name: str, claim: str, source: str, groups: Iterable[str] = (), *,
             kind: str = "quality", reference: Reference | None = None):
    """Register a hypothesis. ``kind`` "quality" needs a ``reference`` (the learning guard);
    "domain" hypotheses state the quality of the runs behind them instead."""
    if kind == "quality" and reference is None:
        raise ValueError(f"{name}: a sample-quality hypothesis names its reference configurations")

    def deco(func):
        HYPOTHESES[name] = Hypothesis(name, claim, source, func, tuple(groups), kind, reference)
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
             overrides: dict[str, dict[str, Any]] | None = None, *,
             histories: pd.DataFrame | None = None) -> list[Verdict]:
    """Run the named (default: all) hypotheses on ``frame`` (``histories``: per-step metrics from
    ``load.load_histories`` for the hypotheses that test per iteration)."""
    overrides = overrides or {}
    return [HYPOTHESES[n](frame, histories=histories, **overrides.get(n, {})) for n in resolve(names)]


# ------------------------------------------------------------------------------------ frames
def col(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(default, index=df.index, dtype=object if isinstance(default, str) else float)


def close(a: pd.Series, value: float, rtol: float = 1e-6) -> pd.Series:
    return pd.Series(np.isclose(a.astype(float), value, rtol=rtol, atol=0), index=a.index)


def _origin(df: pd.DataFrame) -> pd.Series:
    """Our runs pool across experiments; published/external rows stay within their paper/source."""
    o = col(df, "origin", "run").fillna("run").astype(str)
    exp = col(df, "experiment", "").fillna("").astype(str)
    return pd.Series(np.where(o == "run", "run", o + ":" + exp), index=df.index)


def prep(frame: pd.DataFrame, fid_cap: float = FID_CAP_INCEPTION,
         q_broken: float = Q_LEARNED) -> pd.DataFrame:
    """Usable runs with the outcome columns and the defaults the hypotheses rely on."""
    df = with_outcome(frame, fid_cap, q_broken)
    df["alpha"] = col(df, "alpha", 1.0).astype(float).fillna(1.0)
    df["fid_extractor"] = col(df, "fid_extractor", "inception").fillna("inception")
    df["seed"] = col(df, "seed", 0).fillna(0).astype(int)
    df["origin"] = _origin(df)
    for c in ("loss", "regularizer", "dataset"):
        df[c] = col(df, c, "").fillna("")
    # sampled columns are judged on the whole design, not on the subset a hypothesis selects
    # (4 sampled k_SN values near 1 are still sampled values); subsets inherit attrs
    df.attrs["continuous"] = frozenset(
        c for c in config_columns(df) if pd.api.types.is_float_dtype(df[c]) and _continuous(df, c))
    return df


def guard_key(frame: pd.DataFrame) -> pd.Series:
    """The stratum (:data:`GUARD_KEYS`) of every row of a *raw* frame (not a :func:`prep` one), as
    a tuple (origin, dataset, arch, extractor)."""
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    def filled(name, default):
        s = col(frame, name, default).astype(object)
        return s.where(s.notna() & (s != ""), default)
    keys = zip(_origin(frame), filled("dataset", ""), filled("arch", "∅"),
               filled("fid_extractor", "inception"))
    return pd.Series(list(keys), index=frame.index, dtype=object)


def in_strata(frame: pd.DataFrame, keys: Iterable[tuple]) -> pd.Series:
    wanted = set(keys)
    return guard_key(frame).map(lambda k: k in wanted).astype(bool)


def stratum_name(key: tuple) -> str:
    origin, ds, arch, ext = key
    where = "our runs" if origin == "run" else origin
    return f"{ds or '?'} / {arch if arch != '∅' else 'arch ?'} / {ext} ({where})"


def ids(df: pd.DataFrame) -> list[str]:
    return [str(r) for r in df["run_id"]]


def is_continuous(df: pd.DataFrame, c: str) -> bool:
    """Is ``c`` sampled (an Optuna/random search's k_SN, α, ε) rather than laid out on a grid?
    Yes when it takes ≥ :data:`CONTINUOUS_MIN_LEVELS` distinct values and a value is typically
    used by a single configuration (a grid level is shared by every combination of the others).
    On a :func:`prep` frame (or a subset of one) the answer is the whole design's."""
    if "continuous" in df.attrs:
        return c in df.attrs["continuous"]
    return _continuous(df, c)


def _continuous(df: pd.DataFrame, c: str) -> bool:
    if c not in df.columns or not pd.api.types.is_numeric_dtype(df[c]):
        return False
    v = pd.to_numeric(df[c], errors="coerce")
    ok = v.notna()
    if not ok.any():
        return False
    level = v[ok].map(lambda x: float(f"{x:.9g}"))
    if level.nunique() < CONTINUOUS_MIN_LEVELS:
        return False
    configs = config_key(df[ok]).map(repr)
    per_level = configs.groupby(level).nunique()
    return float(per_level.median()) <= 1


def strata(df: pd.DataFrame, extra: list[str], notes: list[str] | None = None) -> list[str]:
    """Grouping columns: origin, dataset, architecture, extractor, the listed ones, and every other
    config column that varies inside them except those the hypothesis studies (passed in ``extra``
    with '-'). A continuous column is never a stratum (its name goes to ``notes``)."""
    drop = {c[1:] for c in extra if c.startswith("-")}
    keep = [c for c in extra if not c.startswith("-")]
    out = ["origin", "dataset", "fid_extractor"] + (["arch"] if "arch" in df.columns else [])
    others = [c for c in config_columns(df) if c not in drop and c not in out and c not in keep
              and c not in ("lipschitz_k", "omega_bound", "n_d_layers")]
    for c in keep + others:
        if c not in df.columns or c in out:
            continue
        if c not in keep and df[c].astype(object).nunique(dropna=False) <= 1:
            continue
        if c != "seed" and pd.api.types.is_float_dtype(df[c]) and is_continuous(df, c):
            if notes is not None:
                notes.append(c)
            continue
        out.append(c)
    return out


def groupby(df: pd.DataFrame, cols: list[str]):
    cols = [c for c in cols if c in df.columns]
    return df.astype({c: object for c in cols}).fillna({c: "∅" for c in cols}).groupby(cols, sort=True)


# ------------------------------------------------------------------------------------ verdicts
def _v(verdict: VerdictKind, **kw) -> Verdict:
    return Verdict(name="", claim="", source="", verdict=verdict, **kw)


def missing(text: str, **kw) -> Verdict:
    return _v("inconclusive", missing=text, **kw)


def render_notes(notes: list[str] | None) -> str:
    """Notes on the design for a verdict's details: sentences as given; bare column names (from
    :func:`strata`) as one "continuous … never strata" sentence."""
    notes = list(dict.fromkeys(notes or []))
    out = [n for n in notes if " " in n]
    cont = sorted(n for n in notes if " " not in n)
    if cont:
        out.append(f"continuous (sampled) {', '.join(cont)}: ranked as sampled, never strata")
    return (" " + "; ".join(out) + ".") if out else ""


def trend_verdict(res: stats.TrendResult, sig: float, rho_min: float, what: str,
                  df: pd.DataFrame, stat_name: str, notes: list[str] | None = None) -> Verdict:
    kw = dict(statistic=res.rho, statistic_name=stat_name, effect_size=res.rho,
              effect_name="pooled Spearman ρ", p_value=res.p, n=res.n, run_ids=ids(df))
    if res.n_groups == 0:
        return missing(f"no stratum with ≥ 2 distinct levels of {what} (need runs at two or more "
                       f"values of {what} with everything else alike, or sampled values of {what})",
                       n=len(df), run_ids=ids(df))
    detail = (f"{res.n_groups} strata, n = {res.n}; ρ per stratum = "
              f"{', '.join(fmt(r, '.2f') for r in res.rhos)}; one-sided permutation p = {fmt(res.p)} "
              f"(opposite direction {fmt(res.p_opposite)}; smallest p this design can give "
              f"{fmt(res.p_min)}).")
    detail += render_notes(notes)
    if res.p < sig and res.rho >= rho_min:
        return _v("supported", details=detail, **kw)
    if res.p_opposite < sig or (res.p_min < sig and res.rho <= 0):
        return _v("contradicted", details=detail, **kw)
    miss = ""
    if res.p_min >= sig:
        miss = (f"the design cannot reach p < {sig} even with a perfect trend: more levels of "
                f"{what} or more seeds per level are needed")
    return _v("inconclusive", details=detail, missing=miss or "trend too weak to decide", **kw)


def tost_verdict(d: list[float], margin_ratio: float, sig: float, df: pd.DataFrame,
                 what: str, min_n: int = 2) -> tuple[Verdict, stats.TostResult]:
    margin = math.log1p(margin_ratio)
    res = stats.tost(d, margin)
    kw = dict(statistic=res.p_tost, statistic_name="TOST p", effect_size=res.mean,
              effect_name=f"mean log FID ratio ({what})", ci=res.ci90, p_value=res.p_tost,
              n=res.n, run_ids=ids(df))
    if res.n == 0:
        return missing(f"need ≥ {min_n} matched comparisons ({what}); have none", run_ids=ids(df)), res
    ci = (f"90% CI [{res.ci90[0]:+.3f}, {res.ci90[1]:+.3f}]" if np.isfinite(res.ci90[0])
          else "no CI (needs ≥ 2 comparisons)")
    detail = (f"mean log ratio {res.mean:+.3f} (×{math.exp(res.mean):.3f}), {ci}, margin "
              f"±{margin:.3f} (ratio within ×/÷ {1 + margin_ratio:.2f}), n = {res.n}.")
    if res.n < min_n:
        return missing(f"need ≥ {min_n} matched comparisons ({what}); have {res.n}",
                       details=detail, **kw), res
    if res.outside:
        return _v("contradicted", details=detail, **kw), res
    if res.p_tost < sig:
        return _v("supported", details=detail, **kw), res
    return _v("inconclusive", details=detail, missing="CI too wide for the margin: more seeds",
              **kw), res


# ------------------------------------------------------------------------------------ guard
@dataclass
class GuardResult:
    info: dict[tuple, dict]            # stratum → status, text, ref run ids, named
    kept: list[tuple]
    dropped: list[tuple]

    def strata_of(self, frame: pd.DataFrame, run_ids: Iterable[str]) -> list[tuple]:
        rid = set(map(str, run_ids))
        if not rid or frame.empty:
            return []
        keys = guard_key(frame)[frame["run_id"].astype(str).isin(rid)]
        return [k for k in dict.fromkeys(keys) if k in self.info]

    def status(self, keys: list[tuple]) -> str:
        st = {self.info[k]["status"] for k in keys}
        if st == {"did not learn"}:
            return "reference runs did not learn"
        if st == {"unknown"}:
            return "learning unknown (no FID scale)"
        return "reference runs did not learn / learning unknown" if st else ""

    def text(self, keys: list[tuple]) -> str:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return ""
        return " ".join(self.info[k]["text"] + "." for k in keys)


def _q_eff(df: pd.DataFrame) -> pd.Series:
    q = df["quality"].astype(float).copy()
    q[df["diverged"].astype(bool)] = -np.inf
    return q


def _best_config(g: pd.DataFrame) -> pd.DataFrame:
    keys = config_key(g).map(repr)
    q = _q_eff(g)
    score = {}
    for k, idx in keys.groupby(keys).groups.items():
        qk = q[idx].dropna()
        if len(qk):
            score[k] = (1, float(qk.median()))
        else:
            f = g.loc[idx, "fid_eff"].astype(float).dropna()
            score[k] = (0, -float(f.median()) if len(f) else -np.inf)
    best = max(score, key=score.get)
    return g[keys == best]


def config_label(rows: pd.DataFrame) -> str:
    """A short name for the configuration of ``rows`` (loss-regularizer, its K, α, ε …)."""
    r = rows.iloc[0]
    def has(c):
        return c in rows.columns and pd.notna(r.get(c))
    parts = [f"{r.get('loss') or '?'}-{r.get('regularizer') or '?'}"]
    for c, sym in (("k_sn", "k_SN"), ("k_gp", "k_GP"), ("gran_k", "K"), ("alr_k", "K"), ("clip_c", "c")):
        if has(c):
            parts.append(f"{sym} {float(r[c]):.3g}")
    if has("alpha") and not math.isclose(float(r["alpha"]), 1.0):
        parts.append(f"α {float(r['alpha']):.3g}")
    if has("optimizer"):
        parts.append(str(r["optimizer"]))
    if has("eps") and not math.isclose(float(r["eps"]), 1e-8):
        parts.append(f"ε {float(r['eps']):.3g}")
    if has("d_bias") and r["d_bias"] is False:
        parts.append("no bias")
    return " ".join(parts)


def learning_guard(frame: pd.DataFrame, ref: Reference, fid_cap: float = FID_CAP_INCEPTION,
                   q_broken: float = Q_LEARNED) -> GuardResult:
    """Per stratum: did the reference runs learn? (module docstring)."""
    df = prep(frame, fid_cap, q_broken)
    info: dict[tuple, dict] = {}
    if df.empty:
        return GuardResult(info, [], [])
    gk = guard_key(frame)
    df["_gk"] = gk[df.index].map(repr)
    for _, g in df.groupby("_gk", sort=False):
        key = gk[g.index[0]]
        sel = g[ref.select(g).astype(bool)] if ref.select is not None else g.iloc[0:0]
        named = len(sel) > 0
        if not named:
            sel = _best_config(g)
        label = config_label(sel)
        who = (f"reference runs ({ref.text}; {len(sel)} runs)" if named else
               f"no reference runs ({ref.text}) in this stratum, so its best configuration "
               f"({label}, {len(sel)} runs) stands in")
        q = _q_eff(sel)
        known = q.notna()
        ext = str(key[3])
        if known.any():
            learned = float(q[known].median()) >= q_broken
            desc = describe_scale(sel, q_broken)
        elif ext == "inception" and sel["fid_eff"].notna().any() and not (sel["dataset"].isin(["ring8", "grid25"])).any():
            learned = float(sel["fid_eff"].astype(float).median()) < fid_cap
            raw = pd.to_numeric(sel["fid"], errors="coerce") if "fid" in sel else pd.Series(dtype=float)
            raw = raw[np.isfinite(raw)]
            div = int(sel["diverged"].astype(bool).sum())
            desc = (f"median FID {fmt(raw.median() if len(raw) else np.nan, '.4g')}"
                    + (f", {div} of {len(sel)} diverged" if div else "")
                    + f" (Inception, no floor/untrained logged: the paper's rule, FID < {fid_cap:g} "
                      f"= learned; n = {len(sel)})")
        else:
            learned = None
            what = ("modes_covered / hq_share not logged" if sel["dataset"].isin(["ring8", "grid25"]).any()
                    else "fid_floor / fid_init not logged (runs from before issue #10) and the "
                         f"extractor is '{ext}', where the paper's FID-{fid_cap:g} rule does not apply")
            desc = f"learning cannot be judged: {what}"
        status = {True: "learned", False: "did not learn", None: "unknown"}[learned]
        if learned:
            text = f"{stratum_name(key)}: {who} learned: {desc}"
        elif learned is False:
            text = (f"reference runs did not learn: {desc} — {stratum_name(key)}, "
                    + (f"reference {ref.text}" if named else f"best configuration {label}"))
        else:
            text = f"{stratum_name(key)}: {desc}"
        info[key] = dict(status=status, text=text, run_ids=ids(sel), named=named)
    kept = [k for k, i in info.items() if i["status"] == "learned"]
    return GuardResult(info, kept, [k for k in info if k not in kept])


def quality_behind(frame: pd.DataFrame, run_ids: Iterable[str], fid_cap: float = FID_CAP_INCEPTION,
                   q_broken: float = Q_LEARNED) -> tuple[str, str]:
    """The sample quality of the runs behind a domain verdict, per stratum: (text, short status)."""
    rid = set(map(str, run_ids))
    if not rid:
        return "", ""
    sub = frame[frame["run_id"].astype(str).isin(rid)]
    df = prep(sub, fid_cap, q_broken)
    if df.empty:
        return "", ""
    gk = guard_key(sub)
    df["_gk"] = gk[df.index].map(repr)
    parts = []
    for _, g in df.groupby("_gk", sort=False):
        key = gk[g.index[0]]
        n = len(g)
        if g["learned"].notna().any():
            parts.append(f"{stratum_name(key)}: {int(g['learned'].fillna(False).sum())} of {n} runs "
                         f"learned; {describe_scale(g, q_broken)}")
        else:
            parts.append(f"{stratum_name(key)}: sample quality unknown for its {n} runs (no FID scale)")
    known = df["learned"].notna()
    short = (f"{int(df['learned'].fillna(False).sum())} of {int(known.sum())} runs learned"
             + (f", {int((~known).sum())} unknown" if (~known).any() else "")) if known.any() \
        else "sample quality unknown"
    return ("Sample quality of the runs behind this verdict (Ω/Ψ are properties of D, so no "
            "learning guard): " + "; ".join(parts) + "."), short
