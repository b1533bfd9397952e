"""Figures render with the frame's values; the report writes md/html/figures and attaches to MLflow."""

import numpy as np
import pandas as pd

from analysis import figures, load, reference, report

from .conftest import make_frame


FLOOR, INIT = 2.0, 400.0      # the runs' FID scale (real data, untrained generator)


def _grid():
    rows = []
    for loss, base in (("ns", 10.0), ("wgan", 12.0)):
        for k in (0.5, 1.0, 10.0):
            for s in range(2):
                rows.append(dict(loss=loss, k_sn=k, seed=s, fid=base * k + s, fid_extractor="domain",
                                 dataset="mnist", omega_union_min=-k, omega_union_max=2 * k,
                                 psi_min=-0.5, psi_max=-0.1 * k, grad_norm_real=k, grad_norm_fake=k / 2,
                                 fid_floor=FLOOR, fid_init=INIT))
    return make_frame(rows)


def test_fid_vs_k_plots_the_frames_values(tmp_path):
    f = _grid()
    items = figures.fid_vs_k(f)
    assert [n for n, _ in items] == ["fid_vs_k_mnist_domain"]
    ax = items[0][1].axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    ns = lines["ns (ours)"]
    expect = f[f["loss"] == "ns"].groupby("k_sn")["fid"].median()
    # the broken cap is the FID at quality 0.3 on the runs' own scale: 400^0.7 · 2^0.3 ≈ 81.6
    # (k_SN 10: FID 100-121 → quality < 0.3 → broken, drawn at the cap)
    cap = INIT ** 0.7 * FLOOR ** 0.3
    assert 81 < cap < 82
    assert np.allclose(ns.get_xdata(), expect.index)
    assert np.allclose(ns.get_ydata(), np.minimum(expect.values, cap))
    wgan = f[f["loss"] == "wgan"].groupby("k_sn")["fid"].median()
    assert np.allclose(lines["wgan (ours)"].get_ydata(), np.minimum(wgan.values, cap))
    paths = figures.save(items, tmp_path)
    assert paths[0].exists() and paths[0].stat().st_size > 1000


def test_fid_vs_k_with_paper_line_and_cap():
    ours = make_frame([dict(dataset="mnist", loss="ns", k_sn=k, fid=f)
                       for k, f in ((1.0, 4.0), (5.0, 150.0))])
    items = figures.fid_vs_k(ours, reference=reference.load("lipschitz_table2"))
    lines = {ln.get_label(): ln for ln in items[0][1].axes[0].get_lines()}
    assert list(lines["ns (ours)"].get_ydata()) == [4.0, 100.0]        # broken capped at 100
    assert "ns (paper)" in lines and len(lines["ns (paper)"].get_xdata()) == 7


def test_alpha_omega_psi_and_gradnorm_figures(tmp_path):
    t5 = reference.load("lipschitz_table5a")
    items = figures.fid_vs_alpha(t5)
    assert len(items) == 3
    f = _grid()
    table = figures.omega_psi_table(f)
    row = table[(table["loss"] == "ns") & (table["k_sn"] == 10.0)].iloc[0]
    assert row["omega_union_min"] == -10.0 and row["omega_union_max"] == 20.0 and row["n"] == 2
    fig1b = figures.omega_psi_table(reference.load("lipschitz_fig1b"), reference.load("lipschitz_fig1b"))
    assert (fig1b["omega_union_max"] == fig1b["omega_union_max_paper"]).all()
    boxes = figures.grad_norm_boxes(f)
    assert boxes and len(boxes[0][1].axes[0].artists + boxes[0][1].axes[0].patches) >= 4
    hist = pd.DataFrame([dict(run_id=rid, metric=m, step=st, value=v)
                         for rid in f["run_id"] for st in (100, 200)
                         for m, v in (("omega_real_min", -1.0), ("omega_real_max", 1.0),
                                      ("omega_fake_min", -0.5), ("omega_fake_max", 0.5))])
    om = figures.omega_intervals(hist, f)
    assert {n for n, _ in om} == {"omega_intervals_mnist_ns", "omega_intervals_mnist_wgan"}
    for p in figures.save(items + om + boxes, tmp_path):
        assert p.stat().st_size > 1000


def test_report_build(tmp_path):
    f = load.concat([_grid(), reference.load("lipschitz_table2")])
    md = report.build(f, tmp_path / "rep")
    text = md.read_text()
    assert text.index("## Verdicts") < text.index("## FID vs k_SN")
    assert "| H1 | contradicted |" in text
    assert "| extractor | N | FID paper (Inception) |" in text
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in html and "src='figures/" not in html
    assert len(list((tmp_path / "rep" / "figures").glob("*.png"))) >= 4
    # every FID row of the table names its extractor and N
    lines = [l for l in text.splitlines() if l.startswith("| mnist | ns |")
             and (l.endswith("— |") or "paper Table" in l)]
    assert lines and all(("| domain |" in l and "| 1000 |" in l) or "| inception |" in l for l in lines)


