"""Where a trial runs and with which float32 numerics: device resolution and the ``precision`` key.

Device. ``auto`` is CUDA when torch sees a GPU, else the CPU; ``cuda`` without CUDA also runs on
the CPU — on a machine with no NVIDIA GPU at all (a laptop, the fake GPUs of ``ray.init(num_gpus=
2)`` in tests: Ray sets ``CUDA_VISIBLE_DEVICES`` for fake GPUs too, so it tells nothing). A trial
that holds a GPU (asked for ``cuda``, or Ray gave it GPU ids) on a machine whose NVIDIA driver is
present but CUDA is unusable (a driver too old for the torch build, a CPU-only torch, no GPU left
visible) raises :class:`CudaUnusableError` with one line saying why, instead of training silently
on the CPU. "Driver present" is read from the files the NVIDIA kernel driver creates
(``/proc/driver/nvidia/version``, ``/dev/nvidiactl``, ``/dev/nvidia<N>``).

Precision (an execution key, never a science key: it changes float rounding, not what a step
computes). ``fp32`` (default): full float32 matmuls and convolutions, the papers' numerics (TF32
off for cuBLAS and cuDNN, ``float32_matmul_precision`` ``highest``). ``tf32``: TF32 tensor cores
for both (10-bit mantissa inputs, float32 accumulation) on Ampere-or-newer GPUs, ``high``; a
CPU trial keeps full float32 matmuls. Losses and optimizer state stay float32 either way (α
reaches 1e-25).
"""

from __future__ import annotations

import torch

from trainables.gpu_probe import nvidia_driver_present
from trainables.params import PRECISIONS  # the precision key's values, declared there

__all__ = ["PRECISIONS", "CudaUnusableError", "apply_precision", "cuda_problem",
           "nvidia_driver_present", "require_usable_cuda", "resolve_device"]


class CudaUnusableError(RuntimeError):
    """A trial holds a GPU but CUDA cannot be used on this machine (one-line message)."""


def cuda_problem() -> str | None:
    """Why CUDA is unusable although this machine has an NVIDIA driver; None when CUDA works or
    when there is no NVIDIA driver (no GPU to use: not a problem, the CPU is the device)."""
    if torch.cuda.is_available() or not nvidia_driver_present():
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as err:  # torch's own reason: driver too old, no device visible, …
        lines = str(err).strip().splitlines()
        return f"{type(err).__name__}: {lines[0] if lines else 'CUDA initialisation failed'}"
    return "torch.cuda.is_available() is False"


def require_usable_cuda(holder: str) -> None:
    """Raise :class:`CudaUnusableError` when :func:`cuda_problem` finds one; ``holder`` says why
    the trial holds a GPU (e.g. "Ray gave this trial GPU ['0']")."""
    problem = cuda_problem()
    if problem:
        raise CudaUnusableError(
            f"{holder}, but CUDA is unusable on this machine ({problem}); fix the NVIDIA driver "
            f"or the torch build on this node (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda}), or run the study with device: cpu and gpu: 0")


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when torch sees a GPU, else CPU. ``cuda`` / ``cuda:<i>`` → that device
    when CUDA works; without CUDA the CPU when the machine has no NVIDIA GPU (a trial scheduled
    on a fake GPU must still run), :class:`CudaUnusableError` when it has one CUDA cannot use."""
    if name == "auto" or name.startswith("cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda" if name == "auto" else name)
        if name != "auto":
            require_usable_cuda(f"device {name!r} asks for a GPU")
        return torch.device("cpu")
    return torch.device(name)


def apply_precision(precision: str, device: torch.device | str) -> None:
    """Set torch's process-wide float32 flags for a trial (see the module docstring); every
    trial sets them at its start, so trials sharing a worker process never inherit another's.

    On CUDA also ``cudnn.benchmark``: a trial's convolutions keep the same shapes for its whole
    run (fixed batch size and resolution), so cuDNN's one-off autotuning of each shape pays back
    over thousands of steps. On the CPU, cuDNN's autotuner is left as it is and matmuls stay
    ``highest`` whatever the precision (CPU runs stay bit-reproducible)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    tf32 = precision == "tf32"
    cuda = torch.device(device).type == "cuda"
    torch.backends.cudnn.allow_tf32 = tf32
    # cuBLAS's allow_tf32 is float32_matmul_precision != "highest"; "high" would also let oneDNN
    # use bfloat16-split matmuls on CPUs that have them, so a CPU trial keeps "highest"
    torch.set_float32_matmul_precision("high" if tf32 and cuda else "highest")
    if cuda:
        torch.backends.cudnn.benchmark = True
