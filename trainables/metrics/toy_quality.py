"""The toys' quality objective: one number in [0, 1], higher is better, that a search optimises.

The data-space Fréchet distance of a toy (``fid`` of a toy trial) compares only the first two
moments of samples and data: a generator that puts all its mass on the ring's centre, or on two
opposite modes, has the right mean and a similar covariance and scores well (a searched toy study
found FD 0.15 with 2 of 8 modes covered and no sample near any mode). The mixture-of-Gaussians
literature judges toys by mode coverage and sample quality instead: the measures of Srivastava
et al. 2017 (VEEGAN, Sec. 5.1: "modes captured" and "high-quality samples", those within 3σ of a
mode), used on the mixture experiment of Roth et al. 2017 (App. 7.3, seven Gaussians on the unit
circle, after Metz et al.'s unrolled-GAN mixtures). We combine the two into

    toy_quality = (modes_covered / n_modes) · min(1, hq_share / HQ_REAL)

with ``HQ_REAL`` = 1 − e^(−9/2) ≈ 0.989, the share of *real* samples within 3σ of their mode (the
radius of an isotropic 2-D Gaussian is Rayleigh-distributed: P(r ≤ 3σ) = 1 − e^(−3²/2)). The same
value holds for ``roth7_3d``, the mixture embedded in 3-D: its noise lies in the mixture's plane
(``trainables.data.toys``), so the 3-D distance to the centre is still the 2-D radius (an isotropic
3-D Gaussian would give the Maxwell share ≈ 0.971 instead). Real data scores 1; a collapsed or
diverged generator 0. It is the quality on the same 0 … 1 scale as an image run's
``fid_quality`` (``analysis.scale``), logged as the metric ``toy_quality`` at every toy
evaluation, and it is what searches over toy datasets maximise (``study.search.objective``).

No torch import: ``analysis`` and the study driver read this without loading the trainer.
"""

from __future__ import annotations

import math

import numpy as np

from trainables.names import FID

#: The metric name a toy trial logs and a toy search optimises.
TOY_QUALITY = "toy_quality"
#: Share of real toy samples within 3σ of their mode (2-D isotropic Gaussian in the mixture's
#: plane, also for roth7_3d: 1 − exp(−3²/2)).
HQ_REAL = 1.0 - math.exp(-4.5)
#: What a diverged toy trial reports: the worst value of the objective.
TOY_QUALITY_WORST = 0.0


def toy_quality(modes_covered, n_modes, hq_share):
    """(modes_covered / n_modes) · min(1, hq_share / HQ_REAL): a float for floats, an array (or a
    pandas Series) for arrays; NaN where an input is NaN (see the module docstring)."""
    return (modes_covered / n_modes) * np.minimum(1.0, hq_share / HQ_REAL)


def describe_objective(metric: str) -> str:
    """One line naming what a search optimised: the parent run's ``lipstudy.objective`` tag and
    the report's Optuna section say it."""
    if metric == TOY_QUALITY:
        return (f"{TOY_QUALITY} (maximised): modes_covered / n_modes × min(1, hq_share / "
                f"{HQ_REAL:.3f}), in [0, 1], mean over a configuration's seeds (not the toys' "
                "data-space Fréchet distance, which ranks collapsed generators well)")
    return f"{metric} (minimised): the final value of each configuration, mean over its seeds"


def diverged_values(dataset: str) -> dict[str, float]:
    """The worst value of each objective a search may optimise, reported to Tune for a diverged
    trial: ``fid`` = inf and, for a 2-D toy, ``toy_quality`` = 0."""
    from trainables.data.toys import TOY_DATASETS

    out = {FID: math.inf}
    if dataset in TOY_DATASETS:
        out[TOY_QUALITY] = TOY_QUALITY_WORST
    return out
