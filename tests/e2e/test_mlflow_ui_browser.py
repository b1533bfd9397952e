"""``lipstudy ui`` on a study's store, checked as a person would: the MLflow UI on loopback,
opened in headless Chromium, lists the trials with their ``fid`` and params (screenshot saved).
The study at a glance, with clicks counted: the link ``lipstudy ui`` prints opens the runs page
(not MLflow 3's GenAI "Overview") on every trial of the study with its status, loss, regularizer,
k_SN, α, FID and quality, equal to the runs' own values, without a click; the parent run's FID vs
k_SN figure and the trials' FID curves open within ``CLICK_BUDGET`` clicks of it, and so does the
runs page's chart view, which opens on FID against k_SN coloured by loss, then the FID curves.

The browser test needs Debian's ``chromium`` + ``chromium-driver`` and ``selenium`` (the ``test``
extra); ``.ci/run`` installs the browser when it can. Without them it is skipped, saying why.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port, listening_addresses, server_env, stop, wait_http

SCREENSHOT_COPY = Path("/tmp/lipstudy-ui-screenshot.png")
TRIALS = (("ns", 1.0), ("wgan", 10.0), ("ls", 0.5))


@pytest.fixture(scope="module")
def study_store(tmp_path_factory):
    """A study's SQLite store as ``lipstudy run`` leaves it: experiment, parent run, three child
    trials (2-D toy, a few steps each) logged by the trainables' own MLflow callbacks."""
    from study.summary import TrialSummary
    from study.tracking import start_study_run
    from trainables.config import validate_trial
    from trainables.tracking.mlflow_logger import MlflowTrialLogger
    from trainables.names import TRIAL_ID_TAG
    from trainables.ray.trainable import MlflowCallbacks, finish_run, trial_run_name
    from trainables.train import train

    root = tmp_path_factory.mktemp("ui-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking = start_study_run(uri, "ui-study", "name: ui-study\n", hypotheses=["H1"],
                               artifact_root=str(root / "mlruns"))
    base = dict(dataset="ring8", arch="mlp", width=0.25, regularizer="sn", iterations=6,
                stats_every=2, eval_every=3, fid_samples=100, batch_size=32, device="cpu")
    trials, summaries = {}, []
    for i, (loss, k) in enumerate(TRIALS):
        cfg = validate_trial({**base, "loss": loss, "k_sn": k})
        name = trial_run_name(cfg)
        logger = MlflowTrialLogger(uri, tracking.experiment_id, name=name, params=cfg,
                                   parent_run_id=tracking.parent_run_id,
                                   tags={TRIAL_ID_TAG: f"t{i}"})
        result = train(cfg, MlflowCallbacks(logger, cfg))
        finish_run(logger, result)  # as run_trial ends a trial: lipstudy.status, FINISHED
        trials[name] = {"loss": loss, "k_sn": k, "fid": result.metrics["fid"],
                        "run_id": logger.run_id}
        summaries.append(TrialSummary(name=name, config=cfg, status="finished",
                                      fid=result.metrics["fid"], step=cfg["iterations"],
                                      trial_id=f"t{i}", run_id=logger.run_id,
                                      modes=result.metrics.get("modes_covered"),
                                      hq=result.metrics.get("hq_share")))
    from mlflow.tracking import MlflowClient

    from study.summary import StudyOutcome, mark_parent  # what `lipstudy run` ends with

    mark_parent(MlflowClient(uri), tracking,
                 StudyOutcome(tracking, str(root / "study"), trials=summaries))
    return root / "mlflow.db", tracking.experiment_id, trials


@pytest.fixture(scope="module")
def lipstudy_ui(study_store, tmp_path_factory):
    """``lipstudy ui --store <db> --port <free>`` as a user runs it; yields (url, process, port,
    the link it printed for the study's experiment)."""
    db, experiment_id, _ = study_store
    port = free_port()
    log_path = tmp_path_factory.mktemp("ui-log") / "ui.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "ui", "--store", str(db),
                             "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=log, env=server_env(),
                            start_new_session=True, cwd=Path(__file__).resolve().parents[2])
    try:
        first = proc.stdout.readline().decode()
        url = f"http://127.0.0.1:{port}"
        assert url in first and str(db) in first, first
        printed = [proc.stdout.readline().decode() for _ in range(2)]
        assert printed[1].strip().startswith("ui-study: "), printed
        link = printed[1].split(": ", 1)[1].strip()
        assert link.startswith(f"{url}/#/experiments/{experiment_id}"), link
        wait_http(f"{url}/health", proc, timeout=180)
        yield url, proc, port, link
    finally:
        stop(proc)
        log.close()


