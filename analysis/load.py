"""Runs → a pandas DataFrame, one row per trial (docs/design.md, "The analysis").

Columns are the MLflow names our trials write: every trial param typed back (floats, ints, bools;
MLflow stores params as strings), every metric's final value (the value at the last step), and
``run_id``, ``run_name``, ``experiment``, ``parent_run_id``, ``status`` (finished / diverged / crashed /
running), ``diverged`` (bool), ``diverged_step``, ``diverged_reason``, ``origin`` ("run" for MLflow
trials, "published"/"external" for CSV rows) and ``source``; ``loaded_from`` ("mlflow" / "csv") and,
for MLflow runs, ``tracking_uri`` (where their artifacts — sample grids — are).

The FID scale of every image run is among the metrics: ``fid_floor``, ``fid_init``,
``fid_quality`` (and ``_final`` variants); older runs simply lack the columns (NaN), and
``analysis.scale`` / the verdicts say so instead of failing.

The same frame is built from a CSV of external results with the same column names
(:func:`frame_from_csv`), so the papers' tables (``analysis.reference``) go through the same analysis.

Histories (metric vs step) are loaded on demand by :func:`load_histories`: a single SQL query when
the tracking store is a SQLite file (the default store), ``MlflowClient.get_metric_history``
otherwise; histories of terminated runs are cached on disk (they cannot change), so a report over
hundreds of runs loads in seconds the second time. This module never imports Ray.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables import names
from trainables.names import DERIVED_PARAM_TYPES, DIVERGED, FID, METRICS, TRIAL_PARAM_TYPES
from trainables.names import UNKNOWN_CODE_VERSION as UNKNOWN_VERSION

#: Params typed back from MLflow's strings: the trial keys and derived params (one home,
#: ``trainables.names``), plus the columns of the published tables (``analysis.reference``).
PARAM_TYPES: dict[str, type] = {
    **TRIAL_PARAM_TYPES, **DERIVED_PARAM_TYPES,
    "fid_censor": float, "fid_std": float, "is_score": float, "is_std": float, "is_best": float,
    "n_seeds": int, "lipschitz_tuned": bool, "resolution_px": int,
}

#: Roles (``trainables.names.ROLES``) of the published tables' own columns; the trial keys' roles
#: are declared in ``trainables.names.KEY_ROLES``. Every column of :data:`PARAM_TYPES` has one.
PUBLISHED_ROLES: dict[str, str] = {
    "fid_censor": "measurement", "fid_std": "measurement", "is_score": "measurement",
    "is_std": "measurement", "is_best": "measurement", "n_seeds": "replicate",
    "lipschitz_tuned": "factor", "resolution_px": "stratum",
}
COLUMN_ROLES: dict[str, str] = {**names.KEY_ROLES, **PUBLISHED_ROLES}

ID_COLUMNS: tuple[str, ...] = (
    "run_id", "run_name", "experiment", "parent_run_id", "status", DIVERGED, "diverged_step",
    "diverged_reason", "origin", "source", "code_version",
)

STATUSES = ("finished", DIVERGED, "crashed", "running")
_MLFLOW_STATUS = {"FINISHED": "finished", "FAILED": "crashed", "KILLED": "crashed",
                  "RUNNING": "running", "SCHEDULED": "running"}
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


# --------------------------------------------------------------------------------------- typing
def _to_bool(v: Any) -> Any:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return pd.NA
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False if s else pd.NA
    raise ValueError(f"not a boolean: {v!r}")


def type_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Type the known columns in place of MLflow's strings: floats, nullable ints and bools."""
    out = df.copy()
    for col in out.columns:
        typ = PARAM_TYPES.get(col)
        if col in METRICS or col in ("diverged_step",) or typ is float:
            out[col] = pd.to_numeric(out[col].replace({"None": np.nan, "": np.nan}), errors="coerce")
            if typ is int or col == "diverged_step":
                out[col] = out[col].round().astype("Int64")
            else:
                out[col] = out[col].astype(float)
        elif typ is int:
            vals = pd.to_numeric(out[col].replace({"None": np.nan, "": np.nan}), errors="coerce")
            out[col] = vals.round().astype("Int64")
        elif typ is bool:
            out[col] = out[col].map(_to_bool).astype("boolean")
        elif typ is str:
            out[col] = out[col].map(lambda v: v if v is None or isinstance(v, str) or pd.isna(v)
                                    else str(v)).replace({"None": None, "": None})
    if DIVERGED in out.columns and out[DIVERGED].dtype != "boolean":
        out[DIVERGED] = out[DIVERGED].map(
            lambda v: pd.NA if pd.isna(v) else bool(float(v) >= 0.5)).astype("boolean")
    return out


