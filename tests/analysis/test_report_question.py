"""The report answers the question its study was made for: the hypotheses in the study file come
first, every other one is one line ("not covered by this study: …"); the scale tables show the
study's own N only (the default study, N = 1,000, printed a measured N = 500 row)."""

from __future__ import annotations

import re

from analysis import hypotheses as H
from analysis import report, scale

from .conftest import make_frame

FLOOR, INIT = 3.83, 1721.0


def _default_like():
    """NS/LS/WGAN-SN at k_SN 0.5, 1, 10 (the default study's grid), N = 1,000, domain extractor."""
    rows = []
    for k in (0.5, 1.0, 10.0):
        for loss in ("ns", "ls", "wgan"):
            broken = k == 10.0 and loss != "wgan"
            w = 0.5 * k ** 4
            rows.append(dict(dataset="fashion_mnist_mini", fid_extractor="domain", fid_samples=1000,
                             arch="dcgan32", loss=loss, k_sn=k, fid=1000.0 if broken else 30.0,
                             fid_floor=FLOOR, fid_init=INIT, omega_bound=64 * k ** 4,
                             lipschitz_k=k ** 4, lipschitz_certified=2 * k ** 4,
                             omega_real_min=-w, omega_real_max=w, omega_fake_min=-w / 2,
                             omega_fake_max=w / 2, omega_union_min=-w, omega_union_max=w))
    return make_frame(rows)


def _sections(md: str) -> dict[str, str]:
    parts = re.split(r"^## ", md, flags=re.M)
    return {p.splitlines()[0]: p for p in parts[1:]}


def test_the_hypotheses_the_study_was_designed_for_come_first_the_others_in_one_line(tmp_path):
    designed = H.resolve(["H1", "domain-restriction"])
    md = report.build(_default_like(), tmp_path, reference=None,
                      designed_for=["H1", "domain-restriction"]).read_text()
    sec = _sections(md)
    table = [ln for ln in sec["Verdicts"].splitlines() if ln.startswith("| ")][1:]
    assert [ln.split("|")[1].strip() for ln in table] == designed  # only these, in order
    others = [n for n in H.HYPOTHESES if n not in designed]
    lines = [ln for ln in sec["Verdicts"].splitlines() if ln.startswith("Not covered by this study")]
    assert len(lines) == len(others)
    for name in others:  # each exactly once, on one line
        assert sum(f"`{name}`" in ln for ln in lines) == 1, name
    claims = sec["Each claim: the paper's words, the paper's data, our runs"]
    assert [h[4:].split(":")[0] for h in claims.splitlines() if h.startswith("### ")] == designed
    assert "no runs of WGAN-ALR" in md and "### alr-beats-gp" not in md


def test_lipstudy_report_reads_what_the_study_was_designed_for_from_its_parent(mlflow_store,
                                                                                tmp_path):
    uri = mlflow_store["uri"]
    assert report.main(["--experiment", "toy-study", "--tracking-uri", uri, "--out",
                        str(tmp_path), "--no-attach", "--no-histories"]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "This study was designed for: H1, domain-omega-shrinks" in md
    table = [ln for ln in _sections(md)["Verdicts"].splitlines() if ln.startswith("| ")][1:]
    assert [ln.split("|")[1].strip() for ln in table] == H.resolve(["H1", "domain-restriction"])


def test_the_scale_tables_show_this_studys_n_only():
    frame = _default_like()
    assert "500" not in set(scale.mapping_table(frame=frame)["N"])
    assert "500" in set(scale.mapping_table()["N"])  # without runs: the measurement as made
    at500 = make_frame([dict(dataset="fashion_mnist_mini", fid_extractor="domain",
                             fid_samples=500, k_sn=1.0, fid=30.0)])
    assert "500" in set(scale.mapping_table(frame=at500)["N"])
