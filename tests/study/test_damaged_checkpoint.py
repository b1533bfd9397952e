"""A checkpoint that cannot be loaded: the trial falls back to the previous kept checkpoint and
says so on its MLflow run; when none loads, the run that was opened first records the cause;
the end table shows the cause's own line, not Ray's ``ray::ImplicitFunc.train() (pid=…)``."""

from __future__ import annotations

import signal
import textwrap

import pytest
import torch

from tests.study.test_chaos import Study, _children, assert_nothing_lost
from trainables.ray.checkpoints import CheckpointChain, CheckpointLoadError, cause_line
from trainables.ray.trainable import load_state

RAY_ERROR = (
    "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1234, ip=192.0.2.2, actor_id=ab, "
    "repr=run_trial)\n"
    '  File "/x/ray/tune/trainable/function_trainable.py", line 250, in _trainable_func\n'
    "    output = fn()\n"
    "             ^^^^\n"
    '  File "/x/torch/serialization.py", line 807, in __init__\n'
    "    super().__init__(torch._C.PyTorchFileReader(name_or_buffer))\n"
    "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central "
    "directory")


def test_the_cause_line_of_a_ray_task_error():
    assert cause_line(RAY_ERROR) == ("RuntimeError: PytorchStreamReader failed reading zip "
                                     "archive: failed finding central directory")
    assert cause_line(ValueError("bad value\nmore")) == "ValueError: bad value"
    assert cause_line(None) is None


def _checkpoint(root, name, step):
    d = root / name
    d.mkdir()
    torch.save({"step": torch.tensor(step)}, d / "trial_state.pt")
    (d / "trial_meta.json").write_text(f'{{"mlflow_run_id": "r1", "step": {step}}}')
    return d


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    old, new = _checkpoint(tmp_path, "checkpoint_000000", 20), _checkpoint(
        tmp_path, "checkpoint_000001", 40)
    data = (new / "trial_state.pt").read_bytes()
    (new / "trial_state.pt").write_bytes(data[: len(data) // 2])
    (new / "trial_meta.json").write_text('{"mlflow_run_id": "r')
    chain = CheckpointChain([str(new), str(old)])
    assert chain.meta("trial_meta.json") == {"mlflow_run_id": "r1", "step": 20}
    state, used = chain.load("trial_state.pt", load_state)
    assert int(state["step"]) == 20 and used == "checkpoint_000000"
    note = chain.fallback_note(used)
    assert "checkpoint_000001/trial_state.pt" in note and "central directory" in note
    (old / "trial_state.pt").write_bytes(b"")
    with pytest.raises(CheckpointLoadError, match="no checkpoint of this trial can be loaded"):
        CheckpointChain([str(new), str(old)]).load("trial_state.pt", load_state)


ONE_TRIAL = """
    name: damaged-ckpt
    search: grid
    fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 60, stats_every: 10,
            eval_every: 20, fid_samples: 40, batch_size: 16, device: cpu}
    grid: {loss: [ns]}
    max_failures: 0
    resources: {cpu: 1, gpu: 0}
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.scenario
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(tmp_path):
    """Stopped at step 50 (checkpoints at 20 and 40), the newest checkpoint truncated as a
    SIGTERM during its save leaves it: the resume continues from step 20's, the run says so and
    ends FINISHED with every step once and the values of an uninterrupted run. Before, the trial
    retried from the same bad file and crashed; ``max_failures: 0`` makes any retry fail."""
    study = Study(tmp_path, "grid-toy", pause_step=50)
    study.file.write_text(textwrap.dedent(ONE_TRIAL))
    try:
        rc, text = study.run(moment=study.paused, sig=signal.SIGINT)
        assert rc == 130, text
        ckpts = sorted(p for p in (tmp_path / "results").rglob("checkpoint_*") if p.is_dir())
        assert len(ckpts) >= 2, ckpts
        bad = ckpts[-1] / "trial_state.pt"
        bad.write_bytes(bad.read_bytes()[:1000])
        study.env.pop("LIPSTUDY_TEST_PAUSE_AT_STEP")
        rc, text = study.resume()
        assert rc == 0, text
        assert_nothing_lost(study, 1, 60)
        _, runs = _children(study)
        note = runs[0].data.tags["lipstudy.checkpoint_fallback"]
        assert f"{ckpts[-1].name}/trial_state.pt" in note and ckpts[-2].name in note, note
        assert "central directory" in note, note
        parent = _children(study)[0].get_run(runs[0].data.tags["mlflow.parentRunId"])
        assert parent.info.status == "FINISHED"
        assert "lipstudy.interrupted_by" not in parent.data.tags  # the earlier SIGINT's tag
    finally:
        study.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.scenario
def test_no_loadable_checkpoint_is_recorded_on_the_run_and_in_the_table(tmp_path):
    """Every kept checkpoint damaged: the child run (opened before the load) ends FAILED,
    crashed, with the cause; the end table shows that line; parent and child agree."""
    study = Study(tmp_path, "grid-toy", pause_step=50)
    study.file.write_text(textwrap.dedent(ONE_TRIAL))
    try:
        rc, text = study.run(moment=study.paused, sig=signal.SIGINT)
        assert rc == 130, text
        for p in (tmp_path / "results").rglob("trial_state.pt"):
            p.write_bytes(p.read_bytes()[:1000])
        study.env.pop("LIPSTUDY_TEST_PAUSE_AT_STEP")
        rc, text = study.resume()
        assert rc == 1, text
        table = text[text.index("\ntrial "):]
        row = table.splitlines().index(next(ln for ln in table.splitlines() if "crashed" in ln))
        cause = table.splitlines()[row + 1].strip()  # the end table's error line
        assert cause.startswith("CheckpointLoadError: no checkpoint of this trial can be loaded")
        assert "central directory" in cause and "ray::" not in table, table
        client, [run] = _children(study)
        assert run.info.status == "FAILED" and run.data.tags["lipstudy.status"] == "crashed"
        assert "central directory" in run.data.tags["lipstudy.crash_reason"]
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
        assert parent.data.tags["lipstudy.trials_crashed"] == "1"
        assert "lipstudy.interrupted_by" not in parent.data.tags
    finally:
        study.close()
