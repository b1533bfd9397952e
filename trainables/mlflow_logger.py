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
"""

from __future__ import annotations

import io
import time
from typing import Any

import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

#: Tag naming the Ray trial a run belongs to (stable across Ray's retries of that trial).
TRIAL_ID_TAG = "lipstudy.trial_id"

#: MLflow accepts at most 100 params per log_batch call.
_PARAM_BATCH = 100


def run_name(cfg: dict[str, Any], k_keys: tuple[str, ...] = ()) -> str:
    """Readable child-run name, e.g. ``ns-sn-k1-a1e-25-s0``."""
    parts = [cfg["loss"], cfg["regularizer"]]
    for key in k_keys:
        if key in cfg:
            parts.append(f"k{cfg[key]:g}")
            break
    parts.append(f"a{cfg['alpha']:g}")
    parts.append(f"s{cfg['seed']}")
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
    ):
        self.client = MlflowClient(tracking_uri)
        self.synchronous = synchronous
        self._queue: _OrderedWriter | None = None
        self._last_step: dict[str, int] = {}
        self.resumed = False
        if run_id is None:
            run_id = self.find_trial_run(experiment_id, parent_run_id,
                                         (tags or {}).get(TRIAL_ID_TAG))
        if run_id is not None:  # resumed / retried: continue the same run
            self.run_id = run_id
            self.resumed = True
            if self.client.get_run(run_id).info.lifecycle_stage == "deleted":
                self.client.restore_run(run_id)  # never lose a run a resume deleted by mistake
            self.client.update_run(run_id, status="RUNNING")
            self._last_step = self.logged_steps()
            return
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(experiment_id, run_name=name, tags=all_tags)
        self.run_id = run.info.run_id
        self.log_params(params)

    def find_trial_run(self, experiment_id: str, parent_run_id: str | None,
                       trial_id: str | None) -> str | None:
        """The run an earlier attempt of this Ray trial created (same trial id, same parent), if
        any: a trial killed before its first checkpoint has no run id to pass on."""
        if not trial_id or not parent_run_id:
            return None
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=(f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' and "
                           f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"),
            max_results=2,
        )
        return runs[0].info.run_id if runs else None

    def logged_steps(self) -> dict[str, int]:
        """{metric: largest step logged so far} of this run (one history query per metric)."""
        keys = self.client.get_run(self.run_id).data.metrics.keys()
        out = {}
        for k in keys:
            hist = self.client.get_metric_history(self.run_id, k)
            if hist:
                out[k] = max(m.step for m in hist)
        return out

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params (re-logging an identical value, as a resumed trial does, is allowed)."""
        items = [Param(k, _param_str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _PARAM_BATCH])

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
        for m in batch:
            last[m.key] = step
        if self.synchronous:
            self.client.log_batch(self.run_id, metrics=batch)
        else:
            self._writer().put(batch)

    def _writer(self) -> _OrderedWriter:
        if self._queue is None:
            self._queue = _OrderedWriter(self.client, self.run_id)
        self._queue.check()
        return self._queue

    def flush(self) -> None:
        """Block until every queued batch is written (re-raises a write error); no-op when
        synchronous."""
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
        self.client.log_text(self.run_id, text, artifact_file)

    def _log_bytes(self, payload: bytes, artifact_file: str) -> None:
        import os
        import tempfile

        directory, fname = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, fname)
            with open(path, "wb") as fh:
                fh.write(payload)
            self.client.log_artifact(self.run_id, path, directory or None)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

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

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """[(step, value)] of one metric of this run, by step (after flushing queued metrics)."""
        self.flush()
        return sorted((m.step, m.value) for m in self.client.get_metric_history(self.run_id, key))

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        self.client.set_terminated(self.run_id, status)


class _OrderedWriter:
    """One daemon thread writing queued metric batches with ``log_batch``, strictly in order.

    In order matters: a crash loses only a tail of steps, which the resumed trial re-logs (its
    high-water marks are below them). MLflow's own async logging submits batches to a pool of
    threads, so a later step can land before an earlier one is lost — then the resume would skip
    the lost step. The trial thread pays a queue put (≈ 0.4 ms) instead of a store round trip
    (≈ 50 ms on SQLite with fsync on a loaded 2-core box, see bench/stats_logging_overhead.py).
    """

    def __init__(self, client: MlflowClient, run_id: str):
        import queue
        import threading

        self.client, self.run_id = client, run_id
        self.q: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"mlflow-writer-{run_id[:8]}",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            batch = self.q.get()
            try:
                if batch is None:
                    return
                if self.error is None:
                    self.client.log_batch(self.run_id, metrics=batch)
            except BaseException as err:  # noqa: BLE001 - surfaced by check()/flush()
                self.error = err
            finally:
                self.q.task_done()

    def put(self, batch: list[Metric]) -> None:
        self.q.put(batch)

    def check(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise RuntimeError(f"MLflow metric logging failed: {err!r}") from err

    def flush(self) -> None:
        self.q.join()
        self.check()

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=60)


def _param_str(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)
