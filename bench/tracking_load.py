"""Tracking under the cluster's load: W concurrent writers × B ``log_batch`` calls of M metrics
against a real ``mlflow server`` on loopback (SQLite or PostgreSQL backend), started here.

    .venv/bin/python bench/tracking_load.py [--backend sqlite|postgres] [--writers 32]
        [--batches 100] [--metrics 50] [--workers 2] [--pool-size N] [--max-overflow N]
        [--client raw|logger] [--interval-ms 0] [--retry-budget 300] [--restart-at 0.33]
        [--http-retries N]

``--client raw``: each writer is a thread calling ``MlflowClient.log_batch`` directly (MLflow's
own HTTP retries only; a failed call is a lost batch) — the issue's direct load test, and what the
trial logger did before it retried. ``--client logger``: each writer is an
``MlflowTrialLogger(synchronous=False)`` as a trial uses it (run creation + params, metric batches
through the in-order writer thread with retries, flush every 10 batches as checkpoints do, then
``finish``). Writers start together (barrier), back-to-back (``--interval-ms 0``: the trial
thread outruns the store, which is the worst case of 32 fast ring8 trials).

Prints the latency of every ``log_batch`` request (median, p99, max), failed requests, retries,
failed batches (given up), and, read back from the database itself: incomplete metric histories,
duplicate (metric, step) rows, runs not FINISHED, duplicate runs. ``--pool-size 0`` leaves
MLflow's defaults (SQLAlchemy pool 5 + overflow 10 per worker).

The e2e test tests/e2e/test_tracking_load.py imports this module (``start_postgres``,
``start_server``, ``drive``, ``verify``): the CI check and the benchmark measure the same thing.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: What cluster.yaml sets on the head: one uvicorn worker runs up to 40 requests at once (anyio's
#: default thread limit for the WSGI app), each holding one SQLAlchemy connection, so the pool of
#: one worker must reach 40 or requests wait for a connection and fail after 30 s (QueuePool).
POOL_SIZE, MAX_OVERFLOW = 10, 30


# -- servers -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def postgres_unavailable() -> str | None:
    """Why a PostgreSQL backend cannot be started here (None when it can)."""
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        return ("PostgreSQL server binaries (initdb, pg_ctl) not installed "
                "(apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return ("psycopg2 not installed (pip install psycopg2-binary): MLflow's postgresql+psycopg2"
                ":// backend needs it")
    if os.geteuid() == 0 and not (shutil.which("runuser") and _uid("postgres") is not None):
        return "running as root without a 'postgres' user to run the server as"
    return None


def _uid(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


@dataclass
class Postgres:
    uri: str
    base: str
    data: str
    as_user: list[str]

    def stop(self) -> None:
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", self.data, "stop", "-m",
                        "immediate", "-w", "-t", "30"], capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres(max_connections: int = 200) -> Postgres:
    """A throw-away PostgreSQL cluster listening only on a Unix socket in a fresh /tmp directory
    (no TCP at all), trust auth, database ``mlflow``. As root it runs as the ``postgres`` user.
    Its superuser is named after the login user, so the URI has no user and no password, the
    form cluster.yaml gives the head's server (``postgresql+psycopg2:///mlflow?host=<socket dir>``,
    there with peer authentication)."""
    import getpass

    user = getpass.getuser()
    base = tempfile.mkdtemp(prefix="lipstudy-pg-")
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.makedirs(sock)
    as_user: list[str] = []
    if os.geteuid() == 0:
        uid = _uid("postgres")
        for d in (base, sock):
            os.chown(d, uid, -1)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()  # names the socket file only
    try:
        subprocess.run([*as_user, _pg_bin("initdb"), "-D", data, "-A", "trust", "-U", user,
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", data, "-l", os.path.join(base, "log"),
                        "-w", "-t", "60", "-o",
                        f"-k {sock} -p {port} -c listen_addresses='' "
                        f"-c max_connections={max_connections} -c shared_buffers=64MB", "start"],
                       check=True, capture_output=True, timeout=90)
        subprocess.run([_pg_bin("createdb"), "-h", sock, "-p", str(port), "-U", user, "mlflow"],
                       check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as err:
        Postgres("", base, data, as_user).stop()
        raise RuntimeError(f"PostgreSQL did not start: {err.stderr.decode()[-2000:]}") from err
    # the driver named explicitly: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3
    return Postgres(f"postgresql+psycopg2:///mlflow?host={sock}&port={port}", base, data, as_user)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: str

    def stop(self) -> None:
        """SIGTERM the process group we started, then SIGKILL what is left (by our pgid)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=15)


