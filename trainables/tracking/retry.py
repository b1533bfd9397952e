"""Retrying calls to the MLflow tracking store (``trainables.tracking.mlflow_logger``): the backoff policy,
which errors are transient, and the in-order metric writer. The module docstring of
``trainables.tracking.mlflow_logger`` says why and what each guarantees."""

from __future__ import annotations

import os
import random
import re
import threading
from dataclasses import dataclass
from typing import Callable

from mlflow.entities import Metric


class TrackingError(RuntimeError):
    """A tracking call the logger gave up on (a permanent error, or transient ones past the retry
    budget). When raised, the run has already been ended FAILED with the reason as a tag."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message  # "<what>: <why>", the run's tracking_error tag


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient tracking errors: the n-th retry waits a uniformly random time in
    [d/2, d] with d = min(max_delay_s, first_delay_s·2ⁿ) (the jitter keeps 32 writers from
    retrying in lock-step); one operation gives up after ``budget_s`` seconds or
    ``max_attempts`` attempts."""

    budget_s: float = 300.0
    first_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_attempts: int = 60

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Default policy; ``LIPSTUDY_TRACKING_RETRY_S`` sets the budget (seconds)."""
        raw = os.environ.get("LIPSTUDY_TRACKING_RETRY_S")
        return cls(budget_s=float(raw)) if raw else cls()

    def delay(self, retry: int) -> float:
        d = min(self.max_delay_s, self.first_delay_s * (2.0 ** min(retry, 30)))
        return random.uniform(d / 2, d)


def sqlite_identity(uri: str) -> str | None:
    """``"<device>:<inode>"`` of a SQLite tracking store's file (``sqlite:///path``); ``"missing"``
    when no file is there; None for other stores. A store deleted or replaced under a study (a new
    file at the path: SQLite creates an empty one) has another identity than at the start."""
    if not uri.startswith("sqlite:///"):
        return None
    try:
        st = os.stat(uri[len("sqlite:///"):])
    except FileNotFoundError:
        return "missing"
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


# MLflow error codes (mlflow.protos.databricks_pb2.ErrorCode names)
_TRANSIENT_CODES = frozenset({
    "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "INTERNAL_ERROR", "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED", "ABORTED", "SERVICE_UNDER_MAINTENANCE",
    "WORKSPACE_TEMPORARILY_UNAVAILABLE", "COULD_NOT_ACQUIRE_LOCK", "IO_ERROR",
})
_PERMANENT_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE", "INVALID_STATE_TRANSITION", "PERMISSION_DENIED", "UNAUTHENTICATED",
    "CUSTOMER_UNAUTHORIZED", "NOT_FOUND", "ALREADY_EXISTS", "ENDPOINT_NOT_FOUND",
    "MALFORMED_REQUEST", "FEATURE_DISABLED", "NOT_IMPLEMENTED", "QUOTA_EXCEEDED",
    "RESOURCE_CONFLICT", "MAX_LIST_SIZE_EXCEEDED", "MAX_BLOCK_SIZE_EXCEEDED",
})
# Messages of transient failures that arrive under a generic code (BAD_REQUEST for SQLAlchemy's
# pool timeout, INTERNAL_ERROR for the HTTP client's exhausted retries, plain exceptions).
_TRANSIENT_MESSAGE = re.compile(
    r"queuepool limit|database is locked|database table is locked|deadlock|"
    r"could not serialize access|too many (connections|clients)|remaining connection slots|"
    r"server closed the connection|connection (refused|reset|aborted)|remote end closed|"
    r"max retries exceeded|too many \d{3} error responses|timed out|timeout|"
    r"temporarily unavailable|service unavailable|bad gateway|gateway time-?out|"
    r"too many requests|error code (408|429|5\d\d)\b|\b(408|429|50[0234]) (server )?error",
    re.IGNORECASE,
)


def is_transient(err: BaseException) -> bool:
    """Whether retrying the same call may succeed (see the module docstring)."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, TrackingError):
        return False
    if isinstance(err, MlflowException):
        code = str(err.error_code)
        if code in _PERMANENT_CODES:
            return False
        if code in _TRANSIENT_CODES:
            return True
        return bool(_TRANSIENT_MESSAGE.search(str(err.message)))
    try:
        import requests

        if isinstance(err, requests.HTTPError):
            status = getattr(err.response, "status_code", None)
            if status is not None:
                return status in (408, 429) or status >= 500
            return bool(_TRANSIENT_MESSAGE.search(str(err)))
        if isinstance(err, (requests.ConnectionError, requests.Timeout,
                            requests.exceptions.ChunkedEncodingError)):
            return True
    except ImportError:  # pragma: no cover - mlflow depends on requests
        pass
    if isinstance(err, (ConnectionError, TimeoutError)):  # refused/reset/aborted, socket timeouts
        return True
    try:
        import sqlalchemy.exc
        import urllib3.exceptions

        if isinstance(err, (urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError,
                            urllib3.exceptions.NewConnectionError,
                            sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


class OrderedWriter:
    """One daemon thread writing queued metric batches, strictly in order.

    In order matters: a crash loses only a tail of steps, which the resumed trial re-logs (its
    high-water marks are below them). MLflow's own async logging submits batches to a pool of
    threads, so a later step can land before an earlier one is lost — then the resume would skip
    the lost step. The trial thread pays a queue put instead of a store round trip (both timed by
    bench/stats_logging_overhead.py; docs/measurements.md).

    ``write`` retries transient errors itself (``MlflowTrialLogger._call``); when it gives up
    (raises), the writer stops for good: later batches are dropped, so the store keeps a prefix of
    the steps, and every later ``put``/``flush`` raises the same :class:`TrackingError`.
    """

    def __init__(self, write: Callable[[list[Metric]], None], run_id: str):
        import queue

        self.write, self.run_id = write, run_id
        self.q: queue.Queue = queue.Queue()
        self.failed: TrackingError | None = None
        self.reported = False
        self.reported_before = False
        self.thread = threading.Thread(target=self._run, name=f"mlflow-writer-{run_id[:8]}",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            batch = self.q.get()
            try:
                if batch is None:
                    return
                if self.failed is None:
                    self.write(batch)
            except BaseException as err:  # noqa: BLE001 - surfaced by check()/flush()
                self.failed = err if isinstance(err, TrackingError) else TrackingError(
                    f"MLflow metric logging failed: {err!r}")
                if self.failed is not err:
                    self.failed.__cause__ = err
            finally:
                self.q.task_done()

    def put(self, batch: list[Metric]) -> None:
        self.q.put(batch)

    def check(self) -> None:
        if self.failed is not None:
            self.reported_before = self.reported
            self.reported = True
            raise self.failed

    def flush(self) -> None:
        self.q.join()
        self.check()

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=60)


def short_error(err: BaseException, limit: int = 600) -> str:
    """``Type CODE: message`` of a tracking error, cut to ``limit`` characters (for logs/tags)."""
    code = getattr(err, "error_code", None)
    text = f"{type(err).__name__}{f' {code}' if code else ''}: {err}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