@pytest.mark.slow
def test_lipstudy_ui_serves_the_store_on_loopback_only(lipstudy_ui, study_store):
    import json
    import urllib.request

    url, proc, port, _ = lipstudy_ui
    assert proc.poll() is None
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only, no 0.0.0.0 / ::
    _, experiment_id, trials = study_store
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/runs/search", method="POST",
        data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        runs = json.load(r)["runs"]
    names = {r["info"]["run_name"] for r in runs}
    assert set(trials) < names and len(names) == len(trials) + 1  # + the study's parent run


def test_lipstudy_ui_refuses_a_missing_store(tmp_path, capsys):
    from study.cli import main

    assert main(["ui", "--store", str(tmp_path / "nope.db")]) == 2
    assert "no MLflow store" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# The browser
# ----------------------------------------------------------------------------------------------

def _browser():
    """(chromium, chromedriver) paths, or a skip naming what is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless browser check needs Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver; .ci/run does it as root)")
    return chromium, driver


def _start_chromium(chromium: str, driver: str, profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    # no network on CI: without these Chromium's background connections are refused
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=2200,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait(fn, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception:  # noqa: BLE001 - the React app re-renders under us; retry
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def _show_column(d, name: str) -> None:
    """Tick ``name`` in the runs table's Columns selector (as a person would)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d.find_element(By.CSS_SELECTOR, '[data-testid="column-selection-dropdown"]').click()
    box = _wait(lambda: d.find_element(By.CSS_SELECTOR, 'input[placeholder="Search columns"]'),
                what="the column search box")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(name)
    # the whole label is `name` (the search highlights `name` inside longer labels too: loss_d)
    xpath = (f"//*[@role='dialog']//*[normalize-space(.)='{name}' and "
             f"normalize-space(..)='{name}']")
    item = _wait(lambda: [e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()],
                 what=f"column {name!r} in the selector")[0]
    item.click()
    box.send_keys(Keys.ESCAPE)
    _wait(lambda: not [e for e in d.find_elements(By.CSS_SELECTOR, 'input[placeholder="Search '
                                                  'columns"]') if e.is_displayed()],
          timeout=10, what="the column selector to close")


def _rows(d) -> list[str]:
    """Text of every runs-table row (ag-grid splits a row into sections sharing ``row-index``)."""
    from selenium.webdriver.common.by import By

    rows: dict[str, list[str]] = {}
    for e in d.find_elements(By.CSS_SELECTOR, '[role="row"][row-index]'):
        rows.setdefault(e.get_attribute("row-index"), []).append(e.text.replace("\n", " "))
    return [" ".join(v) for _, v in sorted(rows.items(), key=lambda kv: int(kv[0]))]


