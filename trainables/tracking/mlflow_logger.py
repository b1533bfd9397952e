"""One trial = one MLflow run, child of the study's parent run.

Uses ``MlflowClient`` with an explicit run id (no global "active run" state), so several trials in
one process, retried trials and resumed trials all write where they should. Metrics of one
measurement step go out as one ``log_batch`` call.

Continuation without duplicates. A retried/resumed trial continues the same run: the run id comes
from its checkpoint or, when it crashed before its first checkpoint, from the run that carries the
same Ray trial id under the same parent. Training resumes exactly, so the steps between the last
checkpoint and the crash are recomputed with the same values; the logger therefore reads, once on
resume, the last logged step of every metric of the run (its high-water mark) and drops any
(metric, step) at or below it. Nothing is logged twice, nothing is lost (a metric the crash cut off
at step s has a mark below s and is logged again).

Holding a loaded tracking server (32 trials writing to one server). Every call to the tracking
store goes through :meth:`MlflowTrialLogger._call`, which retries *transient* errors with
exponential backoff and full jitter within a time budget (:class:`RetryPolicy`, default 300 s per
operation, ``LIPSTUDY_TRACKING_RETRY_S`` overrides) and gives up at once on *permanent* ones
(:func:`is_transient` is the classification):

* transient: the server's SQLAlchemy pool is exhausted (``QueuePool limit ... reached``: HTTP 400,
  which MLflow's HTTP client does not retry itself), SQLite ``database is locked``, deadlocks and
  serialization failures, ``TEMPORARILY_UNAVAILABLE`` / ``REQUEST_LIMIT_EXCEEDED`` /
  ``INTERNAL_ERROR`` / ``RESOURCE_EXHAUSTED`` and other 408/429/5xx answers (also after the client's
  own retries ran out), refused/reset/closed connections and timeouts;
* permanent: everything else, e.g. ``INVALID_PARAMETER_VALUE`` (a param changing value, an invalid
  metric), ``RESOURCE_DOES_NOT_EXIST``, ``INVALID_STATE`` (a deleted run), permission errors,
  local ``OSError``/``ValueError``/``TypeError``.

Retries never duplicate anything:

* ``log_batch`` of metrics: the ``Metric`` objects (and so their timestamps) are made once, when
  the trial logs the step, and every retry sends the very same batch. MLflow's SQL store keys a
  metric row by (run, key, timestamp, step, value, is_nan); a batch that already landed (the answer
  was lost, or a pool timeout hit after the commit) raises an IntegrityError on the server, which
  then inserts only the rows that are missing: the retry is a no-op. (The same metric re-sent with
  a *new* timestamp would be a second row: tests/e2e/test_tracking_load.py checks both.)
* params (same value again is allowed), tags (overwritten), ``set_terminated``/``update_run``
  (idempotent) and artifacts (overwritten) are idempotent as they are.
* ``create_run`` is not: every run is created with a random ``lipstudy.create_token`` tag; before
  retrying, the logger looks for a run with its token (an attempt whose answer was lost) and
  adopts it; after the create it keeps the oldest run with its token and deletes any other (just
  created, empty) — MLflow's HTTP client itself re-sends a POST whose connection broke, so a twin
  can appear even without a retry of ours.

Giving up never leaves a run RUNNING: the logger tags it ``lipstudy.status = crashed`` and
``lipstudy.tracking_error = <what failed and why>``, ends it FAILED (both retried within their own
budget), then raises :class:`TrackingError` to the trial, which fails; Ray retries it from its last
checkpoint and the resumed logger re-logs exactly what is missing (the writer writes in order and
stops at the first batch it gives up on, so the store holds a prefix of the steps).

The retry policy, the transient/permanent classification and the in-order writer live in
:mod:`trainables.tracking.retry` (imported from here as before).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import uuid
from dataclasses import replace
from typing import Any, Callable, TypeVar

import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from trainables.names import (ALPHA, CREATE_TOKEN_TAG, LOSS, PARENT_TAG, REGULARIZER,
                              RESUMED_PARAMS_TAG, SEED, STATUS_TAG, TRACKING_ERROR_TAG,
                              TRIAL_ID_TAG)
from trainables.tracking.retry import (OrderedWriter, RetryPolicy, TrackingError, is_transient,
                                       short_error, sqlite_identity)

_log = logging.getLogger(__name__)
T = TypeVar("T")

#: MLflow accepts at most 100 params per log_batch call.
_PARAM_BATCH = 100
#: MLflow tag values are limited to 8,000 characters.
_TAG_MAX = 4000


def run_name(cfg: dict[str, Any], k_keys: tuple[str, ...] = ()) -> str:
    """Readable child-run name, e.g. ``ns-sn-k1-a1e-25-s0``."""
    parts = [cfg[LOSS], cfg[REGULARIZER]]
    for key in k_keys:
        if key in cfg:
            parts.append(f"k{cfg[key]:g}")
            break
    parts.append(f"a{cfg[ALPHA]:g}")
    parts.append(f"s{cfg[SEED]}")
    return "-".join(parts)


class MlflowTrialLogger:
    """Writes one trial's params, metrics, sample grids and final status to its MLflow run."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        *,
        name: str,
        params: dict[str, Any],
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        synchronous: bool = True,
        retry: RetryPolicy | None = None,
        client: MlflowClient | None = None,
        store_identity: str | None = None,
    ):
        self.client = client if client is not None else MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        # the SQLite store's file as the study started it (tracking_retry.sqlite_identity): while
        # the file is gone or another, every error is waited on as transient - the driver's
        # StoreWatch stops the study within seconds; no trial fails on a new, empty store
        self.store_identity = store_identity
        self.synchronous = synchronous
        self.retry = retry or RetryPolicy.from_env()
        self.retries = 0  # transient errors retried so far (all operations)
        self.failed: TrackingError | None = None  # set once the logger gave up on a write
        self._lock = threading.Lock()
        self._queue: OrderedWriter | None = None
        self._last_step: dict[str, int] = {}
        self.resumed = False
        self.run_id: str | None = None
        if run_id is None:
            run_id = self.find_trial_run(experiment_id, parent_run_id,
                                         (tags or {}).get(TRIAL_ID_TAG))
        if run_id is not None:  # resumed / retried: continue the same run
            self.run_id = run_id
            self.resumed = True
            info = self._call("get run", lambda: self.client.get_run(run_id).info)
            if info.lifecycle_stage == "deleted":  # never lose a run a resume deleted by mistake
                self._call("restore run", self.client.restore_run, run_id)
            self._call("mark run RUNNING", self.client.update_run, run_id, status="RUNNING")
            self._last_step = self.logged_steps()
            return
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        self.run_id = self._create_run(experiment_id, name, all_tags)
        self.log_params(params)

    # -- calls to the store ----------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any,
              recover: Callable[[], T | None] | None = None, fail_run: bool = True,
              policy: RetryPolicy | None = None, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retrying transient errors (see the module docstring).

        ``recover`` runs before each retry and may return the result an earlier attempt produced
        (then no retry; if it fails, the call is retried). On giving up: the run is ended FAILED with the reason (unless
        ``fail_run`` is false) and :class:`TrackingError` is raised."""
        policy = policy or self.retry
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - classified below
                elapsed = time.monotonic() - start
                transient = is_transient(err) or self._store_moved()
                wait = policy.delay(attempt - 1) if transient else 0.0
                if (not transient or attempt >= policy.max_attempts
                        or elapsed + wait > policy.budget_s):
                    why = (f"{'permanent error' if not transient else 'gave up'} after "
                           f"{attempt} attempt(s) in {elapsed:.1f}s: {short_error(err)}")
                    error = TrackingError(f"MLflow {what} failed ({why})", f"{what}: {why}")
                    _log.error("run %s: %s", self.run_id, error)
                    if fail_run:
                        self.failed = self.failed or error
                        self._fail_run(error.reason)
                    raise error from err
                with self._lock:
                    self.retries += 1
                (_log.warning if attempt >= 3 else _log.info)(
                    "run %s: MLflow %s: transient error (attempt %d, retry in %.1fs): %s",
                    self.run_id, what, attempt, wait, short_error(err))
                time.sleep(wait)
                if recover is not None:
                    try:
                        got = recover()
                    except Exception as rerr:  # noqa: BLE001 - could not look: just retry
                        _log.warning("run %s: MLflow %s: recovery failed: %s", self.run_id,
                                     what, short_error(rerr))
                        got = None
                    if got is not None:
                        return got

    def _store_moved(self) -> bool:
        """Whether the SQLite store's file is no longer the one the study started with."""
        return (self.store_identity is not None
                and sqlite_identity(self.tracking_uri) != self.store_identity)

    def _fail_run(self, reason: str) -> None:
        """End the run FAILED with the reason as a tag (best effort: retried within a shorter
        budget; never raises)."""
        if self.run_id is None:
            return
        short = replace(self.retry, budget_s=min(self.retry.budget_s, 60.0))
        tags = [RunTag(STATUS_TAG, "crashed"), RunTag(TRACKING_ERROR_TAG, reason[:_TAG_MAX])]
        for what, fn, args, kwargs in (
                ("tag the failure", self.client.log_batch, (self.run_id,), {"tags": tags}),
                ("end run FAILED", self.client.set_terminated, (self.run_id, "FAILED"), {})):
            try:
                self._call(what, fn, *args, fail_run=False, policy=short, **kwargs)
            except TrackingError as err:
                _log.error("run %s: could not %s: %s", self.run_id, what, err)

    def _create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        token = uuid.uuid4().hex
        tags = {**tags, CREATE_TOKEN_TAG: token}

        def create() -> str:
            return self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

        def landed() -> str | None:  # an attempt whose answer was lost
            runs = self._runs_with_token(experiment_id, token)
            return runs[0].info.run_id if runs else None

        try:
            run_id = self._call("create run", create, recover=landed, fail_run=False)
        except TrackingError as err:
            # mark whatever an attempt may have created, so nothing stays RUNNING
            for run in self._runs_with_token(experiment_id, token, quiet=True):
                self.run_id = run.info.run_id
                self._fail_run(err.reason)
            self.run_id = None
            raise
        # Twins: our retries, or MLflow's HTTP client re-sending the POST after a broken
        # connection (it retries every method), can create the run twice. Keep the oldest, delete
        # the others (just created, empty). One search per trial start.
        runs = self._runs_with_token(experiment_id, token, quiet=True)
        if runs and (len(runs) > 1 or runs[0].info.run_id != run_id):
            run_id = runs[0].info.run_id
            for twin in runs[1:]:
                _log.warning("deleting run %s: a twin of %s made by a re-sent create_run",
                             twin.info.run_id, run_id)
                try:
                    self._call("delete twin run", self.client.delete_run, twin.info.run_id,
                               fail_run=False)
                except TrackingError as err:
                    _log.error("could not delete twin run %s: %s", twin.info.run_id, err)
        return run_id

    def _runs_with_token(self, experiment_id: str, token: str, quiet: bool = False) -> list:
        def search():
            runs = self.client.search_runs([experiment_id],
                                           filter_string=f"tags.`{CREATE_TOKEN_TAG}` = '{token}'",
                                           max_results=10)
            return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

        try:
            return self._call("find created run", search, fail_run=False)
        except TrackingError:
            if quiet:
                return []
            raise

    # -- the run ---------------------------------------------------------------------------------

    def find_trial_run(self, experiment_id: str, parent_run_id: str | None,
                       trial_id: str | None) -> str | None:
        """The run an earlier attempt of this Ray trial created (same trial id, same parent), if
        any: a trial killed before its first checkpoint has no run id to pass on."""
        if not trial_id or not parent_run_id:
            return None
        runs = self._call(
            "find the trial's run", self.client.search_runs,
            [experiment_id],
            filter_string=(f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' and "
                           f"tags.`{PARENT_TAG}` = '{parent_run_id}'"),
            max_results=2,
        )
        return runs[0].info.run_id if runs else None

    def logged_steps(self) -> dict[str, int]:
        """{metric: largest step logged so far} of this run (one history query per metric)."""
        keys = self._call("get run", lambda: list(self.client.get_run(self.run_id).data.metrics))
        out = {}
        for k in keys:
            hist = self._call(f"get history of {k}", self.client.get_metric_history,
                              self.run_id, k)
            if hist:
                out[k] = max(m.step for m in hist)
        return out

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params (re-logging an identical value, as a resumed trial does, is allowed).

        A resumed run keeps the values its first attempt logged (MLflow refuses to change a
        param): a value that differs on this attempt — it runs on another device type, GPU model
        or library version — goes to the tag :data:`RESUMED_PARAMS_TAG` as ``key=value; …``."""
        if self.resumed:
            params = self._unchanged_params(params)
        items = [Param(k, _param_str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), _PARAM_BATCH):
            self._call("log params", self.client.log_batch, self.run_id,
                       params=items[i : i + _PARAM_BATCH])

    def _unchanged_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` less the ones this run logged with another value (tagged instead)."""
        logged = self._call("get params", lambda: self.client.get_run(self.run_id).data.params)
        changed = {k: _param_str(v) for k, v in params.items()
                   if k in logged and logged[k] != _param_str(v)}
        if changed:
            text = "; ".join(f"{k}={v}" for k, v in sorted(changed.items()))
            self.set_tags({RESUMED_PARAMS_TAG: text[:_TAG_MAX]})
        return {k: v for k, v in params.items() if k not in changed}

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """One ``log_batch`` of this step's metrics; (metric, step) pairs an earlier attempt of
        the trial already logged are skipped (see the module docstring). With
        ``synchronous=False`` the batch is queued to this logger's writer thread."""
        ts = int(time.time() * 1000)
        last = self._last_step
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()
                 if v is not None and step > last.get(k, -1)]
        if not batch:
            return
        if self.synchronous:
            self._write_metrics(batch)
        else:
            self._writer().put(batch)
        for m in batch:
            last[m.key] = step

    def _write_metrics(self, batch: list[Metric]) -> None:
        """The same batch (same timestamps) on every retry: a retry of a batch that landed adds
        nothing (see the module docstring)."""
        self._call(f"log metrics of step {batch[0].step}", self.client.log_batch, self.run_id,
                   metrics=batch)

    def _writer(self) -> OrderedWriter:
        if self._queue is None:
            self._queue = OrderedWriter(self._write_metrics, self.run_id)
        self._queue.check()
        return self._queue

    def flush(self) -> None:
        """Block until every queued batch is written (raises :class:`TrackingError` once the
        writer gave up); no-op when synchronous."""
        if self._queue is not None:
            self._queue.flush()

    def log_image(self, image: torch.Tensor, artifact_file: str) -> None:
        """Save a 3×H×W float image in [0, 1] as a PNG artifact (e.g. ``samples/step_001000.png``)."""
        from PIL import Image

        arr = (image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        self._log_bytes(buf.getvalue(), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._log_bytes(text.encode("utf-8"), artifact_file)

    def _log_bytes(self, payload: bytes, artifact_file: str) -> None:
        import tempfile

        directory, fname = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, fname)
            with open(path, "wb") as fh:
                fh.write(payload)
            self._call(f"log artifact {artifact_file}", self.client.log_artifact, self.run_id,
                       path, directory or None)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._call("set tags", self.client.log_batch, self.run_id,
                   tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_figure(self, fig, artifact_file: str) -> None:
        """Save a matplotlib figure as a PNG artifact (the figure is closed)."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
        self._log_bytes(buf.getvalue(), artifact_file)

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        import json

        self._log_bytes(json.dumps(data, indent=2, sort_keys=True, default=str).encode(),
                        artifact_file)

    def run_tags(self) -> dict[str, str]:
        """The tags this run holds in the store now (read with the logger's retries)."""
        return dict(self._call("get run", self.client.get_run, self.run_id).data.tags)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """[(step, value)] of one metric of this run, by step (after flushing queued metrics)."""
        self.flush()
        hist = self._call(f"get history of {key}", self.client.get_metric_history,
                          self.run_id, key)
        return sorted((m.step, m.value) for m in hist)

    def release(self) -> None:
        """Write what is queued and stop the writer thread, leaving the run's status and tags
        as they are: for a run whose end someone else records (a trial Tune stopped: the study's
        summary knows why, ``study.summary``). A write the logger gives up on is dropped here:
        the trial is being stopped, and the metrics up to its last checkpoint were flushed
        before that checkpoint was reported."""
        if self._queue is not None:
            try:
                self._queue.flush()
            except TrackingError:
                pass
            finally:
                self._queue.close()
                self._queue = None

    def finish(self, status: str = "FINISHED") -> None:
        """Write what is queued, then end the run with ``status`` — FAILED instead when the
        logger gave up on a write (then :class:`TrackingError` is raised, unless the trial was
        already told by an earlier ``log_metrics``/``flush``)."""
        error = None
        if self._queue is not None:
            try:
                self._queue.flush()
            except TrackingError as err:
                error = None if self._queue.reported_before else err
            finally:
                self._queue.close()
                self._queue = None
        if self.failed is not None:
            status = "FAILED"  # and the reason is tagged already
        self._call(f"end run {status}", self.client.set_terminated, self.run_id, status,
                   fail_run=False)
        if error is not None:
            raise error


def _param_str(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)