def _finalise(df: pd.DataFrame) -> pd.DataFrame:
    """Common columns every frame has, whatever it was built from (missing → NA), in a stable order."""
    for col in ID_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    if df["status"].isna().any():
        div = df[DIVERGED].fillna(False).astype(bool)
        df.loc[df["status"].isna(), "status"] = np.where(div[df["status"].isna()], DIVERGED, "finished")
    df[DIVERGED] = (df["status"] == DIVERGED).astype(bool)
    first = [c for c in ID_COLUMNS if c in df.columns]
    params = [c for c in PARAM_TYPES if c in df.columns and c not in first]
    metrics = [c for c in METRICS if c in df.columns and c not in first]
    rest = [c for c in df.columns if c not in first + params + metrics]
    return df[first + params + metrics + rest].reset_index(drop=True)


# --------------------------------------------------------------------------------------- MLflow
def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def existing_store(tracking_uri: str | None = None) -> str:
    """The tracking URI to read: ``tracking_uri``, else the one MLflow resolves
    (``$MLFLOW_TRACKING_URI``, else its default ``sqlite:///mlflow.db`` in the working directory).
    A local store (SQLite file, file store) that does not exist raises FileNotFoundError naming
    where it was searched: opening it would create an empty one."""
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
    else:
        return uri  # a server: it says itself what it has
    if not path.exists():
        raise FileNotFoundError(f"no MLflow store at {path.resolve()} (searched {uri}): give "
                                "--tracking-uri, or run where the study's mlflow.db is")
    return uri


def _experiments(client, names: Sequence[str]):
    exps = []
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            have = sorted(e.name for e in client.search_experiments(max_results=1000))
            raise LookupError(f"no MLflow experiment named {name!r} in {client.tracking_uri} "
                              f"(it has: {', '.join(have) or 'none'})")
        exps.append(exp)
    return exps


def _search_all(client, experiment_ids: list[str]):
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _run_row(run, experiment_name: str) -> dict[str, Any]:
    tags = run.data.tags
    row: dict[str, Any] = dict(run.data.params)
    row.update(run.data.metrics)
    status = tags.get(names.STATUS_TAG)
    if status not in STATUSES:
        status = _MLFLOW_STATUS.get(run.info.status, "crashed")
        if status == "finished" and run.data.metrics.get(DIVERGED, 0.0) >= 0.5:
            status = DIVERGED
    row.update(
        run_id=run.info.run_id,
        run_name=run.info.run_name or tags.get("mlflow.runName"),
        experiment=experiment_name,
        parent_run_id=tags.get(names.PARENT_TAG),
        status=status,
        diverged_step=tags.get(names.DIVERGED_STEP_TAG),
        diverged_reason=tags.get(names.DIVERGED_REASON_TAG),
        study=tags.get(names.STUDY_TAG),
        code_version=tags.get(names.CODE_VERSION_TAG),
        source_hash=tags.get(names.SOURCE_HASH_TAG),
        git_commit=tags.get(names.GIT_COMMIT_TAG),
        git_dirty=tags.get(names.GIT_DIRTY_TAG),
        mlflow_status=run.info.status,
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        origin="run",
        source=f"mlflow:{experiment_name}",
        loaded_from="mlflow",
    )
    return row


_FRAME_CACHE: dict[tuple, tuple[tuple, pd.DataFrame]] = {}


