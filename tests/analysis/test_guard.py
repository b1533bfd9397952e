"""The learning guard (verdicts on quality need runs that learned): a frame of non-learning runs
never yields supported or contradicted; learned frames on the calibrated scale still yield the
verdicts the hypothesis tests expect; domain hypotheses state the quality of their runs; older
runs without a scale give an inconclusive verdict with a reason, never a crash."""

import re

import pytest

from analysis import hypotheses as H

from . import test_hypotheses as T
from .conftest import make_frame

FLOOR, INIT = 2.0, 400.0          # every run's scale: the FID at quality 0.3 is ≈ 81.6
SCALE = dict(fid_extractor="domain", fid_floor=FLOOR, fid_init=INIT)


def _superiority(a, b, fa, fb):
    return ([dict(a, seed=s, fid=fa + s * 0.3) for s in range(3)]
            + [dict(b, seed=s, fid=fb + s * 0.3) for s in range(3)])


ALR = (dict(loss="wgan", regularizer="alr"), dict(loss="wgan", regularizer="gp"))
JS = (dict(loss="ns", regularizer="js"), dict(loss="ns", regularizer="none"))

#: (hypothesis, rows, the verdict the tests expect on them) — the frames of test_hypotheses.
CASES = [
    ("H1", T._h1_rows(T.h1_latin) + T.H1_REFERENCE, "supported"),
    ("H1", T._h1_rows(lambda l, k, s: 10.0 if l == "wgan" else 300.0 + s) + T.H1_REFERENCE, "contradicted"),
    ("alpha-compensates-k", T._alpha_rows(50.0, [1e-9, 1e-5, 1e-1], lambda a: 200 if a < 1e-3 else 5),
     "contradicted"),
    ("alpha-compensates-k", T._alpha_rows(50.0, [1e-9, 1e-5, 1e-1], lambda a: 5 if a < 1e-3 else 200),
     "supported"),
    ("alpha-large-breaks", T._alpha_rows(1.0, [1.0, 1e3, 1e7], lambda a: 5 if a > 10 else 200), "contradicted"),
    ("degenerate-losses", T._deg_rows(3.0), "contradicted"),
    ("degenerate-losses", T._deg_rows(1.0), "supported"),
    ("eps-counterfactual", T._eps_rows(10.0), "supported"),
    ("eps-counterfactual", T._eps_rows(20.0), "contradicted"),
    ("alr-beats-gp", _superiority(*ALR, 12.0, 19.0), "supported"),
    ("alr-beats-gp", _superiority(*ALR, 25.0, 19.0), "contradicted"),
    ("js-stabilizes", _superiority(*JS, 12.0, 19.0), "supported"),
    ("js-stabilizes", _superiority(*JS, 25.0, 19.0), "contradicted"),
]
QUALITY = sorted({name for name, _, _ in CASES})


def test_every_sample_quality_hypothesis_names_its_references():
    kinds = {n: h.kind for n, h in H.HYPOTHESES.items()}
    assert set(QUALITY) == {n for n, k in kinds.items() if k == "quality"}
    assert {n for n, k in kinds.items() if k == "domain"} == {
        "k-output-scale", "domain-omega-shrinks", "domain-psi-shrinks", "domain-omega-bound",
        "domain-omega-shift", "gp-omega-shrinks", "gran-k-eps"}
    for n in QUALITY:
        assert H.HYPOTHESES[n].reference.text


