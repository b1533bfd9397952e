"""The report reads right on an Optuna search: continuous k_SN and α, a frame
typed as the trainer logs it (MLflow params are strings → ``load.type_columns``). No statistic
prints as "nan", no figure is empty, trend hypotheses work on the sampled values, and a verdict
without data says in words what it needs."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from analysis import curves, figures, hypotheses, load, report

N_CONFIGS, SEEDS = 40, 2
FLOOR = 3.2                      # CIFAR-10 at N = 5,000 (synthetic)
MNC = 3 * 32 * 32               # Theorem 1: bound = K · 2·sqrt(m·n·c)


def _fid(loss: str, reg: str, k: float, alpha: float, rng) -> float:
    """Trains (FID ≈ 20) while the loss's domain K·α stays small, breaks (≈ 350) beyond; WGAN is
    α-invariant and trains at every K (Lipschitz paper Table 2, 5)."""
    if reg != "sn":
        return 30.0 * math.exp(rng.normal(0, 0.1))
    dom = math.log10(k ** 4 * alpha)
    good = loss == "wgan" or dom < 2.0
    return (20.0 if good else 350.0) * math.exp(rng.normal(0, 0.1))


def search_frame(seed: int = 0):
    """Configurations sampled like study/presets/search-lipschitz.yaml (TPE aside), 2 seeds each."""
    rng = np.random.default_rng(seed)
    rows, hist = [], []
    for c in range(N_CONFIGS):
        loss = ["ns", "ls", "wgan", "hinge"][c % 4]
        reg = "sn" if c % 5 else ["gp", "none"][c // 5 % 2]
        k = float(10 ** rng.uniform(-1, 2)) if reg == "sn" else None
        alpha = float(10 ** rng.uniform(-25, 11))
        eps = float(10 ** rng.uniform(-16, -4))
        opt = ["rmsprop", "adam"][c % 2]
        for s in range(SEEDS):
            K = k ** 4 if k else 1.0
            params = dict(dataset="cifar10", download="True", resolution="32", arch="dcgan32",
                          width="1.0", d_bias="True", d_norm="none", z_dim="100", loss=loss,
                          alpha=repr(alpha), regularizer=reg, optimizer=opt, lr_d="5e-05",
                          lr_g="5e-05", eps=repr(eps), n_dis="1", iterations="100000",
                          batch_size="64", seed=str(s), stats_every="200", eval_every="10000",
                          fid_samples="5000", fid_final_samples="5000", fid_extractor="inception",
                          fid_ref_split="test", device="cuda", lipschitz_k=repr(K),
                          n_d_layers="4", omega_bound=repr(K * 2 * math.sqrt(MNC)))
            if reg == "sn":
                params["k_sn"] = repr(k)
            if reg == "gp":
                params.update(k_gp="1.0", gp_lambda="10.0", gp_mode="two-sided")
            init = 440.0 * math.exp(rng.normal(0, 0.02))
            fid = _fid(loss, reg, k or 1.0, alpha, rng)
            diverged = reg == "sn" and loss != "wgan" and math.log10(K * alpha) > 9
            q = math.log(init / fid) / math.log(init / FLOOR)
            w = 0.05 * K * math.exp(rng.normal(0, 0.05))
            sigma = K * 1.1
            m = dict(fid=fid, fid_final=fid, kid=fid / 1e3, fid_floor=FLOOR, fid_init=init,
                     fid_quality=q, fid_quality_final=q, omega_real_min=-w / 2, omega_real_max=w / 2,
                     omega_fake_min=-w / 3, omega_fake_max=w / 3, omega_union_min=-w * 0.8,
                     omega_union_max=w * (1.6 if loss == "wgan" else 0.6), psi_min=-0.5 - 0.01 * w,
                     psi_max=-0.5 + 0.01 * w, grad_norm_real=K, grad_norm_fake=K,
                     diverged=1.0 if diverged else 0.0, step_time_median_ms=6.0)
            if reg == "sn":
                m["sn_sigma_product"] = sigma
                m["lipschitz_certified"] = 2.5 * sigma   # a conv's operator norms exceed Π σ
            if diverged:
                m["fid"] = m["fid_final"] = m["fid_quality"] = m["fid_quality_final"] = float("nan")
            rid = f"search-{c:03d}-s{s}"
            row = {**params, **{k_: str(v) for k_, v in m.items()}}
            row.update(run_id=rid, run_name=rid, experiment="search-lipschitz", parent_run_id="p",
                       status="diverged" if diverged else "finished", origin="run",
                       source="mlflow:search-lipschitz",
                       diverged_reason=REASON if diverged else None)
            rows.append(row)
            steps = [20000] if diverged else list(range(10000, 100001, 10000))
            for j, st in enumerate(steps):
                f_st = init * (fid / init) ** ((j + 1) / len(steps))
                hist += [(rid, "fid", st, f_st), (rid, "fid_quality", st, math.log(init / f_st) / math.log(init / FLOOR))]
                for name in ("omega_real_min", "omega_real_max", "omega_fake_min", "omega_fake_max"):
                    hist.append((rid, name, st, m[name] * (0.5 + 0.5 * (j + 1) / len(steps))))
                hist.append((rid, "omega_bound", st, K * 2 * math.sqrt(MNC)))
                if reg == "sn":
                    hist.append((rid, "sn_sigma_product", st, sigma))
    frame = load.concat([load.type_columns(pd.DataFrame(rows))])
    histories = pd.DataFrame(hist, columns=["run_id", "metric", "step", "value"])
    return frame, histories


@pytest.fixture(scope="module")
def search():
    return search_frame()


def test_the_frame_is_typed_like_the_trainers(search):
    f, _ = search
    assert f["k_sn"].dtype == float and f["alpha"].dtype == float and f["seed"].dtype == "Int64"
    assert f["fid_quality_final"].dtype == float and f["fid_final_samples"].dtype == "Int64"
    assert f[f["regularizer"] == "sn"]["k_sn"].nunique() > 20          # continuous, not a grid


def test_trend_hypotheses_work_on_sampled_values(search):
    f, h = search
    vs = {v.name: v for v in hypotheses.evaluate(f, histories=h)}
    assert vs["domain-omega-shrinks"].verdict == "supported"
    assert "continuous (sampled)" in vs["domain-omega-shrinks"].details
    a = vs["alpha-compensates-k"]          # few k_SN ≥ 5 runs at α ≤ 1 break here: a weak trend
    assert a.n >= 10 and a.statistic > 0 and "no stratum" not in a.missing, a.details
    # α log-uniform over 36 decades leaves (almost) no SN run near α = 1: H1 says what it needs
    assert vs["H1"].verdict == "inconclusive" and "need ≥ 2 losses" in vs["H1"].missing
    assert vs["domain-omega-bound"].verdict == "supported"
    assert "Π σ / K_certified median 0.4" in vs["domain-omega-bound"].details
    for v in vs.values():
        for x in (v.statistic, v.effect_size, v.p_value):
            assert x is None or math.isfinite(x), v.name
        if v.verdict == "inconclusive":
            assert v.missing and "nan" not in v.missing.lower(), v.name


def test_h1_on_a_search_over_k_sn_alone_uses_a_rank_test():
    """k_SN sampled at α = 1: no complete (k_SN, seed) blocks, Kruskal-Wallis over losses instead."""
    rng = np.random.default_rng(1)
    rows = []
    for c in range(30):
        loss, k = ["ns", "ls", "wgan"][c % 3], float(10 ** rng.uniform(0.7, 2))
        fid = (20.0 if loss == "wgan" else 350.0) * math.exp(rng.normal(0, 0.1))
        rows.append(dict(run_id=f"k{c}", loss=loss, regularizer="sn", k_sn=repr(k), alpha="1.0",
                         seed="0", dataset="cifar10", fid_extractor="inception", fid=str(fid),
                         fid_floor=str(FLOOR), fid_init="440.0", status="finished", origin="run"))
    rows += [dict(rows[0], run_id=f"ref{s}", k_sn="1.0", seed=str(s), fid="25.0") for s in range(2)]
    f = load.concat([load.type_columns(pd.DataFrame(rows))])
    v = hypotheses.HYPOTHESES["H1"](f)
    assert "Kruskal-Wallis" in v.details and v.verdict == "contradicted", (v.missing, v.details)
    assert v.effect_name == "ε² (rank)" and v.n == 30
    same_values = 30.0 + 0.5 * (np.arange(len(f)) // 3)        # each loss gets the same FIDs
    alike = f.assign(fid=np.where(f["run_id"].str.startswith("ref"), 25.0, same_values))
    assert hypotheses.HYPOTHESES["H1"](alike).verdict == "supported"   # every loss learned alike
    broken = f.assign(fid=np.where(f["run_id"].str.startswith("ref"), 25.0,
                                   350.0 * np.exp(rng.normal(0, 0.1, len(f)))))
    v = hypotheses.HYPOTHESES["H1"](broken)     # every loss broken alike: ties at the cap, no evidence
    assert v.verdict == "inconclusive" and "smallest p this design can give 1" in v.details


REASON = "non-finite loss_d=nan at step 20000"   # the trainer's words, quoted in the run list


def test_report_on_a_search_has_no_nan_and_no_empty_figure(search, tmp_path):
    f, h = search
    md = report.build(f, tmp_path / "rep", histories=h)
    text = md.read_text()
    assert REASON in text
    assert not re.search(r"\bnan\b", text.replace(REASON, ""), flags=re.I), \
        [l for l in text.replace(REASON, "").splitlines() if re.search(r"\bnan\b", l, flags=re.I)][:5]
    html = (tmp_path / "rep" / "report.html").read_text()
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html).replace(REASON, "")
    assert not re.search(r"\bnan\b", html, flags=re.I)
    # the FID vs k_SN section says something: the rank-correlation table and the scatter
    sec = text.split("## FID vs k_SN")[1].split("\n## ")[0]
    assert "Spearman ρ(log k_sn, FID)" in sec and "fid_vs_k_cifar10_inception" in sec
    # every figure the report draws has data, and every image it references exists
    skipped: list[str] = []
    items = (figures.fid_vs_k(f, skipped=skipped) + figures.fid_vs_alpha(f, skipped=skipped)
             + figures.omega_intervals(h, f, skipped=skipped) + figures.grad_norm_boxes(f, h)
             + curves.learning_curves(h, f, skipped=skipped))
    assert items and all(figures.has_data(fig) for _, fig in items)
    for _, fig in items:
        figures.plt.close(fig)
    refs = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert refs and all((tmp_path / "rep" / r).stat().st_size > 2000 for r in refs)
    assert {p.name for p in (tmp_path / "rep" / "figures").glob("*.png")} == {r.split("/")[1] for r in refs}
    assert any("omega_intervals_cifar10_" in r for r in refs) and any("curves_" in r for r in refs)
    # the scale of the runs opens the report
    assert text.index("## The FID scale") < text.index("## Verdicts") < text.index("## Samples")
    assert "| cifar10 | inception | 5000 |" in text


def test_empty_figures_are_left_out_with_a_line():
    """Ω-interval figures for runs without k_SN (GP, none) used to be blank axes with an empty legend."""
    f = load.concat([load.type_columns(pd.DataFrame([
        dict(run_id=f"g{i}", loss=l, regularizer="gp", k_gp="1.0", dataset="cifar10", status="finished",
             origin="run", seed=str(i)) for i, l in enumerate(("ns", "wgan"))]))])
    h = pd.DataFrame([(f"g{i}", m, st, v) for i in range(2) for st in (1, 2)
                      for m, v in (("omega_real_min", -1.0), ("omega_real_max", 1.0))],
                     columns=["run_id", "metric", "step", "value"])
    skipped: list[str] = []
    assert figures.omega_intervals(h, f, skipped=skipped) == []
    sn = f.assign(regularizer="sn", k_sn=[1.0, 2.0])
    h_nan = h.assign(value=float("nan"))
    assert figures.omega_intervals(h_nan, sn, skipped=skipped) == []
    assert skipped and all("left out, nothing to draw" in s for s in skipped)
