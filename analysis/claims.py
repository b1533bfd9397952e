"""Every hypothesis against its paper: the claim quoted, what the paper's own data say, what our
runs say, and whether ours agree with the paper, in words.

:data:`CLAIMS` holds, per registered hypothesis, the exact sentence of the paper (``quote``, as it
reads in the paper's text), where it stands (``where``: section, equation, table), the verdict the
paper itself reaches on the hypothesis as our test states it (``paper_verdict``: "supported" for a
claim the paper makes, "contradicted" for a null the paper states in order to reject it, H1), the
transcribed tables behind it (``tables``, names in ``analysis.reference``) and, where the paper has
no table, what it does show (``no_table``).

:func:`annotate` fills ``Verdict.quote``, ``paper_data`` and ``agreement``: the paper's line runs the
same hypothesis test on the transcribed rows (``origin = published``) and states its outcome beside
the published numbers it used; the agreement compares our verdict with ``paper_verdict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.scale import fmt


@dataclass(frozen=True)
class Claim:
    quote: str
    where: str
    paper_verdict: str                 # "supported" (the paper claims it) / "contradicted" (a rejected null)
    tables: tuple[str, ...] = ()
    no_table: str = ""


_LIP = "Lipschitz paper"
CLAIMS: dict[str, Claim] = {
    "H1": Claim(
        "Keeping neural network gradients small by enforcing 1-Lipschitz regularization is the key "
        "to successful GAN training while the choice of loss functions contributes little.",
        f"{_LIP} Sec. 2, Hypothesis 1 — stated to be rejected: \"the WGAN is such an outlier as it "
        "works normally when k_SN ≥ 5.0 … which contradicts Hypothesis 1\" (Sec. 2.1, Table 2)",
        "contradicted", ("lipschitz_table2",)),
    "k-output-scale": Claim(
        "scale-invariant activation functions allow the scaling parameter like k_{SN} to move freely "
        "within the neural network without influencing its function.",
        f"{_LIP} Sec. 3, Eq. 3 (forward pass) and Eq. 5 (ε)", "supported",
        no_table="the paper derives Eq. 3 and gives no numbers for it"),
    "domain-omega-shrinks": Claim(
        "It can be observed that the interval Ω shrinks rapidly as k_{SN} decreases, which verifies "
        "that the domain Ω is restricted by the Lipschitz regularization (Eq.7).",
        f"{_LIP} Sec. 4.2, Eq. 7, Fig. 1a/1b", "supported", ("lipschitz_fig1b",)),
    "domain-psi-shrinks": Claim(
        "Similar to the domain Ω , Ψ also shrinks with the increasing strength of Lipschitz "
        "regularization, which avoids the saturating and exploding parts of the loss function.",
        f"{_LIP} Sec. 4.2, Eq. 9 (for convex losses), Fig. 1b", "supported", ("lipschitz_fig1b",)),
    "domain-omega-bound": Claim(
        "If the discriminator neural network f satisfies the k -Lipschitz continuity condition, we "
        "have $f : X \\rightarrow \\Omega \\subset \\mathbb{R}$ satisfying $|\\min(\\Omega) - "
        "\\max(\\Omega)| \\leq k\\sqrt{12mn}$.",
        f"{_LIP} Sec. 4.1, Theorem 1 (proof in Appendix A)", "supported", ("lipschitz_fig1b",)),
    "domain-omega-shift": Claim(
        "Figure 1 (a) also shows that the domains Ω_i of the NS-GAN and the LS-GAN are rather fixed "
        "during training while those of the WGAN shift, which verifies our remark on the changes of "
        "Ω_i during training.",
        f"{_LIP} Sec. 4.2, Fig. 1a", "supported",
        no_table="Fig. 1a is a plot of Ω_i over iterations; no numbers to transcribe"),
    "alpha-compensates-k": Claim(
        "we show that a small α (e.g. $\\alpha \\leq 10^{-9}$) can compensate for the influence of an "
        "extremely large Lipschitz constant",
        f"{_LIP} Appendix D, Eq. 11/19, Table 5a", "supported", ("lipschitz_table5a",)),
    "alpha-large-breaks": Claim(
        "Table 5 (b) shows that the FID scores of different loss functions generally worsen with "
        "less restricted domains.",
        f"{_LIP} Appendix D, Table 5b", "supported", ("lipschitz_table5b",)),
    "degenerate-losses": Claim(
        "It can be observed that all loss functions have similar performance as WGAN.",
        f"{_LIP} Sec. 4.3, Eq. 13, the α = 1e-25 table (NS, LS#, COS, EXP; LS# is the zero-centred "
        "LS, Appendix D)", "supported", ("lipschitz_degenerate",)),
    "eps-counterfactual": Claim(
        "As a result, ϵ cannot be ignored and reduces the magnitude of the gradients, which accounts "
        "for the degenerated performance.",
        f"{_LIP} Sec. 3, Remark on Eq. 5", "supported",
        no_table="the paper reports the small-k_SN degradation (Table 2) but never ran the "
                 "counterfactual (scaled ε)"),
    "gran-k-eps": Claim(
        "Changing \\mathcal{K} from its default value of one has an effect of scaling the gradients "
        "of the loss function g by \\mathcal{K} . This in turn has an effect of scaling "
        "$\\epsilon_{Adam} \\longrightarrow \\epsilon_{Adam}/\\mathcal{K}$.",
        "GraN-GAN Sec. 6, Eq. 21", "supported",
        no_table="GraN-GAN states it from Eq. 21 and tabulates no (K, ε) pairs"),
    "alr-beats-gp": Claim(
        "Applying ALP on the critic in WGAN (WGAN-ALP), we show state-of-the-art performance",
        "ALR paper Sec. 1 (contributions), Table 1 (CIFAR-10 FID: WGAN-ALP 12.96 ± .35, WGAN-GP "
        "18.86 ± .13)", "supported", ("alr_table1",)),
    "js-stabilizes": Claim(
        "While the unregularized GAN collapses in literally every run after around 50k iterations, "
        "due to the fact that the discriminator concentrates on ever smaller differences between "
        "generated and true data (the stakes are getting higher as training progresses), the "
        "regularized variant can be trained essentially indefinitely (well beyond 200k iterations) "
        "without collapse",
        "Roth et al. Sec. 5 (2-D mixture of 7 Gaussians), Eq. 20/28, Algorithm 1", "supported",
        no_table="Roth et al. show the toy in figures only (Figs. 1-3)"),
    "gp-omega-shrinks": Claim(
        "It can be observed that for both regularizers, the interval Ω shrinks as k_{GP} and k_{SN} "
        "decreases, which shows that the domain of the loss function is also restricted when "
        "gradient penalty is applied.",
        f"{_LIP} Appendix C, Eq. 18, Fig. 3", "supported",
        no_table="Fig. 3 is a plot; no numbers to transcribe"),
}

_OPPOSITE = {"supported": "contradicted", "contradicted": "supported"}


def agreement(name: str, ours: str, paper_verdict: str | None = None) -> str:
    """Our verdict against the paper's, in words (a rejected null reads "H1 rejected")."""
    exp = paper_verdict or CLAIMS[name].paper_verdict
    null = exp == "contradicted"
    label = f"{name} rejected" if null and ours == "contradicted" else (
        f"{name} not rejected" if null and ours == "supported" else ours)
    if ours == exp:
        return f"{label} — agrees with the paper"
    if ours == _OPPOSITE.get(exp):
        return f"{label} — disagrees with the paper"
    return (f"inconclusive — neither agrees nor disagrees with the paper "
            f"(the paper: {name} {'rejected' if null else exp})")


