"""``lipstudy report`` reads a store, never creates one: from a directory without a store it says
which store it searched (one line, exit 2) and leaves no ``mlflow.db`` behind; an experiment the
store lacks is one line naming the store and the experiments it has."""

from __future__ import annotations

import pytest

from analysis.report import main as report_main


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory holding no store, with MLflow's URI left to its default."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return work


def test_report_without_a_store_creates_none(elsewhere, capsys):
    rc = report_main(["--experiment", "default", "--out", str(elsewhere / "rep")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert not (elsewhere / "mlflow.db").exists(), "report created a store"
    assert list(elsewhere.iterdir()) == [], list(elsewhere.iterdir())
    assert len(err) == 1 and str(elsewhere / "mlflow.db") in err[0], err


def test_report_names_the_store_and_its_experiments(elsewhere, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(uri)
    for name in ("toy-grid", "default-study"):
        client.create_experiment(name, artifact_location=str(tmp_path / "art" / name))
    capsys.readouterr()
    rc = report_main(["--experiment", "default", "--tracking-uri", uri, "--out",
                      str(elsewhere / "rep")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1, err
    assert "'default'" in err[0] and str(tmp_path / "store.db") in err[0], err
    assert "toy-grid" in err[0] and "default-study" in err[0], err
