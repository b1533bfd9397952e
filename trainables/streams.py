"""The seeded random streams of one trial: stream ``n`` of trial seed ``s`` is a generator seeded
``s · 1_000_003 + n``, so every stream is fixed by the seed, independent of the others and of
torch's global RNG (which parameter initialisation and the penalties draw from)."""

from __future__ import annotations

import torch

__all__ = ["DATA", "EVAL_Z", "FINAL_Z", "GRID_Z", "NOISE", "stream"]

#: Training's real-batch indices / toy samples (CPU) and its z (on the trial's device).
DATA, NOISE = 1, 2
#: The evaluations' z: the sample grid, the regular FID evaluations, the final one.
GRID_Z, EVAL_Z, FINAL_Z = 3, 4, 5


def stream(seed: int, n: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Stream ``n`` of trial seed ``seed``: a fresh generator on ``device``."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + n)