def server_env(pool_size: int = POOL_SIZE, max_overflow: int = MAX_OVERFLOW) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.pop("MLFLOW_TRACKING_URI", None)
    for key in ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"):
        env.pop(key, None)
    if pool_size:
        env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] = str(pool_size)
    if max_overflow:
        env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"] = str(max_overflow)
    return env


def start_server(backend_uri: str, workdir: str, *, workers: int = 2, pool_size: int = POOL_SIZE,
                 max_overflow: int = MAX_OVERFLOW, timeout: float = 150.0,
                 port: int | None = None) -> Server:
    """``mlflow server`` on 127.0.0.1 (own session, lean: no job runner); waits for /health."""
    port = port or free_port()
    log_path = os.path.join(workdir, f"mlflow-server-{port}.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
         "--artifacts-destination", os.path.join(workdir, "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, env=server_env(pool_size, max_overflow),
        start_new_session=True)
    log.close()
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited {proc.returncode}: "
                               f"{Path(log_path).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"mlflow server did not answer /health in {timeout:.0f}s")
        time.sleep(0.5)


class Restarter(threading.Thread):
    """Kills the server (SIGKILL to its process group: in-flight requests are cut, some after
    their commit) once ``after`` requests were made, and starts a new one on the same port and
    database — what a crashed or redeployed tracking server does to 32 running trials."""

    def __init__(self, server: Server, res: Result, after: int, backend_uri: str, workdir: str,
                 wait_s: float = 600.0, **server_kwargs):
        super().__init__(name="server-restarter", daemon=True)
        self.server, self.res, self.after = server, res, after
        self.args = (backend_uri, workdir)
        self.kwargs = server_kwargs
        self.wait_s = wait_s
        self.downtime_s: float | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()  # set when the load ended: nothing to restart any more

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.wait_s
            while len(self.res.latencies) < self.after:
                if self.done.wait(0.05) or time.monotonic() > deadline:
                    return
            port = int(self.server.url.rsplit(":", 1)[1])
            t0 = time.perf_counter()
            os.killpg(self.server.proc.pid, signal.SIGKILL)
            self.server.proc.wait(timeout=30)
            self.server = start_server(*self.args, port=port, **self.kwargs)
            self.downtime_s = time.perf_counter() - t0
        except BaseException as err:  # noqa: BLE001 - reported by the caller
            self.error = err


# -- the load ------------------------------------------------------------------------------------

class TimedClient:
    """An ``MlflowClient`` whose ``log_batch`` requests are timed (each attempt, success or not)."""

    def __init__(self, client, sink: Result):
        self._client, self._sink = client, sink

    def __getattr__(self, name):
        return getattr(self._client, name)

    def log_batch(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            out = self._client.log_batch(*args, **kwargs)
        except BaseException as err:
            self._sink.add(time.perf_counter() - t0, err)
            raise
        self._sink.add(time.perf_counter() - t0, None)
        return out


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    failed_requests: int = 0
    errors: list[str] = field(default_factory=list)
    failed_batches: int = 0        # batches never written (raw: a failed call; logger: gave up)
    failed_writers: list[str] = field(default_factory=list)
    retries: int = 0
    run_ids: dict[str, str] = field(default_factory=dict)  # writer name → run id
    wall_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, latency: float, err: BaseException | None) -> None:
        with self._lock:
            self.latencies.append(latency)
            if err is not None:
                self.failed_requests += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{type(err).__name__}: {str(err)[:300]}")


def metric_value(step: int, j: int) -> float:
    return step * 1000.0 + j


def drive(url: str, *, writers: int = 32, batches: int = 100, metrics: int = 50,
          client: str = "logger", interval_s: float = 0.0, flush_every: int = 10,
          retry=None, experiment: str | None = None,
          result: Result | None = None) -> tuple[str, str, Result]:
    """Run the load; returns (experiment id, parent run id, result). Pass ``result`` to watch
    the progress from another thread (``len(result.latencies)`` requests so far)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from trainables.tracking.mlflow_logger import TRIAL_ID_TAG, MlflowTrialLogger

    # all writers share this process's HTTP session: let it keep a connection per writer (32
    # trials on a cluster are separate processes; urllib3's default 10 only adds warnings here)
    os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", str(writers + 8))
    admin = MlflowClient(url)
    exp = admin.create_experiment(experiment or f"load-{time.time_ns()}")
    parent = admin.create_run(exp, run_name="study").info.run_id
    res = result if result is not None else Result()
    barrier = threading.Barrier(writers)
    keys = [f"stat_{j:02d}" for j in range(metrics)]

    def raw(i: int) -> None:
        c = TimedClient(MlflowClient(url), res)
        name = f"w{i:02d}"
        barrier.wait(timeout=120)
        try:
            run_id = c.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent,
                                                            TRIAL_ID_TAG: name}).info.run_id
        except Exception as err:  # noqa: BLE001 - counted
            res.failed_writers.append(f"{name}: create_run {err!r}"[:300])
            res.failed_batches += batches
            return
        res.run_ids[name] = run_id
        for step in range(1, batches + 1):
            ts = int(time.time() * 1000)
            try:
                c.log_batch(run_id, metrics=[Metric(k, metric_value(step, j), ts, step)
                                             for j, k in enumerate(keys)])
            except Exception:  # noqa: BLE001 - counted by TimedClient
                with res._lock:
                    res.failed_batches += 1
            if interval_s:
                time.sleep(interval_s)
        try:
            c.set_terminated(run_id, "FINISHED")
        except Exception as err:  # noqa: BLE001
            res.failed_writers.append(f"{name}: set_terminated {err!r}"[:300])

    def logged(i: int) -> None:
        name = f"w{i:02d}"
        barrier.wait(timeout=120)
        logger = None
        try:
            logger = MlflowTrialLogger(url, exp, name=name, params={"writer": i, "loss": "ns"},
                                       parent_run_id=parent, tags={TRIAL_ID_TAG: name},
                                       synchronous=False, retry=retry,
                                       client=TimedClient(MlflowClient(url), res))
            res.run_ids[name] = logger.run_id
            for step in range(1, batches + 1):
                logger.log_metrics(step, {k: metric_value(step, j) for j, k in enumerate(keys)})
                if step % flush_every == 0:
                    logger.flush()  # as a checkpoint does
                if interval_s:
                    time.sleep(interval_s)
            logger.finish()
        except Exception as err:  # noqa: BLE001 - counted; the logger marked the run FAILED
            res.failed_writers.append(f"{name}: {err!r}"[:400])
            if logger is not None:
                try:
                    logger.finish("FAILED")
                except Exception:  # noqa: BLE001
                    pass
        finally:
            if logger is not None:
                with res._lock:
                    res.retries += logger.retries

    target = raw if client == "raw" else logged
    threads = [threading.Thread(target=target, args=(i,), name=f"writer-{i}", daemon=True)
               for i in range(writers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    res.wall_s = time.perf_counter() - t0
    return exp, parent, res


@dataclass
class Check:
    runs: int                   # trial runs found (active)
    not_finished: dict[str, str]  # run name → status
    duplicate_runs: dict[str, int]
    incomplete: dict[str, int]  # "run/key" → steps present (expected: batches)
    duplicate_rows: int         # metric rows beyond one per (run, key, step)
    wrong_values: int
    missing_runs: list[str]


def verify(db_uri: str, experiment_id: str, *, writers: int, batches: int,
           metrics: int) -> Check:
    """Read the backend database itself (not through the server): every writer's run FINISHED,
    once; every metric with steps 1..batches exactly once, with the right values."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_uri)
    try:
        with engine.connect() as conn:
            runs = conn.execute(sa.text(
                "SELECT run_uuid, name, status FROM runs WHERE experiment_id = :e "
                "AND lifecycle_stage = 'active' AND name <> 'study'"),
                {"e": int(experiment_id)}).fetchall()
            rows = conn.execute(sa.text(
                "SELECT m.run_uuid, m.key, COUNT(*), COUNT(DISTINCT m.step), MIN(m.step), "
                "MAX(m.step), SUM(CASE WHEN m.value = m.step * 1000.0 + "
                "CAST(SUBSTR(m.key, 6) AS INTEGER) THEN 0 ELSE 1 END) "
                "FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                "WHERE r.experiment_id = :e GROUP BY m.run_uuid, m.key"),
                {"e": int(experiment_id)}).fetchall()
    finally:
        engine.dispose()
    names: dict[str, int] = {}
    for _, name, _ in runs:
        names[name] = names.get(name, 0) + 1
    by_run = {r[0]: r[1] for r in runs}
    incomplete, dup_rows, wrong = {}, 0, 0
    seen: dict[str, int] = {}
    for run_uuid, key, n, n_steps, lo, hi, bad in rows:
        if run_uuid not in by_run:
            continue
        seen[run_uuid] = seen.get(run_uuid, 0) + 1
        dup_rows += n - n_steps
        wrong += bad
        if not (n_steps == batches and lo == 1 and hi == batches):
            incomplete[f"{by_run[run_uuid]}/{key}"] = n_steps
    for run_uuid, name, _ in runs:  # runs with fewer keys than written (or none at all)
        if seen.get(run_uuid, 0) < metrics:
            incomplete[f"{name}/<{metrics - seen.get(run_uuid, 0)} keys missing>"] = 0
    expected = {f"w{i:02d}" for i in range(writers)}
    return Check(
        runs=len(runs),
        not_finished={name: status for _, name, status in runs if status != "FINISHED"},
        duplicate_runs={n: c for n, c in names.items() if c > 1},
        incomplete=incomplete, duplicate_rows=dup_rows, wrong_values=wrong,
        missing_runs=sorted(expected - set(names)))


def server_answers(log_path: str) -> dict[str, int]:
    """HTTP status → count of the server's answers (its access log), including the answers the
    client's own urllib3 retries hid from us."""
    import re

    counts: dict[str, int] = {}
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return counts
    for code in re.findall(r'" (\d{3}) ', text):
        counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items()))


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def report(res: Result, check: Check, *, batches: int) -> str:
    lat = res.latencies
    med = statistics.median(lat) * 1e3 if lat else float("nan")
    incomplete_runs = {k.split("/")[0] for k in check.incomplete}
    lines = [
        f"log_batch requests: {len(lat)}; latency median {med:.0f} ms, "
        f"p99 {quantile(lat, 0.99) * 1e3:.0f} ms, max {max(lat, default=float('nan')) * 1e3:.0f}"
        f" ms; failed requests {res.failed_requests}; retries {res.retries}",
        f"failed batches (never written) {res.failed_batches}; writers that failed "
        f"{len(res.failed_writers)}; wall {res.wall_s:.1f} s "
        f"({len(lat) / res.wall_s if res.wall_s else 0:.0f} requests/s)",
        f"read back: runs {check.runs}, missing {len(check.missing_runs)}, not FINISHED "
        f"{len(check.not_finished)} {dict(list(check.not_finished.items())[:5])}, duplicate runs "
        f"{len(check.duplicate_runs)}; incomplete histories {len(check.incomplete)} in "
        f"{len(incomplete_runs)} runs; duplicate (metric, step) rows {check.duplicate_rows}; "
        f"wrong values {check.wrong_values}",
    ]
    for e in sorted(set(res.errors))[:5]:
        lines.append(f"  error: {e}")
    for w in res.failed_writers[:5]:
        lines.append(f"  writer: {w}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--writers", type=int, default=32)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--metrics", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pool-size", type=int, default=POOL_SIZE, help="0 = MLflow's default (5)")
    ap.add_argument("--max-overflow", type=int, default=MAX_OVERFLOW,
                    help="0 = MLflow's default (10)")
    ap.add_argument("--client", choices=("raw", "logger"), default="logger")
    ap.add_argument("--interval-ms", type=float, default=0.0)
    ap.add_argument("--retry-budget", type=float, default=300.0)
    ap.add_argument("--restart-at", type=float, default=0.0,
                    help="SIGKILL and restart the server after this fraction of the batches")
    ap.add_argument("--http-retries", type=int, default=None,
                    help="MLFLOW_HTTP_REQUEST_MAX_RETRIES for the writers (MLflow's default: 7)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (server logs, SQLite database)")
    args = ap.parse_args()
    if args.http_retries is not None:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(args.http_retries)

    from trainables.tracking.mlflow_logger import RetryPolicy

    # SIGTERM/SIGHUP end the run through the finally blocks: the server and PostgreSQL stop too
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(143))
    workdir = tempfile.mkdtemp(prefix="lipstudy-load-")
    pg = None
    try:
        if args.backend == "postgres":
            why = postgres_unavailable()
            if why:
                sys.exit(f"postgres backend unavailable: {why}")
            pg = start_postgres()
            db_uri = pg.uri
        else:
            db_uri = f"sqlite:///{workdir}/mlflow.db"
        t0 = time.perf_counter()
        server = start_server(db_uri, workdir, workers=args.workers, pool_size=args.pool_size,
                              max_overflow=args.max_overflow)
        started = time.perf_counter() - t0
        res, restarter = Result(), None
        try:
            if args.restart_at:
                restarter = Restarter(server, res, int(args.restart_at * args.writers
                                                       * args.batches),
                                      db_uri, workdir, workers=args.workers,
                                      pool_size=args.pool_size, max_overflow=args.max_overflow)
                restarter.start()
            load0 = os.getloadavg()[0]
            exp, _, res = drive(server.url, writers=args.writers, batches=args.batches,
                                metrics=args.metrics, client=args.client,
                                interval_s=args.interval_ms / 1e3,
                                retry=RetryPolicy(budget_s=args.retry_budget), result=res)
            load1 = os.getloadavg()[0]
        finally:
            if restarter is not None:
                restarter.done.set()
                restarter.join(timeout=300)
                if restarter.server is not server:
                    restarter.server.stop()
            server.stop()
        answers = server_answers(server.log_path)
        if restarter is not None:
            print(f"server SIGKILLed after {restarter.after} requests, back after "
                  f"{restarter.downtime_s or float('nan'):.0f} s"
                  + (f" (restart failed: {restarter.error!r})" if restarter.error else ""))
            if restarter.server is not server:
                for code, n in server_answers(restarter.server.log_path).items():
                    answers[code] = answers.get(code, 0) + n
        check = verify(db_uri, exp, writers=args.writers, batches=args.batches,
                       metrics=args.metrics)
        pool = (f"pool {args.pool_size or 5}+{args.max_overflow or 10}"
                + (" (MLflow default)" if not args.pool_size else ""))
        print(f"{args.writers} writers x {args.batches} log_batch x {args.metrics} metrics, "
              f"client={args.client}, backend={args.backend}, {args.workers} workers, {pool}; "
              f"server up in {started:.0f} s; load average {load0:.1f} -> {load1:.1f} "
              f"({os.cpu_count()} cores)")
        print(f"server answers by HTTP status: {answers}")
        print(report(res, check, batches=args.batches))
    finally:
        if pg is not None:
            pg.stop()
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
