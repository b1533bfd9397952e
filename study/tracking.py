"""MLflow set-up done by the driver before any trial starts.

* The store and the experiment are created here, once, in the driver: several processes creating a
  fresh SQLite store at once crash in MLflow 3 (alembic "Online migration expected to match one
  row"), see docs/measurements.md.
* Paths are made absolute: Ray runs trials with the trial directory as working directory, so a
  relative ``sqlite:///mlflow.db`` or a default ``./mlruns`` artifact root would scatter runs.
* One parent run per study execution holds the study file, the git commit and the hypotheses it
  feeds; each trial is a child run (``mlflow.parentRunId``) made by ``trainables.tracking.mlflow_logger``.
* Each execution writes, on its experiment, a shared view of its trials and a description linking
  the parent run's figures (``study.ui_view``): what the link ``lipstudy ui`` prints opens.
* Every study experiment is tagged ``mlflow.experimentKind = custom_model_development`` (a model
  training experiment, not a GenAI one), those made before the tag existed too, the next time a
  study or a resume touches them. In MLflow 3.17.2's UI the tag alone does
  not keep it from opening ``#/experiments/<id>`` on its GenAI "Overview" (that version decides by
  its GenAI / Model training switch); ``lipstudy ui`` prints links in Model training mode, which
  open the runs (``study.ui_view.experiment_links``).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from trainables import names
from trainables.names import EXPERIMENT_KIND_TAG

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlruns"
EXPERIMENT_KIND = "custom_model_development"  # MLflow's kind for a model training experiment


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or a SQLite file ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def absolute_uri(uri: str) -> str:
    """Make ``sqlite:///relative.db`` and plain paths absolute; leave servers alone."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or "://" not in uri or uri.startswith("file:")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class StudyTracking:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | None = None) -> str:
    """Return the id of experiment ``name``, creating it (with an absolute artifact root for a
    local store) when missing. The experiment is tagged as a model-development one, an existing
    experiment too."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        mark_experiment_kind(client, exp.experiment_id, exp.tags)
        return exp.experiment_id
    location = None
    if is_local_store(tracking_uri):
        root = Path(artifact_root or DEFAULT_ARTIFACTS).resolve()
        root.mkdir(parents=True, exist_ok=True)
        location = root.as_uri()
    return client.create_experiment(name, artifact_location=location,
                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def mark_experiment_kind(client: MlflowClient, experiment_id: str,
                         tags: dict[str, str] | None = None) -> None:
    """Tag ``experiment_id`` ``mlflow.experimentKind = custom_model_development`` unless it already
    is (``tags``: the experiment's tags when the caller has them, saving a request)."""
    if tags is None:
        tags = client.get_experiment(experiment_id).tags
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def start_study_run(
    tracking_uri: str,
    study_name: str,
    study_text: str,
    *,
    hypotheses: list[str],
    tags: dict[str, str] | None = None,
    artifact_root: str | None = None,
) -> StudyTracking:
    """Create the experiment if needed and open the parent run of this study execution."""
    experiment_id = ensure_experiment(tracking_uri, study_name, artifact_root)
    client = MlflowClient(tracking_uri)
    all_tags = {
        names.STUDY_TAG: study_name,
        names.KIND_TAG: "study",
        names.GIT_COMMIT_TAG: git_commit(),
        names.HYPOTHESES_TAG: ",".join(hypotheses),
        **(tags or {}),
    }
    run = client.create_run(
        experiment_id, run_name=f"{study_name}-{time.strftime('%Y%m%d-%H%M%S')}", tags=all_tags
    )
    client.log_text(run.info.run_id, study_text, "study.yaml")
    from study.ui_view import share_study_view

    share_study_view(client, experiment_id, study_name, run.info.run_id,
                     searched=names.OPTUNA_STORAGE_TAG in all_tags)
    return StudyTracking(tracking_uri, experiment_id, run.info.run_id)


def mark_crashed(tracking: StudyTracking, err: BaseException) -> None:
    """End the parent run FAILED, ``lipstudy.status = crashed``, with the cause's line in
    ``lipstudy.crash_reason`` (``trainables.ray.checkpoints.cause_line``)."""
    from trainables.ray.checkpoints import cause_line

    client = tracking.client()
    reason = cause_line(f"{type(err).__name__}: {err}") or type(err).__name__
    client.set_tag(tracking.parent_run_id, names.CRASH_REASON_TAG, reason[:5000])
    client.set_tag(tracking.parent_run_id, names.STATUS_TAG, "crashed")
    client.set_terminated(tracking.parent_run_id, "FAILED")

