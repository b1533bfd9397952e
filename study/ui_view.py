"""The study at a glance in the MLflow UI (``mlflow ui`` / ``lipstudy ui`` on the study's store).

What MLflow 3.17's UI offers, read from its server bundle (``mlflow/server/js/build``):

* **Shared views.** The runs page URL ``#/experiments/<id>/runs?viewStateShareKey=<key>`` loads
  its search facets (``searchFilter``, ``orderByKey``, ``orderByAsc``, …) and its table/chart
  state (``selectedColumns``, ``runsHiddenMode``, …) from the experiment tag
  ``mlflow.sharedViewState.<key>`` (JSON). That is what the UI's own "Share" button writes; the
  facets in a URL alone cannot choose columns (those live in the browser's local storage). A
  facet in the URL beside the key makes the UI ignore the shared state, so the link carries none.
* **Experiment description.** The experiment tag ``mlflow.note.content`` is rendered as Markdown
  above the runs table; its links (``#/experiments/<id>/runs/<run>/artifactPath/<file>``) open a
  run's artifact directly.
* **Logged figures and tables** on a run (``MlflowClient.log_figure`` / ``log_table``) are shown
  in its Artifacts tab.
* **Charts.** A shared view also carries the runs page's chart view (``compareRunCharts`` /
  ``compareRunSections``; the page's "Chart" switch, or ``compareRunsMode=CHART`` in the URL,
  shows it). A section marked ``isReordered`` keeps its charts in the given order; the UI appends
  a chart for every other metric after them. The scatter chart has linear axes only (its Plotly
  layout is fixed); a line chart's y axis may be ``scaleType: log``.
* **Run colours.** The run tag ``mlflow.runColor`` (a hex colour, what the UI's colour picker
  writes) colours a run in every chart.
* **A run page's chart tab** ("Model metrics") is laid out from the run's metric names alone, in
  the browser's local storage thereafter: metrics with a ``/`` form sections placed before
  "Model metrics", the rest in code-unit order (``crashed``, ``diverged``, ``fd_lipschitz_*``
  sort before ``fid``). No tag or URL chooses it; the FID curves are therefore the chart view's
  second chart, beside the logged figure.

So every study execution writes, on its experiment: a shared view whose key is the parent run's
id, listing the parent's trials (``tags.mlflow.parentRunId``, the children as flat rows, best FID
first) with their status, loss, regularizer, k_SN, α, FID and quality as columns, and whose chart
view opens on FID against k_SN (a point per trial) and the trials' FID curves (log FID); and a
description linking the parent run's figures (FID against k_SN coloured by loss on log axes, the
trials' FID curves), drawn by :mod:`analysis.figures` / :mod:`analysis.curves` at the study's end
and at the end of every resume (:func:`log_study_figures`), when each trial run is also coloured
by its loss, as in the figures.
"""

from __future__ import annotations

import json
import sys

from trainables import names
from trainables.names import (ALPHA, FID, FID_QUALITY, HQ_SHARE, K_SN, LOSS, MODES_COVERED,
                              REGULARIZER)

SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow UI: + share key -> the view's JSON
NOTE_TAG = "mlflow.note.content"  # MLflow UI: an experiment's / run's Markdown description
NOTE_PREFIX = "lipstudy study "  # how our descriptions begin (a person's own is never replaced)
FIGURE_DIR = "figures"
FID_VS_K_FIGURE = "fid_vs_k_sn.png"  # the first FID-vs-k_SN figure; further ones keep their name
CURVES_FIGURE = "fid_curves.png"  # the first learning-curves figure
OPTUNA_HISTORY_FIGURE = "optuna_history.png"  # a searched study's optimisation history
#: the trial columns of the study's view, in order (a metric no run logged shows no column)
VIEW_PARAMS = (LOSS, REGULARIZER, K_SN, ALPHA)
VIEW_METRICS = (FID, FID_QUALITY, MODES_COVERED, HQ_SHARE)
UI_MODE = "workflowType=machine_learning"  # the UI's "Model training" mode (see view_link)
RUN_COLOR_TAG = "mlflow.runColor"  # MLflow UI: a run's colour in every chart (hex)
CHART_SECTION = "lipstudy-study-charts"  # the id of the chart view's section
SCATTER_CHART = "lipstudy-fid-vs-k-sn"  # the ids of its first two charts
CURVES_CHART = "lipstudy-fid-curves"


def _column(kind: str, key: str) -> str:
    """The runs table's column id (the bundle's ``makeCanonicalSortKey``: kind.`key`)."""
    return f"{kind}.`{key}`"


