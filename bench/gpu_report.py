"""Output of ``bench/gpu_throughput.py``: the summary lines, the markdown report and
``figures.json`` (read by ``study.cost``: the best mode per measured shape and the GPU model)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import bench_rows as rows_lib
from trainables.data import datasets as data_lib


def gpu_model(device: torch.device) -> str | None:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def summary(results: list[rows_lib.Result]) -> list[str]:
    out = []
    for r in results:
        best = r.best
        if best is None:
            out.append(f"{r.label}: no row ran")
            continue
        vs = "n/a" if r.ratio is None else f"{r.ratio:.2f}"
        out.append(f"{r.label}: best {best.name}, {best.ms_per_trial_iter:.3f} ms per "
                   f"trial-iteration; best / gpu: auto baseline {vs}")
    return out


#: Machine-readable results beside ``--out`` (``study.cost.load_figures`` reads them).
FIGURES_NAME = "figures.json"


def _command() -> str:
    return ("python bench/gpu_throughput.py " + " ".join(sys.argv[1:])).strip()


def write_figures(path: Path, device: torch.device, env, results: list[rows_lib.Result]) -> None:
    """The best mode per measured shape and the GPU model, as ``study.cost`` uses them
    (``FIGURES_VERSION``)."""
    from study import cost

    shapes = [{
        "label": r.label, "dataset": r.dataset, "arch": r.arch,
        "channels": data_lib.channels(r.dataset), "width": r.cfg["width"],
        "batch_size": r.cfg["batch_size"], "regularizer": r.cfg["regularizer"],
        "n_dis": r.cfg["n_dis"], "best_mode": r.best.name,
        "population": r.best.members, "ms_per_trial_iteration": r.best.ms_per_trial_iter,
        "baseline": r.baseline.name, "baseline_ms_per_trial_iteration":
            r.baseline.ms_per_trial_iter, "best_over_baseline": r.ratio,
    } for r in results if r.best is not None]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "version": cost.FIGURES_VERSION, "device_type": device.type,
        "gpu_model": gpu_model(device), "environment": env, "command": _command(),
        "date": time.strftime("%Y-%m-%d"), "shapes": shapes}, indent=1) + "\n")


def _table(r: rows_lib.Result, args) -> list[str]:
    lines = [f"## {r.label} ({r.dataset}, {r.arch}, width {r.cfg['width']:g}, batch "
             f"{r.cfg['batch_size']})", "",
             f"| row | ms / iteration | ms / trial-iteration | trials / {rows_lib.UNIT}-hour "
             "| note |", "|---|---:|---:|---:|---|"]
    for row in r.rows:
        if row.ms is None:
            lines.append(f"| {row.name} | – | – | – | {row.note} |")
        else:
            lines.append(f"| {row.name} | {row.ms:.3f} | {row.ms_per_trial_iter:.3f} | "
                         f"{row.per_hour(args.trial_iterations):.2f} | {row.note} |")
    return lines + [""]


def write_markdown(path: Path, env, notes, results: list[rows_lib.Result], hours, args) -> None:
    unit = rows_lib.UNIT
    lines = ["# Training throughput by step mode (bench/gpu_throughput.py)", "",
             *[f"- {e}" for e in env], *[f"- {n}" for n in notes],
             f"- command: `{_command()}`",
             f"- {args.iterations} timed iterations per row after {args.warmup}+ warm-up; "
             f"trials/{unit}-hour at {args.trial_iterations:,} iterations per trial, training "
             f"{'with' if args.stats else 'without'} the stats every {args.stats_every} steps, "
             "no FID",
             "- ratio = the gpu: auto baseline's ms per trial-iteration / the best row's", ""]
    for r in results:
        lines += _table(r, args)
    lines += [*summary(results), ""]
    if hours:
        lines += ["## Seed-000 studies", "",
                  "Each preset's configurations with seed 0 at the best measured ms per "
                  "trial-iteration of their shape + FID evaluations (bench/gpu_presets.py).", "",
                  f"| preset | configurations | {unit}-hours | note |", "|---|---:|---:|---|"]
        lines += [f"| {n} | {c} | {h:.2f} | {note} |" for n, c, h, note in hours] + [""]
    lines.append(results[0].ratio_line())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


