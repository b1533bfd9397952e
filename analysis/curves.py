"""What a researcher looks at first: each configuration's samples and its learning curves.

* :func:`learning_curves` — FID and quality (``analysis.scale``: 0 = untrained, 1 = real data)
  against iterations, one line per configuration (median over seeds), the seeds' min–max as a
  band; one figure per dataset × architecture × extractor (and per ``per_figure`` configurations).
* :func:`sample_grids` — each configuration's final sample grid (MLflow artifact
  ``final/samples.png``; else the last ``samples/step_<step:07d>.png``), downloaded from the run's
  tracking store. Rows read from CSV have no artifacts: said in ``skipped``.

Only our own runs (``origin`` = run) — published rows have neither histories nor samples.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import scale  # noqa: E402
from analysis.figures import has_data  # noqa: E402
from analysis.outcome import config_key, usable  # noqa: E402
from analysis.scale import Q_LEARNED, fmt  # noqa: E402
from analysis.frames import config_label  # noqa: E402
from trainables.names import (  # noqa: E402
    ARCH, DATASET, DIVERGED, FID, FID_EXTRACTOR, FID_FINAL, FID_FLOOR, FID_INIT, FID_QUALITY,
    HQ_SHARE, MODES_COVERED, SEED)

CURVE_METRICS = (FID, FID_QUALITY, MODES_COVERED, HQ_SHARE)


def _ours(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "origin" not in frame:
        return frame.iloc[0:0]
    df = usable(frame)
    return df[df["origin"] == "run"].copy()


def _configs(df: pd.DataFrame) -> pd.DataFrame:
    """``_cfg`` (config key as text), ``_label``, ``_stratum`` per row."""
    df = df.assign(_cfg=config_key(df).map(repr))
    labels = {k: config_label(g) for k, g in df.groupby("_cfg", sort=False)}
    df["_label"] = df["_cfg"].map(labels)
    parts = [df[c].astype(object).where(df[c].notna(), "?") if c in df else pd.Series("?", index=df.index)
             for c in (DATASET, ARCH, FID_EXTRACTOR)]
    df["_stratum"] = parts[0].astype(str) + " / " + parts[1].astype(str) + " / " + parts[2].astype(str)
    return df


def step_quality(histories: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Long frame (run_id, step, fid, quality): quality per logged step — the logged
    ``fid_quality``, else computed from ``fid`` and the run's floor / untrained FID; toys: from
    ``modes_covered`` and ``hq_share`` (``analysis.scale``)."""
    cols = ["run_id", "step", FID, "quality"]
    if histories is None or histories.empty:
        return pd.DataFrame(columns=cols)
    h = histories[histories["metric"].isin(CURVE_METRICS) & histories["run_id"].isin(set(frame["run_id"]))]
    if h.empty:
        return pd.DataFrame(columns=cols)
    wide = h.pivot_table(index=["run_id", "step"], columns="metric", values="value",
                         aggfunc="last").reset_index()
    for c in CURVE_METRICS:
        if c not in wide:
            wide[c] = np.nan
    meta = frame.drop_duplicates("run_id").set_index("run_id")
    get = lambda c: wide["run_id"].map(meta[c]) if c in meta else pd.Series(np.nan, index=wide.index)  # noqa: E731
    q = wide[FID_QUALITY].astype(float)
    comp = pd.Series(scale.quality_of(wide[FID].to_numpy(float), get(FID_FLOOR).to_numpy(float),
                                      get(FID_INIT).to_numpy(float)), index=wide.index)
    q = q.fillna(comp)
    ds = get(DATASET)
    toy = ds.isin(list(scale.TOY_MODES))
    if toy.any():
        n_modes = ds.map(scale.TOY_MODES).astype(float)
        tq = scale.toy_quality(wide[MODES_COVERED], n_modes, wide[HQ_SHARE])
        q = q.where(~toy, tq)
    wide["quality"] = q
    # the untrained generator's FID (logged once, fid_init) is the curve's step-0 point, quality 0
    init = frame.drop_duplicates("run_id").set_index("run_id")
    if FID_INIT in init:
        have0 = set(wide.loc[wide["step"] == 0, "run_id"])
        start = init[FID_INIT].astype(float).dropna()
        start = start[[r not in have0 and r in set(wide["run_id"]) for r in start.index]]
        if len(start):
            wide = pd.concat([pd.DataFrame({"run_id": start.index, "step": 0, FID: start.values,
                                            "quality": 0.0}), wide[cols]], ignore_index=True)
    return wide[cols]


