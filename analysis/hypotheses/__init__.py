"""The hypotheses (docs/design.md, "The analysis"): a registry of functions frame → :class:`Verdict`.

Every hypothesis states its claim in one sentence, cites where it comes from, selects the runs it
needs, and answers *supported*, *contradicted* or *inconclusive* (saying what data is missing) with
its statistic, effect size, n and the run ids behind it. Thresholds are keyword parameters with the
defaults in their signatures, fixed before looking at any data (never tuned to reach a verdict); override them
with ``evaluate(frame, overrides={"H1": {"large_k": 10}})``.

The machinery (registry, decision rules, the learning guard) is in ``analysis.verdict``; what
"broken" and "learned" mean is in ``analysis.outcome`` / ``analysis.scale``. The hypotheses, by
theme (importing this package registers them all, in this order):

* ``losses`` — H1 (does the loss matter beside 1-Lipschitz regularization?);
* ``domain`` — K as an output scale (Eq. 3); Ω/Ψ shrink with k_SN, Ω's bound, Ω's shift;
* ``scaling`` — α against k_SN (Table 5), degenerate losses (Eq. 13), the ε counterfactual
  (Eq. 5), GraN's K ↔ ε/K (Eq. 21);
* ``regularizers`` — ALR beats GP, JS stabilizes, Ω shrinks with k_GP;
* ``common`` — the linear losses, Ω width, level selection and the reference configurations.

Shared rules:

* Runs: finished and diverged ones (diverged = broken, FID = cap); crashed/running are left out.
  FID is used capped (``fid_eff``); only FIDs of the same dataset, architecture and feature
  extractor are ever compared (every grouping includes ``origin``, ``dataset``, ``arch`` and
  ``fid_extractor``; our runs pool across experiments, published rows stay within their paper).
* Sample-quality hypotheses name reference configurations (``reference=``): strata whose
  reference runs did not learn are left out, and with nothing left the verdict is inconclusive
  with the numbers. Domain hypotheses (Ω, Ψ, bounds) state the quality of the runs behind them.
* Monotone trends: stratified Spearman permutation test on the values as run (grid levels or
  sampled continuous values). "Close to": TOST on log-FID ratios. "A better than B": Welch on
  log FID (contradicted when significantly worse or equivalent within the margin).
"""

from __future__ import annotations

# The registry and the decision rules (re-exported: the public names of ``analysis.hypotheses``).
from analysis.verdict import (  # noqa: F401
    GROUPS, HYPOTHESES, SIG, Hypothesis, Reference, Verdict, bare_verdict, evaluate, missing, register,
    render_notes, resolve, tost_verdict, trend_verdict)
from analysis.hypotheses.common import (  # noqa: F401
    LINEAR_LOSSES, REF_GRAN_K1, REF_SN_DEFAULT, REF_SN_K1, REF_WGAN_GP, REF_WGAN_K1, REF_WGAN_SN)

# Importing a theme registers its hypotheses; this order is the registry's (and the report's).
from analysis.hypotheses.losses import h1  # noqa: F401
from analysis.hypotheses.domain import (  # noqa: F401
    k_output_scale, omega_bound, omega_shift, omega_shrinks, psi_shrinks)
from analysis.hypotheses.scaling import (  # noqa: F401
    alpha_compensates, alpha_large_breaks, degenerate_close_to_wgan, eps_counterfactual, gran_k_eps)
from analysis.hypotheses.regularizers import (  # noqa: F401
    alr_beats_gp, gp_omega_shrinks, js_stabilizes)
