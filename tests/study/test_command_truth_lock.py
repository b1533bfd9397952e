"""Two ``lipstudy run`` of the same study in one directory, started 0.5 s apart: one runs, the
other is refused with one line and exit 2 (``study.run_lock``); one MLflow parent run exists.
Both are real processes; the study is one tiny toy trial, stopped (SIGINT) once its parent run is
open."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from tests.study._procs import family, kill_pids, lipstudy, processes_naming, ray_tmpdir, wait_for



STUDY = """
name: lock-toy
search: grid
fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 20, stats_every: 10, eval_every: 20,
        fid_samples: 40, batch_size: 16, device: cpu}
grid: {loss: [ns]}
resources: {cpu: 1, gpu: 0}
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_second_run_of_the_same_study_is_refused(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "study.yaml", "--tracking-uri", uri, "--storage-path", "results"]
    rts = [ray_tmpdir(), ray_tmpdir()]
    procs, started = [], set()
    try:
        for i, rt in enumerate(rts):
            procs.append(lipstudy(args, cwd=tmp_path, log=tmp_path / f"driver{i}.log",
                                  env_extra={"RAY_TMPDIR": rt, "RAY_num_cpus": "2"}))
            time.sleep(0.5)

        def refused():
            for p in procs:
                started.update(family(p.pid))
            return any(p.poll() is not None for p in procs)
        wait_for(refused, 120, None, "one driver to end")
        runner = next(i for i, p in enumerate(procs) if p.poll() is None)
        log = tmp_path / f"driver{runner}.log"
        wait_for(lambda: "study directory" in log.read_text(), 120, procs[runner],
                 "the running study's directory")  # its parent run is open
        procs[runner].send_signal(signal.SIGINT)  # no need to finish it: stop it gracefully
        wait_for(lambda: (started.update(family(procs[runner].pid)),
                          procs[runner].poll() is not None)[1], 120, None, "the runner to end")
    finally:
        for p in procs:
            p.stdout_file.close()
        kill_pids((started | processes_naming(rts[0]) | processes_naming(rts[1]))
                  - {p.pid for p in procs})
        for p in procs:
            if p.poll() is None:
                kill_pids({p.pid})
        for rt in rts:
            shutil.rmtree(rt, ignore_errors=True)
    logs = [(tmp_path / f"driver{i}.log").read_text() for i in range(2)]
    codes = sorted(p.returncode for p in procs)
    assert codes == [2, 130], (codes, logs)
    refused = logs[[p.returncode for p in procs].index(2)]
    errors = [line for line in refused.splitlines() if line.startswith("lipstudy: error:")]
    assert len(errors) == 1 and "'lock-toy' is already running" in errors[0], refused
    assert "starting Ray" in refused and "study directory" not in refused, refused

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("lock-toy")
    parents = [r for r in client.search_runs([exp.experiment_id])
               if r.data.tags.get("lipstudy.kind") == "study"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    assert [d.name for d in (tmp_path / "results").iterdir() if d.is_dir()] == ["lock-toy"]


@pytest.mark.timeout(30)
def test_the_lock_refuses_a_second_holder_and_leaves_no_directory(tmp_path):
    """In one process (a second open file of the lock): refused with one line naming the holder;
    the storage directories the lock created are gone afterwards unless something was written."""
    from study.limits import StudyError
    from study.run_lock import study_lock

    storage = tmp_path / "a" / "results"
    with study_lock(str(storage), "toy"):
        with pytest.raises(StudyError, match=r"'toy' is already running .*pid \d+") as err:
            with study_lock(str(storage), "toy"):
                pass
        assert "\n" not in str(err.value)
        with study_lock(str(storage), "other"):  # another study in the same storage: free
            pass
    assert not (tmp_path / "a").exists()
    with study_lock(str(storage), "toy"):
        (storage / "toy").mkdir()  # the study directory: the storage stays
    assert [p.name for p in storage.iterdir()] == ["toy"]
