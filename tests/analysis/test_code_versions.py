"""Runs of different code versions are never pooled silently: ``analysis.load.check_versions``
refuses with one line naming them, the hypotheses refuse a mixed frame, ``lipstudy report``
refuses unless ``--pool-versions``, and a pooled report lists the versions. Runs without the
provenance tag (the hypotheses-cpu runs.csv committed on 2026-11-28, 6a45dd8, kept in
``tests/analysis/data/``) are one version, "unknown"."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis import hypotheses, load, report

RUNS_CSV = Path(__file__).resolve().parent / "data" / "hypotheses-cpu-2026-11-28-runs.csv"


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    return load.frame_from_csv(RUNS_CSV)


def _two_versions(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["code_version"] = ["git:aaaaaaaaaaaa" if i % 3 else "git:bbbbbbbbbbbb+dirty:0123456789ab"
                           for i in range(len(out))]
    return out


def test_committed_runs_without_tag_are_one_unknown_version(committed):
    from analysis.frames import versions_note

    assert load.check_versions(committed) == {"unknown": 162}
    assert versions_note(committed).startswith("Code version unknown for all 162 runs")
    assert versions_note(committed.assign(code_version="git:aaaaaaaaaaaa")) is None


def test_two_versions_refused_in_one_line_then_pooled(committed):
    mixed = _two_versions(committed)
    with pytest.raises(load.CodeVersionError) as err:
        load.check_versions(mixed)
    msg = str(err.value)
    assert "\n" not in msg and "runs of 2 code versions" in msg
    assert "git:aaaaaaaaaaaa (108 runs)" in msg and "git:bbbbbbbbbbbb+dirty:0123456789ab (54 runs)" in msg
    assert "--pool-versions" in msg
    assert load.check_versions(mixed, pool=True) == {"git:aaaaaaaaaaaa": 108,
                                                     "git:bbbbbbbbbbbb+dirty:0123456789ab": 54}


def test_unknown_mixed_with_a_known_version_is_refused(committed):
    part = committed.copy()
    part.loc[part.index[:10], "code_version"] = "git:aaaaaaaaaaaa"
    with pytest.raises(load.CodeVersionError, match=r"unknown \(152 runs\)"):
        load.check_versions(part)


def test_published_rows_have_no_version(committed):
    both = committed.assign(code_version="git:aaaaaaaaaaaa")
    both.loc[both.index[:20], ["origin", "code_version"]] = ["published", None]
    assert load.check_versions(both) == {"git:aaaaaaaaaaaa": 142}


def test_hypotheses_refuse_a_mixed_frame_and_pool_it_when_marked(committed):
    names = list(hypotheses.HYPOTHESES)[:3]
    mixed = _two_versions(committed)
    with pytest.raises(load.CodeVersionError):
        hypotheses.evaluate(mixed, names)
    load.check_versions(mixed, pool=True)
    pooled = [(v.name, v.verdict, v.p_value, v.n) for v in hypotheses.evaluate(mixed, names)]
    alone = [(v.name, v.verdict, v.p_value, v.n) for v in hypotheses.evaluate(committed, names)]
    assert pooled == alone


def test_report_cli_refuses_then_lists_pooled_versions(committed, tmp_path, capsys):
    csv = tmp_path / "mixed.csv"
    small = _two_versions(committed)
    small = small[small["dataset"] == "ring8"].head(12)
    small.to_csv(csv, index=False)
    out = tmp_path / "report"
    assert report.main(["--csv", str(csv), "--out", str(out), "--hypotheses", "H1",
                        "--no-reference"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lipstudy report: runs of 2 code versions")
    assert not (out / "report.md").exists()
    assert report.main(["--csv", str(csv), "--out", str(out), "--hypotheses", "H1",
                        "--no-reference", "--pool-versions"]) == 0
    md = (out / "report.md").read_text()
    assert "Pooled runs of 2 code versions" in md
    assert "git:aaaaaaaaaaaa: 8 runs" in md and "git:bbbbbbbbbbbb+dirty:0123456789ab: 4 runs" in md
    back = load.frame_from_csv(out / "runs.csv")  # the version travels with the analysis frame
    assert set(back["code_version"]) == {"git:aaaaaaaaaaaa", "git:bbbbbbbbbbbb+dirty:0123456789ab"}