def load_runs(experiments: str | Sequence[str], tracking_uri: str | None = None, *,
              cache: bool = True) -> pd.DataFrame:
    """Trial runs of one or more experiments → one row per trial (study parent runs excluded).

    A trial is a run that is not tagged ``lipstudy.kind = study``. ``status`` comes from the
    ``lipstudy.status`` tag (finished / diverged / crashed), else from MLflow's own status
    (RUNNING → running, FAILED/KILLED → crashed). The parsed frame is kept in memory keyed by the
    runs' (id, status, end time), so a notebook that reloads an unchanged experiment pays only the
    search.
    """
    wanted = [experiments] if isinstance(experiments, str) else list(experiments)
    client = _client(tracking_uri)
    exps = _experiments(client, wanted)
    id_to_name = {e.experiment_id: e.name for e in exps}
    runs = _search_all(client, list(id_to_name))
    trials = [r for r in runs if r.data.tags.get(names.KIND_TAG) != "study"]
    fingerprint = tuple(sorted((r.info.run_id, r.info.status, r.info.end_time,
                                r.data.tags.get(names.STATUS_TAG)) for r in trials))
    key = (str(client.tracking_uri), tuple(sorted(id_to_name)))
    if cache and key in _FRAME_CACHE and _FRAME_CACHE[key][0] == fingerprint:
        return _FRAME_CACHE[key][1].copy()
    rows = [_run_row(r, id_to_name[r.info.experiment_id]) for r in trials]
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(ID_COLUMNS))
    df = _finalise(type_columns(df))
    df["tracking_uri"] = str(client.tracking_uri)
    if cache:
        _FRAME_CACHE[key] = (fingerprint, df.copy())
    return df


