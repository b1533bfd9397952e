"""A newcomer's first commands never crash (issue #9): `presets` lists every preset even without
the papers' datasets, `validate` checks every file, errors in grid blocks name the right block,
`--help` loads nothing heavy, FID settings are stated and refused when the reference is too small;
the recovery bookkeeping (match runs to trials by the real trial id, supersede without losing data)
and the end table, without Ray."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from study.cli import main
from study.spec import PRESETS_DIR, StudyError, load_study


def write(tmp_path, text, name="study.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_presets_lists_every_preset_and_marks_absent_data(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/lipstudy/data: CelebA is absent
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    assert [line.split()[0] for line in out.splitlines() if not line[:1].isspace()] == names
    blocks = {b.split()[0]: b for b in re.split(r"\n(?=\S)", out.strip())}  # a preset's lines
    assert "not runnable here: dataset 'celeba' not found" in blocks["lipschitz-table2"]
    assert "not runnable" not in blocks["default"]


def test_validate_checks_every_file_and_exits_2_if_any_fails(tmp_path, capsys):
    good = write(tmp_path, """
        name: good
        fixed: {dataset: ring8, arch: mlp, iterations: 10, eval_every: 5}
        grid: {loss: [ns, wgan]}
    """, "good.yaml")
    bad = write(tmp_path, "name: bad\nfixed: {k_sn: -1}\n", "bad.yaml")
    good2 = write(tmp_path, "name: good2\nfixed: {fid_extractor: domain}\n", "good2.yaml")
    assert main(["validate", str(good), str(bad), str(good2)]) == 2
    cap = capsys.readouterr()
    assert f"{good}: ok (grid, 2 trials;" in cap.out
    assert f"{good2}: ok (grid, 1 trial; fashion_mnist_mini: FID with 'domain' (128-d) " \
           "against 2,000 'test' images)" in cap.out
    assert cap.err.count("lipstudy: error:") == 1 and "bad.yaml: fixed.k_sn" in cap.err


def test_validate_says_which_configs_of_a_population_study_run_alone(tmp_path, capsys):
    """Issue #12: a regularizer the population cannot batch runs one config per trial, and
    validation says so in one line (once per kind, not per config)."""
    path = write(tmp_path, """
        name: packs
        population: 4
        fixed: {dataset: ring8, arch: mlp, iterations: 10, eval_every: 5}
        grid: [{loss: [ns, wgan], regularizer: [sn]}, {loss: [ns, wgan], regularizer: [alr]}]
    """)
    assert main(["validate", str(path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "one config per trial" in line]
    assert len(lines) == 1 and "'alr'" in lines[0] and lines[0].startswith(f"{path}: ")


@pytest.mark.parametrize("grid, where", [
    ("[{loss: [ns]}, {loss: [wgan], k_sn: [-1.0]}]", "grid[1].k_sn"),
    # k_sn belongs to sn only: the failing trial comes from block 1, not the first block naming it
    ("[{regularizer: [sn], k_sn: [1.0]}, {regularizer: [gp], k_sn: [1.0]}]", "grid[1].k_sn"),
])
def test_a_grid_block_error_names_the_failing_block(tmp_path, grid, where):
    path = write(tmp_path, f"name: t\nfixed: {{dataset: ring8, arch: mlp}}\ngrid: {grid}\n")
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert f": {where}:" in str(err.value), str(err.value)


def test_help_imports_neither_ray_torch_nor_mlflow():
    code = ("import sys, contextlib, io\n"
            "from study.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['--help'])\n"
            "print(sorted(m for m in ('ray', 'torch', 'mlflow', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _folder(tmp_path, n):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(n):
        Image.new("RGB", (32, 32), (i % 256, 0, 0)).save(d / f"{i:04d}.png")
    return d


def test_a_reference_smaller_than_the_extractor_dimension_is_refused(tmp_path):
    folder = _folder(tmp_path, 300)  # 30 held-out images
    path = write(tmp_path, f"""
        name: t
        fixed: {{dataset: "folder:{folder}", arch: dcgan32, iterations: 10, eval_every: 5}}
    """)
    with pytest.raises(StudyError) as err:
        load_study(path)
    msg = str(err.value)
    assert "fixed.dataset" in msg and "30 'test' images" in msg and "'domain'" in msg
    assert "128" in msg and "\n" not in msg


def test_auto_uses_inception_only_for_a_reference_as_large_as_its_dimension():
    from trainables.metrics import fid as fid_lib

    small = fid_lib.resolve_extractor("auto", 2_000)
    assert small == "domain"
    if fid_lib.InceptionExtractor.available():
        assert fid_lib.resolve_extractor("auto", 10_000) == "inception"
        assert fid_lib.resolve_extractor("auto", None) == "inception"
    assert fid_lib.resolve_extractor("inception", 10) == "inception"  # explicit: validation's job


def test_explicit_inception_on_the_embedded_set_is_refused(tmp_path):
    path = write(tmp_path, "name: t\nfixed: {fid_extractor: inception}\n")
    with pytest.raises(StudyError, match=r"fixed.fid_extractor: .*2000 'test' images.*2048"):
        load_study(path)


def test_error_cells_carry_no_terminal_colours():
    from study.summary import clean_error

    err = "\x1b[36mray::run_trial()\x1b[39m (pid=1, ip=127.0.0.1)\n  File x\nValueError: boom"
    assert clean_error(err) == "ValueError: boom"  # the cause's own line, not Ray's wrapper
    assert clean_error(None) is None


# --- recovery bookkeeping on a real MLflow store, without Ray ----------------------------------

def _experiment_state(study_dir, trials):
    rows = [[json.dumps({"trial_id": tid, "status": status, "config": {"trial": {}},
                         "relative_logdir": f"x_{tid}"}),
             json.dumps({"last_result": {"step": step} if step else {}})]
            for tid, status, step in trials]
    (study_dir / "experiment_state-2026-11-28_00-00-00.json").write_text(
        json.dumps({"trial_data": rows, "runner_data": {}, "stats": {}}))


def test_reconcile_matches_grid_trial_ids_and_loses_nothing(tmp_path):
    from mlflow.tracking import MlflowClient

    from study.recovery import record_reconciliation, reconcile_runs
    from study.tracking import start_study_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = start_study_run(uri, "rec", "name: rec\n", hypotheses=[],
                               artifact_root=str(tmp_path / "mlruns"))
    client = MlflowClient(uri)

    def child(tid, status, metrics=True, deleted=False):
        run = client.create_run(tracking.experiment_id, run_name=f"r-{tid}", tags={
            "mlflow.parentRunId": tracking.parent_run_id, "lipstudy.trial_id": tid})
        rid = run.info.run_id
        if metrics:
            client.log_metric(rid, "loss_d", 1.0, step=10)
        if status != "RUNNING":
            client.set_terminated(rid, status)
        if deleted:
            client.delete_run(rid)
        return rid

    done = child("a0626_00000", "FINISHED")
    checkpointed = child("a0626_00001", "KILLED")        # grid id with an underscore
    no_ckpt_yet = child("a0626_00002", "RUNNING")       # restarts from scratch, same run
    wrongly_deleted = child("a0626_00003", "RUNNING", deleted=True)  # an older resume's bug
    orphan = child("a0626_00004", "RUNNING")            # Tune never saved this trial
    empty_orphan = child("a0626_00005", "RUNNING", metrics=False)
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    _experiment_state(study_dir, [("a0626_00000", "TERMINATED", 60), ("a0626_00001", "RUNNING", 40),
                                  ("a0626_00002", "PENDING", None), ("a0626_00003", "RUNNING", 20)])

    rec = reconcile_runs(str(study_dir), tracking)
    assert sorted(rec.continued) == sorted([checkpointed, no_ckpt_yet])
    assert rec.restored == [wrongly_deleted] and rec.superseded == [orphan]
    assert rec.deleted == [empty_orphan]
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(wrongly_deleted).info.lifecycle_stage == "active"
    kept = client.get_run(orphan)
    assert kept.info.lifecycle_stage == "active" and kept.info.status == "KILLED"
    assert kept.data.tags["lipstudy.status"] == "superseded" and kept.data.metrics["loss_d"] == 1.0
    record_reconciliation(tracking, 1, rec)
    parent = client.get_run(tracking.parent_run_id)
    assert parent.data.tags["lipstudy.superseded_runs"] == "1"
    assert parent.data.tags["lipstudy.deleted_runs"] == "1"
    # safe to repeat: a second pass changes nothing
    again = reconcile_runs(str(study_dir), tracking)
    assert not (again.restored or again.superseded or again.deleted)
