"""A full disk stops the study with one line (ENOSPC is not retried as a transient trial error)
and the study resumes once space is freed; a damaged experiment state is set aside on resume and
the newest intact one is used, or the resume is refused with one line when none is left."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import pytest

from tests.study.test_chaos import Study, _progress, assert_nothing_lost

STUDY = """
    name: disk-full
    search: grid
    fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 400, stats_every: 20,
            eval_every: 40, fid_samples: 40, batch_size: 16, device: cpu}
    grid: {loss: [ns, wgan]}
    max_concurrent: 2
    max_failures: 3
    resources: {cpu: 1, gpu: 0}
"""


def _state(trials: int) -> str:
    return json.dumps({"trial_data": [["{}", "{}"]] * trials, "runner_data": {}})


def test_a_truncated_experiment_state_is_set_aside_for_the_intact_one(tmp_path, capsys):
    from study.limits import StudyError
    from study.recovery import saved_trials, set_aside_damaged_states

    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text(_state(0))
    newest = tmp_path / "experiment_state-2026-01-02_00-00-00.json"
    newest.write_text(_state(0)[:20])
    assert saved_trials(str(tmp_path)) == {}  # the damaged newest is skipped, no JSONDecodeError
    assert set_aside_damaged_states(str(tmp_path)) == [newest.name]
    assert (tmp_path / f"{newest.name}.damaged").exists() and not newest.exists()
    assert "damaged" in capsys.readouterr().err
    only = tmp_path / "only"
    only.mkdir()
    (only / "experiment_state-x.json").write_text("{")
    with pytest.raises(StudyError, match="no intact one is left"):
        set_aside_damaged_states(str(only))


@pytest.fixture
def small_fs(tmp_path):
    target = tmp_path / "small"
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(target)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.scenario
def test_enospc_stops_the_study_with_one_line_and_resume_finishes_every_trial(tmp_path,
                                                                             small_fs):
    study = Study(tmp_path, "grid-toy", pause_step=None)
    study.file.write_text(textwrap.dedent(STUDY))
    filler = small_fs / "filler"

    def fill_once(text: str) -> bool:
        if not filler.exists() and _progress(text):
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                           capture_output=True)  # until the file system is full
        return False

    try:
        rc, text = study.drive(["run", str(study.file), "--tracking-uri", study.uri,
                                "--storage-path", str(small_fs / "results")],
                               moment=fill_once, timeout=400)
        assert filler.exists(), text
        assert rc == 1, text
        lines = [ln for ln in text.splitlines() if "The study STOPPED: the disk is full" in ln]
        assert len(lines) == 1 and "No space left on device" in lines[0], text
        assert "UnpicklingError" not in text, text
        filler.unlink()
        rc, text = study.resume()
        assert rc == 0, text
        assert re.search(r"2 trials \(2 finished\)", text), text
        assert_nothing_lost(study, 2, 400)
    finally:
        study.close()
