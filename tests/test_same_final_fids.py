"""bench/same_final_fids.py: the check that a refactoring left ``make study``'s FIDs bit-identical
must see a one-ulp change and a missing run."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "same_final_fids", Path(__file__).resolve().parents[1] / "bench" / "same_final_fids.py")
same = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(same)


def test_identical_values_agree():
    lines, ok = same.compare({"a": 18.400467427349213}, {"a": 18.400467427349213})
    assert ok and lines[0].endswith("same")


def test_one_ulp_is_a_difference():
    x = 125.56526539425477
    lines, ok = same.compare({"a": x}, {"a": math.nextafter(x, math.inf)})
    assert not ok and lines[0].endswith("DIFFERENT")


def test_a_missing_run_is_a_difference():
    lines, ok = same.compare({"a": 1.0, "b": 2.0}, {"a": 1.0})
    assert not ok and [ln.split()[-1] for ln in lines] == ["same", "missing"]


def test_a_path_becomes_a_sqlite_uri(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    assert same.tracking_uri(str(db)) == f"sqlite:///{db}"
    assert same.tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
