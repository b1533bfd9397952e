"""How a training step may execute, and which (mode, regularizer, packed) combinations it cannot.

A trial's ``step_mode`` key picks one of :data:`STEP_MODES` (``auto`` resolves to one of them at
run time, per device). ``eager`` and ``sync_free`` run every regularizer. The captured modes
(:data:`CAPTURED_MODES`: ``compiled`` = ``torch.compile``, ``cuda_graph`` = one captured CUDA
graph per step) run only the D steps their capture covers, and that differs between a single
trial (``trainables.train``) and a pack of members (``trainables.pack.population``, whose step draws
every random number itself from per-member generators and so captures the gradient penalty).

:func:`capture_table` is the one table of those rules, keyed by ``(mode, regularizer,
packed)``: ``None`` where the mode captures the regularizer's D step, else the reason it cannot,
gathered from the regularizers' declarations (``trainables.params``, ``capture``; read when
asked, so a regularizer declared after this import is in it). A combination absent from the
table is refused too (a new regularizer is captured only once it declares it). The functions
here only return problems (a line naming the mode, the regularizer and the reason, or None); the
callers raise (``trainables.config.validate_trial`` a ``ConfigError``, the pack a
``ValueError``). The step modes share one divergence reason (:func:`divergence_reason`) and the
CUDA graph's warm-up length (:data:`GRAPH_WARMUP_STEPS`). Importing this module imports no torch.
"""

from __future__ import annotations

import math
from typing import Any

from trainables import names
from trainables.params import CAPTURED_MODES, REGULARIZER_PARAMS, STEP_MODES

__all__ = [
    "CAPTURE",
    "CAPTURED_MODES",
    "DIVERGENCE_VALUES",
    "GRAPH_WARMUP_STEPS",
    "STEP_MODES",
    "capture_refusal",
    "capture_table",
    "captured_regularizers",
    "cuda_graph_device_problem",
    "divergence_reason",
    "step_mode_problem",
    "unknown_mode_problem",
]

#: The step's values whose non-finiteness ends a trial (or a pack member), in the order of
#: :func:`divergence_reason`.
DIVERGENCE_VALUES: tuple[str, ...] = (names.LOSS_D, names.LOSS_G, names.PENALTY)
#: ``cuda_graph``: real training steps run eagerly on a side stream before the CUDA graph is
#: captured (the lazy initialisations: optimizer state, cuBLAS handles, autograd's device
#: threads), for a single trial and a pack alike.
GRAPH_WARMUP_STEPS = 3


def divergence_reason(step: int, vals: list[float]) -> str | None:
    """The one reason a step's (loss_d, loss_g, penalty) end a trial or a pack member, in every
    step mode; None when all are finite."""
    bad = [f"{n}={v}" for n, v in zip(DIVERGENCE_VALUES, vals) if not math.isfinite(v)]
    return f"non-finite {', '.join(bad)} at step {step}" if bad else None


def capture_table() -> dict[tuple[str, str, bool], str | None]:
    """(mode, regularizer, packed) → None when the mode captures that regularizer's D step, else
    why not: each declared regularizer's ``capture`` (``trainables.params``). Single trials
    capture a plain forward / backward / optimizer update (``clip`` adds an in-place clamp after
    it); a pack also captures ``gp`` in a CUDA graph (its interpolation weights come from the
    members' own generators, filled outside the graph)."""
    return {(mode, name, packed): why for name, params in REGULARIZER_PARAMS.items()
            for (mode, packed), why in params.capture.items()}


#: The table of the regularizers declared when this module was imported (the built-in ones).
CAPTURE: dict[tuple[str, str, bool], str | None] = capture_table()


def captured_regularizers(mode: str, packed: bool) -> frozenset[str]:
    """The regularizers whose D step ``mode`` captures (single trial or pack)."""
    return frozenset(r for (m, r, p), why in capture_table().items() if m == mode
                     and p == packed and why is None)


def unknown_mode_problem(mode: object) -> str | None:
    """A line naming an unknown ``step_mode`` (None for ``auto`` and :data:`STEP_MODES`)."""
    if mode == "auto" or mode in STEP_MODES:
        return None
    return f"unknown step_mode {mode!r}; expected auto or one of {', '.join(STEP_MODES)}"


def capture_refusal(mode: str, regularizer: str, packed: bool) -> str | None:
    """Why ``mode`` cannot run ``regularizer``'s step (single trial or pack), None when it can."""
    if (problem := unknown_mode_problem(mode)) or mode not in CAPTURED_MODES:
        return problem
    table = capture_table()
    key = (mode, regularizer, packed)
    if key in table and table[key] is None:
        return None
    why = table.get(key) or "its D step is not captured"
    ok = ", ".join(sorted(captured_regularizers(mode, packed)))
    what = "a pack's step" if packed else "the step"
    return (f"step_mode {mode!r} cannot capture regularizer {regularizer!r} ({what} is captured "
            f"for {ok} only, not {regularizer!r}): {why}; use sync_free")


def cuda_graph_device_problem(device_type: str, holder: str = "this trial") -> str:
    """The line refusing ``cuda_graph`` on a non-CUDA device."""
    return (f"step_mode 'cuda_graph' captures the step with torch.cuda.graphs and needs a CUDA "
            f"device; {holder} runs on {device_type} (use compiled, sync_free or eager)")


def step_mode_problem(cfg: dict[str, Any], *, packed: bool = False) -> str | None:
    """Why a trial config cannot run its ``step_mode`` (None when it can), from the config alone.

    * an unknown mode;
    * ``cuda_graph`` with ``device: cpu`` (torch.cuda.graphs needs CUDA). With ``device: auto`` or
      ``cuda`` the device is only known at run time, where ``cuda_graph`` falls back to
      ``sync_free`` with a warning when no GPU is present;
    * a captured mode with a regularizer :data:`CAPTURE` does not allow (the reason is in the
      line).
    """
    mode = cfg.get(names.STEP_MODE, "auto")
    if mode in ("auto", "eager", "sync_free"):
        return None
    if mode == "cuda_graph" and str(cfg.get(names.DEVICE, "auto")) == "cpu":
        return ("'cuda_graph' captures the step with torch.cuda.graphs and needs a CUDA device, "
                "but device is 'cpu'; use sync_free or compiled on CPU")
    return capture_refusal(mode, cfg.get(names.REGULARIZER, "sn"), packed)
