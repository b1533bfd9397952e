"""The FID scale of every run, and what "learned" and "broken" mean on it (docs/design.md
"What every trial measures": the FID scale of every run).

An FID means nothing without what real data and an untrained generator score at the same N,
feature extractor, reference split and resolution. Image trials log

* ``fid_floor`` — FID of real training images against the reference split (the best a generator
  can do at this N), ``fid_init`` — the untrained generator's FID at step 0 (same fixed z as the
  evaluations), and ``fid_quality`` = log(fid_init / fid) / log(fid_init / fid_floor) at every
  evaluation: 0 = untrained, 1 = real data (``fid_quality_final`` for ``fid_final``; with a
  different final N also ``fid_floor_final`` / ``fid_init_final``).
* 2-D toys (arch mlp, ring8 / grid25) have no FID scale; they log ``modes_covered`` and
  ``hq_share`` (share of samples within 3σ of a mode). Their quality on the same 0…1 scale is
  ``toy_quality`` = (modes covered / modes) · min(1, hq_share / HQ_REAL), HQ_REAL = 1 − e^(−9/2) ≈
  0.989 being the share of *real* samples within 3σ of their mode (an isotropic 2-D Gaussian's
  radius is Rayleigh-distributed). Real data scores 1; a generator stuck near the origin scores 0
  on ring8 (1/25 of 1 on grid25 at most).

**The threshold** ``Q_LEARNED = 0.3``, fixed from the published mapping below before any of our
runs logged a quality: a run with quality < 0.3 is *broken*, one with quality ≥ 0.3 *learned*.
On Inception features it reproduces the Lipschitz paper's "FID ≥ 100 is broken" (Sec. 2.1,
Table 2): FID 100 sits at quality 0.25–0.34 on MNIST, CIFAR-10 and CelebA (:data:`PUBLISHED`,
:func:`mapping_table`), and quality 0.3 is FID ≈ 76 / 117 / 92 there. The same number applies to
toys' ``toy_quality`` (the same 0 = untrained … 1 = real scale).

Rows without a scale (runs made before the FID scale was logged, published tables): with Inception features the
paper's literal rule is used (FID ≥ ``fid_cap`` = 100 is broken); with any other extractor
"learned" is unknown, and a verdict that needs it says so.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from trainables.names import (DATASET, DIVERGED, FID, FID_EXTRACTOR, FID_FINAL, FID_FLOOR,
                              FID_FLOOR_FINAL, FID_INIT, FID_INIT_FINAL, FID_QUALITY,
                              FID_QUALITY_FINAL, FID_SAMPLES, HQ_SHARE, HQ_SHARE_FINAL,
                              MODES_COVERED, MODES_COVERED_FINAL)
# HQ_REAL (share of real toy samples within 3σ of their mode) and the toys' quality: one
# definition, the one toy trials log and toy searches optimise (trainables.metrics.toy_quality)
from trainables.metrics.toy_quality import HQ_REAL, toy_quality  # noqa: F401

#: quality < Q_LEARNED is broken, ≥ is learned (module docstring; chosen a priori).
Q_LEARNED = 0.3
#: The paper's "FID ≥ 100 is broken" (Lipschitz paper Sec. 2.1), for Inception rows without a scale.
FID_CAP_INCEPTION = 100.0
#: Number of modes of the toys (trainables.data.toys: ring8 = 8 Gaussians on a circle, grid25 = 5×5,
#: roth7 = Roth et al.'s 7 Gaussians on the unit circle, roth7_3d = the same embedded in 3-D).
TOY_MODES = {"ring8": 8, "grid25": 25, "roth7": 7, "roth7_3d": 7}

#: Published/estimated Inception scale per dataset (pool3, 2,048-d). Every number is an ESTIMATE:
#: no internet and no Inception run on these datasets here, so none was measured by us.
PUBLISHED: dict[str, dict] = {
    "mnist": dict(
        floor=1.25, floor_n="10k train vs 10k test",
        floor_source="Lucic et al. 2018, 'Are GANs Created Equal?' (NeurIPS), FID of the train vs "
                     "test split; recalled, not re-checked offline",
        untrained=445.15,
        untrained_source="Lipschitz paper's worst MNIST cell (Table 5a, COS-GAN-SN k_SN 50, "
                         "α 1e-5): a fully broken run, taken as the untrained level (estimate)"),
    "cifar10": dict(
        floor=5.19, floor_n="10k train vs 10k test (≈ 3.15 at 50k train vs 10k test)",
        floor_source="Lucic et al. 2018 (10k vs 10k); 3.15 for 50k vs 10k is the value commonly "
                     "quoted since Heusel et al.'s TTUR code; both recalled, not re-checked offline",
        untrained=445.37,
        untrained_source="Lipschitz paper's worst CIFAR-10 cell (Table 5a, COS-GAN-SN k_SN 50, "
                         "α 0.1), taken as the untrained level (estimate)"),
    "celeba": dict(
        floor=2.27, floor_n="10k train vs 10k test",
        floor_source="Lucic et al. 2018 (CelebA 64×64, train vs test); recalled, not re-checked "
                     "offline",
        untrained=450.57,
        untrained_source="Lipschitz paper's worst CelebA cell (Table 5b, COS-GAN-SN k_SN 1, "
                         "α 1e3), taken as the untrained level (estimate)"),
}

#: Our own measurement (docs/measurements.md, "Measured 2026-11-28"), for the mapping table: the
#: offline `domain` extractor on fashion_mnist_mini 32×32 vs its 2,000 held-out images.
MEASURED: dict[str, dict] = {
    "fashion_mnist_mini": dict(
        extractor="domain", n=500, floor=6.07, untrained=1721.0,
        source="measured (docs/measurements.md, 2026-11-28): real train images 6.07; untrained "
               "dcgan32 width 1/8: 1,721"),
}


# ------------------------------------------------------------------------------- arithmetic
def quality_of(fid, floor, init):
    """log(init / fid) / log(init / floor): 0 = untrained, 1 = real data (NaN without a scale)."""
    fid, floor, init = (np.asarray(v, dtype=float) for v in (fid, floor, init))
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (fid > 0) & (floor > 0) & (init > floor)
        q = np.log(init / fid) / np.log(init / floor)
    out = np.where(ok, q, np.nan)
    return float(out) if out.ndim == 0 else out


def fid_at_quality(q: float, floor, init):
    """The FID that scores quality ``q``: init^(1−q) · floor^q (geometric interpolation)."""
    floor, init = np.asarray(floor, float), np.asarray(init, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((floor > 0) & (init > floor), init ** (1 - q) * floor ** q, np.nan)
    return float(out) if out.ndim == 0 else out


def mapping_table(q: float = Q_LEARNED, fid_cap: float = FID_CAP_INCEPTION,
                  frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """How the threshold maps onto the paper's "Inception FID ≥ 100 is broken" per dataset. With
    ``frame``: a measured row of a dataset and extractor that the frame's own runs use at another
    N is left out (FID is biased by N; those runs' own scale, at their N, is in the scale table)."""
    own: dict[tuple, set] = {}
    if frame is not None and len(frame) and {DATASET, FID_EXTRACTOR, FID_SAMPLES} <= set(frame):
        mine = frame[frame["origin"] == "run"] if "origin" in frame else frame
        for (ds, ext), g in mine.groupby([DATASET, FID_EXTRACTOR]):
            own[(ds, ext)] = {int(n) for n in pd.to_numeric(g[FID_SAMPLES], errors="coerce").dropna()}
    rows = []
    for ds, s in PUBLISHED.items():
        rows.append({DATASET: ds, "extractor": "inception", "N": "10k", "floor": s["floor"],
                     "untrained": s["untrained"],
                     f"quality at FID {fid_cap:g}": round(quality_of(fid_cap, s["floor"], s["untrained"]), 3),
                     f"FID at quality {q:g}": round(fid_at_quality(q, s["floor"], s["untrained"]), 1),
                     "source": f"floor ({s['floor_n']}): {s['floor_source']}; untrained: "
                               f"{s['untrained_source']}"})
    for ds, s in MEASURED.items():
        if own.get((ds, s["extractor"])) and s["n"] not in own[(ds, s["extractor"])]:
            continue
        rows.append({DATASET: ds, "extractor": s["extractor"], "N": str(s["n"]), "floor": s["floor"],
                     "untrained": s["untrained"],
                     f"quality at FID {fid_cap:g}": round(quality_of(fid_cap, s["floor"], s["untrained"]), 3),
                     f"FID at quality {q:g}": round(fid_at_quality(q, s["floor"], s["untrained"]), 1),
                     "source": s["source"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- per run
def numeric(frame: pd.DataFrame, col: str) -> pd.Series:
    """Column ``col`` as floats (unparseable values and a missing column: NaN)."""
    if col in frame.columns:
        return pd.to_numeric(frame[col], errors="coerce").astype(float)
    return pd.Series(np.nan, index=frame.index, dtype=float)


def is_toy(frame: pd.DataFrame) -> pd.Series:
    ds = frame[DATASET] if DATASET in frame.columns else pd.Series(None, index=frame.index)
    return ds.isin(list(TOY_MODES)).astype(bool)


def run_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """Per row: ``quality`` (0 untrained … 1 real data; NaN without a scale) and what it rests on.

    Columns: ``quality``, ``quality_source`` (fid_quality_final / fid_quality / computed / toy /
    None), ``scale_fid``, ``scale_floor``, ``scale_init`` (the FID, floor and untrained FID behind
    an image quality), ``scale_modes``, ``scale_hq`` (toys). Precedence for images: the logged
    ``fid_quality_final``, else ``fid_quality``, else computed from fid/fid_floor/fid_init.
    """
    idx = frame.index
    out = pd.DataFrame(index=idx, columns=["quality", "scale_fid", "scale_floor", "scale_init",
                                           "scale_modes", "scale_hq"], dtype=float)
    src = pd.Series(None, index=idx, dtype=object)
    fid, fid_f = numeric(frame, FID), numeric(frame, FID_FINAL)
    floor, init = numeric(frame, FID_FLOOR), numeric(frame, FID_INIT)
    floor_f = numeric(frame, FID_FLOOR_FINAL).fillna(floor)
    init_f = numeric(frame, FID_INIT_FINAL).fillna(init)
    # (1) logged quality of the final evaluation
    qf = numeric(frame, FID_QUALITY_FINAL)
    use = qf.notna() & src.isna()
    out.loc[use, ["quality", "scale_fid", "scale_floor", "scale_init"]] = np.c_[
        qf[use], fid_f.fillna(fid)[use], floor_f[use], init_f[use]]
    src[use] = FID_QUALITY_FINAL
    # (2) the last evaluation's logged quality
    q = numeric(frame, FID_QUALITY)
    use = q.notna() & src.isna()
    out.loc[use, ["quality", "scale_fid", "scale_floor", "scale_init"]] = np.c_[
        q[use], fid[use], floor[use], init[use]]
    src[use] = FID_QUALITY
    # (3) computed from the scale (runs that logged floor/init but not the quality itself)
    qc = pd.Series(quality_of(fid.to_numpy(), floor.to_numpy(), init.to_numpy()), index=idx)
    use = qc.notna() & src.isna()
    out.loc[use, ["quality", "scale_fid", "scale_floor", "scale_init"]] = np.c_[
        qc[use], fid[use], floor[use], init[use]]
    src[use] = "computed"
    # toys: modes covered and high-quality share
    toy = is_toy(frame)
    if toy.any():
        ds = frame[DATASET]
        n_modes = ds.map(TOY_MODES).astype(float)
        modes = numeric(frame, MODES_COVERED_FINAL).fillna(numeric(frame, MODES_COVERED))
        hq = numeric(frame, HQ_SHARE_FINAL).fillna(numeric(frame, HQ_SHARE))
        tq = toy_quality(modes, n_modes, hq)
        use = toy & tq.notna()
        out.loc[use, "quality"] = tq[use]
        out.loc[toy, "scale_modes"] = modes[toy]
        out.loc[toy, "scale_hq"] = hq[toy]
        src[use] = "toy"
        src[toy & ~use] = None
        out.loc[toy & ~use, "quality"] = np.nan
    out["quality_source"] = src
    return out


def describe_scale(rows: pd.DataFrame, q_learned: float = Q_LEARNED) -> str:
    """Median FID, floor, untrained (or modes/hq for toys) and quality of ``rows`` (output of
    :func:`run_quality` joined to the frame, possibly with ``fid_eff``), in words and numbers."""
    def med(col):
        v = pd.to_numeric(rows[col], errors="coerce").dropna() if col in rows else pd.Series(dtype=float)
        return float(v.median()) if len(v) else math.nan

    n = len(rows)
    div = int(rows[DIVERGED].astype(bool).sum()) if DIVERGED in rows else 0
    tail = f", {div} of {n} diverged" if div else ""
    if DATASET in rows and is_toy(rows).all() and n:
        ds = str(rows[DATASET].iloc[0])
        return (f"median modes covered {fmt(med('scale_modes'), '.3g')}/{TOY_MODES.get(ds, '?')}, "
                f"high-quality share {fmt(med('scale_hq'), '.2f')}, toy quality {_qfmt(med('quality'), q_learned)} "
                f"(threshold {q_learned:g}; n = {n}{tail})")
    fid = med("scale_fid") if np.isfinite(med("scale_fid")) else med(FID)
    return (f"median FID {fmt(fid, '.4g')}, floor {fmt(med('scale_floor'), '.4g')}, untrained "
            f"{fmt(med('scale_init'), '.4g')} (quality {_qfmt(med('quality'), q_learned)}, threshold "
            f"{q_learned:g}; n = {n}{tail})")


def _qfmt(q: float, threshold: float) -> str:
    """Two decimals, more when two would round onto the threshold (0.2997 is not 0.30 here)."""
    for spec in (".2f", ".3f", ".4f"):
        if fmt(q, spec) != fmt(threshold, spec) or q == threshold:
            return fmt(q, spec)
    return fmt(q, ".4f")


def fmt(v, spec: str = ".3g") -> str:
    """A number for text: '—' for missing / NaN / ±inf (so no report ever prints 'nan')."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(x):
        return "—"
    return format(x, spec)
