"""``lipstudy resume`` never unpickles a study directory the user has not trusted (``study.trust``).

One small finished Optuna toy study (2 trials) is run once for the module; each test copies its
directory and plants a payload (a pickle whose ``__reduce__`` touches a marker file) where
``Tuner.restore`` would unpickle it: ``tuner.pkl``, a ``CLOUDPICKLE_FALLBACK`` field of
``experiment_state-*.json``, the searcher state. The resume must refuse with one line naming the
file and ``--trust``, the marker must not exist, and the parent run must stay FINISHED. The
study's own directory verifies as its driver left it; ``--trust`` signs a directory and resumes.
Interrupted own studies (SIGINT, SIGKILL) resuming without a flag are the chaos tests
(``tests/study/test_chaos.py``, ``tests/study/test_population_search.py``).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import textwrap
from pathlib import Path

import pytest

from tests.study.test_chaos import TOY, Study

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

OPTUNA_TOY = f"""
    name: untrusted-resume
    search: optuna
    fixed: {{{TOY}}}
    space:
      loss: {{choice: [ns, wgan]}}
    num_samples: 2
    max_concurrent: 2
    resources: {{cpu: 1, gpu: 0}}
"""


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(the Study driver, its finished study directory), signed with a key of the test's own."""
    tmp = tmp_path_factory.mktemp("untrusted")
    study = Study(tmp, "grid-toy", None)
    study.file.write_text(textwrap.dedent(OPTUNA_TOY))
    study.env["LIPSTUDY_SIGNING_KEY_FILE"] = str(tmp / "signing.key")
    rc, text = study.run(timeout=240)
    assert rc == 0, text
    yield study, Path(study.study_dir)
    study.close()


@pytest.fixture
def copy(finished, tmp_path, monkeypatch):
    """A fresh copy of the finished study directory, and the marker a payload would create."""
    study, src = finished
    monkeypatch.setenv("LIPSTUDY_SIGNING_KEY_FILE", study.env["LIPSTUDY_SIGNING_KEY_FILE"])
    dst = tmp_path / "study"
    shutil.copytree(src, dst)
    return study, dst, tmp_path / "marker"


def _parent_status(study_dir: Path) -> tuple[str, str]:
    from mlflow.tracking import MlflowClient

    state = json.loads((study_dir / "lipstudy_study.json").read_text())
    run = MlflowClient(state["tracking_uri"]).get_run(state["parent_run_id"])
    return run.info.status, run.data.tags["lipstudy.status"]


def _refused(study_dir: Path, marker: Path, name: str, capsys) -> None:
    """``lipstudy resume`` (in this process: the refusal comes before Ray starts) exits 2 with one
    line on stderr naming ``name`` and ``--trust``; the payload did not run; parent FINISHED."""
    from study.cli import main

    try:
        rc: object = main(["resume", str(study_dir)])
    except Exception as exc:  # a resume that unpickled the payload fails on what it returned
        rc = exc
    finally:
        import ray

        ray.shutdown()  # only reached by a resume that got past the check (the code before it)
    err = capsys.readouterr().err
    assert not marker.exists(), "the planted payload ran"
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert name in err and f"lipstudy resume --trust {study_dir}" in err, err
    assert _parent_status(study_dir) == ("FINISHED", "finished")


def _newest(study_dir: Path, pattern: str) -> Path:
    return max(study_dir.glob(pattern))


def _plant_in_state(path: Path, marker: Path) -> None:
    """Replace the first ``CLOUDPICKLE_FALLBACK`` value of a trial in Tune's experiment state."""
    state = json.loads(path.read_text())
    meta = json.loads(state["trial_data"][0][0])
    [key] = [k for k, v in meta.items()
             if isinstance(v, dict) and v.get("_type") == "CLOUDPICKLE_FALLBACK"][:1]
    meta[key]["value"] = pickle.dumps(Payload(marker)).hex()
    state["trial_data"][0][0] = json.dumps(meta)
    path.write_text(json.dumps(state))


def test_own_finished_study_verifies_as_left(copy):
    """The running study signed every pickle-bearing file it wrote: nothing is set aside."""
    from study.trust import verify_study

    _, study_dir, _ = copy
    assert (study_dir / "lipstudy_signatures.json").exists()
    assert verify_study(str(study_dir)) == []


def test_planted_tuner_pkl_does_not_run(copy, capsys):
    _, study_dir, marker = copy
    (study_dir / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))
    _refused(study_dir, marker, "tuner.pkl", capsys)


def test_planted_experiment_state_field_does_not_run(copy, capsys):
    """Planted in the state and in its intact copy (the whole directory is the attacker's)."""
    _, study_dir, marker = copy
    state = _newest(study_dir, "experiment_state-*.json")
    for path in (state, study_dir / "lipstudy_intact" / state.name):
        _plant_in_state(path, marker)
    _refused(study_dir, marker, state.name, capsys)


def test_planted_searcher_state_does_not_run(copy, capsys):
    _, study_dir, marker = copy
    searcher = _newest(study_dir, "searcher-state-*.pkl")
    for path in (searcher, study_dir / "lipstudy_intact" / searcher.name):
        path.write_bytes(pickle.dumps(Payload(marker)))
    _refused(study_dir, marker, searcher.name, capsys)


def test_a_changed_state_gives_way_to_its_signed_copy(copy):
    """Planted in the state only (as a kill can leave a state newer than its signature): the
    signed intact copy takes its place, the planted one is set aside, nothing runs."""
    from study.trust import verify_study

    _, study_dir, marker = copy
    state = _newest(study_dir, "experiment_state-*.json")
    _plant_in_state(state, marker)
    [line] = verify_study(str(study_dir))
    assert state.name in line and "signed copy" in line
    assert state.read_bytes() == (study_dir / "lipstudy_intact" / state.name).read_bytes()
    assert (study_dir / f"{state.name}.unsigned").exists() and not marker.exists()


def test_another_users_directory_is_refused(copy, tmp_path, monkeypatch):
    """Signed with someone else's key: refused before anything reads it, the line says so."""
    from study.trust import UntrustedStudy, verify_study

    _, study_dir, _ = copy
    monkeypatch.setenv("LIPSTUDY_SIGNING_KEY_FILE", str(tmp_path / "other.key"))
    with pytest.raises(UntrustedStudy, match="another key"):
        verify_study(str(study_dir))
    assert not list(study_dir.glob("*.unsigned"))  # refused with the directory unchanged


def test_trust_signs_and_the_resume_proceeds(copy, capsys):
    """A directory without signatures (made before signing existed) is refused; ``--trust``
    signs it with the user's key and the resume of the finished study proceeds."""
    study, study_dir, marker = copy
    (study_dir / "lipstudy_signatures.json").unlink()
    _refused(study_dir, marker, "is not signed with your key", capsys)
    rc, text = study.drive(["resume", "--trust", str(study_dir)], timeout=240)
    assert rc == 0, text
    assert f"lipstudy: trusted {study_dir}" in text, text
    assert _parent_status(study_dir) == ("FINISHED", "finished")
    from study.trust import verify_study

    assert verify_study(str(study_dir)) == []
