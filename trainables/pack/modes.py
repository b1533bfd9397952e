"""How a population pack executes: its step mode, and the process-level stand-ins its members need.

A pack (``trainables.pack.population``) runs one step for P members. Its step mode comes from the
members' shared ``step_mode`` key (:func:`resolve_pack_step_mode`), refused where the packed rows
of the step-mode table (``trainables.step_modes``) say so. ``compiled`` traces the pack's whole
device step with ``torch.compile`` (:data:`COMPILE_BACKEND`). Each member also needs what torch's
global RNG would be in its own trial (:func:`member_rng`), and on glibc a CPU pack keeps freed
heap memory for reuse (:func:`tune_malloc`).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from trainables import names
from trainables.step_modes import capture_refusal, cuda_graph_device_problem
from trainables.streams import DEVICE_GLOBAL, reseed_value
from trainables.train import resolve_step_mode

#: torch.compile backend of the ``compiled`` step ("aot_eager" traces the same graph and runs it
#: with eager kernels: bit-identical to the eager step, what a test uses to check the trace).
COMPILE_BACKEND = "inductor"


def step_mode_refusal(mode: str, regularizer: str, device: torch.device) -> str | None:
    """Why a pack of ``regularizer`` on ``device`` cannot run ``mode`` (None when it can): the
    packed rows of :data:`trainables.step_modes.CAPTURE`, and ``cuda_graph`` needs CUDA."""
    if mode == "cuda_graph" and device.type != "cuda":
        return cuda_graph_device_problem(device.type, "this pack")
    return capture_refusal(mode, regularizer, packed=True)


def resolve_pack_step_mode(cfg: dict[str, Any], device: torch.device) -> str:
    """The pack's step mode from its (shared) ``step_mode`` key. An explicit mode the pack
    cannot run is refused (``ValueError`` with :func:`step_mode_refusal`'s reason); ``auto`` is
    what ``trainables.train.resolve_step_mode`` picks for the device, or ``sync_free`` when the
    pack cannot run that pick."""
    mode = cfg.get(names.STEP_MODE, "auto")
    if mode != "auto":
        if mode == "cuda_graph" and device.type != "cuda" and cfg.get(names.DEVICE) != "cpu":
            # device auto / cuda that turned out to have no GPU: the pack still runs (as
            # resolve_device and the one-config trial do)
            warnings.warn(f"population: step_mode 'cuda_graph' needs CUDA and this pack runs on "
                          f"{device.type}: running it sync_free", RuntimeWarning, stacklevel=2)
            return "sync_free"
        why = step_mode_refusal(mode, cfg[names.REGULARIZER], device)
        if why:
            raise ValueError(f"population: {why}")
        return mode
    mode = resolve_step_mode(cfg, device)
    if step_mode_refusal(mode, cfg[names.REGULARIZER], device):
        return "sync_free"
    return mode


_malloc_tuned = False


def tune_malloc() -> None:
    """Keep freed heap memory for reuse (glibc only; once per process): mmap threshold 32 MiB,
    trim threshold 512 MiB. A pack's tensors are P times a trial's: (P, 128, 128) float32 is
    1 MiB, above glibc's initial 128 KiB mmap threshold, and with its default trimming every such
    temporary would come back as fresh pages from the kernel (docs/measurements.md has what that
    costs). A trial's own tensors (64 KiB) stay under the threshold. Allocation only: no value
    changes."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def member_rng(seed: int, device: torch.device, state: torch.Tensor | None = None,
                cuda_state: torch.Tensor | None = None, step: int = 0) -> torch.Generator:
    """What torch's global RNG of ``device`` would be in the member's own trial. A member
    resumed on CUDA from a state without one (a CPU pack's) is re-seeded from (seed, step), as
    ``GANTrial.load_state_dict`` re-seeds a one-config trial's CUDA RNG."""
    if device.type == "cpu":
        g = torch.Generator()
        g.set_state(state if state is not None else torch.get_rng_state())
        return g
    g = torch.Generator(device=device).manual_seed(seed)
    if cuda_state is not None:
        g.set_state(cuda_state)
    elif state is not None:
        g.manual_seed(reseed_value(seed, DEVICE_GLOBAL, step))
    return g

