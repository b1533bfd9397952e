"""Setup mistakes end in one line and exit 2 before the study's parent run opens: a name whose
study directory would exceed the file system's name limit, a storage path that is not a writable
directory, a damaged ``lipstudy_study.json`` on resume. A failure after the parent run opened ends
it FAILED with the cause, never RUNNING; a failed resume of a finished study leaves it FINISHED.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from study.spec import StudyError

ROOT = Path(__file__).resolve().parents[2]

STUDY = """
name: {name}
fixed: {{dataset: ring8, arch: mlp, width: 0.25, iterations: 10, stats_every: 5, eval_every: 10,
        fid_samples: 40, batch_size: 16, device: cpu}}
grid: {{loss: [ns]}}
resources: {{cpu: 1, gpu: 0}}
"""


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "study.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _refusal(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``lipstudy <args>`` in this process, for commands that must refuse before any work starts
    (no Ray, no run): what they print and return, without a fresh interpreter's imports. An
    exception escaping ``main`` fails the test as a traceback would."""
    import contextlib
    import io

    from study.cli import main

    out, err, env, here = io.StringIO(), io.StringIO(), dict(os.environ), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(args)
            except SystemExit as stop:
                rc = stop.code if isinstance(stop.code, int) else 1
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(env)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def _one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _write_study(tmp_path: Path, name: str = "setup-faults") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY.format(name=name)))
    return path


def test_a_name_too_long_for_its_study_directory_fails_validate(tmp_path):
    """300 characters (``OSError [Errno 36]`` at the first mkdir before) and 240, whose directory
    ``<name>-YYYYmmdd-HHMMSS`` of a second execution would be 256 bytes; 239 passes."""
    for n in (300, 240):
        proc = _refusal(["validate", str(_write_study(tmp_path, "a" * n))], tmp_path)
        _one_line(proc, "name:", "255", "239")
        proc = _refusal(["run", str(_write_study(tmp_path, "a" * n)), "--tracking-uri",
                     f"sqlite:///{tmp_path / 'x.db'}"], tmp_path)
        _one_line(proc, "name:")
    assert _refusal(["validate", str(_write_study(tmp_path, "a" * 239))], tmp_path).returncode == 0
    assert not (tmp_path / "x.db").exists()


def test_storage_path_that_is_a_file_is_refused_before_anything_opens(tmp_path):
    afile = tmp_path / "not-a-dir"
    afile.write_text("x")
    for storage in (afile, afile / "below"):
        proc = _refusal(["run", str(_write_study(tmp_path)), "--tracking-uri",
                         f"sqlite:///{tmp_path / 'x.db'}", "--storage-path", str(storage)],
                        tmp_path)
        _one_line(proc, "storage path", "not a directory")
    assert not (tmp_path / "x.db").exists()


@pytest.fixture
def readonly_dir(tmp_path):
    """A read-only file system (a tmpfs mounted ro, as root) or, for other users, a directory
    without write permission."""
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o555)
        yield target
        target.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_storage_path_on_a_read_only_file_system_is_refused(tmp_path, readonly_dir):
    proc = _refusal(["run", str(_write_study(tmp_path)), "--tracking-uri",
                     f"sqlite:///{tmp_path / 'x.db'}", "--storage-path", str(readonly_dir / "res")],
                    tmp_path)
    _one_line(proc, "storage path", "not writable")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("content", ["", '{"study_text": "name: x', "[1, 2]",
                                     '{"study_text": "name: x"}', "\xff\xfe"])
def test_a_damaged_state_file_is_one_line_on_resume(tmp_path, content):
    study_dir = tmp_path / "results" / "s"
    study_dir.mkdir(parents=True)
    (study_dir / "lipstudy_study.json").write_bytes(content.encode("latin-1"))
    proc = _refusal(["resume", str(study_dir)], tmp_path)
    _one_line(proc, "lipstudy_study.json: damaged")


def test_the_state_file_is_replaced_atomically(tmp_path, monkeypatch):
    """A write that fails half-way (a full disk) leaves the previous state file whole."""
    from study import statefile

    study_dir = str(tmp_path / "s")
    state = {k: "v" for k in statefile.REQUIRED_KEYS}
    statefile.write_state(study_dir, state)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(statefile.os, "fsync", full)
    with pytest.raises(OSError):
        statefile.write_state(study_dir, {**state, "population": 4})
    assert statefile.read_state(study_dir) == state
    assert os.listdir(study_dir) == ["lipstudy_study.json"]  # no temporary file left behind


@pytest.mark.slow
def test_a_failure_after_the_parent_opens_ends_it_failed_with_the_cause(tmp_path, monkeypatch):
    """The state file cannot be written once the parent run exists (the disk filled up in
    between): the parent ends FAILED, crashed, with the cause's line, never RUNNING."""
    from mlflow.tracking import MlflowClient

    from study import tuner
    from study.spec import load_study

    spec, text = load_study(_write_study(tmp_path, "after-parent"))
    uri = f"sqlite:///{tmp_path / 'after.db'}"

    def full(study_dir, state):
        raise OSError(errno.ENOSPC, "No space left on device", study_dir)

    monkeypatch.setattr(tuner, "write_state", full)
    try:
        with pytest.raises(OSError):
            tuner.run_study(spec, text, tracking_uri=uri, storage_path=str(tmp_path / "res"),
                            quiet=True)
    finally:
        import ray

        ray.shutdown()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("after-parent")
    [parent] = client.search_runs([exp.experiment_id])
    assert parent.info.status == "FAILED"
    assert parent.data.tags["lipstudy.status"] == "crashed"
    assert "No space left on device" in parent.data.tags["lipstudy.crash_reason"]


@pytest.mark.slow
@pytest.mark.scenario
def test_a_failed_resume_leaves_a_finished_study_finished(tmp_path):
    """A finished study whose Tuner state cannot be read back (``tuner.pkl`` truncated): the
    resume fails, and the parent run stays FINISHED / finished (it was turned FAILED/crashed)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'done.db'}"
    study = _write_study(tmp_path, "finished-then-failed-resume")
    proc = _cli(["run", str(study), "--tracking-uri", uri, "--storage-path",
                 str(tmp_path / "res")], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study_dir = tmp_path / "res" / "finished-then-failed-resume"
    pkl = study_dir / "tuner.pkl"
    pkl.write_bytes(pkl.read_bytes()[:40])
    proc = _cli(["resume", str(study_dir)], tmp_path)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("finished-then-failed-resume")
    [parent] = [r for r in client.search_runs([exp.experiment_id])
                if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lipstudy.status"] == "finished"
