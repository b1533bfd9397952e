"""The report: what a researcher looks at first, then the verdicts, then the papers' tables and
figures re-made from our runs.

``build(frame, out_dir)`` writes ``report.md``, ``report.html`` (self-contained: figures embedded as
base64 PNG), ``figures/*.png``, ``samples/*.png`` and ``runs.csv`` (the analysis frame: one row per
run with its params, final metrics, FID scale, quality and status; ``lipstudy report --csv runs.csv``
reads it back). Order: the FID scale per dataset and extractor (floor, untrained, N), the verdicts,
each configuration's final samples and learning curves, the runs, then the papers' tables. Our
number sits beside the paper's wherever the paper has one for the same dataset and configuration
(``analysis.reference``); every FID row names its feature extractor and N (``fid_samples``), and
FIDs of different extractors are never put in one cell. The report reads right on any study: on a
search (k_SN, α sampled) the FID-vs-k_SN/α sections show rank correlations and one point per run;
a section or figure with nothing to show says why instead; no statistic prints as "nan".

``main(argv)`` is the ``lipstudy report`` command: ``--experiment NAME`` (repeatable),
``--tracking-uri URI``, ``--csv FILE`` (external results, repeatable), ``--out DIR``; it attaches
the report to the study's newest parent MLflow run (:func:`attach_to_parent`) unless
``--no-attach``; ``runs.csv`` is written next to report.md/html. Never imports Ray.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import calibration, claims, curves
from analysis import figures as figs
from analysis import hypotheses as hyp
from analysis import scale, tables
from analysis.outcome import FID_CAP_INCEPTION, Q_LEARNED, with_outcome
from analysis.tables import fid_table  # noqa: F401  (public: report.fid_table)
from analysis.document import Document
from analysis.frames import is_continuous, versions_note
from trainables.names import (ALPHA, DIVERGED, GRAD_NORM_FAKE, GRAD_NORM_REAL, K_SN, OMEGA_BOUND,
                              OMEGA_FAKE_MAX, OMEGA_FAKE_MIN, OMEGA_REAL_MAX, OMEGA_REAL_MIN,
                              REGULARIZER, SEED, SN_SIGMA_PRODUCT)

HISTORY_METRICS = (OMEGA_REAL_MIN, OMEGA_REAL_MAX, OMEGA_FAKE_MIN, OMEGA_FAKE_MAX,
                   GRAD_NORM_REAL, GRAD_NORM_FAKE, OMEGA_BOUND, SN_SIGMA_PRODUCT,
                   *curves.CURVE_METRICS)


# ------------------------------------------------------------------------------- sections
def _scale_section(doc: Document, frame: pd.DataFrame, fid_cap: float, q_broken: float):
    doc.h(2, "The FID scale of these runs")
    doc.p(f"An FID means nothing without what real data and an untrained generator score at the same "
          f"N, extractor, split and resolution. Each run's quality = log(untrained / FID) / "
          f"log(untrained / floor): 0 = untrained, 1 = real data. **Broken = quality < {q_broken:g}** "
          f"(or diverged); **learned = quality ≥ {q_broken:g}**. 2-D toys: quality = modes covered / "
          f"modes × min(1, high-quality share / {scale.HQ_REAL:.3f}). Rows without a scale: Inception "
          f"FID ≥ {fid_cap:g} is broken (the Lipschitz paper's rule); other extractors: unknown.")
    t = tables.scale_table(frame, q_broken)
    if len(t):
        doc.table(t)
    else:
        ours = frame[frame["origin"] == "run"] if "origin" in frame and len(frame) else frame
        doc.p("No image run of ours in this frame." if ours.empty or scale.is_toy(ours).all() else
              "No image run in this frame logged fid_floor / fid_init (runs made before the FID scale): "
              "their learning cannot be judged on a calibrated scale, and sample-quality verdicts on "
              "them are inconclusive (Inception runs fall back to the paper's FID-100 rule).")
    toy = tables.toy_table(frame, q_broken)
    if len(toy):
        doc.table(toy)
    doc.p(f"How the threshold maps onto the paper's \"Inception FID ≥ {fid_cap:g} is broken\" "
          f"(chosen from this table before any of our runs logged a quality; every published "
          f"number is an estimate with its source):")
    doc.table(scale.mapping_table(q_broken, fid_cap, frame))


def split_verdicts(verdicts, designed: list[str] | None):
    """(shown in full, one line each): with the hypotheses a study was designed for (``designed``,
    registered names), those in full and first, every other one line; without them (frames from
    CSV files, studies that named none), every hypothesis in full."""
    if not designed:
        return list(verdicts), []
    order = {n: i for i, n in enumerate(designed)}
    full = sorted((v for v in verdicts if v.name in order), key=lambda v: order[v.name])
    return full, [v for v in verdicts if v.name not in order]


def _not_covered_line(v) -> str:
    if not v.n:
        return f"Not covered by this study: `{v.name}` ({v.missing or 'no runs'})."
    return (f"Not covered by this study's design: `{v.name}` — {v.verdict} on n = {v.n} "
            f"(see \"Hypotheses in detail\").")


def _verdict_section(doc: Document, verdicts, designed: list[str] | None = None):
    full, brief = split_verdicts(verdicts, designed)
    doc.h(2, "Verdicts")
    if designed:
        doc.p(f"This study was designed for: {', '.join(designed)} (its study file's "
              f"`hypotheses`); their verdicts come first, every other hypothesis is one line.")
    doc.table(tables.verdict_table(full))
    for v in brief:
        doc.p(_not_covered_line(v))
    doc.h(2, "Each claim: the paper's words, the paper's data, our runs")
    for v in full:
        doc.h(3, f"{v.name}: {v.agreement or v.verdict}")
        doc.p(f"**Claim.** {v.quote or v.claim + ' (' + v.source + ')'}")
        doc.p(f"**The paper's data.** {v.paper_data or '—'}")
        ours = f"**Our runs.** {v.verdict}" + (f" ({v.statistic_name} {scale.fmt(v.statistic)}"
                                                 + (f", p {scale.fmt(v.p_value)}" if v.p_value is not None and v.p_value != v.statistic else "")
                                                 + f", n = {v.n})" if v.statistic is not None else f" (n = {v.n})")
        ours += f": {v.missing}." if v.verdict == "inconclusive" and v.missing else "."
        doc.p(ours + (f" {v.power}" if v.power else ""))
        doc.p(f"**Agreement.** {v.agreement or '—'}.")


def _samples_section(doc: Document, frame: pd.DataFrame, out_dir: Path, max_configs: int):
    doc.h(2, "Samples: each configuration's final grid")
    skipped: list[str] = []
    items = curves.sample_grids(frame, out_dir / "samples", max_configs=max_configs, skipped=skipped)
    for path, caption in items:
        doc.img(path, f"samples/{path.name}", caption)
    for line in skipped:
        doc.p(line + ".")
    if not items and not skipped:
        doc.p("No runs of ours in this frame (published tables have no samples).")


def _curves_section(doc: Document, frame, histories, fig_dir: Path, q_broken: float):
    doc.h(2, "Learning curves")
    if histories is None or not len(histories):
        ours = frame[frame["origin"] == "run"] if "origin" in frame and len(frame) else frame
        doc.p("No per-step histories given (CSV frame, or --no-histories): learning curves need "
              "the runs' MLflow metric histories." if len(ours) else "No runs of ours in this frame.")
        return
    skipped: list[str] = []
    items = curves.learning_curves(histories, frame, q_broken=q_broken, skipped=skipped)
    for path in figs.save(items, fig_dir):
        doc.img(path, f"figures/{path.name}", f"FID and quality against iterations: {path.stem}")
    for line in skipped:
        doc.p(line + ".")


def _sampled(df: pd.DataFrame, *cols: str) -> bool:
    return any(is_continuous(df, c) for c in cols if c in df.columns)


def _fid_sections(doc: Document, frame, reference, add_figs, fid_cap, q_broken):
    sn = frame[frame[REGULARIZER] == "sn"] if len(frame) and REGULARIZER in frame else frame.iloc[0:0]
    sn_ours = sn[sn["origin"] == "run"] if "origin" in sn else sn
    search = len(sn_ours) > 0 and _sampled(sn_ours, K_SN, ALPHA)
    doc.h(2, "FID vs k_SN (Lipschitz paper Table 2)")
    skipped: list[str] = []
    if sn.empty or K_SN not in sn:
        doc.p("No SN runs: this section needs runs with regularizer sn at two or more k_SN.")
    elif search:
        doc.p("k_SN and/or α were sampled (a search, not a grid): rank correlation of capped FID with "
              "log k_SN over the runs as sampled, every α (one point per run in the figure).")
        doc.table(tables.trend_table(sn_ours, K_SN, fid_cap=fid_cap, q_broken=q_broken))
    else:
        a1 = sn[np.isclose(sn[ALPHA].astype(float).fillna(1.0), 1.0, rtol=1e-6, atol=0)] if ALPHA in sn else sn
        t = fid_table(a1, K_SN, reference, by=(ALPHA,) if ALPHA in a1 else (),
                      fid_cap=fid_cap, q_broken=q_broken)
        if len(t):
            doc.table(t)
        else:
            doc.p("No SN run at α = 1 with an FID: the table needs SN runs at α = 1.")
    if len(sn):
        add_figs(figs.fid_vs_k(frame, reference=reference, fid_cap=fid_cap, q_broken=q_broken,
                               skipped=skipped), "FID vs k_SN")
    doc.h(2, "FID vs α (Table 5a/5b) and the degenerate losses (α = 1e-25)")
    if len(sn) and ALPHA in sn and sn[ALPHA].nunique() > 1:
        if search:
            doc.p("α sampled: rank correlation of capped FID with log α per loss, every k_SN.")
            doc.table(tables.trend_table(sn_ours, ALPHA, fid_cap=fid_cap, q_broken=q_broken))
        else:
            doc.table(fid_table(sn, ALPHA, reference, by=(K_SN,), fid_cap=fid_cap, q_broken=q_broken))
        add_figs(figs.fid_vs_alpha(frame, reference=reference, fid_cap=fid_cap, q_broken=q_broken,
                                   skipped=skipped), "FID vs α")
    else:
        doc.p("No α variation among the SN runs: this section needs SN runs at two or more α.")
    for line in skipped:
        doc.p(line + ".")


def _domain_section(doc: Document, frame, histories, reference, add_figs):
    doc.h(2, "Domain Ω and gradient interval Ψ (Fig. 1)")
    t = figs.omega_psi_table(frame, reference) if len(frame) else pd.DataFrame()
    if len(t):
        doc.table(t)
    else:
        doc.p("No Ω statistics of SN runs logged.")
    skipped: list[str] = []
    if histories is not None and len(histories):
        add_figs(figs.omega_intervals(histories, frame, skipped=skipped), "Ω_i over iterations (Fig. 1a)")
    else:
        doc.p("Ω_i over iterations (Fig. 1a): needs per-step histories (not given).")
    if len(frame):
        add_figs(figs.grad_norm_boxes(frame, histories), "Gradient norms (GraN-GAN Fig. 3)")
    for line in skipped:
        doc.p(line + ".")


def _details_section(doc: Document, verdicts):
    doc.h(2, "Hypotheses in detail")
    for v in verdicts:
        doc.h(3, f"{v.name}: {v.verdict}")
        doc.p(f"**Claim.** {v.claim} **Source:** {v.source}.")
        doc.p(v.details or "—")
        if v.reference:
            doc.p(f"**Reference configurations (learning guard):** {v.reference}.")
        if v.guard:
            doc.p(v.guard)
        if v.missing:
            doc.p(f"**Missing:** {v.missing}.")
        th = ", ".join(f"{k} = {val}" for k, val in v.thresholds.items())
        doc.p(f"Thresholds: {th}. n = {v.n}; runs: "
              + (", ".join(f"`{r}`" for r in v.run_ids[:12]) + (f" … (+{len(v.run_ids) - 12})"
                 if len(v.run_ids) > 12 else "") if v.run_ids else "none") + ".")


def runs_frame(frame: pd.DataFrame, fid_cap: float = FID_CAP_INCEPTION,
               q_broken: float = Q_LEARNED) -> pd.DataFrame:
    """The analysis frame as written to ``runs.csv``: every row of ``frame`` (params, final metrics,
    status) plus ``quality``, ``quality_source``, ``learned`` and ``broken`` for usable runs."""
    out = frame.copy()
    if out.empty:
        return out
    o = with_outcome(frame, fid_cap, q_broken)
    for c in ("quality", "quality_source", "learned", "broken"):
        out[c] = o[c].reindex(out.index) if c in o else pd.NA
    return out


# ------------------------------------------------------------------------------- build
def seeds_behind(frame: pd.DataFrame, run_ids) -> int:
    """Seeds per configuration behind a verdict: the distinct seeds among its runs of ours."""
    if not len(frame) or SEED not in frame or not run_ids:
        return 0
    rows = frame[frame["run_id"].astype(str).isin(set(map(str, run_ids)))]
    if "origin" in rows:
        rows = rows[rows["origin"].astype(str) == "run"]
    return int(rows[SEED].nunique())


def ref_tables() -> pd.DataFrame:
    """All of ``analysis.reference`` (the papers' transcribed tables) as one frame."""
    from analysis import reference as ref_mod

    return ref_mod.load()


def _verdicts(frame: pd.DataFrame, hypotheses, overrides, histories, reference) -> list:
    """The hypotheses' verdicts on ``frame``, each with the paper's claim beside it and, where it
    had data, the power of its test at the seeds it had."""
    verdicts = hyp.evaluate(frame, hypotheses, overrides, histories=histories)
    claims.annotate(verdicts, reference if reference is not None else ref_tables())
    for v in verdicts:
        if v.n:   # a test without data has no power to state
            v.power = calibration.power_note(v.name, seeds_behind(frame, v.run_ids), v.verdict)
    return verdicts


def _intro(doc: Document, frame: pd.DataFrame, title: str, fid_cap: float, q_broken: float) -> None:
    """The title and what the report is made of: runs, experiments, the broken rule, notes on
    code versions and repeated seeds."""
    doc.h(1, title)
    exps = ", ".join(sorted({str(e) for e in frame.get("experiment", pd.Series(dtype=str)).dropna()}))
    doc.p(f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} from {len(frame)} runs "
          f"({exps or 'no experiment'}); the analysis frame is in `runs.csv`. Broken: quality < "
          f"{q_broken:g} on the run's own FID scale (below), or diverged (FID = cap); without a "
          f"scale, Inception FID ≥ {fid_cap:g} (the Lipschitz paper's rule). Crashed/running runs "
          f"are not outcomes.")
    if versions_note(frame):
        doc.p(versions_note(frame))
    if tables.repeats_note(frame):
        doc.p(tables.repeats_note(frame))