def load_parents(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The study's parent runs (tag ``lipstudy.kind = study``), newest first."""
    client = _client(tracking_uri)
    (exp,) = _experiments(client, [experiment])
    runs = client.search_runs([exp.experiment_id], f"tags.`{names.KIND_TAG}` = 'study'",
                              order_by=["attributes.start_time DESC"])
    rows = [dict(run_id=r.info.run_id, run_name=r.info.run_name, start_time=r.info.start_time,
                 study=r.data.tags.get(names.STUDY_TAG),
                 hypotheses=r.data.tags.get(names.HYPOTHESES_TAG, ""),
                 git_commit=r.data.tags.get(names.GIT_COMMIT_TAG)) for r in runs]
    return pd.DataFrame(rows, columns=["run_id", "run_name", "start_time", "study", "hypotheses",
                                       "git_commit"])


# --------------------------------------------------------------------------------------- versions
class CodeVersionError(ValueError):
    """Runs of different code versions in one analysis; ``str(err)`` is one line naming them."""


def code_versions(frame: pd.DataFrame) -> pd.Series:
    """The code version of every row of our own runs (``origin`` "run"): the
    ``lipstudy.code_version`` tag (``trainables.tracking.provenance``), "unknown" for runs without it
    (made before the tag existed; e.g. a CSV of such runs)."""
    mine = frame["origin"].fillna("run") == "run" if "origin" in frame.columns else \
        pd.Series(True, index=frame.index)
    ver = frame["code_version"] if "code_version" in frame.columns else \
        pd.Series(None, index=frame.index, dtype=object)
    return ver[mine].astype(object).where(ver[mine].notna(), UNKNOWN_VERSION)


def check_versions(frame: pd.DataFrame, *, pool: bool = False) -> dict[str, int]:
    """Refuse to pool our runs of different code versions into one analysis.

    Returns {version: runs}. With more than one version — "unknown" (runs without the tag)
    counts as a version of its own — raises :class:`CodeVersionError` naming them, unless
    ``pool``; then the frame is marked (``frame.attrs["pooled_versions"]``) so that
    ``analysis.frames.prep`` accepts it and the report lists the versions. Published and
    external rows (other origins) have no code version and are never counted."""
    counts = code_versions(frame).value_counts().to_dict()
    if len(counts) > 1 and not pool:
        listed = ", ".join(f"{v} ({n} runs)" for v, n in counts.items())
        raise CodeVersionError(f"runs of {len(counts)} code versions: {listed}; analyse one "
                               f"version, or pool them with --pool-versions (the report lists "
                               f"them)")
    if len(counts) > 1:
        frame.attrs["pooled_versions"] = counts
    return counts


# --------------------------------------------------------------------------------------- CSV
def frame_from_csv(path_or_buffer: Any, *, origin: str | None = None) -> pd.DataFrame:
    """A CSV of external results (same column names as the trial frame) → the same frame.

    Missing ``run_id`` are made from the source and row number; ``status`` defaults to finished;
    ``origin`` defaults to the CSV's own column, else ``"external"``; ``experiment`` to the
    ``paper`` column, else ``source``, else the file name.
    """
    df = pd.read_csv(path_or_buffer, dtype=str, keep_default_na=False)
    stem = Path(str(path_or_buffer)).stem if isinstance(path_or_buffer, (str, os.PathLike)) else "csv"
    if "source" not in df.columns:
        df["source"] = stem
    if "experiment" not in df.columns:
        df["experiment"] = df["paper"] if "paper" in df.columns else df["source"]
    if origin is not None:
        df["origin"] = origin
    elif "origin" not in df.columns:
        df["origin"] = "external"
    if "run_id" not in df.columns:
        df["run_id"] = [f"{stem}:{i}" for i in range(len(df))]
    if "run_name" not in df.columns and "method" in df.columns:
        df["run_name"] = df["method"]
    df = df.replace({"": None})
    df["loaded_from"] = "csv"   # whatever it was when written: no MLflow artifacts behind these rows
    if "tracking_uri" in df.columns:
        df = df.drop(columns="tracking_uri")
    return _finalise(type_columns(df))


def concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Stack frames (MLflow and CSV ones) into one, keeping every column."""
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return _finalise(pd.DataFrame(columns=list(ID_COLUMNS)))
    return _finalise(pd.concat(frames, ignore_index=True, sort=False))


# --------------------------------------------------------------------------------------- histories
def default_cache_dir() -> Path:
    return Path(os.environ.get("LIPSTUDY_CACHE", Path.home() / ".cache" / "lipstudy")) / "histories"


def _sqlite_path(tracking_uri: str) -> str | None:
    """``sqlite:///rel.db`` → ``rel.db``, ``sqlite:////abs/x.db`` → ``/abs/x.db`` (SQLAlchemy form)."""
    if tracking_uri.startswith("sqlite:///"):
        return tracking_uri[len("sqlite:///"):]
    return None


def _fetch_sqlite(path: str, run_ids: list[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One query over MLflow's ``metrics`` table (schema: run_uuid, key, value, step, is_nan)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        frames = []
        for i in range(0, len(run_ids), 500):
            chunk = run_ids[i:i + 500]
            q = (f"SELECT run_uuid, key, step, value, is_nan, timestamp FROM metrics WHERE run_uuid IN "
                 f"({','.join('?' * len(chunk))}) AND key IN ({','.join('?' * len(metrics))})")
            frames.append(pd.read_sql_query(q, con, params=[*chunk, *metrics]))
        out = pd.concat(frames, ignore_index=True)
    finally:
        con.close()
    out.loc[out["is_nan"].astype(bool), "value"] = np.nan
    out = out.sort_values(["run_uuid", "key", "step", "timestamp"])
    out = out.rename(columns={"run_uuid": "run_id", "key": "metric"})
    return out[["run_id", "metric", "step", "value"]]


def _fetch_client(client, run_ids: list[str], metrics: Sequence[str]) -> pd.DataFrame:
    rows = []
    for rid in run_ids:
        for m in metrics:
            for pt in client.get_metric_history(rid, m):
                rows.append((rid, m, pt.step, pt.value, pt.timestamp))
    out = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value", "timestamp"])
    out = out.sort_values(["run_id", "metric", "step", "timestamp"])
    return out[["run_id", "metric", "step", "value"]]


def _read_cache(path: Path) -> dict[str, pd.DataFrame] | None:
    """A run's cached histories (metric → frame); None when absent or damaged (just a miss)."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except Exception:
        return None


def _fetch_histories(client, uri: str, run_ids: list[str], metrics: list[str]) -> pd.DataFrame:
    """The runs' histories from the store: read straight from a SQLite file where possible, else
    through the public API; a step logged twice keeps its last value."""
    sqlite = _sqlite_path(uri)
    fetched = None
    if sqlite:
        try:
            fetched = _fetch_sqlite(sqlite, run_ids, metrics)
        except Exception:  # unknown schema / locked file: fall back to the public API
            fetched = None
    if fetched is None:
        fetched = _fetch_client(client, run_ids, metrics)
    return fetched.drop_duplicates(["run_id", "metric", "step"], keep="last")


def _write_cache(cdir: Path, fetched: pd.DataFrame, metrics: list[str]) -> None:
    """Add ``metrics`` of each run in ``fetched`` to its cache file (written whole, then renamed)."""
    for rid, grp in fetched.groupby("run_id"):
        f = cdir / f"{rid}.pkl"
        store = _read_cache(f) or {}
        for m in metrics:
            store[m] = grp[grp["metric"] == m].reset_index(drop=True)
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(store, fh)
        os.replace(tmp, f)


def load_histories(runs: pd.DataFrame | Sequence[str], metrics: Sequence[str] = (FID,),
                   tracking_uri: str | None = None, *, cache_dir: str | Path | None = None,
                   use_cache: bool = True) -> pd.DataFrame:
    """Per-step values of ``metrics`` for the given runs → long frame (run_id, metric, step, value).

    One row per logged step; a step logged twice (a resumed trial re-logging) keeps the last value.
    Runs whose id is not an MLflow run (CSV rows) are skipped. Terminated runs' histories are cached
    in ``cache_dir`` (default ``$LIPSTUDY_CACHE`` or ``~/.cache/lipstudy``) per (store, run, metric).
    """
    if isinstance(runs, pd.DataFrame):
        sel = runs[runs["origin"] == "run"] if "origin" in runs.columns else runs
        run_ids = list(sel["run_id"])
        terminal = set(sel.loc[sel["status"] != "running", "run_id"]) if "status" in sel else set()
    else:
        run_ids, terminal = list(runs), set()
    metrics = list(metrics)
    empty = pd.DataFrame(columns=["run_id", "metric", "step", "value"])
    if not run_ids:
        return empty
    client = _client(tracking_uri)
    uri = str(client.tracking_uri)
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cdir = cdir / hashlib.sha1(uri.encode()).hexdigest()[:16]
    parts, todo = [], []
    for rid in run_ids:
        cached = _read_cache(cdir / f"{rid}.pkl") if use_cache and rid in terminal else None
        if cached is not None and all(m in cached for m in metrics):
            parts.extend(cached[m] for m in metrics)
        else:
            todo.append(rid)
    if todo:
        fetched = _fetch_histories(client, uri, todo, metrics)
        parts.append(fetched)
        if use_cache:
            _write_cache(cdir, fetched[fetched["run_id"].isin(terminal)], metrics)
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty
    out = pd.concat(parts, ignore_index=True)
    out["step"] = out["step"].astype(int)
    out["value"] = out["value"].astype(float)
    return out.sort_values(["run_id", "metric", "step"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------- artifacts
def list_artifacts(run_id: str, path: str, tracking_uri: str | None = None) -> list[str]:
    """Artifact paths of ``run_id`` under ``path`` ([] when there are none or the store cannot say)."""
    try:
        return [a.path for a in _client(tracking_uri).list_artifacts(run_id, path)]
    except Exception:
        return []


def download_artifact(run_id: str, path: str, dst_dir: str | Path,
                      tracking_uri: str | None = None) -> Path | None:
    """Download one artifact of ``run_id`` (e.g. ``final/samples.png``) into ``dst_dir``; None when
    the run has no such artifact (or the store is unreachable)."""
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    # one small file per call: MLflow's per-download progress bar is noise in a report's output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        out = Path(_client(tracking_uri).download_artifacts(run_id, path, str(dst_dir)))
    except Exception:
        return None
    return out if out.is_file() else None
