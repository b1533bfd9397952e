"""A capped FID cell shows the measured value beside the cap: "282.08 (capped)" hid a measured
1,732 (the default study's LS at k_SN 10), and a toy search's four "12.17 (capped)" rows hid 0.15,
3.54, 5.00 and 12.17."""

from __future__ import annotations

from analysis import tables

from .conftest import make_frame

FLOOR, INIT = 2.0, 400.0


def _frame(fids):
    return make_frame([dict(dataset="mnist", loss="ls", k_sn=k, seed=0, fid=f,
                            fid_extractor="inception", fid_floor=FLOOR, fid_init=INIT)
                       for k, f in fids])


def test_a_capped_cell_shows_the_measured_fid():
    t = tables.fid_table(_frame([(1.0, 5.0), (10.0, 1732.0)]), "k_sn", None)
    cells = dict(zip(t["k_sn"].astype(float), t["FID ours (median)"]))
    cap = INIT ** 0.7 * FLOOR ** 0.3  # the FID at quality 0.3 on the runs' scale
    assert cells[10.0] == f"{cap:.2f} (capped; measured 1732)"
    assert cells[1.0] == "5.00"  # learned: no cap, nothing beside it


def test_a_capped_cell_without_a_measurement_says_it_diverged():
    f = _frame([(1.0, 5.0), (10.0, float("nan"))])
    f.loc[f["k_sn"] == 10.0, "diverged"] = True
    t = tables.fid_table(f, "k_sn", None)
    (cell,) = t.loc[t["k_sn"].astype(float) == 10.0, "FID ours (median)"]
    assert cell.endswith(" (capped; diverged)") and "nan" not in cell.lower()


def test_a_capped_point_in_the_figures_is_labelled_with_the_measured_fid():
    from analysis import figures

    grid = _frame([(1.0, 5.0), (10.0, 1732.0)])
    (_, fig), = figures.fid_vs_k(grid)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["1732"]  # only the capped point, with what its run measured
    figures.plt.close(fig)
    search = _frame([(k, f) for k, f in ((0.3, 5.0), (1.7, 900.0), (4.1, 1500.0), (9.2, 6.0))])
    (_, fig), = figures.fid_vs_k(search)  # sampled k_SN: a scatter of the runs
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1500", "900"]
    figures.plt.close(fig)