def paper_line(name: str, reference: pd.DataFrame | None) -> str:
    """What the paper's own data say: the same test on the transcribed rows, or why there is none."""
    from analysis.verdict import HYPOTHESES

    c = CLAIMS[name]
    if not c.tables:
        return f"No table: {c.no_table}."
    if reference is None or reference.empty or "table" not in reference:
        return f"Tables {', '.join(c.tables)} not loaded (report built without the papers' numbers)."
    from analysis.reference import TABLES

    want = {TABLES[t] for t in c.tables}
    rows = reference[reference["source"].astype(str).str.startswith(tuple(want))]
    if rows.empty:
        return f"Tables {', '.join(c.tables)}: no rows."
    v = HYPOTHESES[name](rows)
    stat = (f" ({v.statistic_name} {fmt(v.statistic, '.3g')}"
            + (f", p {fmt(v.p_value, '.3g')}" if v.p_value is not None and v.p_value != v.statistic else "") + ")"
            if v.statistic is not None else "")
    why = f": {v.missing}" if v.verdict == "inconclusive" and v.missing else ""
    return (f"{' + '.join(sorted(want))} ({len(rows)} published cells, one number each): the same "
            f"test gives **{v.verdict}**{stat}{why}.")


def annotate(verdicts, reference: pd.DataFrame | None) -> None:
    """Fill ``quote``, ``paper_data`` and ``agreement`` of each verdict (in place)."""
    for v in verdicts:
        c = CLAIMS.get(v.name)
        if c is None:
            continue
        v.quote = f"\"{c.quote}\" ({c.where})"
        try:
            v.paper_data = paper_line(v.name, reference)
        except (KeyError, ValueError) as err:  # a published table the test cannot read
            v.paper_data = f"the test cannot read the transcribed rows: {err}"
        v.agreement = agreement(v.name, v.verdict)
