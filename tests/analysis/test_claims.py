"""Every hypothesis against its paper (``analysis.claims``): the quote is the paper's own words, the
report shows claim / paper's data / our runs and says in words whether ours agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis import claims, report
from analysis.hypotheses import HYPOTHESES
from tests.analysis.conftest import make_frame

PAPERS = Path(__file__).resolve().parents[3] / "shared" / "papers"


def test_every_hypothesis_has_a_claim():
    assert set(claims.CLAIMS) == set(HYPOTHESES)
    for name, c in claims.CLAIMS.items():
        assert c.paper_verdict in ("supported", "contradicted"), name
        assert c.tables or c.no_table, f"{name}: neither a table nor what the paper shows instead"


@pytest.mark.skipif(not PAPERS.is_dir(), reason="the papers' text is not beside this checkout")
def test_quotes_are_the_papers_words():
    text = " ".join(p.read_text(encoding="utf-8") for p in PAPERS.glob("*.txt"))
    flat = re.sub(r"\s+", " ", text.replace("*", ""))
    for name, c in claims.CLAIMS.items():
        assert re.sub(r"\s+", " ", c.quote) in flat, f"{name}: quote not found in the papers"


def test_agreement_words():
    assert claims.agreement("H1", "contradicted") == "H1 rejected — agrees with the paper"
    assert claims.agreement("H1", "supported") == "H1 not rejected — disagrees with the paper"
    assert claims.agreement("degenerate-losses", "supported").endswith("agrees with the paper")
    assert claims.agreement("degenerate-losses", "contradicted").endswith("disagrees with the paper")
    assert claims.agreement("gran-k-eps", "inconclusive").startswith("inconclusive — neither")


def test_report_shows_claim_paper_ours_and_agreement(tmp_path):
    rows = [dict(loss=l, k_sn=k, seed=s, fid=f * (1 + 0.05 * s), arch="dcgan32", lipschitz_k=k ** 4,
                 n_d_layers=4, omega_bound=64 * k ** 4)
            for l, f in (("ns", 30.0), ("wgan", 35.0)) for k in (1.0, 10.0) for s in range(3)]
    md = report.build(make_frame(rows), tmp_path / "rep", max_sample_configs=0).read_text()
    sec = md[md.index("## Each claim"):]
    for name, c in claims.CLAIMS.items():
        block = sec[sec.index(f"### {name}:"):]
        block = block[:block.index("\n### ", 4)] if "\n### " in block[4:] else block
        assert c.quote[:60] in block, name
        assert "**The paper's data.**" in block and "**Our runs.**" in block, name
        assert re.search(r"agrees with the paper|disagrees with the paper|neither agrees", block), name
    h1 = sec[sec.index("### H1:"):]
    paper = h1[h1.index("**The paper's data.**"):h1.index("**Our runs.**")]
    # the same test on the paper's Table 2 rejects H1 (WGAN stays good at k_SN ≥ 5)
    assert "Table 2" in paper and "gives **contradicted**" in paper
