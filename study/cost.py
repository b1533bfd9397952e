"""GPU-hour estimates for study presets: measured where ``bench/gpu_throughput.py`` has measured
the shape on a GPU, else a model (±2x).

**Measured.** ``bench/gpu_throughput.py --out DIR/README.md`` also writes ``DIR/figures.json``: per
measured shape (arch, channels, width, batch) the best step mode, its population P and its ms per
trial-iteration. :func:`load_figures` reads it from ``$LIPSTUDY_GPU_FIGURES`` or
``docs/results/gpu-throughput/figures.json``. The figures hold for the GPU model they were
measured on (``gpu_model`` in the file): they count only when the cluster's model is known
(``$LIPSTUDY_GPU_MODEL``, or the Ray ``accelerator_type`` of a live GPU node or of a GPU node
type the autoscaler may start) and the same. Then a
config of a measured shape costs ``iterations × ms`` scaled by the model's FLOP ratio of its own
step to the benchmark's (other regularizers, ``n_dis``), plus FID as below. ``gpu: auto``
studies pack their configs by the best P (``study.placement.auto_population``). No GPU has been lent
to this project yet, so no figures file is committed and every estimate in the presets' headers
is the model.

**Model.**

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
import json
import math
import os
from pathlib import Path
from typing import Any
from trainables.names import (ALR_ITERS, ARCH, BATCH_SIZE, DATASET, EVAL_EVERY, FID_SAMPLES,
                              ITERATIONS, N_DIS, REGULARIZER, WIDTH)

EFFECTIVE_FLOPS = 20e12
LATENCY_S = 2e-3
FID_IMG_PER_S = 2500.0
EXTRA_D_PASSES = {"gp": 2.0, "r1": 2.0, "js": 2.0, "gran": 3.0}  # per D step, in D fwd+bwd units


@functools.lru_cache(maxsize=None)
def _fwd_flops(arch: str, channels: int, width: float, batch: int) -> tuple[float, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainables.nets.models import build_discriminator, build_generator

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


def _step_flops(arch: str, channels: int, width: float, batch: int, n_dis: int,
                regularizer: str, alr_iters: int = 1) -> float:
    g, d = _fwd_flops(arch, channels, width, batch)
    extra = EXTRA_D_PASSES.get(regularizer, 0.0)
    if regularizer == "alr":
        extra = 1.0 + alr_iters
    return n_dis * (g + 6 * d + extra * 3 * d) + 3 * g + 3 * d


#: Format of ``figures.json`` (bench/gpu_throughput.py writes it).
FIGURES_VERSION = 2
FIGURES_ENV = "LIPSTUDY_GPU_FIGURES"
#: The cluster's GPU model (``torch.cuda.get_device_name`` or Ray's accelerator type, e.g. H100)
#: when the driver cannot see it: an autoscaling cluster has no GPU node before trials ask.
GPU_MODEL_ENV = "LIPSTUDY_GPU_MODEL"
DEFAULT_FIGURES = Path(__file__).resolve().parents[1] / "docs/results/gpu-throughput/figures.json"


def accelerator_type(gpu_name: str | None) -> str | None:
    """A GPU model name as Ray labels a node's GPUs (``accelerator_type:<T>`` resources):
    "NVIDIA H100 80GB HBM3" → "H100"; a name that already is a type ("A10G") stays. Ray's own
    mapping (``NvidiaGPUAcceleratorManager``, private API), so the benchmark's
    ``torch.cuda.get_device_name`` and a cluster's resources name one model alike."""
    if not gpu_name or not str(gpu_name).strip():
        return None
    from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

    return NvidiaGPUAcceleratorManager._gpu_name_to_accelerator_type(str(gpu_name).strip())


def cluster_gpu_model() -> str | None:
    """The GPU model trials will run on: ``$LIPSTUDY_GPU_MODEL``, else the one
    ``accelerator_type:<T>`` resource of the connected Ray cluster's live nodes (Ray adds it on
    GPU nodes) and of the GPU node types its autoscaler may start (``study.cluster``; ``ray up``
    on AWS fills it in from the instance type), else None (no Ray, no GPU node known, or several
    models)."""
    if os.environ.get(GPU_MODEL_ENV, "").strip():
        return os.environ[GPU_MODEL_ENV].strip()
    import ray

    if not ray.is_initialized():
        return None
    from study.cluster import read_cluster

    prefix = "accelerator_type:"
    declared = [t.resources for t in read_cluster().declared or () if t.resources.get("GPU", 0)]
    types = {k[len(prefix):] for res in [ray.cluster_resources(), *declared] for k in res
             if k.startswith(prefix)}
    return types.pop() if len(types) == 1 else None


