"""The calibrated FID scale (a run's FID read against its floor and its untrained start):
quality, the broken threshold and its mapping onto the paper's "Inception FID ≥ 100 is broken",
toys, and runs without a scale."""

import math

import numpy as np
import pandas as pd

from analysis import outcome, scale

from .conftest import make_frame


def test_quality_and_its_inverse():
    assert scale.quality_of(400.0, 2.0, 400.0) == 0.0          # untrained
    assert math.isclose(scale.quality_of(2.0, 2.0, 400.0), 1.0)  # real data
    for q in (0.0, 0.3, 0.7, 1.0):
        f = scale.fid_at_quality(q, 6.07, 1721.0)
        assert math.isclose(scale.quality_of(f, 6.07, 1721.0), q, abs_tol=1e-12)
    assert np.isnan(scale.quality_of(50.0, np.nan, 400.0))     # no scale
    assert np.isnan(scale.quality_of(50.0, 400.0, 400.0))      # degenerate scale


def test_threshold_maps_onto_the_papers_fid_100():
    """Q = 0.3 is the paper's "FID ≥ 100 is broken" on the three datasets (published estimates)."""
    t = scale.mapping_table().set_index("dataset")
    for ds in ("mnist", "cifar10", "celeba"):
        q100 = t.loc[ds, "quality at FID 100"]
        assert 0.24 <= q100 <= 0.35, (ds, q100)             # FID 100 sits at quality ≈ 0.25-0.34
        assert 70 <= t.loc[ds, "FID at quality 0.3"] <= 120  # quality 0.3 is FID ≈ 76-117
        assert t.loc[ds, "extractor"] == "inception" and "estimate" in t.loc[ds, "source"]
    assert t.loc["fashion_mnist_mini", "extractor"] == "domain"
    assert scale.Q_LEARNED == 0.3


def test_run_quality_precedence_and_toys():
    f = make_frame([
        dict(fid=20.0, fid_floor=2.0, fid_init=400.0, fid_quality=0.5, fid_quality_final=0.6),
        dict(fid=20.0, fid_floor=2.0, fid_init=400.0, fid_quality=0.5),
        dict(fid=20.0, fid_floor=2.0, fid_init=400.0),
        dict(fid=20.0, fid_extractor="domain"),
        dict(dataset="ring8", arch="mlp", fid_extractor="data-space", fid=0.1, modes_covered=8.0,
             hq_share=0.95, modes_covered_final=6.0, hq_share_final=scale.HQ_REAL),
    ])
    q = scale.run_quality(f)
    src = [None if pd.isna(v) else v for v in q["quality_source"]]
    assert src == ["fid_quality_final", "fid_quality", "computed", None, "toy"]
    assert q["quality"].iloc[0] == 0.6 and q["quality"].iloc[1] == 0.5
    assert math.isclose(q["quality"].iloc[2], scale.quality_of(20.0, 2.0, 400.0))
    assert np.isnan(q["quality"].iloc[3])
    assert math.isclose(q["quality"].iloc[4], 6 / 8)             # _final variants first


def test_broken_from_the_scale_not_relative_to_the_best():
    """ring8: the old 3×-best cap called every toy run broken; modes and hq decide now."""
    rows = [dict(dataset="ring8", arch="mlp", fid_extractor="data-space", loss=l, seed=s, fid=fd,
                 modes_covered=m, hq_share=h)
            for s in range(2)
            for l, fd, m, h in (("ns", 0.01, 8.0, 0.97), ("ls", 0.5, 8.0, 0.9), ("wgan", 0.2, 1.0, 0.99))]
    df = outcome.with_outcome(make_frame(rows))
    by = df.groupby("loss")["broken"].all()
    assert not by["ns"] and not by["ls"] and by["wgan"]          # 1 of 8 modes: broken
    assert (df.loc[df["loss"] == "wgan", "fid_eff"] == df["fid"].max()).all()  # at the worst FD seen
    # images: quality below 0.3 is broken and sits at the FID of quality 0.3
    img = outcome.with_outcome(make_frame([dict(fid=f, fid_floor=2.0, fid_init=400.0, fid_extractor="domain")
                                           for f in (10.0, 50.0, 90.0, 500.0)]))
    cap = scale.fid_at_quality(0.3, 2.0, 400.0)
    assert list(img["broken"]) == [False, False, True, True]
    assert np.allclose(img["fid_eff"], [10.0, 50.0, cap, cap])
    assert img["learned"].tolist() == [True, True, False, False]


def test_without_a_scale():
    """Inception rows: the paper's FID ≥ 100; other extractors: unknown (never guessed)."""
    df = outcome.with_outcome(make_frame([dict(fid=50.0), dict(fid=150.0),
                                          dict(fid=50.0, fid_extractor="domain"),
                                          dict(fid=5000.0, fid_extractor="domain"),
                                          dict(status="diverged", fid_extractor="domain")]))
    assert list(df["broken"]) == [False, True, False, False, True]
    assert list(df["broken_known"]) == [True, True, False, False, True]
    assert df["learned"].isna().tolist() == [False, False, True, True, False]
    assert pd.isna(df["quality"]).all()


def test_fmt_never_prints_nan():
    assert scale.fmt(float("nan")) == "—" and scale.fmt(None) == "—" and scale.fmt(math.inf) == "—"
    assert scale.fmt(0.5, ".2f") == "0.50"
