"""The 2-D toy datasets: mixtures of Gaussians, sampled on the fly (no files).

The usual mode-collapse benchmarks: ``ring8`` — 8 Gaussians evenly spaced on a circle of radius 2,
std 0.02 (Metz et al., 2017, *Unrolled Generative Adversarial Networks*); ``grid25`` — a 5×5 grid
of Gaussians at {−4, −2, 0, 2, 4}², std 0.05 (Srivastava et al., 2017, *VEEGAN*; Lin et al., 2018,
*PacGAN*); ``roth7`` — Roth et al. (2017) Appendix 7.3's mixture: 7 Gaussians, std 0.01, means
equally spaced on the unit circle (angles 2πk/7). Roth et al. then embed the plane in 3-D (rotated
by π/4 about (1, −1, 0)/√2, translated by (1, 1, 1)/√3) so that the data has no full-dimensional
support; ``roth7`` keeps the 2-D plane (the toys here are 2-D), i.e. the mixture before that
rigid embedding. Metrics count a mode as covered and a sample as "high quality" when it lies within
3 std of a mode (:func:`toy_modes`, :func:`toy_std`). Registered as datasets (channels = the data
dimension, 2; no resolution) in :data:`trainables.data.DATASETS`, whose functions of the same
names give an unknown name the registry's message. Importing this module imports no torch (the
names are checked in a config without it); the functions that make tensors import it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from trainables.data_errors import DatasetError

if TYPE_CHECKING:
    import torch

__all__ = ["TOY_DATASETS", "sample_toy", "toy_modes", "toy_std"]

#: 2-D toy mixtures of Gaussians (no files, sampled on the fly).
TOY_DATASETS: tuple[str, ...] = ("ring8", "grid25", "roth7")
_TOY_STD = {"ring8": 0.02, "grid25": 0.05, "roth7": 0.01}


def _toy_name(name: str) -> str:
    if name not in TOY_DATASETS:
        raise DatasetError(f"dataset {name!r} is not a 2-D toy (toys: {', '.join(TOY_DATASETS)})")
    return name


def toy_modes(name: str) -> torch.Tensor:
    """Mode centres, float32 M×2: ring8 — 8 points at radius 2, angles 2πk/8; roth7 — 7 points at
    radius 1, angles 2πk/7; grid25 — {−4,−2,0,2,4}²."""
    import torch

    ring = {"ring8": (8, 2.0), "roth7": (7, 1.0)}.get(_toy_name(name))
    if ring is not None:
        n, radius = ring
        angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
        return (radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)).to(torch.float32)
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def toy_std(name: str) -> float:
    """Per-coordinate std of each Gaussian: 0.02 for ring8, 0.05 for grid25, 0.01 for roth7."""
    return _TOY_STD[_toy_name(name)]


def sample_toy(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples (float32 n×2, on ``generator``'s device) from the equal-weight mixture."""
    import torch

    modes = toy_modes(name).to(generator.device)
    which = torch.randint(modes.shape[0], (n,), generator=generator, device=generator.device)
    noise = torch.randn((n, 2), generator=generator, device=generator.device)
    return modes[which] + toy_std(name) * noise