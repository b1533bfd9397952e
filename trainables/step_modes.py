"""How a training step may execute, and which (mode, regularizer, packed) combinations it cannot.

A trial's ``step_mode`` key picks one of :data:`STEP_MODES` (``auto`` resolves to one of them at
run time, per device). ``eager`` and ``sync_free`` run every regularizer. The captured modes
(:data:`CAPTURED_MODES`: ``compiled`` = ``torch.compile``, ``cuda_graph`` = one captured CUDA
graph per step) run only the D steps their capture covers, and that differs between a single
trial (``trainables.train``) and a pack of members (``trainables.population``, whose step draws
every random number itself from per-member generators and so captures the gradient penalty).

:data:`CAPTURE` is the one table of those rules, keyed by ``(mode, regularizer, packed)``:
``None`` where the mode captures the regularizer's D step, else the reason it cannot. A
combination absent from the table is refused too (a new regularizer is captured only once it is
listed). The functions here only return problems (a line naming the mode, the regularizer and the
reason, or None); the callers raise (``trainables.config.validate_trial`` a ``ConfigError``, the
pack a ``ValueError``). Importing this module imports no torch.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CAPTURE",
    "CAPTURED_MODES",
    "STEP_MODES",
    "capture_refusal",
    "captured_regularizers",
    "cuda_graph_device_problem",
    "step_mode_problem",
    "unknown_mode_problem",
]

#: What ``step_mode`` resolves to (``auto`` picks one of these per device).
STEP_MODES: tuple[str, ...] = ("eager", "sync_free", "compiled", "cuda_graph")
#: Modes whose step is traced / captured: every per-step value lives in device tensors.
CAPTURED_MODES: frozenset[str] = frozenset({"compiled", "cuda_graph"})

_DOUBLE_BACKWARD = ("its penalty is a double backward (autograd.grad with create_graph=True), "
                    "which torch.compile's AOTAutograd does not support (pytorch/pytorch#91469)")

#: (mode, regularizer, packed) → None when the mode captures that regularizer's D step, else why
#: not. Single trials capture a plain forward / backward / optimizer update (``clip`` adds an
#: in-place clamp after it); a pack also captures ``gp`` in a CUDA graph (its interpolation
#: weights come from the members' own generators inside the step).
CAPTURE: dict[tuple[str, str, bool], str | None] = {
    **{(mode, reg, False): None for mode in CAPTURED_MODES for reg in ("none", "sn", "clip")},
    ("compiled", "gp", False): _DOUBLE_BACKWARD,
    ("compiled", "r1", False): _DOUBLE_BACKWARD,
    ("compiled", "js", False): _DOUBLE_BACKWARD,
    ("compiled", "gran", False): (
        "its D is a double backward (the input gradient with create_graph=True inside the "
        "forward), which torch.compile's AOTAutograd does not support (pytorch/pytorch#91469)"),
    ("compiled", "alr", False): (
        "its power iteration calls torch.autograd.grad inside the step, which dynamo does not "
        "trace (graph breaks cut the penalty into about ten graphs)"),
    ("cuda_graph", "gp", False): (
        "its interpolation weights are drawn from torch's global RNG inside the step; the "
        "single-trial graph fills only the real batch and z from the trial's generators"),
    ("cuda_graph", "r1", False): "its double backward is not part of the captured single-trial step",
    ("cuda_graph", "js", False): (
        "its weight γ changes every step as a Python number, which a captured graph would "
        "freeze at the capture step"),
    ("cuda_graph", "gran", False): "its D is a double backward, not part of the captured "
                                   "single-trial step",
    ("cuda_graph", "alr", False): (
        "it draws its directions and ε from torch's global RNG inside the step and runs a power "
        "iteration; the graph fills only the real batch and z"),
    **{(mode, reg, True): None for mode in CAPTURED_MODES for reg in ("none", "sn")},
    ("cuda_graph", "gp", True): None,
    ("compiled", "gp", True): _DOUBLE_BACKWARD,
}


def captured_regularizers(mode: str, packed: bool) -> frozenset[str]:
    """The regularizers whose D step ``mode`` captures (single trial or pack), from :data:`CAPTURE`."""
    return frozenset(r for (m, r, p), why in CAPTURE.items() if m == mode and p == packed
                     and why is None)


def unknown_mode_problem(mode: object) -> str | None:
    """A line naming an unknown ``step_mode`` (None for ``auto`` and :data:`STEP_MODES`)."""
    if mode == "auto" or mode in STEP_MODES:
        return None
    return f"unknown step_mode {mode!r}; expected auto or one of {', '.join(STEP_MODES)}"


def capture_refusal(mode: str, regularizer: str, packed: bool) -> str | None:
    """Why ``mode`` cannot run ``regularizer``'s step (single trial or pack), None when it can."""
    if (problem := unknown_mode_problem(mode)) or mode not in CAPTURED_MODES:
        return problem
    key = (mode, regularizer, packed)
    if key in CAPTURE and CAPTURE[key] is None:
        return None
    why = CAPTURE.get(key) or "its D step is not captured"
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
    mode = cfg.get("step_mode", "auto")
    if mode in ("auto", "eager", "sync_free"):
        return None
    if mode == "cuda_graph" and str(cfg.get("device", "auto")) == "cpu":
        return ("'cuda_graph' captures the step with torch.cuda.graphs and needs a CUDA device, "
                "but device is 'cpu'; use sync_free or compiled on CPU")
    return capture_refusal(mode, cfg.get("regularizer", "sn"), packed)