@pytest.mark.slow
def test_runs_table_in_a_real_browser_lists_trials_with_fid_and_params(lipstudy_ui, study_store,
                                                                       tmp_path):
    from selenium.webdriver.common.by import By

    chromium, driver = _browser()
    url, _, _, _ = lipstudy_ui
    _, experiment_id, trials = study_store
    d = _start_chromium(chromium, driver, tempfile.mkdtemp(dir=tmp_path, prefix="chromium-"))
    shot = tmp_path / "mlflow-ui-runs.png"
    try:
        d.get(f"{url}/#/experiments/{experiment_id}/runs")
        parent_row = _wait(lambda: [r for r in _rows(d) if "ui-study-" in r],
                           what="the runs table to render the study's parent run")
        assert parent_row
        for close in d.find_elements(By.CSS_SELECTOR, 'button[aria-label="Close"]'):
            if close.is_displayed():  # the assistant side panel
                close.click()
        # the trials are child runs, nested under the study's parent: expand it
        expander = _wait(lambda: [b for b in d.find_elements(
            By.CSS_SELECTOR, '[role="row"][row-index="0"] button') if b.is_displayed()
            and not b.get_attribute("data-testid")], what="the parent run's expander")
        expander[0].click()
        _wait(lambda: all(any(n in r for r in _rows(d)) for n in trials), timeout=30,
              what="the child runs to be listed")
        for column in ("fid", "loss", "k_sn"):
            _show_column(d, column)
        headers = _wait(lambda: {h.text for h in d.find_elements(
            By.CSS_SELECTOR, '[role="columnheader"]') if h.text} >= {"fid", "loss", "k_sn"}
            and {h.text for h in d.find_elements(By.CSS_SELECTOR, '[role="columnheader"]')},
            timeout=30, what="fid/loss/k_sn columns")
        assert {"fid", "loss", "k_sn"} <= headers
        time.sleep(1.0)  # let the grid settle before the screenshot
        rows = _rows(d)
        d.save_screenshot(str(shot))
        for name, t in trials.items():
            (row,) = [r for r in rows if name in r]
            assert f" {t['loss']} " in f" {row} ", (name, row)
            assert f"{t['k_sn']:g}" in row or str(t["k_sn"]) in row, (name, row)
            # the UI rounds metrics; some rounding of our fid must be in the row
            fid = t["fid"]
            assert math.isfinite(fid)
            shown = {f"{fid:.{p}f}" for p in range(0, 5)} | {f"{fid:.{p}g}" for p in range(2, 6)}
            assert any(s in row for s in shown), (name, fid, row)
    finally:
        _close(d, shot, SCREENSHOT_COPY)


LANDING_SCREENSHOT_COPY = Path("/tmp/lipstudy-ui-landing.png")
FIGURE_SCREENSHOT_COPY = Path("/tmp/lipstudy-ui-figure.png")
CLICK_BUDGET = 2  # the study at a glance: every figure within two clicks of the printed link


class Clicks:
    """Every click the test makes, counted: the budget is a person's, so nothing is typed."""

    def __init__(self):
        self.n = 0

    def __call__(self, element) -> None:
        self.n += 1
        element.click()


def _cells(d) -> list[dict[str, str]]:
    """Each runs-table row as {column id: text} (ag-grid's ``col-id`` names the column)."""
    from selenium.webdriver.common.by import By

    rows: dict[str, dict[str, str]] = {}
    for e in d.find_elements(By.CSS_SELECTOR, '[role="row"][row-index]'):
        cells = rows.setdefault(e.get_attribute("row-index"), {})
        for c in e.find_elements(By.CSS_SELECTOR, '[role="gridcell"][col-id]'):
            cells[c.get_attribute("col-id")] = c.text.strip()
    return [v for _, v in sorted(rows.items(), key=lambda kv: int(kv[0]))]


def _cell(row: dict[str, str], key: str) -> str:
    """The text of the column whose id names ``key`` (e.g. ``metrics.`fid``` for ``fid``)."""
    (text,) = [v for k, v in row.items() if k.endswith(f".`{key}`")] or [None]
    assert text is not None, (key, sorted(row))
    return text


def _same_number(shown: str, value: float) -> bool:
    """``shown`` is ``value`` as the UI prints it (in full, or rounded to its digits)."""
    try:
        x = float(shown.rstrip("."))
    except ValueError:
        return False
    digits = len(shown.split(".")[1]) if "." in shown else 0
    return math.isclose(x, value, rel_tol=1e-9, abs_tol=0.51 * 10 ** -digits)


