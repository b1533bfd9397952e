"""Shared builders: synthetic trial frames and a small SQLite MLflow store (no Ray)."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest

from analysis import load

_ids = itertools.count()

BASE = dict(status="finished", origin="run", experiment="synthetic", dataset="fashion_mnist_mini",
            fid_extractor="inception", regularizer="sn", alpha=1.0, seed=0, loss="ns",
            fid_samples=1000)


def make_frame(rows: list[dict]) -> pd.DataFrame:
    """A typed trial frame from dicts (defaults above; run ids r0, r1, …)."""
    full = []
    for r in rows:
        d = {**BASE, **r}
        d.setdefault("run_id", f"r{next(_ids)}")
        full.append(d)
    return load.concat([load.type_columns(pd.DataFrame(full))])


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """A SQLite MLflow store with one study: a parent run and four trials (finished ×2, diverged,
    crashed) laid out exactly as trainables/study write them. The NS k_SN 1 trial carries the FID
    scale (fid_floor, fid_init, fid_quality per evaluation, fid_quality_final) and a
    ``final/samples.png``; the diverged one only ``samples/step_<step:07d>.png`` grids; the WGAN
    one is a run logged before the FID scale was recorded (no scale, no artifacts)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    tmp_path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("toy-study", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp_id, run_name="toy-study", tags={
        "lipstudy.kind": "study", "lipstudy.study": "toy-study",
        "lipstudy.hypotheses": "H1,domain-restriction", "lipstudy.git_commit": "abc123"})
    client.set_terminated(parent.info.run_id)
    trials = [
        dict(loss="ns", k_sn=1.0, seed=0, status="finished", fids=[80.0, 40.0, 20.0]),
        dict(loss="wgan", k_sn=10.0, seed=1, status="finished", fids=[70.0, 35.0, 25.0]),
        dict(loss="ns", k_sn=10.0, seed=0, status="diverged", fids=[90.0]),
        dict(loss="ls", k_sn=0.5, seed=2, status="crashed", fids=[60.0]),
    ]
    ids = []
    for t in trials:
        params = dict(dataset="fashion_mnist_mini", data_root="None", download="False",
                      resolution="32", arch="dcgan32", width="0.125", d_bias="True", d_norm="none",
                      z_dim="100", loss=t["loss"], alpha="1e-25" if t["loss"] == "ns" else "1",
                      regularizer="sn", k_sn=format(t["k_sn"], ".10g"), optimizer="rmsprop",
                      lr_d="5e-05", lr_g="5e-05", eps="1e-08", n_dis="1", rmsprop_decay="0.99",
                      iterations="1200", batch_size="64", seed=str(t["seed"]), stats_every="100",
                      eval_every="400", fid_samples="1000", fid_extractor="domain",
                      fid_ref_split="test", device="cpu", lipschitz_k=str(t["k_sn"] ** 4),
                      n_d_layers="4", omega_bound=str(64 * t["k_sn"] ** 4), g_params="1000",
                      d_params="2000")
        name = f"{t['loss']}-sn-k{t['k_sn']:g}-a{params['alpha']}-s{t['seed']}"
        run = client.create_run(exp_id, run_name=name, tags={
            "mlflow.parentRunId": parent.info.run_id, "lipstudy.study": "toy-study"})
        rid = run.info.run_id
        client.log_batch(rid, params=[Param(k, v) for k, v in params.items()])
        ms = []
        for i, f in enumerate(t["fids"]):
            step = 400 * (i + 1)
            ms += [Metric("fid", f, 0, step), Metric("loss_d", 1.0 / (i + 1), 0, step),
                   Metric("omega_union_min", -0.1 * (i + 1), 0, step),
                   Metric("omega_union_max", 0.2 * (i + 1), 0, step),
                   Metric("omega_real_min", -0.1, 0, step), Metric("omega_real_max", 0.2, 0, step),
                   Metric("omega_fake_min", -0.05, 0, step), Metric("omega_fake_max", 0.1, 0, step),
                   Metric("grad_norm_real", 0.5 + i, 0, step), Metric("grad_norm_fake", 0.4 + i, 0, step),
                   Metric("diverged", 1.0 if t["status"] == "diverged" and i == len(t["fids"]) - 1 else 0.0,
                          0, step)]
        if t["loss"] == "ns" and t["status"] == "finished":
            floor, init = 6.0, 1700.0
            ms += [Metric("fid_floor", floor, 0, 0), Metric("fid_init", init, 0, 0)]
            ms += [Metric("fid_quality", math.log(init / f) / math.log(init / floor), 0, 400 * (i + 1))
                   for i, f in enumerate(t["fids"])]
            ms += [Metric("fid_final", t["fids"][-1], 0, 1200),
                   Metric("fid_quality_final", math.log(init / t["fids"][-1]) / math.log(init / floor), 0, 1200)]
            _log_png(client, rid, tmp_path, "final/samples.png")
            _log_png(client, rid, tmp_path, "samples/step_0001200.png")
        if t["status"] == "diverged":
            _log_png(client, rid, tmp_path, "samples/step_0000400.png")
        client.log_batch(rid, metrics=ms)
        tags = [RunTag("lipstudy.status", t["status"])]
        if t["status"] == "diverged":
            tags += [RunTag("lipstudy.diverged_step", "400"), RunTag("lipstudy.diverged_reason", "nan in loss_d")]
        client.log_batch(rid, tags=tags)
        client.set_terminated(rid, "FAILED" if t["status"] == "crashed" else "FINISHED")
        ids.append(rid)
    return dict(uri=uri, experiment="toy-study", parent=parent.info.run_id, trials=ids, client=client)


def _log_png(client, run_id: str, tmp_path, artifact: str) -> None:
    """A small sample-grid PNG logged as ``artifact`` (e.g. ``final/samples.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    d, name = artifact.rsplit("/", 1)
    local = tmp_path / "png" / run_id / d
    local.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(len(artifact)).random((34, 34, 3))
    plt.imsave(local / name, img)
    client.log_artifact(run_id, str(local / name), d)
