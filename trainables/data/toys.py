"""The toy datasets: mixtures of Gaussians, sampled on the fly (no files).

The usual mode-collapse benchmarks: ``ring8`` — 8 Gaussians evenly spaced on a circle of radius 2,
std 0.02 (Metz et al., 2017, *Unrolled Generative Adversarial Networks*); ``grid25`` — a 5×5 grid
of Gaussians at {−4, −2, 0, 2, 4}², std 0.05 (Srivastava et al., 2017, *VEEGAN*; Lin et al., 2018,
*PacGAN*); ``roth7`` — Roth et al. (2017) Appendix 7.3's mixture in its own plane: 7 Gaussians,
std 0.01, means equally spaced on the unit circle (angles 2πk/7); ``roth7_3d`` — the same mixture
as Roth et al. train it (App. 7.3, Sec. 5.1, Fig. 5): embedded in 3-D by (x, y) → (x, y, 0),
rotated by π/4 about the axis (1, −1, 0)/√2 and translated by (1, 1, 1)/√3. Its support is a
tilted 2-D plane in R^3, degenerate with respect to the 3-D base measure: the dimensional
misspecification Roth et al. name as the cause of the unregularized GAN's collapse.

A sample is ``centre + std·(n₁·u + n₂·v)`` with (n₁, n₂) standard normal and (u, v) the
orthonormal in-plane axes (the unit vectors of the data space for the 2-D toys, the rotated x and
y axes for ``roth7_3d``): the noise lies in the mixture's plane, so a sample's distance to its
centre is std times a Rayleigh variable in every toy, and the share of real samples within 3σ of
their mode is 1 − e^(−9/2) in 3-D as in 2-D (:data:`trainables.metrics.toy_quality.HQ_REAL`). Metrics
count a mode as covered and a sample as "high quality" when it lies within 3 std of a mode
(:func:`toy_modes`, :func:`toy_std`), in the data space (3-D for ``roth7_3d``); pictures show the
samples in the mixture's plane (:func:`toy_plane_coords`). Registered as datasets (channels = the
data dimension, :func:`toy_dim`; no resolution) in :data:`trainables.data.datasets.DATASETS`, whose
functions of the same names give an unknown name the registry's message. Importing this module
imports no torch (the names are checked in a config without it); the functions that make tensors
import it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from trainables.data.errors import DatasetError

if TYPE_CHECKING:
    import torch

__all__ = ["TOY_DATASETS", "sample_toy", "toy_dim", "toy_draw", "toy_modes", "toy_plane",
           "toy_plane_coords", "toy_std"]

#: Toy mixtures of Gaussians (no files, sampled on the fly).
TOY_DATASETS: tuple[str, ...] = ("ring8", "grid25", "roth7", "roth7_3d")
_TOY_STD = {"ring8": 0.02, "grid25": 0.05, "roth7": 0.01, "roth7_3d": 0.01}
#: The toys embedded in 3-D (Roth et al. App. 7.3); every other toy is 2-D.
_EMBEDDED_3D = ("roth7_3d",)
#: (number of modes, radius) of the toys whose modes lie on a circle in their plane.
_RING = {"ring8": (8, 2.0), "roth7": (7, 1.0), "roth7_3d": (7, 1.0)}


def _toy_name(name: str) -> str:
    if name not in TOY_DATASETS:
        raise DatasetError(f"dataset {name!r} is not a toy (toys: {', '.join(TOY_DATASETS)})")
    return name


def toy_dim(name: str) -> int:
    """Dimension of the data space: 3 for ``roth7_3d``, 2 for the other toys."""
    return 3 if _toy_name(name) in _EMBEDDED_3D else 2


def _roth_embedding() -> tuple[list[list[float]], list[float]]:
    """Roth et al. App. 7.3: the rotation by π/4 about k = (1, −1, 0)/√2 (Rodrigues:
    R = I + sin θ·K + (1 − cos θ)·K², K the cross-product matrix of k) and the translation
    (1, 1, 1)/√3, as float64 Python lists (rows of R)."""
    theta, r2, r3 = math.pi / 4, math.sqrt(2.0), math.sqrt(3.0)
    k = (1.0 / r2, -1.0 / r2, 0.0)
    kx = [[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]]
    kk = [[sum(kx[i][m] * kx[m][j] for m in range(3)) for j in range(3)] for i in range(3)]
    rot = [[(1.0 if i == j else 0.0) + math.sin(theta) * kx[i][j]
            + (1.0 - math.cos(theta)) * kk[i][j] for j in range(3)] for i in range(3)]
    return rot, [1.0 / r3] * 3


def toy_plane(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(axes, origin) of the toy's plane, float64: ``axes`` 2×dim orthonormal rows (u, v), the
    images of the plane's x and y axes, and ``origin`` (dim,), the image of (0, 0). For the 2-D
    toys the identity and 0; for ``roth7_3d`` u = R·e₁, v = R·e₂, origin (1, 1, 1)/√3 (Roth et al.
    App. 7.3). The plane's normal is R·e₃ = (−1/2, −1/2, 1/√2)."""
    import torch

    if toy_dim(name) == 2:
        return torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    rot, shift = _roth_embedding()
    axes = torch.tensor(rot, dtype=torch.float64).T[:2].contiguous()
    return axes, torch.tensor(shift, dtype=torch.float64)