@pytest.mark.slow
def test_the_printed_link_shows_every_trial_with_its_values_without_a_click(lipstudy_ui,
                                                                           study_store,
                                                                           tmp_path):
    """The link ``lipstudy ui`` prints opens the runs page (not the GenAI Overview) on the
    study's trials as flat rows (not one collapsed parent), best FID first, with the status,
    loss, regularizer, k_SN, α, FID and toy quality columns; every value shown equals the run's
    own param / tag / metric in MLflow. No click, nothing typed."""
    from mlflow.tracking import MlflowClient

    chromium, driver = _browser()
    url, _, _, link = lipstudy_ui
    db, experiment_id, trials = study_store
    client = MlflowClient(f"sqlite:///{db}")
    runs = {name: client.get_run(t["run_id"]) for name, t in trials.items()}
    d = _start_chromium(chromium, driver, tempfile.mkdtemp(dir=tmp_path, prefix="chromium-"))
    shot = tmp_path / "mlflow-ui-landing.png"
    try:
        d.get(link)  # a fresh browser profile: nothing remembered from an earlier visit
        _wait(lambda: f"/experiments/{experiment_id}/runs" in d.current_url, timeout=60,
              what=f"the runs page (at {d.current_url})")
        assert "overview" not in d.current_url.lower(), d.current_url
        _wait(lambda: all(any(n in r for r in _rows(d)) for n in trials)
              and all(any(k.endswith(".`fid`") and v for k, v in row.items())
                      for row in _cells(d)),
              timeout=90, what="every trial with its fid")
        time.sleep(1.0)  # let the grid settle
        d.save_screenshot(str(shot))
        rows = _cells(d)
        assert not [r for r in _rows(d) if "ui-study-" in r]  # the parent is not a trial
        assert len(rows) == len(trials), _rows(d)
        fids = [float(_cell(r, "fid")) for r in rows]
        assert fids == sorted(fids)  # best FID first
        for row in rows:
            (name,) = [n for n in trials if n in " ".join(row.values())]
            run = runs[name]
            assert _cell(row, "lipstudy.status") == run.data.tags["lipstudy.status"] == "finished"
            for key in ("loss", "regularizer"):
                assert _cell(row, key) == run.data.params[key], (name, key, row)
            for key in ("k_sn", "alpha"):
                assert _same_number(_cell(row, key), float(run.data.params[key])), (name, key)
            for key in ("fid", "modes_covered", "hq_share"):  # a toy's quality: modes, hq share
                assert _same_number(_cell(row, key), run.data.metrics[key]), (name, key, row)
            # image trials' quality column; toys log none, so the view shows no empty column
            assert not [k for k in row if k.endswith(".`fid_quality`")]
        # the home page tells the study's experiment from MLflow's own "Default"
        d.get(f"{url}/#/experiments")
        _wait(lambda: 'lipstudy study "ui-study"' in d.find_element("tag name", "body").text,
              timeout=60, what="the study's description on the experiments page")
    finally:
        if not shot.exists():
            try:
                d.save_screenshot(str(shot))
            except Exception:  # noqa: BLE001
                pass
        d.quit()
        if shot.exists():
            shutil.copyfile(shot, LANDING_SCREENSHOT_COPY)


@pytest.mark.slow
@pytest.mark.parametrize("label, artifact", [("FID vs k_SN by loss", "figures/fid_vs_k_sn.png"),
                                             ("FID curves", "figures/fid_curves.png")])
def test_the_study_figures_are_within_two_clicks_of_the_printed_link(lipstudy_ui, study_store,
                                                                    tmp_path, label, artifact):
    """From the printed link, the parent run's FID-vs-k_SN figure (coloured by loss, log axes)
    and the trials' FID curves open as images in at most ``CLICK_BUDGET`` clicks: the
    experiment description's links (``study.ui_view``). Before, the same took 4 clicks and 2
    typed searches as a table and 8 clicks as a plot."""
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    chromium, driver = _browser()
    url, _, _, link = lipstudy_ui
    db, experiment_id, _ = study_store
    (parent,) = MlflowClient(f"sqlite:///{db}").search_runs(
        [experiment_id], "tags.`lipstudy.kind` = 'study'")
    d = _start_chromium(chromium, driver, tempfile.mkdtemp(dir=tmp_path, prefix="chromium-"))
    click = Clicks()
    shot = tmp_path / "mlflow-ui-figure.png"
    try:
        d.get(link)

        def target():
            found = [a for a in d.find_elements(By.LINK_TEXT, label) if a.is_displayed()]
            return found[0] if found else None

        anchor = _wait(target, timeout=60, what=f"a visible link {label!r}")
        click(anchor)
        if len(d.window_handles) > 1:  # the UI opens a description's links in a new tab
            d.switch_to.window(d.window_handles[-1])
        _wait(lambda: parent.info.run_id in d.current_url and artifact in d.current_url,
              timeout=30, what=f"the parent run's {artifact} (at {d.current_url})")
        img = _wait(lambda: [i for i in d.find_elements(By.TAG_NAME, "img") if i.is_displayed()
                             and (i.get_attribute("src") or "").startswith(("blob:", url))
                             and d.execute_script("return arguments[0].naturalWidth", i) > 300],
                    timeout=60, what=f"the image {artifact} shown")
        assert img
        # the run page stays in Model training mode (GenAI's sidebar has "Evaluation runs")
        assert "Evaluation runs" not in d.find_element(By.TAG_NAME, "body").text
        d.save_screenshot(str(shot))
        assert click.n <= CLICK_BUDGET, click.n
    finally:
        _close(d, shot, FIGURE_SCREENSHOT_COPY)



