"""The report: verdicts first, then the papers' tables and figures re-made from our runs.

``build(frame, out_dir)`` writes ``report.md``, ``report.html`` (self-contained: figures embedded as
base64 PNG) and ``figures/*.png``. Our number sits beside the paper's wherever the paper has one
for the same dataset and configuration (``analysis.reference``); every FID row names its feature
extractor and N (``fid_samples``), and FIDs of different extractors are never put in one cell.

``main(argv)`` is the ``lipstudy report`` command: ``--experiment NAME`` (repeatable),
``--tracking-uri URI``, ``--csv FILE`` (external results, repeatable), ``--out DIR``; it attaches
the report to the study's newest parent MLflow run (:func:`attach_to_parent`) unless
``--no-attach``. Never imports Ray.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import figures as figs
from analysis import hypotheses as hyp
from analysis.outcome import FID_CAP_INCEPTION, REL_CAP, with_outcome
from analysis.stats import bootstrap_ci

HISTORY_METRICS = ("omega_real_min", "omega_real_max", "omega_fake_min", "omega_fake_max",
                   "grad_norm_real", "grad_norm_fake")


# ------------------------------------------------------------------------------- blocks
class _Doc:
    """A list of blocks rendered both as Markdown and as HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame):
        if df is not None and len(df):
            self.blocks.append(("table", df))

    def img(self, path: Path, rel: str, caption: str):
        self.blocks.append(("img", path, rel, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                df = b[1]
                cols = [str(c) for c in df.columns]
                rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                for _, r in df.iterrows():
                    rows.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in r) + " |")
                out.append("\n".join(rows))
            elif b[0] == "img":
                out.append(f"![{b[3]}]({b[2]})\n\n*{b[3]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
               "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;"
               "padding:3px 6px;text-align:left}th{background:#f3f3f3}.supported{color:#17702b;font-weight:bold}"
               ".contradicted{color:#b00020;font-weight:bold}.inconclusive{color:#8a6d00;font-weight:bold}"
               "img{max-width:100%}figcaption{font-style:italic;font-size:13px}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "table":
                df = b[1]
                head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
                body = []
                for _, r in df.iterrows():
                    tds = []
                    for v in r:
                        s = _cell(v)
                        cls = f" class='{s}'" if s in ("supported", "contradicted", "inconclusive") else ""
                        tds.append(f"<td{cls}>{_inline(s)}</td>")
                    body.append("<tr>" + "".join(tds) + "</tr>")
                out.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
            elif b[0] == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[3])}'>"
                           f"<figcaption>{html.escape(b[3])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(s: str) -> str:
    s = html.escape(s)
    parts = s.split("**")
    s = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = s.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _num(v: Any, fmt: str = ".3g") -> str:
    try:
        return "—" if v is None or not np.isfinite(float(v)) else format(float(v), fmt)
    except (TypeError, ValueError):
        return "—"


# ------------------------------------------------------------------------------- tables
def fid_table(frame: pd.DataFrame, x: str, reference: pd.DataFrame | None, *, by: tuple[str, ...] = (),
              fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> pd.DataFrame:
    """One row per (dataset, extractor, loss, *by, x): our median FID with a bootstrap 95 % CI
    over seeds, seeds, broken count, extractor and N — and the paper's FID for the same cell."""
    df = with_outcome(frame, fid_cap, rel_cap)
    df = df[df["fid_eff"].notna()] if "fid_eff" in df else df
    if df.empty or x not in df.columns:
        return pd.DataFrame()
    keys = ["dataset", "fid_extractor", "loss", *by, x]
    for k in keys:
        if k not in df.columns:
            return pd.DataFrame()
    rows = []
    for key, g in df.groupby(keys, dropna=False):
        kd = dict(zip(keys, key))
        fid = g["fid"].astype(float)
        ci = bootstrap_ci(g["fid_eff"].astype(float).to_numpy()) if len(g) >= 2 else (math.nan, math.nan)
        n_samples = sorted({int(v) for v in g.get("fid_samples", pd.Series(dtype=float)).dropna()})
        paper = ""
        if reference is not None and len(reference) and kd["fid_extractor"] == "inception":
            r = reference[(reference["dataset"] == kd["dataset"]) & (reference["loss"] == kd["loss"])
                          & reference["fid"].notna()]
            for k in [x, *by]:
                if k in r.columns:
                    r = r[np.isclose(r[k].astype(float), float(kd[k]), rtol=1e-6, atol=0)]
                else:
                    r = r.iloc[0:0]
            if len(r):
                paper = "; ".join(f"{v:.2f} ({s})" for v, s in zip(r["fid"], r["source"]))
        rows.append({
            "dataset": kd["dataset"], "loss": kd["loss"], **{k: kd[k] for k in by},
            x: kd[x],
            "FID ours (median)": _num(g["fid_eff"].astype(float).median(), ".2f")
            + (" (capped)" if g["broken"].any() else ""),
            "95% CI": "" if not np.isfinite(ci[0]) else f"[{ci[0]:.2f}, {ci[1]:.2f}]",
            "seeds": len(g), "broken": int(g["broken"].sum()),
            "extractor": kd["fid_extractor"],
            "N": ",".join(str(n) for n in n_samples) or "?",
            "FID paper (Inception)": paper or "—",
        })
    return pd.DataFrame(rows)


def _verdict_table(verdicts: list[hyp.Verdict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "hypothesis": v.name, "verdict": v.verdict,
        "statistic": f"{v.statistic_name} = {_num(v.statistic)}" if v.statistic_name else "",
        "effect": f"{v.effect_name} = {_num(v.effect_size)}" if v.effect_name else "",
        "n": v.n, "source": v.source,
    } for v in verdicts])