def toy_modes(name: str) -> torch.Tensor:
    """Mode centres, float32 M×dim: ring8 — 8 points at radius 2, angles 2πk/8; roth7 — 7 points
    at radius 1, angles 2πk/7; roth7_3d — roth7's centres embedded in 3-D (:func:`toy_plane`);
    grid25 — {−4,−2,0,2,4}²."""
    import torch

    ring = _RING.get(_toy_name(name))
    if ring is not None:
        n, radius = ring
        angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
        flat = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        if toy_dim(name) == 2:
            return flat.to(torch.float32)
        axes, origin = toy_plane(name)
        return (origin + flat @ axes).to(torch.float32)
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def toy_std(name: str) -> float:
    """Per-axis std of each Gaussian in its plane: 0.02 for ring8, 0.05 for grid25, 0.01 for
    roth7 and roth7_3d."""
    return _TOY_STD[_toy_name(name)]


def toy_draw(name: str):
    """The arithmetic of a draw, ``(which, noise) -> samples``: ``which`` (…) mode indices and
    ``noise`` (…, 2) standard normal in-plane coordinates give float32 samples (…, dim) =
    ``modes[which] + std·(noise₁·u + noise₂·v)`` (2-D toys: ``modes[which] + std·noise``).
    Element-wise operations only, so a batched draw (a population pack's stacked members) is
    bit-identical to the same draws made one by one (:func:`sample_toy`)."""
    import torch

    modes, std = toy_modes(name), toy_std(name)
    if toy_dim(name) == 2:
        return lambda which, noise: modes.to(noise.device)[which] + std * noise
    u, v = (a.to(torch.float32) for a in toy_plane(name)[0])

    def draw(which: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        offset = noise[..., :1] * u.to(noise.device) + noise[..., 1:] * v.to(noise.device)
        return modes.to(noise.device)[which] + std * offset
    return draw


def toy_plane_coords(name: str, x: torch.Tensor) -> torch.Tensor:
    """Points (N×dim) in the toy's plane coordinates (N×2): ((x − origin)·u, (x − origin)·v) —
    for pictures of ``roth7_3d`` samples (the orthogonal projection onto the mixture's plane);
    the 2-D toys' points unchanged."""
    if toy_dim(name) == 2:
        return x
    axes, origin = toy_plane(name)
    return ((x.double() - origin.to(x.device)) @ axes.to(x.device).T).to(x.dtype)


def sample_toy(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples (float32 n×dim, on ``generator``'s device) from the equal-weight mixture:
    the mode index, then the in-plane noise from ``generator`` (:func:`toy_draw`)."""
    import torch

    n_modes = toy_modes(name).shape[0]
    which = torch.randint(n_modes, (n,), generator=generator, device=generator.device)
    noise = torch.randn((n, 2), generator=generator, device=generator.device)
    return toy_draw(name)(which, noise)
