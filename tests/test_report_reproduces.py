"""bench/report_reproduces.py: the check that committed results are what ``lipstudy report`` makes
of their runs must mask the timestamp and nothing else, and must refuse mixed or dirty versions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "report_reproduces", Path(__file__).resolve().parents[1] / "bench" / "report_reproduces.py")
rr = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rr)

REPORT = ("# Study\n\nGenerated {} from 15 runs (default); the analysis frame is in `runs.csv`.\n\n"
          "| loss | FID |\n|---|---|\n| ns | {} |\n")


def _pair(tmp_path: Path, name: str, committed: str, made: str) -> tuple[Path, Path]:
    (tmp_path / "c").mkdir(exist_ok=True)
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "c" / name).write_text(committed)
    (tmp_path / "m" / name).write_text(made)
    return tmp_path / "c" / name, tmp_path / "m" / name


def test_only_the_timestamp_is_masked(tmp_path):
    a, b = _pair(tmp_path, "report.md", REPORT.format("2026-12-05T13:24:13", "18.40"),
                 REPORT.format("2027-01-01T00:00:59", "18.40"))
    line, ok = rr.same_file(a, b)
    assert ok and "same" in line


def test_a_changed_number_is_a_difference_on_its_line(tmp_path):
    a, b = _pair(tmp_path, "report.md", REPORT.format("2026-12-05T13:24:13", "18.40"),
                 REPORT.format("2026-12-05T13:24:13", "18.41"))
    line, ok = rr.same_file(a, b)
    assert not ok and "DIFFERENT (first differing line 7)" in line


def test_a_date_elsewhere_is_not_masked(tmp_path):
    a, b = _pair(tmp_path, "report.md", "run at 2026-12-05T13:24:13\n", "run at 2026-12-05T13:24:14\n")
    assert rr.same_file(a, b)[1] is False


def test_a_missing_file_is_a_difference(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "m").mkdir()
    (tmp_path / "c" / "runs.csv").write_text("a\n1\n")
    line, ok = rr.same_file(tmp_path / "c" / "runs.csv", tmp_path / "m" / "runs.csv")
    assert not ok and "missing (regenerated)" in line


def _runs(tmp_path: Path, versions: list[str]) -> Path:
    p = tmp_path / "runs.csv"
    p.write_text("run_id,code_version\n" + "".join(f"r{i},{v}\n" for i, v in enumerate(versions)))
    return p


def test_one_clean_version_matching_the_commit_passes(tmp_path):
    p = _runs(tmp_path, ["git:d0be01be37fb"] * 3)
    assert rr.versions_check(p, "d0be01be37fbac5352ba5fddf9275a81227c6274")[1]
    assert rr.versions_check(p, "d0be01b")[1]
    assert rr.versions_check(p, None)[1]


def test_another_commit_mixed_dirty_or_unknown_versions_fail(tmp_path):
    assert not rr.versions_check(_runs(tmp_path, ["git:d0be01be37fb"]), "fb7aced")[1]
    assert not rr.versions_check(_runs(tmp_path, ["git:d0be01be37fb", "git:04ebf68aaaaa"]), None)[1]
    assert not rr.versions_check(_runs(tmp_path, ["git:d0be01be37fb+dirty:0123456789ab"]), None)[1]
    assert not rr.versions_check(_runs(tmp_path, ["unknown"]), None)[1]
    assert not rr.versions_check(_runs(tmp_path, ["", ""]), None)[1]