def _status_table(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame()
    t = frame.groupby(["experiment", "status"]).size().unstack(fill_value=0).reset_index()
    return t


# ------------------------------------------------------------------------------- build
def build(frame: pd.DataFrame, out_dir: str | Path, *, histories: pd.DataFrame | None = None,
          reference: pd.DataFrame | None | str = "auto", hypotheses: list[str] | None = None,
          overrides: dict[str, dict[str, Any]] | None = None, title: str = "lipstudy report",
          fid_cap: float = FID_CAP_INCEPTION, rel_cap: float = REL_CAP) -> Path:
    """Write the report for ``frame`` into ``out_dir``; return the path of ``report.md``.

    ``reference``: the published tables to show beside ours ("auto": all of ``analysis.reference``;
    None: none). They are shown, never mixed into the verdicts (put them in ``frame`` to test them).
    ``histories``: ``load.load_histories`` output for Ω-interval and gradient-norm figures.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(reference, str):
        from analysis import reference as ref_mod

        reference = ref_mod.load()
    verdicts = hyp.evaluate(frame, hypotheses, overrides)
    doc = _Doc()
    doc.h(1, title)
    exps = ", ".join(sorted({str(e) for e in frame.get("experiment", pd.Series(dtype=str)).dropna()}))
    doc.p(f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} from {len(frame)} runs "
          f"({exps or 'no experiment'}). FID cap: {fid_cap:g} for Inception features (the Lipschitz "
          f"paper's \"≥ 100 is broken\"), {rel_cap:g}× the best configuration's median for other "
          f"extractors; diverged runs count as broken (FID = cap); crashed/running runs are not outcomes.")

    doc.h(2, "Verdicts")
    doc.table(_verdict_table(verdicts))
    for v in verdicts:
        if v.verdict == "inconclusive" and v.missing:
            doc.p(f"**{v.name}** — inconclusive: {v.missing}.")

    doc.h(2, "Runs")
    doc.table(_status_table(frame))
    bad = frame[frame["status"].isin(["crashed", "diverged"])] if len(frame) else frame
    if len(bad):
        cols = [c for c in ("run_name", "status", "diverged_step", "diverged_reason", "run_id") if c in bad]
        doc.table(bad[cols].head(50))

    def add_figs(items, caption):
        for path in figs.save(items, fig_dir):
            doc.img(path, f"figures/{path.name}", f"{caption}: {path.stem}")

    sn = frame[frame.get("regularizer", pd.Series(dtype=str)) == "sn"] if len(frame) else frame
    doc.h(2, "FID vs k_SN (Lipschitz paper Table 2)")
    if len(sn) and "k_sn" in sn:
        a1 = sn[np.isclose(sn["alpha"].astype(float).fillna(1.0), 1.0, rtol=1e-6, atol=0)] if "alpha" in sn else sn
        doc.table(fid_table(a1, "k_sn", reference, by=("alpha",) if "alpha" in a1 else (),
                            fid_cap=fid_cap, rel_cap=rel_cap))
        add_figs(figs.fid_vs_k(frame, reference=reference, fid_cap=fid_cap, rel_cap=rel_cap),
                 "FID vs k_SN")
    else:
        doc.p("No SN runs.")

    doc.h(2, "FID vs α (Table 5a/5b) and the degenerate losses (α = 1e-25)")
    if len(sn) and "alpha" in sn and sn["alpha"].nunique() > 1:
        doc.table(fid_table(sn, "alpha", reference, by=("k_sn",), fid_cap=fid_cap, rel_cap=rel_cap))
        add_figs(figs.fid_vs_alpha(frame, reference=reference, fid_cap=fid_cap, rel_cap=rel_cap),
                 "FID vs α")
    else:
        doc.p("No α variation among the SN runs.")

    doc.h(2, "Domain Ω and gradient interval Ψ (Fig. 1)")
    t = figs.omega_psi_table(frame, reference)
    if len(t):
        doc.table(t)
    else:
        doc.p("No Ω statistics logged.")
    if histories is not None and len(histories):
        add_figs(figs.omega_intervals(histories, frame), "Ω_i over iterations (Fig. 1a)")
    add_figs(figs.grad_norm_boxes(frame, histories), "Gradient norms (GraN-GAN Fig. 3)")

    doc.h(2, "Hypotheses in detail")
    for v in verdicts:
        doc.h(3, f"{v.name}: {v.verdict}")
        doc.p(f"**Claim.** {v.claim} **Source:** {v.source}.")
        doc.p(v.details or "—")
        if v.missing:
            doc.p(f"**Missing:** {v.missing}.")
        th = ", ".join(f"{k} = {val}" for k, val in v.thresholds.items())
        doc.p(f"Thresholds: {th}. n = {v.n}; runs: "
              + (", ".join(f"`{r}`" for r in v.run_ids[:12]) + (f" … (+{len(v.run_ids) - 12})"
                 if len(v.run_ids) > 12 else "") if v.run_ids else "none") + ".")

    md = out_dir / "report.md"
    md.write_text(doc.markdown(), encoding="utf-8")
    (out_dir / "report.html").write_text(doc.html(title), encoding="utf-8")
    return md


# ------------------------------------------------------------------------------- MLflow
def attach_to_parent(out_dir: str | Path, experiment: str, tracking_uri: str | None = None,
                     parent_run_id: str | None = None, artifact_path: str = "report") -> str | None:
    """Log ``out_dir`` (report.md, report.html, figures/) as artifacts of the study's parent run —
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


def main(argv: list[str] | None = None) -> int:
    """``lipstudy report``: load runs (MLflow and/or CSV), build the report, attach it. Exit 0/2."""
    ap = argparse.ArgumentParser(prog="lipstudy report", description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", action="append", default=[], help="MLflow experiment (repeatable)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLflow's)")
    ap.add_argument("--csv", action="append", default=[], help="CSV of external results (repeatable)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--hypotheses", default=None, help="comma-separated names/groups (default: all)")
    ap.add_argument("--no-attach", action="store_true", help="do not attach to the parent MLflow run")
    ap.add_argument("--no-histories", action="store_true", help="skip per-step histories (faster)")
    ap.add_argument("--no-reference", action="store_true", help="do not show the papers' numbers")
    args = ap.parse_args(argv)
    if not args.experiment and not args.csv:
        print("lipstudy report: give --experiment NAME and/or --csv FILE", file=sys.stderr)
        return 2
    from analysis import load

    try:
        frames = [load.load_runs(args.experiment, args.tracking_uri)] if args.experiment else []
        frames += [load.frame_from_csv(p) for p in args.csv]
        frame = load.concat(frames)
        hist = None
        if args.experiment and not args.no_histories and len(frame):
            hist = load.load_histories(frame, HISTORY_METRICS, args.tracking_uri)
        names = [h for h in args.hypotheses.split(",")] if args.hypotheses else None
        if names:
            hyp.resolve(names)
        md = build(frame, args.out, histories=hist, hypotheses=names,
                   reference=None if args.no_reference else "auto",
                   title=f"lipstudy report — {', '.join(args.experiment or args.csv)}")
    except (LookupError, FileNotFoundError, ValueError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"lipstudy report: {msg}", file=sys.stderr)
        return 2
    print(md)
    print(md.with_suffix(".html"))
    if args.experiment and not args.no_attach:
        for exp in args.experiment:
            rid = attach_to_parent(args.out, exp, args.tracking_uri)
            if rid:
                print(f"attached to parent run {rid} of {exp}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
