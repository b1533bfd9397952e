"""The verdict machinery: :class:`Verdict`, the hypothesis registry, the shared decision rules and
how the learning guard gates a verdict. ``analysis.hypotheses`` holds the hypotheses
themselves, ``analysis.guard`` the guard's per-stratum judgement, ``analysis.frames`` the shared
frame helpers (prepared frame, strata, sampled columns).

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
from analysis.frames import ids, in_strata
from analysis.guard import Reference, learning_guard, quality_behind
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED, fmt

VerdictKind = Literal["supported", "contradicted", "inconclusive"]

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
    kind: str = "quality"
    reference: str = ""
    guard: str = ""
    guard_status: str = ""
    quote: str = ""          # the claim as the paper states it (``analysis.claims``)
    paper_data: str = ""     # what the paper's own data say
    agreement: str = ""      # ours against the paper, in words
    power: str = ""          # the test's power at the n it had (``analysis.calibration``)

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
            out = bare_verdict("inconclusive", missing=reasons, n=full.n, run_ids=full.run_ids,
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
    "domain" hypotheses state the quality of the runs behind them instead. A name already
    registered (case-insensitively: :func:`resolve` ignores case) is an error."""
    if kind == "quality" and reference is None:
        raise ValueError(f"{name}: a sample-quality hypothesis names its reference configurations")

    def deco(func):
        taken = [n for n in HYPOTHESES if n.lower() == name.lower()]
        if taken:
            raise ValueError(f"hypothesis {name!r} is already registered (as {taken[0]!r}); "
                             "every hypothesis needs its own name")
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


# ------------------------------------------------------------------------------------ verdicts
def bare_verdict(verdict: VerdictKind, **kw) -> Verdict:
    """A verdict without name, claim and source: the registered :class:`Hypothesis` fills them in."""
    return Verdict(name="", claim="", source="", verdict=verdict, **kw)


def missing(text: str, **kw) -> Verdict:
    return bare_verdict("inconclusive", missing=text, **kw)


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
        return bare_verdict("supported", details=detail, **kw)
    if res.p_opposite < sig or (res.p_min < sig and res.rho <= 0):
        return bare_verdict("contradicted", details=detail, **kw)
    miss = ""
    if res.p_min >= sig:
        miss = (f"the design cannot reach p < {sig} even with a perfect trend: more levels of "
                f"{what} or more seeds per level are needed")
    return bare_verdict("inconclusive", details=detail, missing=miss or "trend too weak to decide", **kw)


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
        return bare_verdict("contradicted", details=detail, **kw), res
    if res.p_tost < sig:
        return bare_verdict("supported", details=detail, **kw), res
    return bare_verdict("inconclusive", details=detail, missing="CI too wide for the margin: more seeds",
                        **kw), res