@pytest.mark.parametrize("name,rows,expected", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_learned_runs_on_the_calibrated_scale_keep_their_verdicts(name, rows, expected):
    v = T.verdict(name, make_frame([dict(r, **SCALE) for r in rows]))
    assert v.verdict == expected, (v.missing, v.details)
    assert v.guard and "learned" in v.guard and v.guard_status.startswith("reference runs learned")


@pytest.mark.parametrize("name,rows,expected", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_non_learning_runs_never_decide(name, rows, expected):
    """The same designs with every FID above the scale's quality-0.3 point (the FIDs keep their
    order and spread: the effect is still in the numbers)."""
    f = make_frame([dict(r, **SCALE, fid=100.0 + r["fid"]) if "fid" in r else dict(r, **SCALE)
                    for r in rows])
    v = T.verdict(name, f)
    assert v.verdict == "inconclusive"
    m = re.search(r"reference runs did not learn: median FID ([\d.]+), floor ([\d.]+), untrained ([\d.]+)",
                  v.missing)
    assert m, v.missing
    assert float(m.group(2)) == FLOOR and float(m.group(3)) == INIT and float(m.group(1)) > 100
    assert v.guard_status == "reference runs did not learn" and v.n > 0 and v.run_ids


def test_without_the_guard_ties_at_the_cap_still_decide_nothing():
    """Every loss broken alike: capped FIDs tie, so even without the guard H1 cannot read "the loss
    does not matter" (its smallest attainable p with those ties is 1); the guard names the reason."""
    f = make_frame([dict(r, **SCALE, fid=100.0 + r["fid"]) for r in T._h1_rows(T.h1_latin)
                    + T.H1_REFERENCE])
    h = H.HYPOTHESES["H1"]
    raw = h.func(f, **h.defaults)
    assert raw.verdict == "inconclusive" and "with its ties 1" in raw.details
    v = T.verdict("H1", f)
    assert v.verdict == "inconclusive" and "reference runs did not learn" in v.missing


def test_runs_without_a_scale_are_inconclusive_with_the_reason():
    f = make_frame([dict(r, fid_extractor="domain") for r in T._h1_rows(lambda l, k, s: 300.0)
                    + T.H1_REFERENCE])
    v = T.verdict("H1", f)
    assert v.verdict == "inconclusive" and "fid_floor / fid_init not logged" in v.missing
    assert v.guard_status == "learning unknown (no FID scale)"
    for v in H.evaluate(f):                    # every hypothesis answers, none crashes
        assert v.verdict in ("supported", "contradicted", "inconclusive")
        assert v.verdict != "inconclusive" or v.missing


def test_a_stratum_that_did_not_learn_is_left_out_and_named():
    good = [dict(r, **SCALE, dataset="mnist") for r in
            T._h1_rows(lambda l, k, s: 10.0 if l == "wgan" else 300.0 + s) + T.H1_REFERENCE]
    bad = [dict(r, **SCALE, dataset="cifar10", fid=390.0 - r["k_sn"]) for r in
           T._h1_rows(lambda l, k, s: 0.0) + T.H1_REFERENCE]
    f = make_frame(good + bad)
    v = T.verdict("H1", f)
    assert v.verdict == "contradicted"
    cifar = set(f[f["dataset"] == "cifar10"]["run_id"])
    assert not cifar & set(v.run_ids)
    assert "reference runs did not learn" in v.guard and "cifar10" in v.guard
    assert v.guard_status == "reference runs learned in 1 of 2 strata"


def test_without_named_references_the_best_configuration_stands_in():
    f = make_frame([dict(r, **SCALE) for r in
                    T._alpha_rows(50.0, [1e-9, 1e-5, 1e-1], lambda a: 200 if a < 1e-3 else 5)])
    v = T.verdict("alpha-compensates-k", f)
    assert "no reference runs" in v.guard and "best configuration" in v.guard


def test_toys_are_judged_by_modes_and_high_quality_share():
    def rows(modes):
        return [dict(dataset="ring8", arch="mlp", fid_extractor="data-space", seed=s, fid=f + 0.01 * s,
                     modes_covered=m, hq_share=0.9, **cfg)
                for s in range(3)
                for cfg, f, m in ((dict(loss="ns", regularizer="js"), 0.1, modes),
                                  (dict(loss="ns", regularizer="none"), 0.3, modes),
                                  (dict(loss="ns", regularizer="sn", k_sn=1.0), 0.1, modes))]
    v = T.verdict("js-stabilizes", make_frame(rows(8.0)))
    assert v.verdict == "supported" and "modes covered 8/8" in v.guard
    v = T.verdict("js-stabilizes", make_frame(rows(1.0)))
    assert v.verdict == "inconclusive" and "modes covered 1/8" in v.missing


def test_domain_hypotheses_state_the_quality_behind_them():
    rows = [dict(r, **SCALE, fid=300.0) for r in T._omega_rows(lambda k: 10 * k)]
    v = T.verdict("domain-omega-shrinks", make_frame(rows))
    assert v.verdict == "supported"                  # Ω is a property of D: no guard
    assert "0 of 9 runs learned" in v.guard and "floor 2, untrained 400" in v.guard
    assert v.guard_status == "0 of 9 runs learned"
