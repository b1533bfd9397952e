"""One trial = one MLflow run, child of the study's parent run.

Uses ``MlflowClient`` with an explicit run id (no global "active run" state), so several trials in
one process, retried trials and resumed trials all write where they should. Metrics of one
measurement step go out as one ``log_batch`` call; a resumed trial passes the run id kept in its
checkpoint and continues the same run.
"""

from __future__ import annotations

import io
import time
from typing import Any

import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

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
    ):
        self.client = MlflowClient(tracking_uri)
        if run_id is not None:  # resumed / retried: continue the same run
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(experiment_id, run_name=name, tags=all_tags)
        self.run_id = run.info.run_id
        self.log_params(params)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params (re-logging an identical value, as a resumed trial does, is allowed)."""
        items = [Param(k, _param_str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _PARAM_BATCH])

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

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

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _param_str(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)
