"""What a run executed on: library versions, the device's model and the float32 precision flags.

:func:`environment_params` returns a flat ``{name: str}`` mapping that every trial logs as MLflow
params when its run is created (the names are :data:`trainables.names.ENVIRONMENT_PARAM_TYPES`),
so runs measured on different GPUs, CPUs or library versions can be told apart — FIDs and step
times differ between CPU models at the same commit (docs/measurements.md) and TF32 changes every
convolution and matmul on an Ampere-or-newer GPU. Execution facts, never science keys: the
analysis never splits a comparison by them.

No Ray or MLflow import here (the study side may reuse it for its own provenance records).
"""

from __future__ import annotations

import platform
import sys

import torch
from trainables.names import (ENV_CUDA, ENV_CUDNN, ENV_CUDNN_BENCHMARK, ENV_DEVICE_NAME,
                              ENV_DEVICE_TYPE, ENV_FLOAT32_MATMUL_PRECISION, ENV_PLATFORM,
                              ENV_PYTHON, ENV_TF32_CUDNN, ENV_TF32_MATMUL, ENV_TORCH)

__all__ = ["cpu_model", "device_name", "environment_params", "precision_flags"]


def cpu_model() -> str:
    """The CPU's model name (``model name`` in /proc/cpuinfo on Linux; ``platform.processor()``
    or the machine type elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: torch.device | str) -> str:
    """The model of ``device``: the GPU's name for CUDA, the CPU's model otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def precision_flags() -> dict[str, str]:
    """The float32 numerics torch uses now: TF32 for cuBLAS matmuls and for cuDNN convolutions,
    the float32 matmul precision (``highest`` = full fp32) and cuDNN's autotuner."""
    return {
        ENV_TF32_MATMUL: str(torch.backends.cuda.matmul.allow_tf32),
        ENV_TF32_CUDNN: str(torch.backends.cudnn.allow_tf32),
        ENV_FLOAT32_MATMUL_PRECISION: torch.get_float32_matmul_precision(),
        ENV_CUDNN_BENCHMARK: str(torch.backends.cudnn.benchmark),
    }


def environment_params(device: torch.device | str) -> dict[str, str]:
    """Versions (Python, torch, the CUDA and cuDNN torch was built with / loads), the device
    type and model, and :func:`precision_flags`; every value a string (``none`` where a library
    is absent). Only ``device`` is touched: no CUDA initialisation for a CPU device."""
    device = torch.device(device)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        ENV_PYTHON: platform.python_version(),
        ENV_PLATFORM: f"{sys.platform}-{platform.machine()}",
        ENV_TORCH: torch.__version__,
        ENV_CUDA: torch.version.cuda or "none",
        ENV_CUDNN: str(cudnn) if cudnn else "none",
        ENV_DEVICE_TYPE: device.type,
        ENV_DEVICE_NAME: device_name(device),
        **precision_flags(),
    }
