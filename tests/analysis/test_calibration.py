"""Verdicts calibrated by simulation (analysis.calibration): for every hypothesis, simulated studies
of the hypotheses-cpu design under the null and under the stated alternative give a wrong
"supported"/"contradicted" at most 5 % of the time; the power is printed (pytest -s) and the
report states it beside each verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import calibration as C
from analysis.hypotheses import HYPOTHESES

from .conftest import make_frame

REPS = 200


def test_every_hypothesis_has_a_simulated_design():
    assert set(C.DESIGNS) == set(HYPOTHESES)


@pytest.mark.parametrize("name", list(C.DESIGNS))
def test_wrong_verdicts_at_most_5_percent(name):
    e = C.error_rates(name, reps=REPS)
    print(f"\n{name}: power {e['power']:.2f} at {C.SEEDS} seeds; wrong under the null "
          f"{e['false_under_null']:.3f}, under the alternative {e['false_under_alt']:.3f}")
    assert e["false_under_null"] <= 0.05, e
    assert e["false_under_alt"] <= 0.05, e


def test_power_note_says_whether_more_seeds_help():
    low = C.power_note("degenerate-losses", 3, "inconclusive")
    assert low.startswith("Power at 3 seeds per configuration: 0.0") and "seeds reach power 0.8" in low
    assert "More seeds" not in C.power_note("degenerate-losses", 3, "supported")
    assert C.power_note("domain-omega-bound", 3, "inconclusive").startswith("Power at 3 seeds per configuration: 1.00")


def test_the_simulated_decision_is_the_hypothesis_decision():
    """The same numbers through the registered hypothesis (a frame of runs) and through the
    simulator's decision give the same verdict (degenerate-losses and H1, 20 draws each)."""
    rng = np.random.default_rng(5)
    d_deg, d_h1 = C.DESIGNS["degenerate-losses"], C.DESIGNS["H1"]
    for i in range(20):
        per_loss = d_deg.draw(rng, d_deg.null_effect if i % 2 else 0.0, 3)
        rows = [dict(loss="wgan", k_sn=50.0, seed=s, fid=20.0) for s in range(3)]
        rows += [dict(loss=l, k_sn=50.0, alpha=1e-25, seed=s, fid=20.0 * math.exp(v))
                 for l, vals in per_loss.items() for s, v in enumerate(vals)]
        assert HYPOTHESES["degenerate-losses"].func(make_frame(rows)).verdict == d_deg.decide(per_loss)
        table = d_h1.draw(rng, d_h1.alt_effect if i % 2 else 0.0, 3)
        losses = ("ns", "ls", "cos", "exp", "wgan")
        rows = [dict(loss=l, k_sn=50.0, seed=s, fid=20.0 * math.exp(table[s, j]))
                for s in range(3) for j, l in enumerate(losses)]
        assert HYPOTHESES["H1"].func(make_frame(rows)).verdict == d_h1.decide(table)
