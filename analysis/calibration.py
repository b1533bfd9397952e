"""Verdicts calibrated by simulation: how often each hypothesis test says "supported" or
"contradicted" when that is wrong, and its power, at the hypotheses-cpu design's own n.

Every hypothesis reduces its runs to the numbers its decision reads — per-stratum (level, value)
groups for a trend, seed-paired log ratios for an equivalence, two samples for "A beats B", a
(blocks × losses) table for H1, relative differences for an identity, width/bound ratios for
Theorem 1 — and then applies a decision rule. A :class:`Design` draws those numbers for the
design of ``study/presets/hypotheses-cpu.yaml`` (its strata, levels, pairs and ``seeds``
replicates) under the hypothesis's null and under a stated alternative, and applies the *same*
rule the hypothesis applies (``trend_verdict``, ``tost_verdict``, ``h1_rule``,
``superiority_rule``, ``degenerate_rule``, ``eps_rule``, ``shift_rule``, ``identity_rule``,
``bound_rule``). The permutation tests run with ``N_PERM`` permutations here (20,000 in the
hypotheses): p resolution 1e-3.

Noise: log FID varies from seed to seed with sd ``SIGMA_LOG_FID`` = 0.14, the median over the 21
learned image configurations of the committed hypotheses-cpu runs; Ω/Ψ trends are in units of
their own seed sd. ``claim`` is the verdict that agrees with the paper ("contradicted" for H1, a
null the paper rejects). Under the null a wrong verdict is ``claim``; under the alternative it is
the opposite one. ``power`` = P(claim | alternative).

:func:`rates` simulates one design; :func:`power_note` is what the report prints beside a verdict:
the power at the n it had and, when that is low, how many seeds would reach 0.8.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats
from analysis.hypotheses.domain import bound_rule, shift_rule
from analysis.hypotheses.identity import identity_rule
from analysis.hypotheses.losses import friedman_p_min, h1_rule
from analysis.hypotheses.regularizers import superiority_rule
from analysis.hypotheses.scaling import degenerate_rule, eps_rule
from analysis.verdict import SIG, tost_verdict, trend_verdict

SIGMA_LOG_FID = 0.14
N_PERM = 1000
SEEDS = 3                     # the hypotheses-cpu design's replicates per configuration
_EMPTY = pd.DataFrame({"run_id": pd.Series([], dtype=str)})


@dataclass(frozen=True)
class Design:
    """One hypothesis's simulated design: ``draw(rng, effect, seeds)`` → data, ``decide(data)``
    → verdict; ``alt_effect`` the stated alternative (``effect`` 0 = the null)."""
    name: str
    claim: str
    null: str
    alternative: str
    alt_effect: float
    draw: Callable[[np.random.Generator, float, int], Any]
    decide: Callable[[Any], str]
    null_effect: float = 0.0


# ------------------------------------------------------------------------------------ trends
def _trend_draw(levels: tuple[int, ...]):
    def draw(rng, effect, seeds):
        out = []
        for L in levels:
            x = np.repeat(np.arange(L, dtype=float), seeds)
            out.append((x, effect * x + rng.standard_normal(x.size)))
        return out
    return draw


def _trend_decide(groups) -> str:
    res = stats.trend_test(groups, direction=+1, n_perm=N_PERM)
    return trend_verdict(res, SIG, 0.5, "x", _EMPTY, "ρ").verdict


def _trend(name, levels, where):
    return Design(name, "supported", "no trend (Ω/Ψ/FID independent of the level)",
                  f"a monotone trend of 2 seed-sd per level ({where})", 2.0,
                  _trend_draw(levels), _trend_decide)


# ------------------------------------------------------------------------------------ H1
def _h1_draw(rng, effect, seeds):
    """seeds blocks × 5 losses (k_SN 50, α 1); WGAN (last column) better by ``effect`` in log FID."""
    y = SIGMA_LOG_FID * rng.standard_normal((seeds, 5))
    y[:, :4] += effect
    return y


def _h1_decide(table) -> str:
    fr = stats.friedman(table, [str(i) for i in range(table.shape[1])])
    return h1_rule(fr.p, fr.w, friedman_p_min(table), SIG, 0.3, 0.1)


# ------------------------------------------------------------------------------------ equivalence
def _deg_draw(rng, effect, seeds):
    """4 losses (NS, LS#, COS, EXP) × seeds log ratios to WGAN; the first off by ``effect``."""
    sd = SIGMA_LOG_FID * math.sqrt(2)
    return {loss: list(effect * (i == 0) + sd * rng.standard_normal(seeds))
            for i, loss in enumerate(("ns", "ls0", "cos", "exp"))}


def _deg_decide(per_loss) -> str:
    return degenerate_rule(per_loss, {}, 0.2, SIG)[0]


def _eps_draw(rng, effect, seeds):
    """ref (k 1) × seeds; base and scaled ε at 2 small k × seeds; base degraded by log 1.5,
    scaled degraded by ``effect`` (null: as much as base; alternative: 0)."""
    s, deg = SIGMA_LOG_FID, math.log(1.5)
    ref = s * rng.standard_normal(seeds)
    base = deg + s * rng.standard_normal((2, seeds))
    scaled = effect + s * rng.standard_normal((2, seeds))
    return ref, base, scaled


def _eps_decide(data) -> str:
    ref, base, scaled = data
    t = tost_verdict(list((scaled - ref.mean()).ravel()), 0.2, SIG, _EMPTY, "")[0].verdict
    gate = stats.welch((base - ref.mean()).ravel(), ref - ref.mean()).p_greater
    return eps_rule(t, gate, list((base - scaled).ravel()), SIG)[0]


# ------------------------------------------------------------------------------------ A beats B
def _sup_draw(rng, effect, seeds):
    return (effect + SIGMA_LOG_FID * rng.standard_normal(seeds), SIGMA_LOG_FID * rng.standard_normal(seeds))


def _sup_decide(data) -> str:
    a, b = data
    return superiority_rule(stats.welch(a, b), 0.1, SIG, capped=False)


# ------------------------------------------------------------------------------------ Ω shift
def _shift_draw(rng, effect, seeds):
    """Two strata (images: 5 WGAN vs 5 NS/LS configurations; ring8: 7 vs 6) × seeds; WGAN's drift
    larger by ``effect`` seed-sd."""
    out = []
    for n_w, n_c in ((5, 5), (7, 6)):
        x = np.r_[np.ones(n_w * seeds), np.zeros(n_c * seeds)]
        out.append((x, effect * x + rng.standard_normal(x.size)))
    return out


def _shift_decide(groups) -> str:
    res = stats.trend_test(groups, direction=+1, n_perm=N_PERM)
    rs, ns = [], []
    for x, y in groups:
        u = sps.mannwhitneyu(y[x == 1], y[x == 0], alternative="greater")
        rs.append(2 * u.statistic / ((x == 1).sum() * (x == 0).sum()) - 1)
        ns.append(len(x))
    return shift_rule(res, float(np.average(rs, weights=ns)), SIG, 0.5)


# ------------------------------------------------------------------------------------ identities
def _identity_draw(n_pairs):
    def draw(rng, effect, seeds):
        """Relative differences of n_pairs × seeds pairs: float noise (1e-7, as a GPU's
        non-deterministic reductions) plus ``effect``, in units of the tolerance 1e-4."""
        return np.abs(1e-7 * rng.standard_normal(n_pairs * seeds) + effect * 1e-4) / 1e-4
    return draw


def _identity_decide(ratios) -> str:
    return identity_rule(int((ratios > 1).sum()), len(ratios), 3)


def _bound_draw(rng, effect, seeds):
    """width / certified bound of 39 SN configurations × seeds: inside (U(0.01, 0.95)); under the
    alternative one run is ``effect`` above the bound."""
    r = rng.uniform(0.01, 0.95, 39 * seeds)
    r[0] = 1 + effect if effect else r[0]
    return r


DESIGNS: dict[str, Design] = {d.name: d for d in (
    Design("H1", "contradicted", "H1 true: no loss effect at k_SN 50 (log FIDs exchangeable)",
           "the non-linear losses ×3 worse FID than WGAN (Table 2: they break)", math.log(3.0),
           _h1_draw, _h1_decide),
    Design("k-output-scale", "supported", "Eq. 3 fails: every pair 2× the tolerance apart (2e-4)",
           "Eq. 3 holds: relative differences are float noise (1e-7)", 0.0, _identity_draw(3),
           _identity_decide, null_effect=2.0),
    _trend("domain-omega-shrinks", (2, 2, 2, 2, 2, 3, 3, 3, 4), "5 image strata × 2 k_SN, 4 ring8 × 3-4"),
    _trend("domain-psi-shrinks", (2, 2, 2, 3, 3), "convex losses: 3 image strata × 2 k_SN, 2 ring8 × 3"),
    Design("domain-omega-bound", "supported", "one run's Ω_i 5 % beyond the certified bound",
           "Theorem 1 holds: every Ω_i inside the certified bound", 0.0, _bound_draw,
           lambda r: bound_rule(r, 0, 0.01, 3), null_effect=0.05),
    Design("domain-omega-shift", "supported", "WGAN's Ω_i drifts as much as NS/LS's",
           "WGAN's drift larger by 1.5 seed-sd", 1.5, _shift_draw, _shift_decide),
    _trend("alpha-compensates-k", (3, 3, 2, 2), "NS/LS × 3 α, COS/EXP × 2 α, at k_SN 50; trend part"),
    _trend("alpha-large-breaks", (3, 3), "NS/LS × 3 α at k_SN 1"),
    Design("degenerate-losses", "supported", "one loss at the margin (FID ×1.2 of WGAN), the others equal",
           "every loss equal to WGAN", 0.0, _deg_draw, _deg_decide, null_effect=math.log(1.2)),
    Design("eps-counterfactual", "supported", "scaled ε degrades as much as base ε (FID ×1.5)",
           "scaled ε back at the k_SN = 1 FID", 0.0, _eps_draw, _eps_decide, null_effect=math.log(1.5)),
    Design("gran-k-eps", "supported", "Eq. 21 fails: every pair 2× the tolerance apart",
           "Eq. 21 holds: relative differences are float noise (1e-7)", 0.0, _identity_draw(3),
           _identity_decide, null_effect=2.0),
    Design("alr-beats-gp", "supported", "ALR and GP alike", "ALR's FID ×0.69 of GP's (ALR Table 1: "
           "12.96 vs 18.86)", math.log(12.96 / 18.86), _sup_draw, _sup_decide),
    Design("js-stabilizes", "supported", "JS and unregularized alike", "JS's FID ×0.5 of the "
           "unregularized one", math.log(0.5), _sup_draw, _sup_decide),
    _trend("gp-omega-shrinks", (3, 3), "NS/WGAN × 3 k_GP on ring8"),
)}

_OPPOSITE = {"supported": "contradicted", "contradicted": "supported"}


@lru_cache(maxsize=None)
def rates(name: str, effect: float, seeds: int = SEEDS, reps: int = 200, seed: int = 0) -> dict[str, float]:
    """Share of each verdict over ``reps`` simulated studies of ``name``'s design."""
    d = DESIGNS[name]
    rng = np.random.default_rng(seed)
    c = Counter(d.decide(d.draw(rng, effect, seeds)) for _ in range(reps))
    return {k: c.get(k, 0) / reps for k in ("supported", "contradicted", "inconclusive")}


def error_rates(name: str, seeds: int = SEEDS, reps: int = 200) -> dict[str, float]:
    """The wrong-verdict rate under the null (``claim``) and under the alternative (its opposite),
    and the power (``claim`` under the alternative)."""
    d = DESIGNS[name]
    null = rates(name, d.null_effect, seeds, reps)
    alt = rates(name, d.alt_effect, seeds, reps, seed=1)
    return {"false_under_null": null[d.claim], "false_under_alt": alt[_OPPOSITE[d.claim]],
            "power": alt[d.claim]}


def power_note(name: str, seeds: int, verdict: str, reps: int = 100, target: float = 0.8,
               search_reps: int = 40) -> str:
    """The report's line: power at the n the test had and, when below ``target`` and the verdict
    is inconclusive, how many seeds per configuration would reach it (same simulator)."""
    if name not in DESIGNS or seeds < 2:
        return ""
    d = DESIGNS[name]
    pw = rates(name, d.alt_effect, seeds, reps, seed=1)[d.claim]
    text = (f"Power at {seeds} seeds per configuration: {pw:.2f} (simulated, {reps} studies of this "
            f"design; alternative: {d.alternative}; null: {d.null}).")
    if verdict == "inconclusive" and pw < target:
        more = next((n for n in (4, 6, 8, 12, 20) if n > seeds
                     and rates(name, d.alt_effect, n, search_reps, seed=1)[d.claim] >= target), None)
        text += (f" More seeds help: ≈ {more} seeds reach power {target:.1f}." if more else
                 f" Up to 20 seeds do not reach power {target:.1f}: the design (levels, strata), "
                 "not the seeds, limits it.")
    return text
