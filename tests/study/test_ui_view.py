"""The study at a glance in the MLflow UI without a browser (the browser check is
tests/e2e/test_mlflow_ui_browser.py): what ``start_study_run`` writes on the experiment (a shared
view of the execution's trials, a description linking its figures), the link ``lipstudy ui``
prints (the newest execution's view), and the figures logged on the parent run at the study's
end, Optuna's own for a searched study."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study.search import open_storage
from study.tracking import start_study_run
from study.ui_view import (NOTE_TAG, RUN_COLOR_TAG, SHARED_VIEW_TAG, experiment_links,
                           log_study_figures, loss_hex)
from trainables import names


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _start(uri, tmp_path, **tags):
    return start_study_run(uri, "glance", "name: glance\n", hypotheses=[], tags=tags or None,
                           artifact_root=str(tmp_path / "mlruns"))


def test_each_execution_shares_a_view_of_its_trials_and_the_link_opens_the_newest(uri,
                                                                                 tmp_path):
    first = _start(uri, tmp_path)
    second = _start(uri, tmp_path)
    client = MlflowClient(uri)
    tags = client.get_experiment(second.experiment_id).tags
    view = json.loads(tags[SHARED_VIEW_TAG + second.parent_run_id])
    assert view["searchFilter"] == f"tags.`mlflow.parentRunId` = '{second.parent_run_id}'"
    assert view["orderByKey"] == "metrics.`fid`" and view["orderByAsc"] is True
    assert view["selectedColumns"] == [
        "tags.`lipstudy.status`", "params.`loss`", "params.`regularizer`", "params.`k_sn`",
        "params.`alpha`", "metrics.`fid`", "metrics.`fid_quality`", "metrics.`modes_covered`",
        "metrics.`hq_share`"]
    # its chart view opens on FID against k_SN, then the FID curves (log FID), in that order
    scatter, curves = view["compareRunCharts"]
    assert (scatter["type"], scatter["xaxis"], scatter["yaxis"]) == (
        "SCATTER", {"key": "k_sn", "type": "PARAM"}, {"key": "fid", "type": "METRIC"})
    assert (curves["type"], curves["metricKey"], curves["scaleType"]) == ("LINE", "fid", "log")
    (section,) = view["compareRunSections"]
    assert section["isReordered"] and {scatter["metricSectionId"], curves["metricSectionId"]} == {
        section["uuid"]}
    assert SHARED_VIEW_TAG + first.parent_run_id in tags  # an earlier execution keeps its view
    note = tags[NOTE_TAG]
    assert note.startswith('lipstudy study "glance"')  # what the home page's list shows
    assert (f"(#/experiments/{second.experiment_id}/runs/{second.parent_run_id}/artifactPath/"
            f"figures/fid_vs_k_sn.png?workflowType=machine_learning)") in note
    assert "Optuna history" not in note
    client.set_experiment_tag(second.experiment_id, NOTE_TAG, "my own notes")
    _start(uri, tmp_path)  # a third execution: its view, and the person's description stays
    assert client.get_experiment(second.experiment_id).tags[NOTE_TAG] == "my own notes"
    (line,) = experiment_links(uri, "http://127.0.0.1:5000")
    (third,) = [r for r in client.search_runs([second.experiment_id],
                                              "tags.`lipstudy.kind` = 'study'")
                if r.info.run_id not in (first.parent_run_id, second.parent_run_id)]
    assert line == (f"  glance: http://127.0.0.1:5000/#/experiments/{second.experiment_id}/runs"
                    f"?viewStateShareKey={third.info.run_id}&workflowType=machine_learning")


def _child(client, tracking, i: int, loss: str, k: float, alpha: float, fids: list[float]):
    """A finished SN trial on ring8 with a FID history, as the trainables log one."""
    run = client.create_run(tracking.experiment_id, run_name=f"{loss}-k{k}-{i}",
                            tags={names.PARENT_TAG: tracking.parent_run_id,
                                  names.STATUS_TAG: "finished", names.STUDY_TAG: "glance"})
    rid = run.info.run_id
    for key, value in dict(dataset="ring8", arch="mlp", loss=loss, regularizer="sn", k_sn=k,
                           alpha=alpha, seed=0, fid_extractor="data", iterations=20).items():
        client.log_param(rid, key, value)
    for step, fid in zip((10, 20), fids):
        client.log_metric(rid, "fid", fid, step=step)
        client.log_metric(rid, "modes_covered", 4.0 + step / 10, step=step)
        client.log_metric(rid, "hq_share", 0.5, step=step)
    client.set_terminated(rid, "FINISHED")
    return rid


def _artifacts(client, run_id: str) -> set[str]:
    return {f.path.split("/")[-1] for f in client.list_artifacts(run_id, "figures")}


def test_the_parent_run_gets_fid_vs_k_and_the_fid_curves(uri, tmp_path):
    tracking = _start(uri, tmp_path)
    client = MlflowClient(uri)
    for i, (loss, k) in enumerate((("ns", 0.5), ("wgan", 1.0), ("ns", 10.0), ("wgan", 10.0))):
        _child(client, tracking, i, loss, k, 1.0, [9.0 - i, 4.0 + i])
    figures = {}

    class Keep(MlflowClient):  # the figures as logged (they are closed, not gone, afterwards)
        def log_figure(self, run_id, figure, artifact_file, **kw):
            figures[artifact_file] = figure
            return super().log_figure(run_id, figure, artifact_file, **kw)

    logged = log_study_figures(Keep(uri), tracking)
    assert logged == ["figures/fid_vs_k_sn.png", "figures/fid_curves.png"]
    assert _artifacts(client, tracking.parent_run_id) == {"fid_vs_k_sn.png", "fid_curves.png"}
    # FID against k_SN on log axes, a colour per loss; the trial runs carry the same colours
    (ax,) = figures["figures/fid_vs_k_sn.png"].axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    from matplotlib.colors import to_hex

    drawn = {ln.get_label().split()[0]: to_hex(ln.get_color()) for ln in ax.get_lines()}
    assert drawn == {"ns": loss_hex("ns"), "wgan": loss_hex("wgan")}
    assert loss_hex("ns") != loss_hex("wgan")
    children = client.search_runs([tracking.experiment_id],
                                  f"tags.`{names.PARENT_TAG}` = '{tracking.parent_run_id}'")
    assert len(children) == 4
    for run in children:
        assert run.data.tags[RUN_COLOR_TAG] == loss_hex(run.data.params["loss"])


def test_a_searched_study_also_gets_optunas_figures_on_its_parent(uri, tmp_path):
    journal = tmp_path / "results" / "glance-x" / "optuna.journal"
    tracking = _start(uri, tmp_path, **{names.OPTUNA_STORAGE_TAG: str(journal),
                                        names.STUDY_DIR_TAG: str(journal.parent)})
    client = MlflowClient(uri)
    assert "Optuna history" in client.get_experiment(tracking.experiment_id).tags[NOTE_TAG]
    study = optuna.create_study(study_name="glance-x", storage=open_storage(str(journal)))
    dists = {"k_sn": optuna.distributions.FloatDistribution(0.1, 100, log=True),
             "alpha": optuna.distributions.FloatDistribution(1e-25, 1e11, log=True)}
    points = [(0.3, 1e-20, 5.0), (2.0, 1e-3, 2.5), (30.0, 1e5, 8.0), (7.0, 10.0, math.inf)]
    for i, (k, alpha, value) in enumerate(points):
        _child(client, tracking, i, "ns", k, alpha, [value + 1 if math.isfinite(value) else 50,
                                                     value if math.isfinite(value) else 60])
        study.add_trial(optuna.trial.create_trial(params={"k_sn": k, "alpha": alpha},
                                                  distributions=dists, value=value))
    log_study_figures(client, tracking)
    assert {"optuna_history.png", "optuna_importances.png", "optuna_slice.png",
            "optuna_contour.png"} <= _artifacts(client, tracking.parent_run_id)
