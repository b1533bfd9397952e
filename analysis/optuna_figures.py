"""Optuna studies report like Optuna: the optimisation history, the parameter importances, the best
trial's parameters and the objective over k_SN and α (slice and contour), drawn by
``optuna.visualization.matplotlib`` from the study's own storage (its journal file or RDB).

A searched study's parent run carries the storage location (tag ``lipstudy.optuna_storage``) and
its directory (``lipstudy.study_dir``, whose name is the Optuna study's name). The figures are
drawn from the completed trials with a finite objective value only (a diverged trial's ``inf`` has
no place on an axis); what cannot be drawn is one line saying why instead of a figure:
importances need at least two such trials whose objective differs and a parameter every one of
them has (fANOVA, Optuna's default evaluator, compares the same parameters across trials).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trainables import names
from trainables.names import ALPHA, FID, K_SN

#: the Lipschitz paper's two scales (Table 5): the slice and contour plot the objective over them
SCALE_PARAMS = (K_SN, ALPHA)


@dataclass
class OptunaSummary:
    """What the report shows of one Optuna study."""

    study_name: str
    location: str
    direction: str
    objective: str
    figures: list = field(default_factory=list)   # [(name, Figure)]
    notes: list[str] = field(default_factory=list)
    best: dict | None = None                        # number, value, params


def open_study(location: str, study_name: str | None = None):
    """The persisted Optuna study at ``location`` (a ``.journal`` path or an RDB URL), read-only
    in effect: nothing is written. ``study_name`` None: the storage's only study."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in location:
        storage = optuna.storages.RDBStorage(location)
    else:
        if not Path(location).is_file():
            raise FileNotFoundError(f"no Optuna journal at {location}")
        storage = JournalStorage(JournalFileBackend(location))
    names_ = optuna.get_all_study_names(storage)
    if study_name not in names_:
        if len(names_) != 1:
            raise LookupError(f"Optuna storage {location} holds {len(names_)} studies "
                              f"({', '.join(names_) or 'none'}), not {study_name!r}")
        study_name = names_[0]
    return optuna.load_study(study_name=study_name, storage=storage)


def studies_of(frame: pd.DataFrame) -> list[tuple[str, str, str | None]]:
    """(parent run id, storage location, Optuna study name) of every searched study behind the
    frame's MLflow runs (their parents' tags), newest parent first."""
    from mlflow.tracking import MlflowClient

    if frame.empty or "parent_run_id" not in frame or "tracking_uri" not in frame:
        return []
    out = []
    for uri, g in frame.dropna(subset=["parent_run_id", "tracking_uri"]).groupby("tracking_uri"):
        client = MlflowClient(str(uri))
        parents = []
        for pid in g["parent_run_id"].unique():
            try:
                parents.append(client.get_run(str(pid)))
            except Exception:  # noqa: BLE001 - a CSV row's made-up parent id
                continue
        for run in sorted(parents, key=lambda r: -r.info.start_time):
            loc = run.data.tags.get(names.OPTUNA_STORAGE_TAG)
            study_dir = run.data.tags.get(names.STUDY_DIR_TAG)
            if loc:
                out.append((run.info.run_id, loc, Path(study_dir).name if study_dir else None))
    return out


def _finite_copy(study):
    """An in-memory study of ``study``'s completed trials with a finite objective value."""
    import optuna

    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
              and math.isfinite(t.value)]
    copy = optuna.create_study(direction=study.direction)
    copy.add_trials(trials)
    return copy, trials


def _varies(trials, key) -> bool:
    return len({t.params[key] for t in trials if key in t.params}) > 1


def _importance_blocker(trials) -> str | None:
    """Why importances cannot be computed for ``trials`` (None: they can)."""
    if len(trials) < 2:
        return f"{len(trials)} completed trial with a finite objective (need ≥ 2)"
    if len({t.value for t in trials}) < 2:
        return "every completed trial has the same objective value"
    common = set.intersection(*(set(t.params) for t in trials))
    if not [k for k in common if _varies(trials, k)]:
        return "no parameter that every completed trial has takes two values"
    return None


