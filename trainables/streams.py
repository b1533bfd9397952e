"""The seeded random streams of one trial: stream ``n`` of trial seed ``s`` is a generator seeded
``s · 1_000_003 + n``, so every stream is fixed by the seed, independent of the others and of
torch's global RNG (which parameter initialisation and the penalties draw from)."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["DATA", "DEVICE_GLOBAL", "EVAL_Z", "FINAL_Z", "GRID_Z", "NOISE", "reseed_value",
           "stream"]

#: Training's real-batch indices / toy samples (CPU) and its z (on the trial's device).
DATA, NOISE = 1, 2
#: The evaluations' z: the sample grid, the regular FID evaluations, the final one.
GRID_Z, EVAL_Z, FINAL_Z = 3, 4, 5


def stream(seed: int, n: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Stream ``n`` of trial seed ``seed``: a fresh generator on ``device``."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + n)


#: Not a stream: torch's global RNG of the trial's device (the penalties' draws on CUDA), as
#: :func:`reseed_value` numbers it when a resumed trial re-seeds it.
DEVICE_GLOBAL = 0


def reseed_value(seed: int, n: int, step: int) -> int:
    """The seed of stream ``n`` of trial seed ``seed`` re-started at ``step``: the first 63 bits
    of SHA-256 of ``"<seed>/<n>/<step>"`` (fixed by the three numbers, unrelated to the fresh
    streams' seeds). A resumed trial re-seeds a device-side generator with it when its
    checkpoint's state belongs to another device type (a CUDA generator's Philox seed and offset
    cannot become a CPU Mersenne-Twister state, nor the reverse): the same checkpoint resumed on
    the same device type then draws the same."""
    digest = hashlib.sha256(f"{seed}/{n}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1

