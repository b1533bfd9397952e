"""GPU-hour estimates for study presets (a model, not a measurement; ±2x).

Per iteration: a D step (G forward for the fakes, D forward+backward on a real and a fake batch)
``n_dis`` times and a G step (G and D forward+backward), counting forward+backward as 3 forwards:
``n_dis·(G + 6·D) + 3·G + 3·D`` batch forwards, FLOPs counted by torch's ``FlopCounterMode`` on
the real models at the trial's width, plus the regularizer's extra D passes (double backprop for
gp/r1/js/gran, power iterations for alr). Time = FLOPs at 20 TFLOP/s effective (fp32 convs on an
A100/H100-class GPU held by one trial) + 2 ms launch latency per D/G step, + FID: every
evaluation generates and embeds ``fid_samples`` images at 2,500 img/s. The same model as the
other presets' headers.
"""

from __future__ import annotations

import functools
import math
from typing import Any

EFFECTIVE_FLOPS = 20e12
LATENCY_S = 2e-3
FID_IMG_PER_S = 2500.0
EXTRA_D_PASSES = {"gp": 2.0, "r1": 2.0, "js": 2.0, "gran": 3.0}  # per D step, in D fwd+bwd units


@functools.lru_cache(maxsize=None)
def _fwd_flops(arch: str, channels: int, width: float, batch: int) -> tuple[float, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainables.models import build_discriminator, build_generator

    g = build_generator(arch, channels=channels, width=width)
    d = build_discriminator(arch, channels=channels, width=width)
    with torch.no_grad():
        z = torch.randn(batch, 100)
        with FlopCounterMode(display=False) as m:
            x = g(z)
        gf = m.get_total_flops()
        with FlopCounterMode(display=False) as m:
            d(x)
        df = m.get_total_flops()
    return float(gf), float(df)


def trial_seconds(cfg: dict[str, Any]) -> float:
    """Modelled GPU seconds of one complete trial config (``validate_trial`` output)."""
    from trainables.data import channels

    g, d = _fwd_flops(cfg["arch"], channels(cfg["dataset"]), float(cfg["width"]),
                      int(cfg["batch_size"]))
    n_dis = int(cfg["n_dis"])
    extra = EXTRA_D_PASSES.get(cfg["regularizer"], 0.0)
    if cfg["regularizer"] == "alr":
        extra = 1.0 + cfg.get("alr_iters", 1)
    flops = n_dis * (g + 6 * d + extra * 3 * d) + 3 * g + 3 * d
    step_s = flops / EFFECTIVE_FLOPS + LATENCY_S * (n_dis + 1)
    n_evals = math.ceil(cfg["iterations"] / cfg["eval_every"])
    return cfg["iterations"] * step_s + n_evals * cfg["fid_samples"] / FID_IMG_PER_S


def study_gpu_hours(configs: list[dict[str, Any]]) -> float:
    from trainables.config import validate_trial

    return sum(trial_seconds(validate_trial(c, check_data=False)) for c in configs) / 3600
