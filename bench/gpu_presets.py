"""Seed-000 device-hours of the paper presets from ``bench/gpu_throughput.py``'s measured best
modes: each preset's configurations with seed 0, costed as iterations × (the best ms per
trial-iteration of their shape) + their FID evaluations at ``study.cost.FID_IMG_PER_S``
(modelled, not measured). A configuration of a shape the run did not measure (CIFAR-10: 3
channels at 32×32; CelebA when it was not measured) scales the reference shape's figure by
``study.cost``'s FLOP ratio (an upper bound where the measured figure is partly launch latency,
which does not grow with FLOPs), and the row says so."""

from __future__ import annotations

import math

from trainables.data import datasets as data_lib
from trainables.config import validate_trial

PRESETS = ("lipschitz-table2", "lipschitz-table5a", "lipschitz-table5b", "lipschitz-degenerate")


def _flops(arch: str, channels: int, width: float, batch: int, n_dis: int = 1) -> float:
    from study import cost

    g, d = cost._fwd_flops(arch, channels, width, batch)
    return n_dis * (g + 6 * d) + 3 * g + 3 * d


def _ms(c: dict, measured: dict[tuple[str, int], float], ref_key: tuple[str, int],
        scaled: set[str]) -> float:
    key = (c["arch"], data_lib.channels(c["dataset"]))
    if key in measured:
        return measured[key]
    width, batch = float(c["width"]), int(c["batch_size"])
    ratio = (_flops(c["arch"], key[1], width, batch, int(c["n_dis"]))
             / _flops(ref_key[0], ref_key[1], width, batch))
    scaled.add(f"{c['dataset']} ({c['arch']}, ×{ratio:.2f} FLOPs)")
    return measured[ref_key] * ratio


def preset_hours(measured: dict[tuple[str, int], float], ref_key: tuple[str, int]) -> list[tuple]:
    """(preset, configurations, device-hours, note) for each preset's seed-000 configurations.

    ``measured``: (arch, channels) → best ms per trial-iteration; ``ref_key`` must be in it."""
    from study import cost
    from study.spec import PRESETS_DIR, parse_study_unchecked
    from study.validation import expand_grid

    out = []
    for name in PRESETS:
        # schema only: costing a preset needs none of its datasets on disk
        spec = parse_study_unchecked((PRESETS_DIR / f"{name}.yaml").read_text())
        seed0 = spec.seed_list[0]
        cfgs = [validate_trial(c, check_data=False) for c in expand_grid(spec)
                if c["seed"] == seed0]
        seconds, scaled = 0.0, set()
        for c in cfgs:
            n_evals = math.ceil(c["iterations"] / c["eval_every"])
            seconds += (c["iterations"] * _ms(c, measured, ref_key, scaled) / 1e3
                        + n_evals * c["fid_samples"] / cost.FID_IMG_PER_S)
        note = ("not measured, the MNIST figure scaled by FLOPs (an upper bound where that "
                "figure is partly launch latency): " + ", ".join(sorted(scaled)) if scaled else "")
        out.append((name, len(cfgs), seconds / 3600, note))
    return out
