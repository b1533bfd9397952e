"""Do two runs of one study give the same final FIDs, to the last bit?

    python bench/same_final_fids.py OLD_STORE NEW_STORE [--experiment default] [--metric fid]

OLD_STORE / NEW_STORE: an MLflow tracking URI or a path to a study's ``mlflow.db``. For every
child run of the experiment (matched by run name, e.g. ``ns-sn-k10-a1-s0``) it compares the last
logged value of the metric as the float's exact ``repr`` and prints one line per run. Exit 0 when
both stores hold the same run names and every value is bit-identical, 1 otherwise.

What it is for: a refactoring of the training code must not change what ``make study`` computes.
Run the same study file from a clean clone of the old and of the new commit (the study's FIDs are
bit-identical run to run on one machine), then compare the two stores with this script. Reading
goes through MLflow's client, so any store MLflow reads works.
"""

from __future__ import annotations

import argparse
import os
import sys


def tracking_uri(store: str) -> str:
    """``sqlite:///<abs path>`` for a path to an existing file, the argument itself otherwise."""
    if os.path.isfile(store):
        return "sqlite:///" + os.path.abspath(store)
    return store


def final_values(store: str, experiment: str, metric: str) -> dict[str, float]:
    """Run name → last logged value of ``metric`` for the experiment's runs that logged it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(store))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"{store}: no experiment named {experiment!r}")
    out: dict[str, float] = {}
    for run in client.search_runs([exp.experiment_id], max_results=50_000):
        if metric in run.data.metrics:
            out[run.info.run_name] = run.data.metrics[metric]
    return out


def compare(old: dict[str, float], new: dict[str, float]) -> tuple[list[str], bool]:
    """Lines ``name  old  new  same|DIFFERENT|missing`` sorted by name, and whether all agree."""
    lines, ok = [], True
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            verdict, ok = "missing", False
        elif repr(float(a)) == repr(float(b)):
            verdict = "same"
        else:
            verdict, ok = "DIFFERENT", False
        lines.append(f"{name:24s} {a!r:>22s} {b!r:>22s}  {verdict}")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--experiment", default="default")
    ap.add_argument("--metric", default="fid")
    args = ap.parse_args(argv)
    lines, ok = compare(final_values(args.old, args.experiment, args.metric),
                        final_values(args.new, args.experiment, args.metric))
    print(f"{'run':24s} {'old':>22s} {'new':>22s}")
    print("\n".join(lines))
    print("bit-identical" if ok else "NOT bit-identical")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
