import io

import pandas as pd

from analysis import load


def test_load_runs_types_status_and_finals(mlflow_store):
    df = load.load_runs("toy-study", mlflow_store["uri"])
    assert len(df) == 4                                   # the parent run is not a trial
    assert set(df["run_id"]) == set(mlflow_store["trials"])
    assert (df["parent_run_id"] == mlflow_store["parent"]).all()
    assert df["k_sn"].dtype == float and df["seed"].dtype == "Int64"
    assert df["d_bias"].dtype == "boolean" and bool(df["d_bias"].iloc[0]) is True
    assert df["data_root"].isna().all()                   # "None" → missing
    by = df.set_index("run_name")
    assert by.loc["ns-sn-k1-a1e-25-s0", "fid"] == 20.0    # final = last step
    assert by.loc["ns-sn-k1-a1e-25-s0", "alpha"] == 1e-25
    assert by.loc["wgan-sn-k10-a1-s1", "fid"] == 25.0
    assert by.loc["ns-sn-k10-a1e-25-s0", "status"] == "diverged"
    assert bool(by.loc["ns-sn-k10-a1e-25-s0", "diverged"]) is True
    assert by.loc["ns-sn-k10-a1e-25-s0", "diverged_reason"] == "nan in loss_d"
    assert int(by.loc["ns-sn-k10-a1e-25-s0", "diverged_step"]) == 400
    assert by.loc["ls-sn-k0.5-a1-s2", "status"] == "crashed"
    assert (df["experiment"] == "toy-study").all() and (df["origin"] == "run").all()
    # the FID scale where a run logged it; older runs lack it (NaN), nothing fails
    assert by.loc["ns-sn-k1-a1e-25-s0", "fid_floor"] == 6.0 and df["fid_quality_final"].dtype == float
    assert pd.isna(by.loc["wgan-sn-k10-a1-s1", "fid_init"])
    assert (df["loaded_from"] == "mlflow").all() and (df["tracking_uri"] == mlflow_store["uri"]).all()


def test_load_runs_cached_and_unknown_experiment(mlflow_store):
    a = load.load_runs(["toy-study"], mlflow_store["uri"])
    b = load.load_runs(["toy-study"], mlflow_store["uri"])
    pd.testing.assert_frame_equal(a, b)
    try:
        load.load_runs("nope", mlflow_store["uri"])
    except LookupError as err:
        assert "nope" in str(err)
    else:
        raise AssertionError("unknown experiment accepted")


def test_parents(mlflow_store):
    p = load.load_parents("toy-study", mlflow_store["uri"])
    assert list(p["run_id"]) == [mlflow_store["parent"]]
    assert p["hypotheses"].iloc[0] == "H1,domain-restriction"


def test_histories_sqlite_path_equals_client_path_and_cache(mlflow_store, tmp_path, monkeypatch):
    df = load.load_runs("toy-study", mlflow_store["uri"])
    fast = load.load_histories(df, ["fid", "loss_d"], mlflow_store["uri"], cache_dir=tmp_path / "c")
    client = load._client(mlflow_store["uri"])
    slow = load._fetch_client(client, list(df["run_id"]), ["fid", "loss_d"])
    slow = slow.sort_values(["run_id", "metric", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(fast[["run_id", "metric", "step"]], slow[["run_id", "metric", "step"]],
                                  check_dtype=False)
    assert (fast["value"].to_numpy() == slow["value"].to_numpy()).all()
    ns = fast[(fast["run_id"] == df.set_index("run_name").loc["ns-sn-k1-a1e-25-s0", "run_id"])
              & (fast["metric"] == "fid")]
    assert list(ns["step"]) == [400, 800, 1200] and list(ns["value"]) == [80.0, 40.0, 20.0]
    # second call is served from the on-disk cache (no store access at all)
    monkeypatch.setattr(load, "_fetch_sqlite", lambda *a: (_ for _ in ()).throw(AssertionError))
    monkeypatch.setattr(load, "_fetch_client", lambda *a: (_ for _ in ()).throw(AssertionError))
    again = load.load_histories(df, ["fid", "loss_d"], mlflow_store["uri"], cache_dir=tmp_path / "c")
    pd.testing.assert_frame_equal(fast, again)


def test_frame_from_csv_same_columns():
    csv = io.StringIO("dataset,loss,regularizer,k_sn,alpha,fid,fid_extractor,seed,source\n"
                      "mnist,ns,sn,1.0,1,3.90,inception,0,my table\n"
                      "mnist,wgan,sn,5,1,3.58,inception,1,my table\n")
    df = load.frame_from_csv(csv)
    assert list(df["fid"]) == [3.90, 3.58]
    assert df["k_sn"].dtype == float and df["seed"].dtype == "Int64"
    assert (df["status"] == "finished").all() and (df["origin"] == "external").all()
    assert df["run_id"].is_unique
    both = load.concat([df, df.assign(run_id=["x", "y"])])
    assert len(both) == 4
