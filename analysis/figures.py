"""The papers' figures and tables re-made from a trial frame (matplotlib, Agg backend).

* :func:`fid_vs_k` — FID vs k_SN per loss, one panel per dataset × extractor (Lipschitz paper
  Table 2's line plots); the paper's line dashed beside ours where the dataset matches. On a
  search (k_SN sampled, not a grid) one point per run instead, every α.
* :func:`fid_vs_alpha` — FID vs α per loss at each k_SN (Table 5a/5b line plots); on a search one
  scatter of every SN run.
* :func:`omega_intervals` — Ω_i as intervals over iterations per k_SN (Fig. 1a; y in symlog), SN
  runs only, at most ``max_levels`` k_SN values spread over the range.
* :func:`omega_psi_table` — Ω∪ and Ψ (Eq. 9) per k_SN (Fig. 1b), the paper's numbers beside.
* :func:`grad_norm_boxes` — ‖∇ₓf‖ at real and fake samples per method (GraN-GAN Fig. 3).

Plotted FID is the median over seeds of the capped FID (``analysis.outcome``: broken/diverged
runs sit at the cap, labelled in grey with the FID they measured); the bars span the seeds'
min–max. Each function returns
``[(name, Figure)]`` and never an empty figure: a figure with nothing to draw is left out, and
the reason goes to ``skipped`` (a list the caller passes) for the report to print. :func:`save`
writes them as PNG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.outcome import FID_CAP_INCEPTION, Q_LEARNED, with_outcome  # noqa: E402
from analysis.frames import is_continuous  # noqa: E402
from trainables.names import (  # noqa: E402
    ALPHA, DATASET, DIVERGED, FID, FID_EXTRACTOR, GRAD_NORM_FAKE, GRAD_NORM_REAL, K_SN, LOSS,
    OMEGA_FAKE_MAX, OMEGA_FAKE_MIN, OMEGA_REAL_MAX, OMEGA_REAL_MIN, OMEGA_UNION_MAX,
    OMEGA_UNION_MIN, PSI_MAX, PSI_MIN, REGULARIZER, SEED)

LOSS_ORDER = ["ns", "mm", "ls", "ls0", "wgan", "hinge", "softhinge", "cos", "exp"]


def loss_color(loss: str) -> tuple[float, float, float, float]:
    """The RGBA colour every figure draws ``loss`` in: tab10 in :data:`LOSS_ORDER`, an unknown
    loss in the colour after the known ones."""
    i = LOSS_ORDER.index(loss) if loss in LOSS_ORDER else len(LOSS_ORDER)
    return plt.get_cmap("tab10")(i % 10)


def _prepared(frame: pd.DataFrame, fid_cap: float, q_broken: float) -> pd.DataFrame:
    df = with_outcome(frame, fid_cap, q_broken)
    for col, default in ((ALPHA, 1.0), (FID_EXTRACTOR, "inception"), (REGULARIZER, ""),
                         (LOSS, ""), (DATASET, ""), ("origin", "run")):
        if col not in df.columns:
            df[col] = default
        df[col] = df[col].fillna(default)
    return df


def fid_series(frame: pd.DataFrame, x: str, *, fid_cap: float = FID_CAP_INCEPTION,
               q_broken: float = Q_LEARNED) -> pd.DataFrame:
    """Median / min / max capped FID and n per (dataset, extractor, loss, x) — what the plots draw."""
    df = _prepared(frame, fid_cap, q_broken)
    df = df[df["fid_eff"].notna() & df[x].notna()] if x in df.columns else df.iloc[0:0]
    if df.empty:
        return pd.DataFrame(columns=[DATASET, FID_EXTRACTOR, LOSS, x, "median", "min", "max", "n",
                                     "measured", "capped"])
    keys = [DATASET, FID_EXTRACTOR, LOSS, x]
    out = df.groupby(keys)["fid_eff"].agg(median="median", min="min", max="max", n="size")
    # what a capped point hides: the median FID its runs measured (NaN: none measured)
    fid = pd.to_numeric(df[FID], errors="coerce") if FID in df else pd.Series(np.nan, df.index)
    raw = df.assign(_raw=fid.where(df["broken"].astype(bool)))
    out["measured"] = raw.groupby(keys)["_raw"].median()
    out["capped"] = df.groupby(keys)["broken"].any().astype(bool)
    return out.reset_index()


def _annotate_measured(ax, x, y, measured) -> None:
    """Write the measured FID beside each capped point (the cap alone reads as a flat line)."""
    for xi, yi, m in zip(x, y, measured):
        if np.isfinite(m):
            ax.annotate(f"{m:.4g}", (xi, yi), textcoords="offset points", xytext=(3, 4),
                        fontsize=6, color="dimgray")


def _line_panel(ax, ours: pd.DataFrame, paper: pd.DataFrame | None, x: str):
    for loss in sorted(ours[LOSS].unique(), key=lambda s: (LOSS_ORDER + [s]).index(s)):
        s = ours[ours[LOSS] == loss].sort_values(x)
        ax.plot(s[x], s["median"], "o-", color=loss_color(loss), label=f"{loss} (ours)")
        ax.vlines(s[x], s["min"], s["max"], color=loss_color(loss), alpha=0.4)
        if "measured" in s:
            capped = s[s["capped"].astype(bool)]
            _annotate_measured(ax, capped[x], capped["median"], capped["measured"].astype(float))
    if paper is not None and len(paper):
        for loss in sorted(paper[LOSS].unique(), key=lambda s: (LOSS_ORDER + [s]).index(s)):
            s = paper[paper[LOSS] == loss].sort_values(x)
            ax.plot(s[x], s["median"], "s--", color=loss_color(loss), alpha=0.6, label=f"{loss} (paper)")
    ax.set_xscale("log")
    ax.set_ylabel("FID (median over seeds, capped; grey: measured)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _paper_for(reference: pd.DataFrame | None, dataset: str, x: str, **fixed) -> pd.DataFrame | None:
    if reference is None or not len(reference):
        return None
    ref = reference[(reference[DATASET] == dataset) & reference[FID].notna()]
    for k, v in fixed.items():
        if k in ref.columns:
            ref = ref[np.isclose(ref[k].astype(float), v, rtol=1e-6, atol=0)]
    if ref.empty:
        return None
    return fid_series(ref, x)


def has_data(fig) -> bool:
    """Does any axes of ``fig`` show a data point (line, collection, patch or image)?"""
    for ax in fig.axes:
        for ln in ax.get_lines():
            if len(ln.get_xdata()) and np.isfinite(np.asarray(ln.get_ydata(), float)).any():
                return True
        for c in ax.collections:
            if len(c.get_offsets()) or (hasattr(c, "get_segments") and len(c.get_segments())) \
                    or (hasattr(c, "get_paths") and len(c.get_paths())):
                return True
        if ax.images or [p for p in ax.patches if p.get_height() and p.get_width()]:
            return True
    return False


def _keep(out: list, name: str, fig, skipped: list[str] | None, why: str) -> None:
    if has_data(fig):
        out.append((name, fig))
    else:
        plt.close(fig)
        if skipped is not None:
            skipped.append(f"{name}: left out, nothing to draw ({why})")


def _scatter_panel(ax, df: pd.DataFrame, x: str, title: str, color_by_loss: bool = True):
    for loss in sorted(df[LOSS].unique(), key=lambda s: (LOSS_ORDER + [s]).index(s)):
        s = df[df[LOSS] == loss]
        broken = s["broken"].astype(bool)
        ax.scatter(s.loc[~broken, x], s.loc[~broken, "fid_eff"], color=loss_color(loss), s=18,
                   label=f"{loss} ({len(s)} runs)")
        if broken.any():
            ax.scatter(s.loc[broken, x], s.loc[broken, "fid_eff"], color=loss_color(loss), s=18,
                       marker="x", label=f"{loss} broken (at the cap)")
            if FID in s:
                _annotate_measured(ax, s.loc[broken, x], s.loc[broken, "fid_eff"],
                                   pd.to_numeric(s.loc[broken, FID], errors="coerce"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("FID (capped; × = broken, grey: measured)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)


ALPHA_LABEL = "α (domain scale, Eq. 11)"


def _line_figure(out: list, name: str, ours: pd.DataFrame, paper: pd.DataFrame | None, x: str,
                 xlabel: str, title: str, skipped: list[str] | None, why: str) -> None:
    """One line-plot figure (:func:`_line_panel`), kept in ``out`` when it shows data."""
    fig, ax = plt.subplots(figsize=(6, 4))
    _line_panel(ax, ours, paper, x)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _keep(out, name, fig, skipped, why)


def _scatter_figure(out: list, name: str, df: pd.DataFrame, x: str, xlabel: str, title: str,
                    skipped: list[str] | None) -> None:
    """One scatter figure of sampled runs (:func:`_scatter_panel`), kept when it shows data."""
    fig, ax = plt.subplots(figsize=(6, 4))
    _scatter_panel(ax, df, x, title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    _keep(out, name, fig, skipped, "no SN run with a FID")


def fid_vs_k(frame: pd.DataFrame, *, reference: pd.DataFrame | None = None,
             fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED,
             skipped: list[str] | None = None):
    """Table 2's line plots: SN runs at α = 1, FID vs k_SN (log x), one figure per dataset × extractor.
    When k_SN or α was sampled (a search), one point per SN run at every α instead."""
    if REGULARIZER not in frame or K_SN not in frame:
        return []
    df = frame[frame[REGULARIZER] == "sn"]
    out = []
    prepared = _prepared(df, fid_cap, q_broken) if len(df) else df
    for (ds, ext), g in (prepared.groupby([DATASET, FID_EXTRACTOR]) if len(prepared) else []):
        g = g[g["fid_eff"].notna() & g[K_SN].notna()]
        if g.empty:
            continue
        sampled = is_continuous(g, K_SN) or is_continuous(g, ALPHA)
        if sampled:
            _scatter_figure(out, f"fid_vs_k_{ds}_{ext}", g, K_SN, "k_SN",
                            f"FID vs k_SN — {ds}, {ext} (sampled: a point per run, all α)", skipped)
            continue
        a1 = g[np.isclose(g[ALPHA].astype(float), 1.0, rtol=1e-6, atol=0)]
        series = fid_series(a1, K_SN, fid_cap=fid_cap, q_broken=q_broken)
        if series.empty:
            if skipped is not None:
                skipped.append(f"fid_vs_k_{ds}_{ext}: left out, no SN run at α = 1")
            continue
        paper = _paper_for(reference, ds, K_SN, alpha=1.0) if ext == "inception" else None
        _line_figure(out, f"fid_vs_k_{ds}_{ext}", series, paper, K_SN, "k_SN",
                     f"FID vs k_SN — {ds}, {ext} features (Table 2)", skipped, "no SN run at α = 1")
    return out


def fid_vs_alpha(frame: pd.DataFrame, *, reference: pd.DataFrame | None = None,
                 fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED,
                 skipped: list[str] | None = None):
    """Table 5's line plots: SN runs, FID vs α (log x) per k_SN, one figure per dataset × extractor × k_SN.
    When k_SN or α was sampled (a search), one scatter of every SN run per dataset × extractor."""
    if ALPHA not in frame.columns or K_SN not in frame.columns or REGULARIZER not in frame:
        return []
    df = frame[frame[REGULARIZER] == "sn"]
    out = []
    if df.empty:
        return out
    prepared = _prepared(df, fid_cap, q_broken)
    grid = []
    for (ds, ext), g in prepared.groupby([DATASET, FID_EXTRACTOR]):
        g = g[g["fid_eff"].notna() & g[ALPHA].notna()]
        if g.empty or g[ALPHA].nunique() < 2:
            continue
        if is_continuous(g, K_SN) or is_continuous(g, ALPHA):
            _scatter_figure(out, f"fid_vs_alpha_{ds}_{ext}", g, ALPHA, ALPHA_LABEL,
                            f"FID vs α — {ds}, {ext} (sampled: a point per run, all k_SN)", skipped)
        else:
            grid.append(ds)
    for k in sorted(df[K_SN].dropna().unique()):
        sub = df[np.isclose(df[K_SN].astype(float), k, rtol=1e-6, atol=0) & df[DATASET].isin(grid)]
        if sub[ALPHA].nunique() < 2:
            continue
        series = fid_series(sub, ALPHA, fid_cap=fid_cap, q_broken=q_broken)
        for (ds, ext), s in series.groupby([DATASET, FID_EXTRACTOR]):
            if s[ALPHA].nunique() < 2:
                continue
            paper = _paper_for(reference, ds, ALPHA, k_sn=k) if ext == "inception" else None
            _line_figure(out, f"fid_vs_alpha_k{k:g}_{ds}_{ext}", s, paper, ALPHA, ALPHA_LABEL,
                         f"FID vs α at k_SN = {k:g} — {ds}, {ext} features (Table 5)", skipped,
                         "no FID at two α")
    return out


def omega_intervals(histories: pd.DataFrame, frame: pd.DataFrame, *, max_runs_per_k: int = 1,
                    max_levels: int = 6, skipped: list[str] | None = None):
    """Fig. 1a: the interval Ω_i = [min f, max f] over real and fake outputs at each logged step,
    one colour per k_SN (first ``max_runs_per_k`` seeds; at most ``max_levels`` k_SN values spread
    over the range, e.g. on a search), one figure per dataset × loss. SN runs only (k_SN is the
    axis of Fig. 1a; other regularizers have no k_SN)."""
    need = {OMEGA_REAL_MIN, OMEGA_REAL_MAX, OMEGA_FAKE_MIN, OMEGA_FAKE_MAX}
    if histories is None or histories.empty or not need & set(histories["metric"]):
        return []
    wide = histories[histories["metric"].isin(need)].pivot_table(
        index=["run_id", "step"], columns="metric", values="value", aggfunc="last").reset_index()
    lo = wide[[c for c in (OMEGA_REAL_MIN, OMEGA_FAKE_MIN) if c in wide]].min(axis=1)
    hi = wide[[c for c in (OMEGA_REAL_MAX, OMEGA_FAKE_MAX) if c in wide]].max(axis=1)
    wide = wide.assign(lo=lo, hi=hi)
    wide = wide[np.isfinite(wide["lo"]) & np.isfinite(wide["hi"])]
    meta = frame.drop_duplicates("run_id").set_index("run_id")
    with_hist = meta[meta.index.isin(set(wide["run_id"]))]
    if K_SN in meta and REGULARIZER in meta:
        meta = meta[(meta[REGULARIZER] == "sn") & meta[K_SN].notna()]
    else:
        meta = meta.iloc[0:0]
    wide = wide[wide["run_id"].isin(meta.index)]
    if wide.empty:
        if skipped is not None:
            skipped.append("omega_intervals: left out, nothing to draw (no SN run with a finite Ω_i "
                           f"history among the {len(with_hist)} runs that logged Ω; Fig. 1a sorts "
                           "Ω_i by k_SN, and runs of other regularizers have none)")
        return []
    seed = meta[SEED] if SEED in meta else pd.Series(0, index=meta.index)
    wide = wide.join(meta[[DATASET, LOSS, K_SN]].assign(seed=seed), on="run_id")
    out = []
    for (ds, loss), g in wide.groupby([DATASET, LOSS]):
        ks = np.array(sorted(g[K_SN].unique()))
        if len(ks) > max_levels:   # spread over the range (log k), e.g. a search's sampled k_SN
            pick = np.unique(np.round(np.linspace(0, len(ks) - 1, max_levels)).astype(int))
            ks = ks[pick]
        fig, ax = plt.subplots(figsize=(6, 4))
        cmap = plt.get_cmap("viridis")
        steps = np.sort(g["step"].unique())
        dx = (steps[1] - steps[0]) / (len(ks) + 1) if len(steps) > 1 else 1.0
        for j, k in enumerate(ks):
            gk = g[np.isclose(g[K_SN], k, rtol=1e-6, atol=0)]
            for i, rid in enumerate(list(dict.fromkeys(gk.sort_values(SEED)["run_id"]))[:max_runs_per_k]):
                r = gk[gk["run_id"] == rid].sort_values("step")
                ax.vlines(r["step"] + j * dx, r["lo"], r["hi"], color=cmap(j / max(1, len(ks) - 1)),
                          lw=2, label=f"k_SN = {k:.3g}" if i == 0 else None)
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_xlabel("iteration")
        ax.set_ylabel("Ω_i = [min f, max f] (symlog)")
        ax.set_title(f"Ω over training — {ds}, {loss} (Fig. 1a)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        _keep(out, f"omega_intervals_{ds}_{loss}", fig, skipped, "no SN run with a finite Ω_i history")
    return out


def omega_psi_table(frame: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fig. 1b: per (dataset, loss, k_SN) the median over seeds of Ω∪ = [min, max] and Ψ (Eq. 9),
    with n, and the paper's Ω/Ψ beside where the dataset, loss and k_SN match."""
    cols = [OMEGA_UNION_MIN, OMEGA_UNION_MAX, PSI_MIN, PSI_MAX]
    if not set(cols[:2]) <= set(frame.columns) or K_SN not in frame.columns:
        return pd.DataFrame()
    df = frame[frame["status"].isin(["finished", DIVERGED]) & frame[OMEGA_UNION_MIN].notna()]
    df = df[df[REGULARIZER] == "sn"]
    if df.empty:
        return pd.DataFrame()
    have = [c for c in cols if c in df.columns]
    t = df.groupby([DATASET, LOSS, K_SN])[have].median()
    t["n"] = df.groupby([DATASET, LOSS, K_SN]).size()
    t = t.reset_index().sort_values([DATASET, LOSS, K_SN], ascending=[True, True, False])
    if reference is not None and len(reference) and OMEGA_UNION_MIN in reference.columns:
        ref = reference[reference[OMEGA_UNION_MIN].notna()]
        ref = ref[[DATASET, LOSS, K_SN, *[c for c in cols if c in ref.columns]]]
        t = t.merge(ref, on=[DATASET, LOSS, K_SN], how="left", suffixes=("", "_paper"))
    return t.reset_index(drop=True)