def _runs_section(doc: Document, frame: pd.DataFrame) -> None:
    """Runs per status, and the crashed and diverged ones by name with their reason."""
    doc.h(2, "Runs")
    doc.table(tables.status_table(frame))
    bad = frame[frame["status"].isin(["crashed", DIVERGED])] if len(frame) else frame
    if len(bad):
        cols = [c for c in ("run_name", "status", "diverged_step", "diverged_reason", "run_id") if c in bad]
        doc.table(bad[cols].head(50))


def build(frame: pd.DataFrame, out_dir: str | Path, *, histories: pd.DataFrame | None = None,
          reference: pd.DataFrame | None | str = "auto", hypotheses: list[str] | None = None,
          designed_for: list[str] | None = None,
          overrides: dict[str, dict[str, Any]] | None = None, title: str = "lipstudy report",
          fid_cap: float = FID_CAP_INCEPTION, q_broken: float = Q_LEARNED,
          max_sample_configs: int = 64) -> Path:
    """Write the report for ``frame`` into ``out_dir``; return the path of ``report.md``.

    ``reference``: the published tables to show beside ours ("auto": all of ``analysis.reference``;
    None: none). They are shown, never mixed into the verdicts (put them in ``frame`` to test them).
    ``histories``: ``load.load_histories`` output (``HISTORY_METRICS``) for the learning curves,
    the Ω-interval and gradient-norm figures and the per-iteration Theorem 1 test. Sample grids
    are downloaded from the tracking store of runs loaded from MLflow (column ``tracking_uri``).
    ``designed_for``: the hypotheses (names or groups) the study was designed for (its parent
    run's ``lipstudy.hypotheses``; ``hypotheses`` when given): they come first, in full; every
    other hypothesis is one line ("not covered by this study").
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(reference, str):
        reference = ref_tables()
    runs_frame(frame, fid_cap, q_broken).to_csv(out_dir / "runs.csv", index=False)
    verdicts = _verdicts(frame, hypotheses, overrides, histories, reference)
    designed = hyp.resolve(hypotheses or designed_for) if (hypotheses or designed_for) else None
    doc = Document()
    _intro(doc, frame, title, fid_cap, q_broken)

    def add_figs(items, caption):
        for path in figs.save(items, fig_dir):
            doc.img(path, f"figures/{path.name}", f"{caption}: {path.stem}")

    _scale_section(doc, frame, fid_cap, q_broken)
    _verdict_section(doc, verdicts, designed)
    _samples_section(doc, frame, out_dir, max_sample_configs)
    _curves_section(doc, frame, histories, fig_dir, q_broken)
    from analysis.optuna_figures import report_section as optuna_section

    optuna_section(doc, frame, fig_dir)  # a searched study's Optuna figures (from its journal)
    _runs_section(doc, frame)
    _fid_sections(doc, frame, reference, add_figs, fid_cap, q_broken)
    _domain_section(doc, frame, histories, reference, add_figs)
    full, brief = split_verdicts(verdicts, designed)
    _details_section(doc, full + [v for v in brief if v.n])

    md = out_dir / "report.md"
    md.write_text(doc.markdown(), encoding="utf-8")
    (out_dir / "report.html").write_text(doc.html(title), encoding="utf-8")
    return md


# ------------------------------------------------------------------------------- MLflow
def attach_to_parent(out_dir: str | Path, experiment: str, tracking_uri: str | None = None,
                     parent_run_id: str | None = None, artifact_path: str = "report") -> str | None:
    """Log ``out_dir`` (report.md, report.html, runs.csv, figures/, samples/) as artifacts of the study's parent run —
    ``parent_run_id``, else the experiment's newest run tagged ``lipstudy.kind = study``.
    Returns the run id, or None when the experiment has no parent run."""
    from mlflow.tracking import MlflowClient

    from analysis.load import load_parents

    if parent_run_id is None:
        parents = load_parents(experiment, tracking_uri)
        if parents.empty:
            return None
        parent_run_id = str(parents["run_id"].iloc[0])
    MlflowClient(tracking_uri).log_artifacts(parent_run_id, str(out_dir), artifact_path)
    return parent_run_id


def designed_hypotheses(experiments: list[str], tracking_uri: str | None = None) -> list[str]:
    """The hypotheses the experiments' studies were designed for: the newest parent run's
    ``lipstudy.hypotheses`` tag of each (the study file's ``hypotheses``), as registered names,
    in the files' order; names no longer registered are skipped."""
    from analysis.load import load_parents

    out: list[str] = []
    for exp in experiments:
        parents = load_parents(exp, tracking_uri)
        tag = str(parents["hypotheses"].iloc[0] or "") if len(parents) else ""
        for name in filter(None, (n.strip() for n in tag.split(","))):
            try:
                out.extend(h for h in hyp.resolve([name]) if h not in out)
            except KeyError:
                continue
    return out


def main(argv: list[str] | None = None) -> int:
    """``lipstudy report``: load runs (MLflow and/or CSV), build the report, attach it. Exit 0/2."""
    ap = argparse.ArgumentParser(prog="lipstudy report",
                                 description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--experiment", action="append", default=[], help="MLflow experiment (repeatable)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLflow's)")
    ap.add_argument("--csv", action="append", default=[], help="CSV of external results (repeatable)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--hypotheses", default=None, help="comma-separated names/groups (default: all)")
    ap.add_argument("--no-attach", action="store_true", help="do not attach to the parent MLflow run")
    ap.add_argument("--no-histories", action="store_true", help="skip per-step histories (faster)")
    ap.add_argument("--no-reference", action="store_true", help="do not show the papers' numbers")
    ap.add_argument("--pool-versions", action="store_true",
                    help="analyse runs of several code versions together (the report lists them)")
    args = ap.parse_args(argv)
    if not args.experiment and not args.csv:
        print("lipstudy report: give --experiment NAME and/or --csv FILE", file=sys.stderr)
        return 2
    from analysis import load

    try:
        if args.experiment:  # a store that is not there is never created
            args.tracking_uri = load.existing_store(args.tracking_uri)
        frames = [load.load_runs(args.experiment, args.tracking_uri)] if args.experiment else []
        frames += [load.frame_from_csv(p) for p in args.csv]
        frame = load.concat(frames)
        load.check_versions(frame, pool=args.pool_versions)  # one line naming them, else refused
        hist = None
        if args.experiment and not args.no_histories and len(frame):
            hist = load.load_histories(frame, HISTORY_METRICS, args.tracking_uri)
        names = [h for h in args.hypotheses.split(",")] if args.hypotheses else None
        if names:
            hyp.resolve(names)
        designed = designed_hypotheses(args.experiment, args.tracking_uri) if args.experiment else []
        md = build(frame, args.out, histories=hist, hypotheses=names, designed_for=designed or None,
                   reference=None if args.no_reference else "auto",
                   title=f"lipstudy report — {', '.join(args.experiment or args.csv)}")
    except (LookupError, FileNotFoundError, ValueError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"lipstudy report: {msg}", file=sys.stderr)
        return 2
    print(md)
    print(md.with_suffix(".html"))
    print(md.parent / "runs.csv")
    if args.experiment and not args.no_attach:
        for exp in args.experiment:
            rid = attach_to_parent(args.out, exp, args.tracking_uri)
            if rid:
                print(f"attached to parent run {rid} of {exp}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
