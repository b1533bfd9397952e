"""Optuna studies report like Optuna: ``lipstudy report`` on a searched study's runs shows the
optimisation history, the parameter importances, the best trial's parameters and the objective
over k_SN and α (slice, contour), drawn from the study's Optuna journal (the parent run's
``lipstudy.optuna_storage`` tag); no figure is empty and nothing prints "nan". With fewer than two
completed trials the importances are one line instead of a figure."""

from __future__ import annotations

import math
import re

import matplotlib.image as mpimg
import numpy as np
import optuna

from analysis import report
from tests.analysis.test_search_report import REASON, search_frame
from trainables import names

OPTUNA_FIGURES = ("optuna_history", "optuna_importances", "optuna_slice", "optuna_contour")


def _searched_study(tmp_path, frame, n_trials: int | None = None):
    """An MLflow parent run tagged as ``lipstudy run`` tags a searched study, and its Optuna
    journal holding one trial per configuration of ``frame`` (value: its FID; diverged: inf)."""
    from mlflow.tracking import MlflowClient

    from study.search import open_storage
    from study.tracking import start_study_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study_dir = tmp_path / "results" / "search-lipschitz-x"
    journal = str(study_dir / "optuna.journal")
    tracking = start_study_run(uri, "search-lipschitz", "name: search-lipschitz\n", hypotheses=[],
                               artifact_root=str(tmp_path / "mlruns"),
                               tags={names.OPTUNA_STORAGE_TAG: journal,
                                     names.STUDY_DIR_TAG: str(study_dir)})
    study = optuna.create_study(study_name=study_dir.name, storage=open_storage(journal))
    configs = frame[frame["seed"].astype(str) == "0"]  # one Optuna trial per configuration
    for _, row in configs.head(n_trials).iterrows():
        params, dists = {}, {}
        for key, (lo, hi) in (("k_sn", (0.1, 100.0)), ("alpha", (1e-25, 1e11)),
                              ("eps", (1e-16, 1e-4))):
            if isinstance(row.get(key), float) and math.isfinite(row[key]):
                params[key] = row[key]
                dists[key] = optuna.distributions.FloatDistribution(lo, hi, log=True)
        params["loss"] = row["loss"]
        dists["loss"] = optuna.distributions.CategoricalDistribution(["ns", "ls", "wgan", "hinge"])
        fid = row["fid"]
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists,
            value=float(fid) if math.isfinite(fid) else math.inf))
    frame = frame.assign(parent_run_id=tracking.parent_run_id, tracking_uri=uri)
    return frame, MlflowClient(uri), tracking


def _nan_lines(text: str) -> list[str]:
    return [ln for ln in text.replace(REASON, "").splitlines()
            if re.search(r"\bnan\b", ln, flags=re.I)]


def test_report_on_an_optuna_study_has_the_optuna_figures_none_empty_no_nan(tmp_path):
    frame, _, _ = _searched_study(tmp_path, search_frame()[0])
    md = report.build(frame, tmp_path / "rep", reference=None)
    text = md.read_text()
    sec = text.split("## Optuna search")[1].split("\n## ")[0]
    assert "objective `fid`, minimized" in sec
    for name in OPTUNA_FIGURES:
        (ref,) = re.findall(rf"\]\((figures/{name}_[^)]+\.png)\)", sec)
        img = mpimg.imread(tmp_path / "rep" / ref)
        assert img.shape[0] > 200 and np.std(img[..., :3]) > 0.05, name  # not a blank canvas
    # the best trial's parameters: the lowest finite FID's configuration
    finite = frame[frame["seed"].astype(str) == "0"]
    best = finite.loc[finite["fid"].idxmin()]
    assert f"| objective fid | {best['fid']:.6g} |" in sec
    assert f"| loss | {best['loss']} |" in sec
    assert not _nan_lines(text), _nan_lines(text)[:5]
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "",
                  (tmp_path / "rep" / "report.html").read_text())
    assert not _nan_lines(html)


def test_one_completed_trial_gives_a_line_not_an_empty_importance_figure(tmp_path):
    frame, _, _ = _searched_study(tmp_path, search_frame()[0], n_trials=1)
    text = report.build(frame, tmp_path / "rep", reference=None).read_text()
    sec = text.split("## Optuna search")[1].split("\n## ")[0]
    assert "optuna_importances: not drawn, 1 completed trial with a finite objective (need ≥ 2)" \
        in sec
    assert "figures/optuna_history_" in sec and "figures/optuna_importances_" not in sec
    assert not _nan_lines(text)


def test_the_optuna_figures_go_to_the_parent_run_with_the_report(tmp_path):
    frame, client, tracking = _searched_study(tmp_path, search_frame()[0])
    out = tmp_path / "rep"
    report.build(frame, out, reference=None)
    assert report.attach_to_parent(out, "search-lipschitz", tracking.tracking_uri,
                                   tracking.parent_run_id) == tracking.parent_run_id
    logged = {f.path for f in client.list_artifacts(tracking.parent_run_id, "report/figures")}
    for name in OPTUNA_FIGURES:
        assert [p for p in logged if p.split("/")[-1].startswith(name)], (name, logged)


def test_a_missing_journal_is_one_line(tmp_path):
    frame, _, _ = _searched_study(tmp_path, search_frame()[0], n_trials=2)
    (tmp_path / "results" / "search-lipschitz-x" / "optuna.journal").unlink()
    text = report.build(frame, tmp_path / "rep", reference=None).read_text()
    sec = text.split("## Optuna search")[1].split("\n## ")[0]
    assert "no Optuna journal at" in sec and "figures/optuna_" not in sec
