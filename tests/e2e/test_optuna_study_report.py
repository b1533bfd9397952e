"""``lipstudy report`` on a real (tiny, 2-D toy) Optuna study run by ``run_study``: the report
has Optuna's figures from the study's journal (optimisation history, importances, slice and
contour over k_SN and α) and the best trial's parameters, no empty figure, no "nan"; the study's
end logged the same figures on its parent run (what the MLflow UI shows). A toy search optimises
``toy_quality`` (maximised), not the data-space Fréchet distance: the searcher is told each run's
last toy quality, and the parent run and the report say so. grid25, not ring8: after 4 iterations
a generator still sits near the origin, which is one of grid25's modes, so the trials' toy
qualities differ (ring8's are all 0 that early: no importances to draw)."""

from __future__ import annotations

import re

import matplotlib.image as mpimg
import numpy as np
import pytest

from tests.study.test_study_run import _run, ray_local  # noqa: F401 - the module's Ray fixture

OPTUNA_FIGURES = ("optuna_history", "optuna_importances", "optuna_slice", "optuna_contour")


@pytest.mark.slow
@pytest.mark.scenario
def test_lipstudy_report_on_an_optuna_study_has_optunas_figures(tmp_path, ray_local,  # noqa: F811
                                                                 monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from study.cli import main

    monkeypatch.chdir(tmp_path)
    _, outcome, uri = _run(tmp_path, """
        name: optuna-report
        search: optuna
        sampler: random
        fixed: {dataset: grid25, arch: mlp, width: 0.25, iterations: 4, stats_every: 2,
                eval_every: 2, fid_samples: 200, batch_size: 16, device: cpu, regularizer: sn}
        space:
          loss: {choice: [ns, wgan]}
          k_sn: {loguniform: [0.5, 5.0]}
          alpha: {loguniform: [1.0e-3, 1.0e3]}
        num_samples: 4
        seeds: 1
    """)
    assert len(outcome.trials) == 4
    parent = outcome.tracking.parent_run_id
    logged = {f.path.split("/")[-1]
              for f in MlflowClient(uri).list_artifacts(parent, "figures")}
    assert {f"{n}.png" for n in OPTUNA_FIGURES} <= logged, logged
    client = MlflowClient(uri)
    assert client.get_run(parent).data.tags["lipstudy.objective"].startswith(
        "toy_quality (maximised)")
    ot = _optuna_study(outcome.storage_path)
    assert ot.direction.name == "MAXIMIZE" and ot.metric_names == ["toy_quality"]
    told = sorted(t.value for t in ot.trials if t.state.name == "COMPLETE")
    runs = client.search_runs([client.get_run(parent).info.experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parent}'")
    last = sorted(max(client.get_metric_history(r.info.run_id, "toy_quality"),
                      key=lambda m: m.step).value for r in runs)
    assert len(told) == 4 and np.allclose(told, last), (told, last)
    out = tmp_path / "rep"
    assert main(["report", "--experiment", "optuna-report", "--tracking-uri", uri,
                 "--out", str(out)]) == 0, capsys.readouterr().err
    text = (out / "report.md").read_text()
    sec = text.split("## Optuna search")[1].split("\n## ")[0]
    for name in OPTUNA_FIGURES:
        (ref,) = re.findall(rf"\]\((figures/{name}_[^)]+\.png)\)", sec)
        img = mpimg.imread(out / ref)
        assert np.std(img[..., :3]) > 0.05, name  # a drawn figure, not a blank canvas
    assert "| k_sn |" in sec and "| alpha |" in sec  # the best trial's parameters
    assert "objective `toy_quality`, maximized" in sec and "Objective: toy_quality" in sec
    assert not [ln for ln in text.splitlines() if re.search(r"\bnan\b", ln, flags=re.I)]


def _optuna_study(study_dir):
    from study.search import load_optuna_study
    from study.statefile import read_state

    state = read_state(study_dir)
    return load_optuna_study(state["optuna_storage"], state["optuna_study_name"])
