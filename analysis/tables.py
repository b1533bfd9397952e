"""The report's tables (plain DataFrames; ``analysis.report`` renders them).

* :func:`scale_table` — the FID scale per dataset, extractor and N: floor, untrained, the FID at the
  broken threshold, how many runs carry it.
* :func:`toy_table` — the 2-D toys' scale: modes, real data's high-quality share, what our runs reach.
* :func:`fid_table` — FID per (dataset, extractor, loss, …, x) on a grid design, the paper beside.
* :func:`trend_table` — on a search (x sampled, not a grid): Spearman ρ of capped FID on log x per
  (dataset, extractor, loss), instead of a row per sampled value.
* :func:`verdict_table`, :func:`status_table`.

No cell is ever "nan": a number that cannot be computed prints as "—" or is left empty.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import scale
from analysis.outcome import usable, with_outcome
from analysis.scale import FID_CAP_INCEPTION, Q_LEARNED, fmt
from analysis.stats import bootstrap_ci
from trainables.names import (ARCH, DATASET, DIVERGED, FID, FID_EXTRACTOR, FID_FINAL_SAMPLES,
                              FID_FLOOR, FID_FLOOR_FINAL, FID_INIT, FID_INIT_FINAL, FID_REF_SPLIT,
                              FID_SAMPLES, LOSS, RESOLUTION, SEED)


def _rng(v: pd.Series, spec: str = ".4g") -> str:
    v = pd.to_numeric(v, errors="coerce")
    v = v[np.isfinite(v)]
    if v.empty:
        return "—"
    if len(v) == 1 or v.min() == v.max():
        return fmt(v.median(), spec)
    return f"{fmt(v.median(), spec)} [{fmt(v.min(), spec)}–{fmt(v.max(), spec)}]"


def scale_table(frame: pd.DataFrame, q_broken: float = Q_LEARNED) -> pd.DataFrame:
    """Per (dataset, extractor, N, split, resolution, arch) of our image runs: floor and untrained
    FID (median [min–max] over runs), the FID at quality ``q_broken``, runs carrying the scale."""
    df = usable(frame) if len(frame) else frame
    if df.empty or "origin" not in df:
        return pd.DataFrame()
    df = df[(df["origin"] == "run") & ~scale.is_toy(df)]
    if df.empty:
        return pd.DataFrame()
    rows = []
    for final in (False, True):
        fl, ini = (FID_FLOOR_FINAL, FID_INIT_FINAL) if final else (FID_FLOOR, FID_INIT)
        ncol = FID_FINAL_SAMPLES if final else FID_SAMPLES
        if fl not in df and ini not in df:
            continue
        keys = [c for c in (DATASET, FID_EXTRACTOR, ncol, FID_REF_SPLIT, RESOLUTION, ARCH) if c in df]
        for key, g in df.astype({k: object for k in keys}).fillna({k: "?" for k in keys}).groupby(keys):
            kd = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
            floor, init = scale.numeric(g, fl), scale.numeric(g, ini)
            has = floor.notna() & init.notna()
            if final and not has.any():
                continue
            at_q = scale.fid_at_quality(q_broken, floor[has].to_numpy(), init[has].to_numpy())
            rows.append({
                DATASET: kd.get(DATASET), "extractor": kd.get(FID_EXTRACTOR),
                "N": kd.get(ncol), "evaluation": "final" if final else "every eval",
                "split": kd.get(FID_REF_SPLIT, "?"), RESOLUTION: kd.get(RESOLUTION, "?"),
                ARCH: kd.get(ARCH, "?"),
                "floor (real data)": _rng(floor[has]), "untrained": _rng(init[has]),
                f"FID at quality {q_broken:g} (broken above)": _rng(pd.Series(at_q)),
                "runs with the scale": f"{int(has.sum())} of {len(g)}",
            })
    return pd.DataFrame(rows)


def toy_table(frame: pd.DataFrame, q_broken: float = Q_LEARNED) -> pd.DataFrame:
    df = usable(frame) if len(frame) else frame
    if df.empty or "origin" not in df:
        return pd.DataFrame()
    df = df[(df["origin"] == "run") & scale.is_toy(df)]
    rows = []
    for ds, g in df.groupby(DATASET):
        q = scale.run_quality(g)
        rows.append({DATASET: ds, "modes": scale.TOY_MODES[ds],
                     "real data: high-quality share": f"{scale.HQ_REAL:.3f}",
                     "modes covered (median [min–max])": _rng(q["scale_modes"], ".3g"),
                     "high-quality share": _rng(q["scale_hq"], ".3f"),
                     "toy quality": _rng(q["quality"], ".2f"),
                     f"learned (quality ≥ {q_broken:g})": f"{int((q['quality'] >= q_broken).sum())} of {len(g)}"})
    return pd.DataFrame(rows)


def _measured(g: pd.DataFrame) -> str:
    """What a capped cell hides: the median FID the runs measured (``fid``); without one, that
    they diverged or the published bound (``fid_censor``: "did not reach FID < c")."""
    def finite(col: str) -> pd.Series:
        v = pd.to_numeric(g.get(col, pd.Series(dtype=float)), errors="coerce")
        return v[np.isfinite(v)]

    raw, censor = finite(FID), finite("fid_censor")
    if len(raw):
        return f" (capped; measured {fmt(raw.median(), '.4g')})"
    if g.get(DIVERGED, pd.Series(dtype=bool)).astype(bool).any():
        return " (capped; diverged)"
    return f" (capped; reported ≥ {fmt(censor.min(), '.4g')})" if len(censor) else " (capped)"


def per_seed(g: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct seed of a cell's runs: the median capped FID and quality of the runs
    of that seed, broken when most of them are. Runs of the same configuration and seed (a study
    run twice) are one replicate run twice, never two seeds."""
    seed = g[SEED] if SEED in g else pd.Series(0, index=g.index)
    return (g.assign(seed=seed, broken=g["broken"].astype(float))
            .groupby(SEED)[["fid_eff", "quality", "broken"]].median()
            .assign(broken=lambda d: d["broken"] >= 0.5))