def _close(d, shot: Path, copy: Path) -> None:
    """Quit the browser, keeping a screenshot of where it was (a copy outside pytest's tmp)."""
    if not shot.exists():
        try:
            d.save_screenshot(str(shot))
        except Exception:  # noqa: BLE001
            pass
    d.quit()
    if shot.exists():
        shutil.copyfile(shot, copy)

CHARTS_SCREENSHOT_COPY = Path("/tmp/lipstudy-ui-charts.png")


def _plot(d, card) -> dict:
    """What a chart card's Plotly graph draws: its traces (x, y, marker colours, run name) and
    its axis types."""
    from selenium.webdriver.common.by import By

    graph = card.find_element(By.CSS_SELECTOR, ".js-plotly-plot")
    return d.execute_script(
        "const g = arguments[0]; return {traces: g.data.map(t => ({x: t.x, y: t.y, name: t.name,"
        " colour: t.marker && t.marker.color})), x: g.layout.xaxis.type, y: g.layout.yaxis.type}",
        graph)


@pytest.mark.slow
def test_the_chart_view_opens_on_fid_against_k_sn_coloured_by_loss(lipstudy_ui, study_store,
                                                                   tmp_path):
    """One click from the printed link (the runs page's "Chart" switch): the first chart is FID
    against k_SN with a point per trial (the parent is not one), each in its loss's colour (the
    logged figures' colours), at the run's own k_SN and final FID; the second is the trials' FID
    curves, each its run's FID history, on a log FID axis. (MLflow's scatter has linear axes;
    the log-log figure is the description's link.)"""
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    from study.ui_view import loss_hex

    chromium, driver = _browser()
    url, _, _, link = lipstudy_ui
    db, _, trials = study_store
    client = MlflowClient(f"sqlite:///{db}")
    d = _start_chromium(chromium, driver, tempfile.mkdtemp(dir=tmp_path, prefix="chromium-"))
    click = Clicks()
    shot = tmp_path / "mlflow-ui-charts.png"
    try:
        d.get(link)
        switch = _wait(lambda: [e for e in d.find_elements(
            By.XPATH, "//input[@name='runs-view-mode' and @value='CHART']/ancestor::label[1]")
            if e.is_displayed()], what="the runs page's Chart switch")[0]
        click(switch)
        card = '[data-testid="experiment-view-compare-runs-card"]'
        cards = _wait(lambda: [c for c in d.find_elements(By.CSS_SELECTOR, card)][:2]
                      if len(d.find_elements(By.CSS_SELECTOR, f"{card} .js-plotly-plot")) >= 2
                      else None, timeout=90, what="the first two charts")
        assert [c.text.split("\n")[0] for c in cards] == ["k_sn vs. fid", "fid"]
        scatter = _wait(lambda: (lambda p: p if len(p["traces"][0]["x"]) == len(trials) else None)(
            _plot(d, cards[0])), timeout=60, what="a point per trial in the scatter")
        (points,) = scatter["traces"]
        drawn = sorted(zip(map(float, points["x"]), points["y"], points["colour"]))
        assert drawn == sorted((t["k_sn"], t["fid"], loss_hex(t["loss"]))
                               for t in trials.values())
        assert len({loss_hex(t["loss"]) for t in trials.values()}) == len(trials)
        curves = _wait(lambda: (lambda p: p if {t["name"] for t in p["traces"]} == set(trials)
                                else None)(_plot(d, cards[1])), timeout=60,
                       what="a FID curve per trial")
        assert curves["y"] == "log"
        for trace in curves["traces"]:
            history = sorted((m.step, m.value) for m in client.get_metric_history(
                trials[trace["name"]]["run_id"], "fid"))
            assert list(zip(trace["x"], trace["y"])) == history, trace["name"]
            assert trace["colour"].startswith(loss_hex(trials[trace["name"]]["loss"]))
        d.save_screenshot(str(shot))
        assert click.n <= CLICK_BUDGET, click.n
    finally:
        _close(d, shot, CHARTS_SCREENSHOT_COPY)