def grad_norm_boxes(frame: pd.DataFrame, histories: pd.DataFrame | None = None):
    """GraN-GAN Fig. 3: box plots of ‖∇ₓf‖ at real (blue) and fake (red) samples per method
    (loss-regularizer). With histories, every logged step of every run; else the runs' final values."""
    metrics = [GRAD_NORM_REAL, GRAD_NORM_FAKE]
    df = frame[frame["status"].isin(["finished", DIVERGED])].copy()
    if df.empty:
        return []
    df["method"] = df[LOSS].fillna("?") + "-" + df[REGULARIZER].fillna("?")
    if histories is not None and len(histories) and set(metrics) & set(histories["metric"]):
        h = histories[histories["metric"].isin(metrics)].join(df.set_index("run_id")["method"], on="run_id")
        h = h[h["method"].notna()]
        data = {(m, k): g["value"].to_numpy() for (m, k), g in h.groupby(["method", "metric"])}
    else:
        if not set(metrics) <= set(df.columns):
            return []
        data = {(m, k): g[k].dropna().to_numpy() for m, g in df.groupby("method") for k in metrics}
    methods = sorted({m for m, _ in data})
    if not methods or not any(len(v) for v in data.values()):
        return []
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(methods) + 2), 4))
    for j, (metric, color) in enumerate([(GRAD_NORM_REAL, "tab:blue"), (GRAD_NORM_FAKE, "tab:red")]):
        vals = [data.get((m, metric), np.array([])) for m in methods]
        pos = np.arange(len(methods)) * 3 + j
        keep = [i for i, v in enumerate(vals) if len(v)]
        if keep:
            bp = ax.boxplot([vals[i] for i in keep], positions=pos[keep], widths=0.8, patch_artist=True)
            for patch in bp["boxes"]:
                patch.set_facecolor(color)
                patch.set_alpha(0.5)
    ax.set_xticks(np.arange(len(methods)) * 3 + 0.5)
    ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("‖∇ₓ f‖ (blue real, red fake)")
    ax.set_title("Input-gradient norms (GraN-GAN Fig. 3)", fontsize=9)
    fig.tight_layout()
    return [("grad_norm_boxes", fig)]


def save(figures, out_dir: str | Path, dpi: int = 110) -> list[Path]:
    """Write ``[(name, Figure)]`` as ``out_dir/name.png`` and close them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        p = out_dir / f"{safe}.png"
        fig.savefig(p, dpi=dpi)
        plt.close(fig)
        paths.append(p)
    return paths
