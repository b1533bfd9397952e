"""Tracking holds the cluster's load (issue #11): the trial logger retries transient tracking
errors without duplicating a step, gives up on permanent ones, and never leaves a run RUNNING;
32 concurrent trial loggers against a real ``mlflow server`` (SQLite, and PostgreSQL where it can
be started here) lose no step, even when the server is SIGKILLed and restarted under them.

The first tests are fast (a fake client that injects failures in front of a real SQLite store);
the load tests are marked slow and drive bench/tracking_load.py's load (the same code the
benchmark measures)."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import yaml
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from trainables.tracking.mlflow_logger import MlflowTrialLogger
from trainables.names import CREATE_TOKEN_TAG, TRACKING_ERROR_TAG, TRIAL_ID_TAG
from trainables.tracking.retry import RetryPolicy, TrackingError, is_transient

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(budget_s=30.0, first_delay_s=0.01, max_delay_s=0.05)


def _load_bench():
    """bench/tracking_load.py as a module (bench/ is not a package)."""
    name = "lipstudy_bench_tracking_load"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "tracking_load.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # its dataclasses look their module up while being made
        spec.loader.exec_module(mod)
    return sys.modules[name]


# -- what the server and the client raise under load (shapes copied from MLflow 3.17) -------------

def queuepool() -> Exception:  # SQLAlchemy pool timeout on the server: HTTP 400, not retried
    return RestException({"error_code": "BAD_REQUEST", "message": (
        "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00 "
        "(Background on this error at: https://sqlalche.me/e/21/3o7r)")})


def too_many_requests() -> Exception:  # 429
    return RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "Too many requests"})


def unavailable_503() -> Exception:  # the HTTP client's own retries of a 503 ran out
    return MlflowException(
        "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: "
        "/api/2.0/mlflow/runs/log-batch (Caused by ResponseError('too many 503 error responses'))")


def locked() -> Exception:  # SQLite writer lock past busy_timeout (server-side OperationalError)
    return MlflowException("(sqlite3.OperationalError) database is locked",
                           error_code=TEMPORARILY_UNAVAILABLE)


def refused() -> Exception:
    return requests.exceptions.ConnectionError("[Errno 111] Connection refused")


def _http_error(status: int) -> Exception:
    resp = requests.Response()
    resp.status_code = status
    return requests.HTTPError(f"{status} Server Error", response=resp)


@pytest.mark.parametrize("err, transient", [
    (queuepool(), True),
    (too_many_requests(), True),
    (unavailable_503(), True),
    (locked(), True),
    (refused(), True),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (TimeoutError("timed out"), True),
    (MlflowException("deadlock detected", error_code=TEMPORARILY_UNAVAILABLE), True),
    (RestException({"error_code": "INTERNAL_ERROR", "message": "boom"}), True),  # a 500
    (_http_error(503), True),   # artifact upload through the proxy
    (_http_error(429), True),
    (_http_error(404), False),
    (_http_error(403), False),
    (MlflowException("Changing param values is not allowed. Param with key='lr' was already "
                     "logged with value='1' ... timeout", error_code=INVALID_PARAMETER_VALUE),
     False),
    (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'x' not found"}),
     False),
    (RestException({"error_code": "INVALID_STATE", "message": "The run x must be in the "
                                                              "'active' state"}), False),
    (RestException({"error_code": "BAD_REQUEST", "message": "Invalid value for metric"}), False),
    (ValueError("bad"), False),
    (OSError("disk full"), False),
    (PermissionError("denied"), False),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_transient_errors_are_told_from_permanent_ones(err, transient):
    assert is_transient(err) is transient


# -- a client that fails on purpose in front of a real store ---------------------------------------

@dataclass
class Fault:
    method: str
    make: Callable[[], Exception]
    mode: str = "before"          # "before": nothing reached the store; "after": it landed, the
    #                               answer was lost (the retry must then add nothing)
    times: int = 1
    when: Callable[[tuple, dict], bool] = lambda args, kwargs: True


class FlakyClient:
    """Wraps a real ``MlflowClient``; raises the planned faults and records what landed."""

    def __init__(self, client: MlflowClient, faults: list[Fault]):
        self._client, self.faults = client, faults
        self.landed_steps: list[int] = []   # metric batches, in the order the store got them
        self.injected = 0

    def _take(self, name, args, kwargs):
        for f in self.faults:
            if f.method == name and f.times > 0 and f.when(args, kwargs):
                f.times -= 1
                self.injected += 1
                return f
        return None

    def __getattr__(self, name):
        real = getattr(self._client, name)
        if not callable(real):
            return real

        def call(*args, **kwargs):
            fault = self._take(name, args, kwargs)
            if fault is not None and fault.mode == "before":
                raise fault.make()
            out = real(*args, **kwargs)
            if name == "log_batch" and kwargs.get("metrics"):
                self.landed_steps.append(kwargs["metrics"][0].step)
            if fault is not None:
                raise fault.make()
            return out

        return call


def metric_step(step: int) -> Callable[[tuple, dict], bool]:
    return lambda a, k: bool(k.get("metrics")) and k["metrics"][0].step == step


def metrics_from(step: int) -> Callable[[tuple, dict], bool]:
    return lambda a, k: bool(k.get("metrics")) and k["metrics"][0].step >= step


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("load", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="study").info.run_id
    return uri, exp, parent, client


def make_logger(store, faults, *, synchronous=False, retry=FAST, trial="t0",
                params: dict[str, Any] | None = None):
    uri, exp, parent, client = store
    flaky = FlakyClient(MlflowClient(uri), faults)
    logger = MlflowTrialLogger(uri, exp, name="trial", params=params or {"lr": 1.0, "loss": "ns"},
                               parent_run_id=parent, tags={TRIAL_ID_TAG: trial},
                               synchronous=synchronous, retry=retry, client=flaky)
    return logger, flaky


def history(client, run_id, key):
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def children(store):
    _, exp, parent, client = store
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                              run_view_type=3)  # ALL: deleted ones too


@pytest.mark.parametrize("synchronous", [False, True], ids=["writer-thread", "sync"])
def test_transient_failures_are_retried_in_order_without_duplicates(store, synchronous):
    n = 30
    faults = [
        Fault("create_run", queuepool, mode="after"),        # run made, answer lost
        Fault("log_batch", queuepool, when=lambda a, k: bool(k.get("params"))),
        Fault("log_batch", queuepool, mode="after", when=metric_step(3)),
        Fault("log_batch", too_many_requests, when=metric_step(5)),
        Fault("log_batch", unavailable_503, mode="after", when=metric_step(6), times=2),
        Fault("log_batch", locked, when=metric_step(9), times=3),
        Fault("log_batch", refused, mode="after", when=metric_step(n)),
        Fault("log_artifact", refused),
        Fault("log_batch", locked, when=lambda a, k: bool(k.get("tags"))),
        Fault("set_terminated", unavailable_503, mode="after"),
    ]
    logger, flaky = make_logger(store, faults, synchronous=synchronous)
    for step in range(1, n + 1):
        logger.log_metrics(step, {"a": float(step), "b": -float(step), "nan": float("nan")})
        if step == 10:
            logger.flush()
    logger.log_text("hello", "notes/hello.txt")
    logger.set_tags({"lipstudy.status": "finished"})
    logger.finish()

    assert all(f.times == 0 for f in faults), [f for f in faults if f.times]
    assert logger.retries == flaky.injected == 13
    client = store[3]
    runs = children(store)
    assert [r.info.run_id for r in runs] == [logger.run_id]  # the lost create was adopted
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.lifecycle_stage == "active"
    assert run.data.params == {"lr": "1", "loss": "ns"}
    assert run.data.tags["lipstudy.status"] == "finished"
    assert TRACKING_ERROR_TAG not in run.data.tags
    for key, sign in (("a", 1.0), ("b", -1.0)):
        got = history(client, logger.run_id, key)
        assert [(s, v) for s, v, _ in got] == [(s, sign * s) for s in range(1, n + 1)], key
    assert [s for s, _, _ in history(client, logger.run_id, "nan")] == list(range(1, n + 1))
    # in order: a batch is retried until it lands before the next one is sent
    assert flaky.landed_steps == sorted(flaky.landed_steps)
    assert sorted(set(flaky.landed_steps)) == list(range(1, n + 1))
    assert len(flaky.landed_steps) == n + 4  # steps 3, 6 (twice), 30 again, as no-ops
    assert [a.path for a in client.list_artifacts(logger.run_id, "notes")] == ["notes/hello.txt"]


def test_replaying_a_landed_batch_adds_nothing_but_a_new_timestamp_would(store):
    """Why a retry re-sends the very same Metric objects: MLflow's SQL store keys a metric row by
    (run, key, timestamp, step, value); the same row again is ignored, a new timestamp is a second
    row for the same step."""
    _, exp, _, client = store
    run_id = client.create_run(exp).info.run_id
    batch = [Metric("a", 1.5, 1_000, 7), Metric("b", float("nan"), 1_000, 7),
             Metric("c", float("inf"), 1_000, 7)]
    client.log_batch(run_id, metrics=batch)
    client.log_batch(run_id, metrics=batch)   # a retry of a batch that landed
    assert {k: len(client.get_metric_history(run_id, k)) for k in "abc"} == \
        {"a": 1, "b": 1, "c": 1}
    client.log_batch(run_id, metrics=[Metric("a", 1.5, 1_001, 7)])  # what a retry must not do
    assert len(client.get_metric_history(run_id, "a")) == 2


def test_a_create_retried_after_a_lost_answer_keeps_one_run(store):
    """The first create landed, its answer was lost, and the look-up before the retry did not
    see it yet: the retry makes a second run; the logger keeps the oldest and deletes the twin."""
    faults = [Fault("create_run", unavailable_503, mode="after"),
              Fault("search_runs", unavailable_503, mode="hide",
                    when=lambda a, k: CREATE_TOKEN_TAG in k.get("filter_string", ""))]
    uri, exp, parent, client = store
    flaky = FlakyClient(MlflowClient(uri), faults)
    real_search = flaky._client.search_runs

    def search_runs(*a, **k):  # "hide": the store has not shown the first run yet
        f = flaky._take("search_runs", a, k)
        return [] if f is not None else real_search(*a, **k)

    flaky.__dict__["search_runs"] = search_runs
    logger = MlflowTrialLogger(uri, exp, name="trial", params={"lr": 1.0}, parent_run_id=parent,
                               tags={TRIAL_ID_TAG: "t0"}, retry=FAST, client=flaky)
    runs = children(store)
    active = [r for r in runs if r.info.lifecycle_stage == "active"]
    deleted = [r for r in runs if r.info.lifecycle_stage == "deleted"]
    assert [r.info.run_id for r in active] == [logger.run_id] and len(deleted) == 1
    assert active[0].info.start_time <= deleted[0].info.start_time
    assert client.get_run(logger.run_id).data.params == {"lr": "1"}


@pytest.mark.parametrize("synchronous", [False, True], ids=["writer-thread", "sync"])
def test_an_exhausted_budget_ends_the_run_failed_with_the_reason(store, synchronous):
    retry = RetryPolicy(budget_s=0.6, first_delay_s=0.05, max_delay_s=0.1)
    faults = [Fault("log_batch", unavailable_503, when=metrics_from(6), times=10_000)]
    logger, flaky = make_logger(store, faults, synchronous=synchronous, retry=retry)
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="gave up.*503"):
        for step in range(1, 11):
            logger.log_metrics(step, {"a": float(step)})
        logger.flush()
    assert time.monotonic() - t0 < 10
    assert 3 <= logger.retries <= 20
    client = store[3]
    run = client.get_run(logger.run_id)
    assert run.info.status == "FAILED"  # not left RUNNING
    assert run.data.tags["lipstudy.status"] == "crashed"
    assert re.search(r"log metrics of step 6: gave up after \d+ attempt",
                     run.data.tags[TRACKING_ERROR_TAG])
    # the store holds a prefix (a resumed trial re-logs from step 6 on), nothing after the gap
    assert [s for s, _, _ in history(client, logger.run_id, "a")] == [1, 2, 3, 4, 5]
    with pytest.raises(TrackingError):  # the logger stays failed
        logger.log_metrics(11, {"a": 11.0})
        logger.flush()
    logger.finish()  # already reported: does not raise again, keeps FAILED
    assert client.get_run(logger.run_id).info.status == "FAILED"
    # the trial comes back (Ray retries it) and continues the run from the gap
    again = MlflowTrialLogger(store[0], store[1], name="trial", params={"lr": 1.0, "loss": "ns"},
                              parent_run_id=store[2], tags={TRIAL_ID_TAG: "t0"},
                              synchronous=synchronous, retry=FAST)
    assert again.run_id == logger.run_id and again.logged_steps() == {"a": 5}
    for step in range(1, 11):
        again.log_metrics(step, {"a": float(step)})
    again.set_tags({"lipstudy.status": "finished"})
    again.finish()
    assert [s for s, _, _ in history(client, logger.run_id, "a")] == list(range(1, 11))
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_a_permanent_error_is_not_retried_and_ends_the_run_failed(store):
    logger, flaky = make_logger(store, [], synchronous=True)
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="permanent error after 1 attempt"):
        logger.log_params({"lr": 2.0})  # a param may not change value
    assert logger.retries == 0 and time.monotonic() - t0 < 5
    run = store[3].get_run(logger.run_id)
    assert run.info.status == "FAILED"
    assert "log params: permanent error" in run.data.tags[TRACKING_ERROR_TAG]
    assert "INVALID_PARAMETER_VALUE" in run.data.tags[TRACKING_ERROR_TAG]


def test_a_store_deleted_under_the_study_is_waited_on_not_failed(store, tmp_path):
    """A SQLite store replaced by a new file (what SQLite makes at a deleted store's path) answers
    with errors that look permanent ("run not found"): with the store's identity from the study's
    start, the logger keeps retrying them (the driver's StoreWatch stops the study in seconds);
    with the file back as it was, they are permanent again."""
    from trainables.tracking.retry import sqlite_identity

    uri = store[0]
    path = Path(uri[len("sqlite:///"):])
    logger, _ = make_logger(store, [], synchronous=True)
    logger.store_identity = sqlite_identity(uri)
    aside = tmp_path / "aside.db"
    path.rename(aside)
    path.write_bytes(b"")  # another file at the path
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    def not_found():  # what a new, empty store answers for the trial's run
        raise MlflowException(f"Run '{logger.run_id}' not found",
                              error_code=RESOURCE_DOES_NOT_EXIST)

    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="gave up after"):
        logger._call("log params", not_found, fail_run=False)
    assert logger.retries >= 2 and time.monotonic() - t0 < 10
    path.unlink()
    aside.rename(path)
    with pytest.raises(TrackingError, match="permanent error after 1 attempt"):
        logger._call("log params", not_found, fail_run=False)


def test_a_failed_run_creation_leaves_nothing_running(store):
    """The first create landed but its answer was lost, the look-ups for it failed and the later
    creates failed: the logger gives up, finds the run the first attempt made and ends it FAILED."""
    retry = RetryPolicy(budget_s=30, first_delay_s=0.01, max_delay_s=0.02, max_attempts=3)
    faults = [Fault("create_run", queuepool, mode="after"),
              Fault("create_run", refused, times=10_000),
              # two look-ups before the two retries, 3 attempts each; the one after giving up works
              Fault("search_runs", queuepool, times=6,
                    when=lambda a, k: CREATE_TOKEN_TAG in k.get("filter_string", ""))]
    with pytest.raises(TrackingError, match="create run"):
        make_logger(store, faults, retry=retry)
    assert faults[0].times == 0 and faults[2].times == 0
    runs = children(store)
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags[TRACKING_ERROR_TAG].startswith("create run: gave up after 3 attempt")


# -- the load: 32 trial loggers against a real server ----------------------------------------------

def _head_commands() -> str:
    """Everything the head runs: the MLflow server is a systemd unit written by its setup commands
    and (re)started by its start commands."""
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    return " ".join(cfg["head_setup_commands"] + cfg["head_start_ray_commands"])


def cluster_server_settings() -> dict[str, int]:
    """The pool sizing cluster.yaml gives the head's MLflow server (the test runs it as deployed,
    with 2 workers instead of the head's 4: this box has 2 cores)."""
    cmds = _head_commands()
    out = {}
    for key, env in (("pool_size", "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"),
                     ("max_overflow", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW")):
        m = re.search(rf"{env}=(\d+)", cmds)
        assert m, f"cluster.yaml does not set {env} for the MLflow server"
        out[key] = int(m.group(1))
    return out


def test_cluster_sizes_the_tracking_server_for_its_trials():
    """cluster.yaml: PostgreSQL backend; each server worker's SQLAlchemy pool covers the requests
    one worker runs at once (anyio's default thread limit for MLflow's WSGI app); PostgreSQL
    accepts every worker's full pool."""
    import anyio.to_thread

    async def limit():
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cmds = _head_commands()
    setup = " ".join(cfg["head_setup_commands"])
    pool = cluster_server_settings()
    workers = int(re.search(r"mlflow server.*--workers (\d+)", cmds).group(1))
    per_worker = pool["pool_size"] + pool["max_overflow"]
    assert per_worker >= anyio.run(limit) == 40
    assert re.search(r"--backend-store-uri '?postgresql\+psycopg2://", cmds)
    assert "psycopg2-binary" in setup and "apt-get install -y -q postgresql" in setup
    max_conn = int(re.search(r"max_connections = (\d+)", setup).group(1))
    assert max_conn >= workers * per_worker + 10
    spot = cfg["available_node_types"]["gpu_spot"]
    assert spot["max_workers"] * 4 == WRITERS  # 8 spot GPU workers x 4 trials: what the load drives
    # the whole fleet (spot + on-demand fallback) stays within what the server's pools accept
    assert cfg["max_workers"] * 4 <= workers * per_worker


WRITERS, BATCHES, METRICS = 32, 25, 50


@pytest.fixture
def postgres_backend():
    bench = _load_bench()
    why = bench.postgres_unavailable()
    if why:
        pytest.skip(why)
    pg = bench.start_postgres()
    try:
        yield pg.uri
    finally:
        pg.stop()


def _run_load(db_uri: str, workdir: Path, *, restart: bool):
    bench = _load_bench()
    settings = cluster_server_settings()
    server = bench.start_server(db_uri, str(workdir), workers=2, **settings)
    res, restarter = bench.Result(), None
    try:
        if restart:  # SIGKILL the server a third of the way in, start it again on the same port
            restarter = bench.Restarter(server, res, WRITERS * BATCHES // 3, db_uri, str(workdir),
                                        wait_s=240, workers=2, **settings)
            restarter.start()
        exp, parent, res = bench.drive(server.url, writers=WRITERS, batches=BATCHES,
                                       metrics=METRICS, client="logger",
                                       retry=RetryPolicy(budget_s=240.0), result=res)
        live = server
        if restarter is not None:
            restarter.done.set()
            restarter.join(timeout=240)
            assert restarter.error is None, repr(restarter.error)
            assert restarter.downtime_s is not None, "the load ended before the restart"
            live = restarter.server
        # a landed batch re-sent through the server (what a retry does) adds no row
        client = MlflowClient(live.url)
        run_id = res.run_ids["w00"]
        ts = client.get_metric_history(run_id, "stat_00")[0].timestamp
        client.log_batch(run_id, metrics=[Metric(f"stat_{j:02d}", bench.metric_value(1, j), ts, 1)
                                          for j in range(METRICS)])
    finally:
        if restarter is not None:
            restarter.done.set()
            restarter.join(timeout=240)
            if restarter.server is not server:
                restarter.server.stop()
        server.stop()
    check = bench.verify(db_uri, exp, writers=WRITERS, batches=BATCHES, metrics=METRICS)
    summary = bench.report(res, check, batches=BATCHES)
    print(summary)
    assert not res.failed_writers and res.failed_batches == 0, summary
    assert check.missing_runs == [] and check.runs == WRITERS, summary
    assert check.not_finished == {}, summary           # no crashed, no RUNNING run
    assert check.duplicate_runs == {}, summary
    assert check.incomplete == {}, summary              # zero lost metric steps
    assert check.duplicate_rows == 0 and check.wrong_values == 0, summary
    return res, restarter


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.scenario
def test_32_trial_loggers_lose_nothing_on_sqlite_through_a_server_restart(tmp_path, monkeypatch):
    # MLflow's HTTP client would hide most of the restart behind its own retries (7, minutes of
    # backoff): with them off, every refused/reset request reaches the logger's retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_POOL_MAXSIZE", str(WRITERS + 8))
    res, restarter = _run_load(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, restart=True)
    assert res.failed_requests > 0 and res.retries > 0, "the restart should have been felt"


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.scenario
def test_32_trial_loggers_lose_nothing_on_postgresql(postgres_backend, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_POOL_MAXSIZE", str(WRITERS + 8))
    _run_load(postgres_backend, tmp_path, restart=False)