def seeds_cell(g: pd.DataFrame) -> int | str:
    """The distinct seeds behind a cell; with repeated seeds, also the runs and which seed ran
    how often ("1 (2 runs: seed 0 ×2)")."""
    seed = g[SEED] if SEED in g else pd.Series(0, index=g.index)
    counts = seed.value_counts().sort_index()
    if len(g) == len(counts):
        return len(counts)
    twice = ", ".join(f"seed {s} ×{n}" for s, n in counts.items() if n > 1)
    return f"{len(counts)} ({len(g)} runs: {twice})"


def repeats_note(frame: pd.DataFrame) -> str:
    """One line naming the configurations that ran more than once with the same seed (re-runs,
    not replicates: counted once), or "" when none did."""
    from analysis.outcome import config_columns, config_key

    df = usable(frame) if len(frame) and "status" in frame else frame
    if df.empty or SEED not in df:
        return ""
    if "origin" in df:
        df = df[df["origin"].astype(str) == "run"]
    key = config_key(df).map(repr) + "|" + df[SEED].astype(str)
    counts = key.value_counts()
    rep = counts[counts > 1]
    if rep.empty:
        return ""
    cols = [c for c in config_columns(df) if c != "origin" and df[c].nunique(dropna=False) > 1]
    parts = []
    for k, n in rep.items():
        row = df[key == k].iloc[0]
        what = ", ".join(f"{c}={fmt(row[c]) if isinstance(row[c], float) else row[c]}" for c in cols)
        parts.append(f"{what or 'the configuration'} seed {row[SEED]} ×{n}")
    n_cfg = len(rep)
    return (f"{n_cfg} configuration{'s' if n_cfg > 1 else ''} ran more than once with the same seed "
            f"(a study run again): {'; '.join(parts[:12])}{' …' if len(parts) > 12 else ''}. "
            "Such runs are one replicate, not several: tables count distinct seeds and take "
            "the median of a seed's runs.")