def optuna_summary(study, location: str, objective: str) -> OptunaSummary:
    """Figures and one-line notes for ``study`` (see the module docstring)."""
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as ovm

    from analysis.figures import has_data

    direction = "minimize" if study.direction.name == "MINIMIZE" else "maximize"
    out = OptunaSummary(study.study_name, location, direction, objective)
    copy, trials = _finite_copy(study)
    if not trials:
        out.notes.append("Optuna: no completed trial with a finite objective value yet.")
        return out
    best = copy.best_trial
    out.best = {"number": best.number, "value": best.value, "params": dict(best.params)}
    present = [p for p in SCALE_PARAMS if _varies(trials, p)]
    makers = [("optuna_history", lambda: ovm.plot_optimization_history(copy), None)]
    why = _importance_blocker(trials)
    makers.append(("optuna_importances", lambda: ovm.plot_param_importances(copy), why))
    makers.append(("optuna_slice", lambda: ovm.plot_slice(copy, params=present),
                   None if present else "neither k_SN nor α took two values"))
    both = [t for t in trials if all(p in t.params for p in SCALE_PARAMS)]
    makers.append(("optuna_contour", lambda: ovm.plot_contour(copy, params=list(SCALE_PARAMS)),
                   None if len(both) >= 2 and all(_varies(both, p) for p in SCALE_PARAMS)
                   else "needs ≥ 2 trials with both k_SN and α, each taking two values"))
    for name, make, blocker in makers:
        if blocker:
            out.notes.append(f"{name}: not drawn, {blocker}.")
            continue
        with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
            warnings.simplefilter("ignore", ExperimentalWarning)
            axes = make()
        fig = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 7), max(fig.get_size_inches()[1], 5))
        with warnings.catch_warnings():  # colour bars do not fit tight_layout: nothing to fix
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()
        if has_data(fig):
            out.figures.append((name, fig))
        else:
            plt.close(fig)
            out.notes.append(f"{name}: not drawn, nothing to plot.")
    return out


def summaries_for(frame: pd.DataFrame, objective: str = FID) -> list:
    """:func:`optuna_summary` of every Optuna study behind ``frame``; a storage that cannot be
    opened becomes a summary with one note naming it."""
    out = []
    for pid, loc, name in studies_of(frame):
        try:
            study = open_study(loc, name)
        except (FileNotFoundError, LookupError, OSError) as err:
            out.append(OptunaSummary(name or "?", loc, "?", objective,
                                     notes=[f"Optuna study of parent run {pid}: {err}"]))
            continue
        # the metric name the search recorded (study.search); searches before it optimised fid
        metric = study.metric_names[0] if study.metric_names else objective
        out.append(optuna_summary(study, loc, metric))
    return out


def best_table(summary: OptunaSummary) -> pd.DataFrame:
    """The best trial's parameters as a two-column table (parameter, value)."""
    if not summary.best:
        return pd.DataFrame(columns=["parameter", "value"])
    rows = [("objective " + summary.objective, f"{summary.best['value']:.6g}"),
            ("Optuna trial", str(summary.best["number"]))]
    rows += [(k, f"{v:.6g}" if isinstance(v, float) else str(v))
             for k, v in summary.best["params"].items()]
    return pd.DataFrame(rows, columns=["parameter", "value"])


def report_section(doc, frame: pd.DataFrame, fig_dir: Path) -> None:
    """The report's "Optuna search" section (``analysis.report``'s document): per study, the
    objective and its direction, the best trial's parameters, the figures or one line each."""
    from analysis.figures import save
    from trainables.metrics.toy_quality import describe_objective

    summaries = summaries_for(frame)
    if not summaries:
        return
    doc.h(2, "Optuna search")
    for s in summaries:
        doc.p(f"Optuna study `{s.study_name}` ({s.location}): objective `{s.objective}`, "
              f"{s.direction}d; figures by `optuna.visualization.matplotlib` from its completed "
              f"trials with a finite objective.")
        doc.p(f"Objective: {describe_objective(s.objective)}.")
        if s.best:
            doc.table(best_table(s))
        for path in save([(f"{n}_{s.study_name}", f) for n, f in s.figures], fig_dir):
            doc.img(path, f"figures/{path.name}", f"Optuna: {path.stem}")
        for note in s.notes:
            doc.p(note)
