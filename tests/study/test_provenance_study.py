"""A study whose source files change between two trials is visible: run from a copy of the
project's packages (``PYTHONPATH``, as an editable install would import them), with a hook in the
copy that appends a comment to a source file when the first trial's run ends, its two runs carry
different code versions, the report refuses to pool them in one line, and ``lipstudy resume`` on
the changed code says so before it continues and lists both versions on the parent run.

Slow (two study processes, each starting a local Ray): marked ``slow``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainables import names
from trainables.tracking import provenance

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

#: Appended to the copy's trainables/ray/trainable.py: the first run that ends edits toys.py.
HOOK = '''

_finish_run_before_hook = finish_run


def finish_run(logger, result):  # test hook: tests/study/test_provenance_study.py
    out = _finish_run_before_hook(logger, result)
    from pathlib import Path

    marker = Path(__file__).with_name(".edited")
    if not marker.exists():
        marker.write_text("")
        with open(Path(__file__).with_name("toys.py"), "a") as fh:
            fh.write("# edited between two trials\\n")
    return out
'''

STUDY = """
name: provenance-e2e
search: grid
fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 4, stats_every: 2, eval_every: 2,
        fid_samples: 50, batch_size: 16, device: cpu, regularizer: sn}
grid:
  - {loss: [ns, wgan]}
seeds: 1
scheduler: fifo
resources: {cpu: 1}
max_concurrent: 1
"""


def _lipstudy(src: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    code = "import sys; from study.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=400)


@pytest.mark.scenario
def test_source_edited_between_trials_two_versions_refused_and_resume_says_so(tmp_path, capsys):
    src = tmp_path / "src"
    for pkg in provenance.PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    hooked = src / "trainables" / "ray" / "trainable.py"
    hooked.write_text(hooked.read_text() + HOOK)
    before = provenance.provenance(src).version
    (tmp_path / "study.yaml").write_text(STUDY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = _lipstudy(src, tmp_path, "run", "study.yaml", "--tracking-uri", uri,
                    "--storage-path", str(tmp_path / "results"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    after = provenance.provenance(src).version
    assert before != after and before.startswith("pkg:")  # a copy: package version + source hash

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("provenance-e2e")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    (parent,) = [r for r in runs if r.data.tags.get(names.KIND_TAG) == "study"]
    children = [r for r in runs if r.data.tags.get(names.KIND_TAG) != "study"]
    assert parent.data.tags[names.CODE_VERSION_TAG] == before
    versions = [r.data.tags[names.CODE_VERSION_TAG] for r in children]
    # the second trial ran after the edit: a fresh worker imports the new files; a reused one
    # imported the old ones and sees the new ones on disk (a possible mix, a version of its own)
    assert versions[0] == before and versions[1] in (after, f"{before}~{after}"), versions

    from analysis import report

    out = tmp_path / "report"
    assert report.main(["--experiment", "provenance-e2e", "--tracking-uri", uri, "--out", str(out),
                        "--no-attach", "--no-histories"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lipstudy report: runs of 2 code versions") and versions[1] in err
    assert before in err and not (out / "report.md").exists()

    study_dir = parent.data.tags[names.STUDY_DIR_TAG]
    res = _lipstudy(src, tmp_path, "resume", study_dir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    line = f"lipstudy resume: this study ran on code {before}; this resume runs {after}."
    assert line in res.stderr
    tags = client.get_run(parent.info.run_id).data.tags
    assert tags[names.RESUMED_CODE_VERSIONS_TAG] == f"{before},{after}"
    assert tags[names.CODE_VERSION_TAG] == before
