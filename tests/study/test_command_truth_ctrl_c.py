"""Ctrl-C in the terminal that runs a study: SIGINT reaches the driver's whole process group (the
driver and every process it started that did not leave the group), not the driver alone. With
Ray 2.60 that is the driver and Ray's services (GCS, raylet, agents: SIGINT blocked); the trial
workers lead process groups of their own, also with SIGINT blocked (read from /proc while a
trial ran), so the trials stop through the driver's graceful stop.

Afterwards the study tells one story: the parent run says interrupted (exit status 130), every
child run's ``lipstudy.status`` is what the parent counts (no child tagged crashed beside an
``interrupted_step``), the end table shows each interrupted trial's last logged FID, and
``lipstudy resume`` finishes the study with exactly one FINISHED run per configuration, values
equal to an uninterrupted run (``tests/study/test_chaos.py``'s checks). The same holds for the
user who presses Ctrl-C a second time ("send it again to stop at once")."""

from __future__ import annotations

import re
import signal
from collections import Counter

import pytest

from tests.study.test_chaos import Study, _children, finish_and_check
from trainables.names import INTERRUPTED_STEP_TAG, STATUS_TAG, count_tag

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _row(text: str, name: str) -> str:
    """The end table's row of the trial ``name`` (the last one printed: the table comes last)."""
    rows = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    assert rows, (name, text)
    return rows[-1]


def _one_story(study: Study, text: str) -> None:
    """The parent says interrupted, each child run's state is what the parent counts and what the
    end table shows (an interrupted trial: its last logged FID at its step)."""
    assert "INTERRUPTED" in text and "lipstudy resume" in text, text
    client, runs = _children(study)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    where = [(r.info.run_name, r.info.status, r.data.tags.get(STATUS_TAG),
              r.data.tags.get(INTERRUPTED_STEP_TAG)) for r in runs]
    assert parent.info.status == "KILLED", where
    assert parent.data.tags[STATUS_TAG] == "interrupted", where
    states = Counter(r.data.tags.get(STATUS_TAG) for r in runs)
    assert states["interrupted"] >= 1 and not states["crashed"], where
    for state in ("finished", "interrupted", "crashed", "diverged"):
        assert int(parent.data.tags.get(count_tag(state), 0)) == states[state], (state, where)
    for r in runs:
        status = r.data.tags.get(STATUS_TAG)
        assert status in ("finished", "interrupted"), where
        assert (r.info.status == "KILLED") == (status == "interrupted"), where
        assert (INTERRUPTED_STEP_TAG in r.data.tags) == (status == "interrupted"), where
        if status != "interrupted" or "fid" not in r.data.metrics:
            continue
        last = max(client.get_metric_history(r.info.run_id, "fid"), key=lambda m: m.step)
        row = _row(text, r.info.run_name)
        step = int(float(r.data.tags[INTERRUPTED_STEP_TAG]))
        assert re.search(rf"interrupted at step {step}\s+{last.value:.2f}\s", row), (
            row, last.value, last.step)


@pytest.mark.scenario
def test_ctrl_c_to_the_process_group_then_resume(tmp_path):
    # two trials at once; the first to reach step 30 pauses there (after its first evaluation at
    # 20 and its checkpoint), so one trial is asleep and the other training when Ctrl-C comes
    study = Study(tmp_path, "grid-toy", pause_step=30)
    try:
        rc, text = study.run(moment=study.paused, sig=signal.SIGINT, group=True)
        assert rc == 130, text
        _one_story(study, text)
        finish_and_check(study, 4, 60)
    finally:
        study.close()


@pytest.mark.scenario
def test_ctrl_c_twice_stops_at_once_and_still_tells_one_story(tmp_path):
    """The user who presses Ctrl-C again as soon as the driver says "send it again to stop at
    once": the driver leaves ``fit()`` without Tune's result grid. The end table and the runs
    then come from Tune's last saved state (``study.summary._saved_pairs``): no child run left
    RUNNING, no trial that ran shown "not started"; the resume finishes the study."""
    study = Study(tmp_path, "grid-toy", pause_step=30)
    try:
        rc, text = study.run(moment=study.paused, sig=signal.SIGINT, group=True, twice=True)
        assert rc == 130, text
        assert "stopped at once: each trial's state is the one Tune last saved" in text, text
        _one_story(study, text)
        _, runs = _children(study)
        for r in runs:
            assert "not started" not in _row(text, r.info.run_name), text
        finish_and_check(study, 4, 60)
    finally:
        study.close()