def _band(ax, g: pd.DataFrame, y: str, color, label: str, log: bool) -> bool:
    p = g.pivot_table(index="step", columns="run_id", values=y, aggfunc="last").sort_index()
    p = p.where(np.isfinite(p)) if len(p) else p
    if log:
        p = p.where(p > 0)
    if p.empty or not p.notna().any().any():
        return False
    med = p.median(axis=1)
    ax.plot(med.index, med.values, "-o", ms=2.5, color=color, label=label)
    if p.shape[1] > 1:
        ax.fill_between(p.index, p.min(axis=1), p.max(axis=1), color=color, alpha=0.2, lw=0)
    return True


def _curves_figure(g: pd.DataFrame, chunk: list, q_broken: float):
    """One figure of learning curves: FID (left) and quality (right) of the configurations in
    ``chunk``, each a band over its seeds."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("tab10")
    drew_q = False
    for i, c in enumerate(chunk):
        gc = g[g["_cfg"] == c]
        n_seeds = gc["run_id"].nunique()
        label = f"{gc['_label'].iloc[0]} ({n_seeds} seed{'s' if n_seeds > 1 else ''})"
        _band(a1, gc, FID, cmap(i % 10), label, log=True)
        drew_q |= _band(a2, gc, "quality", cmap(i % 10), label, log=False)
    a1.set_yscale("log")
    a1.set_xlabel("iteration")
    a1.set_ylabel("FID (median over seeds; band = min–max)")
    a1.grid(True, which="both", alpha=0.3)
    if a1.get_legend_handles_labels()[0]:
        a1.legend(fontsize=6)
    if drew_q:
        a2.axhline(q_broken, ls="--", color="grey", lw=1)
        a2.axhline(1.0, ls=":", color="grey", lw=1)
        a2.axhline(0.0, ls=":", color="grey", lw=1)
        a2.set_ylabel(f"quality (0 untrained, 1 real data; dashed: {q_broken:g})")
    else:
        a2.text(0.5, 0.5, "no FID scale logged\n(no fid_floor / fid_init)",
                ha="center", va="center", transform=a2.transAxes, fontsize=9)
        a2.set_xticks([])
        a2.set_yticks([])
    a2.set_xlabel("iteration")
    a2.grid(True, alpha=0.3)
    return fig


def learning_curves(histories: pd.DataFrame | None, frame: pd.DataFrame, *,
                    q_broken: float = Q_LEARNED, per_figure: int = 8, max_figures: int = 16,
                    skipped: list[str] | None = None):
    """FID and quality against iterations per configuration (seeds as bands); ``[(name, Figure)]``."""
    skipped = skipped if skipped is not None else []
    df = _ours(frame)
    if df.empty:
        return []
    sq = step_quality(histories, df)
    if sq.empty:
        skipped.append("learning curves: no per-step FID history for these runs")
        return []
    df = _configs(df)
    sq = sq.join(df.drop_duplicates("run_id").set_index("run_id")[["_cfg", "_label", "_stratum"]], on="run_id")
    out, left = [], 0
    for stratum, g in sq.groupby("_stratum", sort=True):
        cfgs = sorted(g["_cfg"].unique(), key=lambda c: g[g["_cfg"] == c]["_label"].iloc[0])
        chunks = [cfgs[i:i + per_figure] for i in range(0, len(cfgs), per_figure)]
        for j, chunk in enumerate(chunks):
            if len(out) >= max_figures:
                left += len(chunk)
                continue
            fig = _curves_figure(g, chunk, q_broken)
            part = f" ({j + 1}/{len(chunks)})" if len(chunks) > 1 else ""
            fig.suptitle(f"Learning curves — {stratum}{part}", fontsize=10)
            fig.tight_layout()
            name = f"curves_{stratum.replace(' / ', '_')}" + (f"_{j + 1}" if len(chunks) > 1 else "")
            if has_data(fig):
                out.append((name, fig))
            else:
                plt.close(fig)
                skipped.append(f"{name}: left out, no finite FID in the histories")
    if left:
        skipped.append(f"learning curves: {left} more configurations not drawn (at most "
                       f"{max_figures} figures of {per_figure})")
    return out


def _from_mlflow(df: pd.DataFrame, skipped: list[str]) -> pd.DataFrame:
    """The runs loaded from MLflow (only they have artifacts); says in ``skipped`` why the others
    show no samples."""
    src = df["loaded_from"] if "loaded_from" in df else pd.Series(None, index=df.index)
    other = df[src != "mlflow"]
    if len(other):
        how = ("were read from CSV, which carries" if (src[other.index] == "csv").all()
               else "were not loaded from MLflow (CSV or a frame built in code): they carry")
        skipped.append(f"sample grids: {len(other)} runs {how} no MLflow artifacts — load the "
                       "experiment from MLflow (lipstudy report --experiment) to see their samples")
    return df[src == "mlflow"]


def _download_grid(row: pd.Series, tmp: Path) -> tuple[Path | None, str]:
    """A run's final sample grid, else its last per-step one, downloaded into ``tmp``: (local
    path or None, which grid it is)."""
    from analysis import load

    uri = row.get("tracking_uri")
    uri = None if uri is None or (isinstance(uri, float) and np.isnan(uri)) else str(uri)
    got, what = load.download_artifact(row["run_id"], "final/samples.png", tmp, uri), "final"
    if got is None:
        steps = sorted(p for p in load.list_artifacts(row["run_id"], "samples", uri) if p.endswith(".png"))
        if steps:
            got = load.download_artifact(row["run_id"], steps[-1], tmp, uri)
            what = "step " + Path(steps[-1]).stem.replace("step_", "").lstrip("0")
    return got, what


def sample_grids(frame: pd.DataFrame, out_dir: str | Path, *, max_configs: int = 64,
                 skipped: list[str] | None = None) -> list[tuple[Path, str]]:
    """Each configuration's final sample grid, downloaded into ``out_dir``: ``[(path, caption)]``.

    One run per configuration (finished before diverged, then the lowest seed). Its
    ``final/samples.png``, else its last ``samples/step_*.png`` (a diverged run has no final one).
    """
    skipped = skipped if skipped is not None else []
    df = _from_mlflow(_ours(frame), skipped)
    if df.empty:
        return []
    df = _configs(df)
    out_dir = Path(out_dir)
    out: list[tuple[Path, str]] = []
    missing: list[str] = []
    qual = scale.run_quality(df)
    df = df.assign(_q=qual["quality"], _div=(df["status"] == DIVERGED))
    seed = df[SEED] if SEED in df else pd.Series(0, index=df.index)
    df = df.assign(_seed=seed.fillna(0))
    configs = sorted(df["_cfg"].unique(), key=lambda c: (df[df["_cfg"] == c]["_stratum"].iloc[0],
                                                          df[df["_cfg"] == c]["_label"].iloc[0]))
    for n, c in enumerate(configs):
        if n >= max_configs:
            skipped.append(f"sample grids: {len(configs) - max_configs} more configurations not shown "
                           f"(at most {max_configs})")
            break
        g = df[df["_cfg"] == c].sort_values(["_div", "_seed"])
        row = g.iloc[0]
        got, what = _download_grid(row, out_dir / "_download" / str(row["run_id"]))
        if got is None:
            missing.append(str(row.get("run_name") or row["run_id"]))
            continue
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{row['_stratum']}_{row['_label']}")
        dst = out_dir / f"{safe}.png"
        shutil.copyfile(got, dst)
        fid = row.get(FID_FINAL) if pd.notna(row.get(FID_FINAL, np.nan)) else row.get(FID)
        cap = (f"{row['_stratum']} — {row['_label']}: run {row.get('run_name') or row['run_id']} "
               f"(seed {int(row['_seed'])}, {row['status']}), {what} samples; FID {fmt(fid, '.4g')}, "
               f"quality {fmt(row['_q'], '.2f')}")
        out.append((dst, cap))
    shutil.rmtree(out_dir / "_download", ignore_errors=True)
    if missing:
        skipped.append(f"sample grids: no samples artifact for {len(missing)} configurations "
                       f"(runs {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''})")
    return out