def test_main_from_mlflow_attaches_to_parent(mlflow_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIPSTUDY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    rc = report.main(["--experiment", "toy-study", "--tracking-uri", mlflow_store["uri"],
                      "--out", str(out)])
    assert rc == 0
    assert (out / "report.md").exists() and (out / "report.html").exists()
    assert "attached to parent run" in capsys.readouterr().out
    arts = {a.path for a in mlflow_store["client"].list_artifacts(mlflow_store["parent"], "report")}
    assert {"report/report.md", "report/report.html", "report/runs.csv", "report/figures"} <= arts
    text = (out / "report.md").read_text()
    assert "diverged" in text and "nan in loss_d" in text


def test_main_errors(tmp_path, capsys):
    assert report.main(["--out", str(tmp_path)]) == 2
    assert report.main(["--csv", str(tmp_path / "missing.csv"), "--out", str(tmp_path)]) == 2
    assert "lipstudy report:" in capsys.readouterr().err
    csv = reference.path("lipschitz_degenerate")
    assert report.main(["--csv", str(csv), "--out", str(tmp_path / "r"), "--hypotheses",
                        "degenerate-losses"]) == 0
    assert "| degenerate-losses | supported |" in (tmp_path / "r" / "report.md").read_text()


def test_analysis_never_imports_ray_study_torch_or_the_trainer():
    """Only the names module (``trainables.names``: MLflow names and param types, no imports) and
    the toys' quality (``trainables.metrics.toy_quality``: the formula the trials log, numpy only) are
    shared with the trainer (one home for every name)."""
    import subprocess
    import sys

    code = ("import sys, analysis.load, analysis.hypotheses, analysis.figures, analysis.report, "
            "analysis.reference, analysis.stats; "
            "ok = ('trainables', 'trainables.names', 'trainables.metrics', 'trainables.metrics.toy_quality'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'study', 'torch') "
            "or (m.split('.')[0] == 'trainables' and m not in ok)]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_report_writes_runs_csv_samples_and_learning_curves(mlflow_store, tmp_path, monkeypatch):
    import math

    monkeypatch.setenv("LIPSTUDY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert report.main(["--experiment", "toy-study", "--tracking-uri", mlflow_store["uri"],
                        "--out", str(out), "--no-attach"]) == 0
    # runs.csv: the analysis frame, one row per run (crashed included) with the scale and quality
    runs = load.frame_from_csv(out / "runs.csv")
    assert sorted(runs["run_id"]) == sorted(mlflow_store["trials"])
    by = runs.set_index("run_name")
    ns = by.loc["ns-sn-k1-a1e-25-s0"]
    q = math.log(1700 / 20) / math.log(1700 / 6)
    assert (ns["fid"], ns["fid_final"], ns["fid_floor"], ns["fid_init"]) == (20.0, 20.0, 6.0, 1700.0)
    assert math.isclose(ns["fid_quality_final"], q) and math.isclose(float(ns["quality"]), q)
    assert str(ns["learned"]) == "True" and ns["status"] == "finished"
    assert by.loc["ls-sn-k0.5-a1-s2", "status"] == "crashed" and pd.isna(by.loc["ls-sn-k0.5-a1-s2", "quality"])
    assert pd.isna(by.loc["wgan-sn-k10-a1-s1", "fid_floor"])          # a run logged without the FID scale
    assert (runs["loaded_from"] == "csv").all()
    text = (out / "report.md").read_text()
    # the scale opens the report; then samples (final grid, or the last step's for the diverged run)
    assert text.index("## The FID scale") < text.index("## Verdicts") < text.index("## Samples")
    assert "| fashion_mnist_mini | domain | 1000 | every eval | test | 32 | dcgan32 | 6 | 1700 |" in text
    assert len(list((out / "samples").glob("*.png"))) == 2
    assert "final samples; FID 20, quality 0.79" in text and "step 400 samples" in text
    assert "no samples artifact for 1 configurations (runs wgan-sn-k10-a1-s1)" in text
    sec = text.split("## Learning curves")[1].split("\n## ")[0]
    assert "figures/curves_fashion_mnist_mini_dcgan32_domain.png" in sec
    # the same frame read back from runs.csv: no artifacts behind CSV rows, said in a line
    out2 = tmp_path / "from_csv"
    assert report.main(["--csv", str(out / "runs.csv"), "--out", str(out2)]) == 0
    text2 = (out2 / "report.md").read_text()
    assert "were read from CSV" in text2 and "learning curves need" in text2
