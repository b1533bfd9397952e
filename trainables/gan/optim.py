"""Optimizers of the study: RMSProp (the paper's, Appendix B: lr 5e-5) and Adam, with ε exposed.

Where ε sits. torch puts ε *outside* the square root::

    RMSprop:  v ← ρ·v + (1−ρ)·g²,          w ← w − η · g / (√v + ε)
    Adam:     w ← w − η · m̂ / (√v̂ + ε)

whereas the paper's Eq. 5 writes it *inside*: w ← w − η · g / √(E[g²] + ε) (the convention of
TF1's ``tf.train.RMSPropOptimizer``). Consequence for the ε hypothesis (Eq. 5 remark): if every
gradient is scaled by s (s = k_SN^n for n SN layers and a linear loss such as WGAN, for D's
parameters and, through D, for G's), then g/(√v + ε) at scale s equals the unscaled update with
ε/s. The ε that reproduces, at gradient scale s, the run with ε at scale 1 is therefore **ε·s**
in torch (ε·s² in Eq. 5's form). For Adam the same holds (m̂ and √v̂ both scale with s).

The match is exact for the parameter that receives the gradient: under SN that is the
unnormalized weight W (``parametrizations.weight.original``); W/σ(W) is scale-free, so the two
runs keep identical W, identical u/v, and D at k_SN stays k_SN^n · D at 1 at every step
(``tests/trainables/gan/test_optim.py`` checks this).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from trainables import names
from trainables.params import OPTIMIZER_PARAMS, optimizer_defaults

__all__ = ["OPTIMIZERS", "build_optimizer"]

OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZER_PARAMS)
(_RHO,) = optimizer_defaults("rmsprop").values()  # the declared defaults, in field order
_BETA1, _BETA2 = optimizer_defaults("adam").values()


def _check(name: str, value: float, *, positive: bool, below_one: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if not positive and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if below_one and value >= 1:
        raise ValueError(f"{name} must be < 1, got {value!r}")


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    *,
    lr: float,
    eps: float,
    beta1: float = _BETA1,
    beta2: float = _BETA2,
    rmsprop_decay: float = _RHO,
) -> torch.optim.Optimizer:
    """``rmsprop``: torch RMSprop(lr, alpha=rmsprop_decay, eps) — no momentum, not centered.
    ``adam``: torch Adam(lr, betas=(beta1, beta2), eps). The defaults are the declared ones
    (``trainables.params``). ε is torch's (outside the root; see the
    module docstring). Build it *after* the regularizer's ``apply`` (SN re-homes the weights).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    _check("lr", lr, positive=True)
    _check(names.EPS, eps, positive=False)
    if name == "rmsprop":
        _check(names.RMSPROP_DECAY, rmsprop_decay, positive=False, below_one=True)
        return torch.optim.RMSprop(params, lr=lr, alpha=rmsprop_decay, eps=eps)
    _check(names.BETA1, beta1, positive=False, below_one=True)
    _check(names.BETA2, beta2, positive=False, below_one=True)
    return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps)