def view_state(parent_run_id: str) -> dict:
    """The shared view of one study execution: its trials, best FID first, with the columns."""
    columns = ([_column("tags", names.STATUS_TAG)]
               + [_column("params", p) for p in VIEW_PARAMS]
               + [_column("metrics", m) for m in VIEW_METRICS])
    return {
        "searchFilter": f"tags.`{names.PARENT_TAG}` = '{parent_run_id}'",
        "orderByKey": _column("metrics", FID),
        "orderByAsc": True,
        "lifecycleFilter": "Active",
        "selectedColumns": columns,
        "runsHiddenMode": "SHOW_ALL",  # charts show every trial, not the first 10
        "viewMaximized": False,
        "runListHidden": False,
        "compareRunCharts": study_charts(),
        "compareRunSections": [{"uuid": CHART_SECTION, "name": "Model metrics", "display": True,
                                "isReordered": True, "deleted": False, "isGenerated": False}],
        "hideEmptyCharts": True,
    }


def study_charts() -> list[dict]:
    """The chart view's first charts (the bundle's chart-card classes, serialized): FID against
    k_SN, one point per trial in its run colour (MLflow's scatter: linear axes), then the trials'
    FID curves over the steps on a log FID axis."""
    common = {"metricSectionId": CHART_SECTION, "deleted": False, "isGenerated": False,
              "runsCountToCompare": 100}
    scatter = {**common, "uuid": SCATTER_CHART, "type": "SCATTER",
               "xaxis": {"key": K_SN, "type": "PARAM"}, "yaxis": {"key": FID, "type": "METRIC"}}
    curves = {**common, "uuid": CURVES_CHART, "type": "LINE", "metricKey": FID,
              "selectedMetricKeys": [FID], "displayName": FID, "xAxisKey": "step",
              "useGlobalXaxisKey": False, "selectedXAxisMetricKey": "", "scaleType": "log",
              "xAxisScaleType": "linear", "lineSmoothness": 0, "useGlobalLineSmoothing": False,
              "range": {}, "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False}
    return [scatter, curves]


def artifact_link(experiment_id: str, run_id: str, path: str) -> str:
    """The UI's route to one artifact of a run (hash route, relative to the UI's root), in Model
    training mode (:func:`view_link`: without it a run page switches the sidebar to GenAI)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{path}?{UI_MODE}"


def description(study_name: str, experiment_id: str, parent_run_id: str,
                searched: bool = False) -> str:
    """The experiment's Markdown description: what it is and where the study's figures are
    (``searched``: an Optuna search, whose optimisation history is linked too)."""
    links = [("FID vs k_SN by loss", f"{FIGURE_DIR}/{FID_VS_K_FIGURE}"),
             ("FID curves", f"{FIGURE_DIR}/{CURVES_FIGURE}"), ("trials table", "trials.json")]
    if searched:
        links.insert(2, ("Optuna history", f"{FIGURE_DIR}/{OPTUNA_HISTORY_FIGURE}"))
    shown = " · ".join(f"[{text}]({artifact_link(experiment_id, parent_run_id, path)})"
                       for text, path in links)
    return (
        f"{NOTE_PREFIX}\"{study_name}\": GAN trials of the Lipschitz study, one run per trial. "
        f"Figures: {shown}\n\n"
        f"The figures are the latest execution's (parent run `{parent_run_id}`), drawn when the "
        f"study or a resume ends. `lipstudy ui` prints a link that opens the trials as a table: "
        f"this experiment's runs page with `?viewStateShareKey={parent_run_id}`.")


def share_study_view(client, experiment_id: str, study_name: str, parent_run_id: str,
                     searched: bool = False) -> None:
    """Write the execution's shared view (key: the parent run id) and the experiment's
    description on ``experiment_id``; a description a person wrote is left as it is."""
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + parent_run_id,
                              json.dumps(view_state(parent_run_id)))
    note = client.get_experiment(experiment_id).tags.get(NOTE_TAG)
    if note is None or note.startswith(NOTE_PREFIX):
        client.set_experiment_tag(experiment_id, NOTE_TAG,
                                  description(study_name, experiment_id, parent_run_id, searched))


def view_link(url: str, experiment_id: str, share_key: str | None) -> str:
    """The link that opens ``experiment_id`` in Model training mode; with ``share_key``, on the
    runs page in that shared view. MLflow 3.17's UI opens ``#/experiments/<id>`` on its GenAI
    "Overview" unless the page is in "Model training" mode: the URL's ``workflowType``, else the
    browser's saved choice (GenAI until the user flips the switch)."""
    if share_key is None:
        return f"{url}/#/experiments/{experiment_id}?{UI_MODE}"
    return f"{url}/#/experiments/{experiment_id}/runs?viewStateShareKey={share_key}&{UI_MODE}"


def latest_share_key(client, experiment) -> str | None:
    """The share key of the experiment's newest study execution that has a shared view."""
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{names.KIND_TAG}` = 'study'",
                              order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        if SHARED_VIEW_TAG + run.info.run_id in experiment.tags:
            return run.info.run_id
    return None


def experiment_links(uri: str, url: str, limit: int = 20) -> list[str]:
    """``name: link`` for each experiment of the store (newest first, the empty ``Default`` left
    out), each link opening the experiment on its runs: a study's experiment in the shared view of
    its newest execution (:func:`latest_share_key`: the trials with status, params and FID as
    columns).

    MLflow 3.17's UI opens ``#/experiments/<id>`` on its GenAI "Overview" unless the page is in its
    "Model training" mode: the URL's ``workflowType=machine_learning``, else the browser's saved
    choice (``localStorage['mlflow.workflowType']``, GenAI until the user flips the switch). The
    experiment tag ``mlflow.experimentKind`` (:mod:`study.tracking`) does not decide it in this
    version's UI (measured with Chromium; the tag is what other versions read)."""
    try:
        from mlflow.entities import ViewType
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        exps = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                         order_by=["last_update_time DESC"])
        exps = [e for e in exps if not (e.experiment_id == "0" and not client.search_runs(
            ["0"], max_results=1))]
        lines = [f"  {e.name}: {view_link(url, e.experiment_id, latest_share_key(client, e))}"
                 for e in exps[:limit]]
    except Exception:  # noqa: BLE001 - the links are a convenience; the server says what is wrong
        return []
    if len(exps) > limit:
        lines.append(f"  ... and {len(exps) - limit} more experiment(s): {url}/#/experiments")
    return lines


def server_command(uri: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow ui`` command (and its environment) serving ``uri`` on loopback at ``port``:
    one worker and no job runner, ≈ 0.5 GiB instead of ≈ 2.5 GiB (docs/measurements.md); uvicorn
    gives open connections at most 3 s once told to stop."""
    import os

    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--uvicorn-opts", "--timeout-graceful-shutdown 3"]
    return cmd, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def study_figures(tracking_uri: str, experiment_id: str, parent_run_id: str):
    """``[(artifact file name, Figure)]``: FID vs k_SN (coloured by loss, log axes), the FID
    curves of the parent's trials and, for an Optuna search, Optuna's figures (optimisation
    history, importances, slice and contour over k_SN and α), drawn by the analysis package from
    the runs in MLflow and the study's Optuna storage."""
    from mlflow.tracking import MlflowClient

    from analysis import curves, figures, load, optuna_figures

    experiment = MlflowClient(tracking_uri).get_experiment(experiment_id).name
    frame = load.load_runs(experiment, tracking_uri, cache=False)
    if "parent_run_id" in frame:
        frame = frame[frame["parent_run_id"] == parent_run_id]
    if frame.empty:
        return []
    out = []
    for i, (name, fig) in enumerate(figures.fid_vs_k(frame)):
        for ax in fig.axes:  # FIDs span orders of magnitude across k_SN: log on both axes
            ax.set_yscale("log")
        out.append((FID_VS_K_FIGURE if i == 0 else f"{name}.png", fig))
    hist = load.load_histories(frame, curves.CURVE_METRICS, tracking_uri)
    for i, (name, fig) in enumerate(curves.learning_curves(hist, frame, per_figure=10,
                                                           max_figures=4)):
        out.append((CURVES_FIGURE if i == 0 else f"{name}.png", fig))
    for summary in optuna_figures.summaries_for(frame):  # a searched study: Optuna's own figures
        out += [(f"{name}.png", fig) for name, fig in summary.figures]
    return out


def loss_hex(loss: str) -> str:
    """The hex colour of ``loss`` in the study's figures (:func:`analysis.figures.loss_color`)."""
    from matplotlib.colors import to_hex

    from analysis.figures import loss_color

    return to_hex(loss_color(loss))


def colour_trials(client, tracking) -> int:
    """Tag every trial run of the execution with its loss's colour (``mlflow.runColor``), so
    that the UI's charts colour the trials by loss as the figures do; returns how many."""
    runs = client.search_runs([tracking.experiment_id],
                              f"tags.`{names.PARENT_TAG}` = '{tracking.parent_run_id}'",
                              max_results=50000)
    coloured = 0
    for run in runs:
        loss = run.data.params.get(LOSS)
        if loss and run.data.tags.get(RUN_COLOR_TAG) != loss_hex(loss):
            client.set_tag(run.info.run_id, RUN_COLOR_TAG, loss_hex(loss))
            coloured += 1
    return coloured


def log_study_figures(client, tracking) -> list[str]:
    """Colour the execution's trials by loss (:func:`colour_trials`), draw :func:`study_figures`
    and log them under ``figures/`` on the parent run; returns the artifact paths. A failure is
    one warning line: the study's outcome does not depend on it."""
    import matplotlib.pyplot as plt

    logged = []
    try:
        colour_trials(client, tracking)
        for name, fig in study_figures(tracking.tracking_uri, tracking.experiment_id,
                                       tracking.parent_run_id):
            client.log_figure(tracking.parent_run_id, fig, f"{FIGURE_DIR}/{name}")
            plt.close(fig)
            logged.append(f"{FIGURE_DIR}/{name}")
    except Exception as err:  # noqa: BLE001 - figures are a view; the run's state matters more
        print(f"lipstudy: warning: could not draw the study's figures on its parent run "
              f"{tracking.parent_run_id}: {err}", file=sys.stderr)
    return logged
