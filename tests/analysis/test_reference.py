import numpy as np
import pytest

from analysis import reference


def test_every_table_loads_with_its_source_named_per_row():
    df = reference.load()
    assert df["source"].notna().all() and (df["origin"] == "published").all()
    sizes = df.groupby("table").size().to_dict()
    assert sizes["Table 2"] == 105 + 33           # Lipschitz 5×3×7, GraN 11×3
    assert sizes["Table 5a"] == 90 and sizes["Table 5b"] == 90
    assert sizes["degenerate-loss table"] == 15 and sizes["Fig. 1b"] == 8
    assert sizes["Table 3"] == 22 and sizes["Table 1"] == 8


@pytest.mark.parametrize("dataset,loss,k,fid", [
    ("mnist", "ns", 5.0, 144.28), ("cifar10", "wgan", 50.0, 23.36), ("celeba", "cos", 1.0, 5.20),
    ("celeba", "exp", 0.2, 18.23), ("mnist", "ls", 50.0, 309.35)])
def test_table2_cells(dataset, loss, k, fid):
    t = reference.load("lipschitz_table2")
    row = t[(t["dataset"] == dataset) & (t["loss"] == loss) & np.isclose(t["k_sn"], k, rtol=1e-6, atol=0)]
    assert len(row) == 1 and row["fid"].iloc[0] == fid
    assert row["fid_extractor"].iloc[0] == "inception" and row["alpha"].iloc[0] == 1.0


def test_table5_degenerate_fig1b_gran_alr_cells():
    t = reference.load("lipschitz_table5a", "lipschitz_table5b", "lipschitz_degenerate",
                       "lipschitz_fig1b", "gran_tables", "alr_table1")
    def one(**kw):
        r = t
        for k, v in kw.items():
            r = r[np.isclose(r[k].astype(float), v, rtol=1e-6, atol=0)] if isinstance(v, float) else r[r[k] == v]
        assert len(r) == 1, kw
        return r.iloc[0]
    assert one(table="Table 5a", dataset="cifar10", loss="ls", alpha=1e-11)["fid"] == 400.91
    assert one(table="Table 5b", dataset="celeba", loss="ls0", alpha=1e11)["fid"] == 315.94
    assert one(table="degenerate-loss table", dataset="celeba", loss="ls0")["fid"] == 8.51
    f = one(table="Fig. 1b", loss="ls", k_sn=5.0)
    assert (f["omega_union_min"], f["omega_union_max"], f["psi_max"]) == (-2.46, 12.02, 24.041)
    g = one(method="GraND-GAN", dataset="celeba")
    assert g["fid"] == 9.377 and g["regularizer"] == "gran" and g["loss"] == "ns"
    assert np.isnan(one(method="NSGAN", dataset="lsun_bedroom")["fid"])
    assert one(method="NSGAN", dataset="lsun_bedroom")["fid_censor"] == 70
    a = one(method="WGAN-ALP")
    assert (a["fid"], a["fid_std"], a["regularizer"]) == (12.96, 0.35, "alr")


def test_unknown_table():
    with pytest.raises(KeyError):
        reference.path("table99")
