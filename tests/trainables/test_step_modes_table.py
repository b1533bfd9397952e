"""One step-mode table for the single trial and the pack: ``trainables.step_modes.CAPTURE``,
keyed by (mode, regularizer, packed), read by the trial config, the training loop and the pack;
and the import arrows around it (the config asks no training module, the toys ask no registry)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from trainables import step_modes, train
from trainables.pack import population
from trainables.config import ConfigError, validate_trial

PKG = Path(__file__).resolve().parents[2] / "trainables"


def _cfg(mode: str, reg: str) -> dict:
    return {"dataset": "ring8", "arch": "mlp", "regularizer": reg, "step_mode": mode,
            "device": "auto", "iterations": 10, "eval_every": 10}


@pytest.mark.parametrize("key", sorted(step_modes.CAPTURE), ids=str)
def test_single_trial_and_pack_follow_the_table(key):
    mode, reg, packed = key
    why = step_modes.CAPTURE[key]
    if packed:
        got = population.step_mode_refusal(mode, reg, torch.device("cuda"))
    else:
        got = train.step_mode_problem(_cfg(mode, reg))
        if got is None:
            validate_trial(_cfg(mode, reg))
        else:
            with pytest.raises(ConfigError, match=f"^step_mode: .*not '{reg}'"):
                validate_trial(_cfg(mode, reg))
    assert (got is None) == (why is None)
    if why is not None:
        assert why in got and f"not {reg!r}" in got and "use sync_free" in got


def test_the_pack_captures_gp_in_a_cuda_graph_and_the_single_trial_does_not():
    assert population.step_mode_refusal("cuda_graph", "gp", torch.device("cuda")) is None
    assert "global RNG" in train.step_mode_problem(_cfg("cuda_graph", "gp"))
    assert "double backward" in population.step_mode_refusal("compiled", "gp", torch.device("cuda"))


def test_a_regularizer_missing_from_the_table_is_not_captured():
    msg = step_modes.capture_refusal("compiled", "newreg", packed=False)
    assert "not 'newreg'" in msg and "its D step is not captured" in msg
    assert step_modes.capture_refusal("eager", "newreg", packed=True) is None
    assert "unknown step_mode 'jit'" in step_modes.capture_refusal("jit", "sn", packed=False)


def _imported(module: str) -> set[str]:
    """Every module (and imported name) ``trainables/<module>.py`` imports, anywhere in its code."""
    tree = ast.parse((PKG / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


@pytest.mark.parametrize("module,never", [("config", "trainables.train"), ("config", "torch"),
                                          ("data/toys", "trainables.data.datasets"),
                                          ("step_modes", "torch"), ("params", "torch")])
def test_no_import_back_up(module, never):
    assert not {n for n in _imported(module) if n == never or n.startswith(never + ".")}


@pytest.mark.parametrize("module,leaves", [
    ("step_modes", {"trainables.params", "trainables.names"}),
    ("params", {"trainables.names", "trainables.registry"}),
])
def test_the_table_and_the_declarations_import_only_torch_free_leaves(module, leaves):
    """The step-mode table reads the regularizers' declarations, which import only the names and
    the registry rule: nothing that imports torch."""
    tree = ast.parse((PKG / f"{module}.py").read_text())
    used = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.module and node.module.startswith("trainables")}
    used |= {f"trainables.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module == "trainables" for a in node.names}
    assert used - {"trainables"} <= leaves