def load_figures(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The GPU benchmark's measured figures (``path``, ``$LIPSTUDY_GPU_FIGURES`` or the committed
    ``docs/results/gpu-throughput/figures.json``), or None when there are none. Only figures
    measured on CUDA count: a CPU smoke run of the benchmark says nothing about a GPU. Whether
    they hold for the cluster's GPU model is :func:`figures_for_model`'s call, made where they are
    used (pricing, packing)."""
    p = Path(path or os.environ.get(FIGURES_ENV) or DEFAULT_FIGURES)
    if not p.is_file():
        return None
    try:
        fig = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{p}: not a GPU figures file ({err})") from None
    if fig.get("version") != FIGURES_VERSION or not isinstance(fig.get("shapes"), list):
        raise ValueError(f"{p}: GPU figures version {fig.get('version')!r}, expected "
                         f"{FIGURES_VERSION} (re-run bench/gpu_throughput.py)")
    if fig.get("device_type") != "cuda":
        return None
    if not isinstance(fig.get("gpu_model"), str) or not fig["gpu_model"].strip():
        raise ValueError(f"{p}: GPU figures without the GPU model they were measured on "
                         "(re-run bench/gpu_throughput.py)")
    return fig


_SAID: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _SAID:
        _SAID.add(line)
        print(line, flush=True)


def figures_for_model(figures: dict[str, Any] | None,
                      gpu_model: str | None = None) -> dict[str, Any] | None:
    """``figures`` when they were measured on the GPU model trials run on (``gpu_model``, default
    :func:`cluster_gpu_model`; compared as Ray accelerator types), else None: with the model
    unknown or another one, costs and packing fall back to the model, said in one line."""
    if not figures:
        return None
    measured, target = figures.get("gpu_model"), gpu_model or cluster_gpu_model()
    if target is None:
        _say_once(f"GPU figures measured on {measured}; the cluster's GPU model is unknown (set "
                  f"{GPU_MODEL_ENV}): costs and packing use the model")
        return None
    if (accelerator_type(target) or "").lower() != (accelerator_type(measured) or "").lower():
        _say_once(f"GPU figures measured on {measured}, the cluster runs {target}: costs and "
                  "packing use the model")
        return None
    return figures


def measured_shape(cfg: dict[str, Any], figures: dict[str, Any] | None) -> dict[str, Any] | None:
    """The measured shape a config shares (arch, channels, width, batch size), or None."""
    if not figures:
        return None
    from trainables.data.datasets import channels

    key = (cfg[ARCH], channels(cfg[DATASET]), float(cfg[WIDTH]), int(cfg[BATCH_SIZE]))
    for shape in figures["shapes"]:
        if (shape[ARCH], int(shape["channels"]), float(shape[WIDTH]),
                int(shape[BATCH_SIZE])) == key:
            return shape
    return None


def trial_seconds(cfg: dict[str, Any], figures: dict[str, Any] | None = None,
                  gpu_model: str | None = None) -> float:
    """GPU seconds of one complete trial config (``validate_trial`` output): measured when
    ``figures`` hold its shape and were measured on ``gpu_model`` (:func:`figures_for_model`; see
    the module docstring), else modelled."""
    from trainables.data.datasets import channels

    ch = channels(cfg[DATASET])
    flops = _step_flops(cfg[ARCH], ch, float(cfg[WIDTH]), int(cfg[BATCH_SIZE]),
                        int(cfg[N_DIS]), cfg[REGULARIZER], cfg.get(ALR_ITERS, 1))
    shape = measured_shape(cfg, figures_for_model(figures, gpu_model))
    if shape is not None:
        ref = _step_flops(shape[ARCH], int(shape["channels"]), float(shape[WIDTH]),
                          int(shape[BATCH_SIZE]), int(shape[N_DIS]), shape[REGULARIZER])
        step_s = shape["ms_per_trial_iteration"] / 1e3 * flops / ref
    else:
        step_s = flops / EFFECTIVE_FLOPS + LATENCY_S * (int(cfg[N_DIS]) + 1)
    n_evals = math.ceil(cfg[ITERATIONS] / cfg[EVAL_EVERY])
    return cfg[ITERATIONS] * step_s + n_evals * cfg[FID_SAMPLES] / FID_IMG_PER_S


def best_population(figures: dict[str, Any] | None, gpu_model: str | None = None) -> int:
    """The population P of the benchmark's best mode on its first (MNIST Table 2) shape; 1 without
    figures or when they were measured on another GPU model than ``gpu_model``
    (:func:`figures_for_model`)."""
    figures = figures_for_model(figures, gpu_model)
    if not figures or not figures["shapes"]:
        return 1
    return max(1, int(figures["shapes"][0].get("population", 1)))


def study_gpu_hours(configs: list[dict[str, Any]], figures: dict[str, Any] | None = None,
                    gpu_model: str | None = None) -> float:
    from trainables.config import validate_trial

    model = (gpu_model or cluster_gpu_model()) if figures else None
    return sum(trial_seconds(validate_trial(c, check_data=False), figures, model)
               for c in configs) / 3600