def fid_table(frame: pd.DataFrame, x: str, reference: pd.DataFrame | None, *, by: tuple[str, ...] = (),
              fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED) -> pd.DataFrame:
    """One row per (dataset, extractor, loss, *by, x): our median FID with a bootstrap 95 % CI
    over distinct seeds (:func:`per_seed`: a seed run twice counts once), seeds, broken count (of
    seeds), median quality, extractor and N — and the paper's FID for the same cell."""
    df = with_outcome(frame, fid_cap, q_broken)
    df = df[df["fid_eff"].notna()] if "fid_eff" in df else df
    if df.empty or x not in df.columns:
        return pd.DataFrame()
    keys = [DATASET, FID_EXTRACTOR, LOSS, *by, x]
    if any(k not in df.columns for k in keys):
        return pd.DataFrame()
    rows = []
    for key, g in df.groupby(keys, dropna=False):
        kd = dict(zip(keys, key))
        s = per_seed(g)
        ci = bootstrap_ci(s["fid_eff"].astype(float).to_numpy()) if len(s) >= 2 else (math.nan, math.nan)
        n_samples = sorted({int(v) for v in g.get(FID_SAMPLES, pd.Series(dtype=float)).dropna()})
        paper = ""
        if reference is not None and len(reference) and kd[FID_EXTRACTOR] == "inception":
            r = reference[(reference[DATASET] == kd[DATASET]) & (reference[LOSS] == kd[LOSS])
                          & reference[FID].notna()]
            for k in [x, *by]:
                if k in r.columns:
                    r = r[np.isclose(r[k].astype(float), float(kd[k]), rtol=1e-6, atol=0)]
                else:
                    r = r.iloc[0:0]
            if len(r):
                paper = "; ".join(f"{v:.2f} ({s})" for v, s in zip(r[FID], r["source"]))
        q = s["quality"].astype(float)
        rows.append({
            DATASET: kd[DATASET], LOSS: kd[LOSS], **{k: kd[k] for k in by},
            x: kd[x],
            "FID ours (median)": fmt(s["fid_eff"].astype(float).median(), ".2f")
            + (_measured(g) if g["broken"].any() else ""),
            "95% CI": "" if not np.isfinite(ci[0]) else f"[{ci[0]:.2f}, {ci[1]:.2f}]",
            "seeds": seeds_cell(g), "broken": int(s["broken"].sum()),
            "quality (median)": fmt(q.median(), ".2f") if q.notna().any() else "—",
            "extractor": kd[FID_EXTRACTOR],
            "N": ",".join(str(n) for n in n_samples) or "?",
            "FID paper (Inception)": paper or "—",
        })
    return pd.DataFrame(rows)


def trend_table(frame: pd.DataFrame, x: str, *, fid_cap: float = FID_CAP_INCEPTION,
                q_broken: float = Q_LEARNED) -> pd.DataFrame:
    """A search's sampled ``x``: per (dataset, extractor, loss) the Spearman ρ of capped FID on
    log x over the runs as sampled (two-sided p), with n, the x range and the broken share."""
    df = with_outcome(frame, fid_cap, q_broken)
    if df.empty or x not in df.columns:
        return pd.DataFrame()
    df = df[df["fid_eff"].notna() & (pd.to_numeric(df[x], errors="coerce") > 0)]
    rows = []
    for (ds, ext, loss), g in df.groupby([DATASET, FID_EXTRACTOR, LOSS]):
        xv = np.log10(g[x].astype(float).to_numpy())
        y = g["fid_eff"].astype(float).to_numpy()
        ok = len(g) >= 3 and np.ptp(xv) > 0 and np.ptp(y) > 0
        rho, p = sps.spearmanr(xv, y) if ok else (math.nan, math.nan)
        rows.append({DATASET: ds, "extractor": ext, LOSS: loss, "runs": len(g),
                     f"{x} range": f"{fmt(g[x].min())}–{fmt(g[x].max())}",
                     f"Spearman ρ(log {x}, FID)": fmt(rho, "+.2f") if ok else "— (needs ≥ 3 runs, FID not constant)",
                     "p (two-sided)": fmt(p, ".3g") if ok else "—",
                     "median FID (capped)": fmt(np.median(y), ".4g"),
                     "broken": f"{int(g['broken'].sum())} of {len(g)}"})
    return pd.DataFrame(rows)


def verdict_table(verdicts) -> pd.DataFrame:
    return pd.DataFrame([{
        "hypothesis": v.name, "verdict": v.verdict, "against the paper": v.agreement or "—",
        "statistic": f"{v.statistic_name} = {fmt(v.statistic)}" if v.statistic is not None else "—",
        "effect": f"{v.effect_name} = {fmt(v.effect_size)}" if v.effect_size is not None else "—",
        "n": v.n, "learning": v.guard_status or "—", "source": v.source,
    } for v in verdicts])


def status_table(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame()
    exp = frame["experiment"].astype(object).where(frame["experiment"].notna(), "?")
    return frame.assign(experiment=exp).groupby(["experiment", "status"]).size().unstack(fill_value=0).reset_index()
