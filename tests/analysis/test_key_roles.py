"""Roles of the trial keys, declared once (``trainables.names.KEY_ROLES``): every key has one, and
only science keys (strata, factors) shape a verdict — adding, removing or varying an execution key
(step mode, population, device, statistics cadence) changes none.

The frame is the hypotheses-cpu runs.csv committed on 2026-11-28 (6a45dd8), kept in
``tests/analysis/data/``: 8 of its 162 runs lack ``step_mode`` (the key was added while that study
ran), which used to split its strata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import hypotheses, load
from analysis.outcome import config_columns
from trainables import names

RUNS_CSV = Path(__file__).resolve().parent / "data" / "hypotheses-cpu-2026-11-28-runs.csv"


def test_every_trial_key_has_a_declared_role():
    from trainables.config import all_keys

    keys = set(all_keys()) | set(names.TRIAL_PARAM_TYPES) | set(names.DERIVED_PARAM_TYPES)
    missing = sorted(k for k in keys if k not in names.KEY_ROLES)
    assert not missing, f"trial keys without a role in trainables.names.KEY_ROLES: {missing}"
    assert set(names.KEY_ROLES.values()) <= set(names.ROLES)


def test_every_analysis_column_has_a_role():
    missing = sorted(c for c in load.PARAM_TYPES if c not in load.COLUMN_ROLES)
    assert not missing, f"columns without a role: {missing}"


def test_roles_the_design_names():
    r = names.KEY_ROLES
    assert {r[k] for k in ("device", "step_mode", "stats_every", "eval_every", "data_root",
                           "download")} == {"execution"}
    assert r["seed"] == "replicate"
    assert {r[k] for k in ("dataset", "arch", "fid_extractor", "fid_samples")} == {"stratum"}
    assert {r[k] for k in ("loss", "k_sn", "alpha", "eps", "regularizer", "iterations",
                           "batch_size", "gran_k")} == {"factor"}
    assert set(names.SCIENCE_KEYS).isdisjoint(names.EXECUTION_KEYS)
    with pytest.raises(ValueError, match="unknown key role 'science'"):
        names.keys_with_role("science")


def test_config_columns_are_the_science_keys_only():
    frame = pd.DataFrame({k: [1] for k in names.KEY_ROLES} | {"origin": ["run"]})
    cols = config_columns(frame)
    assert cols[0] == "origin"
    assert set(cols[1:]) == set(names.SCIENCE_KEYS)


def _verdicts(frame: pd.DataFrame) -> list[tuple]:
    out = []
    for v in hypotheses.evaluate(frame):
        p = None if v.p_value is None or not np.isfinite(v.p_value) else round(float(v.p_value), 9)
        out.append((v.name, v.verdict, p, v.n))
    return out


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    frame = load.frame_from_csv(RUNS_CSV)
    assert frame["step_mode"].isna().sum() == 8 and len(frame) == 162
    return frame


def _variants(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = len(frame)
    pick = lambda *vals: rng.choice(np.array(vals, dtype=object), n)  # noqa: E731
    return {
        "as committed (8 runs lack step_mode)": frame,
        "step_mode and device removed": frame.drop(columns=["step_mode", "device"]),
        "step_mode, device, stats_every, eval_every, data_root varied; population added":
            frame.assign(step_mode=pick("eager", "sync_free", "auto", None),
                         device=pick("cpu", "cuda", "cuda:1"), stats_every=pick(10, 50, 100),
                         eval_every=pick(500, 1000), data_root=pick("/a", None),
                         population=pick(1, 4, 16)),
    }


def test_no_verdict_changes_with_execution_keys(committed):
    """Baseline: step_mode added to the 8 runs that lack it. Then removed everywhere (with device),
    then varied at random with the other execution keys: the same verdicts, p-values and n."""
    base = _verdicts(committed.assign(step_mode="auto"))
    for what, variant in _variants(committed).items():
        assert _verdicts(variant) == base, what
