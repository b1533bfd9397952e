"""Seeds are replicates; two runs of one configuration with the same seed (a study run twice) are
one replicate run twice. The report counted them as 2 seeds and showed a bootstrap "95 % CI
[7.63, 7.63]" over the copies; it now counts distinct seeds and says which configuration ran twice."""

from __future__ import annotations

from analysis import report, tables

from .conftest import make_frame

FLOOR, INIT = 2.0, 400.0


def _run(k, seed, fid):
    return dict(dataset="mnist", loss="ns", k_sn=k, seed=seed, fid=fid, fid_floor=FLOOR,
                fid_init=INIT)


def _twice():
    # k_SN 1: seed 0 run twice (the same value twice); k_SN 10: seeds 0 and 1, once each
    return make_frame([_run(1.0, 0, 7.63), _run(1.0, 0, 7.63), _run(10.0, 0, 9.0),
                       _run(10.0, 1, 11.0)])


def test_a_seed_run_twice_is_one_seed_with_no_interval():
    t = tables.fid_table(_twice(), "k_sn", None)
    row = t[t["k_sn"].astype(float) == 1.0].iloc[0]
    assert str(row["seeds"]).startswith("1 ")  # one seed …
    assert "2 runs" in str(row["seeds"]) and "seed 0 ×2" in str(row["seeds"])  # … run twice
    assert row["95% CI"] == ""  # no interval from one replicate (was "[7.63, 7.63]")
    assert row["FID ours (median)"] == "7.63"
    other = t[t["k_sn"].astype(float) == 10.0].iloc[0]
    assert other["seeds"] == 2 and other["95% CI"].startswith("[9.00, ")


def test_the_report_says_which_configuration_was_run_twice(tmp_path):
    md = report.build(_twice(), tmp_path, reference=None, hypotheses=["H1"]).read_text()
    (line,) = [ln for ln in md.splitlines() if "same seed" in ln]
    assert "1 configuration" in line and "k_sn=1" in line and "seed 0 ×2" in line
    assert "[7.63, 7.63]" not in md
