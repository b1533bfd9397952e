"""A newcomer's first answers are fast and kind: unknown keys get "did you mean", a default the
user never wrote is named as a default, unknown names come before cross-key problems, counts are
in good grammar, help texts are complete, printed commands run as typed, `resume` of a wrong
directory answers without loading Ray/torch/MLflow, progress lines carry an ETA and Inception on a
CPU says how long it will take. No Ray is started here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from study.cli import main
from study.spec import PRESETS_DIR, StudyError, load_study, parse_study_unchecked

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text, name="study.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def error_of(tmp_path, text) -> str:
    with pytest.raises(StudyError) as err:
        load_study(write(tmp_path, text))
    return str(err.value)


@pytest.mark.parametrize("text, where, suggestion", [
    ("name: t\nfixed: {dataset: ring8, arch: mlp, iteration: 1}\n", "fixed.iteration",
     "iterations"),
    ("name: t\nfixed: {dataset: ring8, arch: mlp}\ngrid: {k_SN: [1.0]}\n", "grid.k_SN", "k_sn"),
    ("name: t\nseed: 3\n", "seed", "seeds"),
    ("name: t\nresources: {gpus: 0}\n", "resources.gpus", "gpu"),
    ("name: t\nsearch: optuna\nspace: {loss: {choise: [ns]}}\n", "space.loss.choise", "choice"),
])
def test_an_unknown_key_gets_a_did_you_mean(tmp_path, text, where, suggestion):
    msg = error_of(tmp_path, text)
    assert f"{where}: unknown" in msg, msg
    assert f"did you mean {suggestion!r}?" in msg, msg


def test_a_default_the_user_never_wrote_is_named_as_a_default(tmp_path):
    msg = error_of(tmp_path, """
        name: t
        fixed: {dataset: ring8, arch: mlp, iterations: 100}
        grid: {loss: [ns, wgan]}
    """)
    assert "grid.eval_every" not in msg, msg
    assert "eval_every" in msg and "the default 10000" in msg and "fixed.eval_every" in msg, msg


def test_unknown_names_come_before_cross_key_problems(tmp_path):
    msg = error_of(tmp_path, "name: t\nfixed: {dataset: cifar100, arch: mlp}\n")
    assert "fixed.dataset: unknown dataset 'cifar100'" in msg, msg
    assert "did you mean 'cifar10'?" in msg and "arch" not in msg.split("; choose")[0], msg


def test_counts_are_in_good_grammar(tmp_path, capsys):
    good = write(tmp_path, "name: one\nfixed: {dataset: ring8, arch: mlp, iterations: 10, "
                           "eval_every: 5}\n")
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "(grid, 1 trial;" in out, out
    spec = parse_study_unchecked("name: t\n")
    from study.validation import fid_plans

    line = fid_plans(spec, [{"dataset": "mnist", "fid_extractor": "domain"}])[0]
    assert "against the full 'test' split" in line and "split 'test' images" not in line, line


def test_inception_on_a_cpu_says_how_long_it_takes(monkeypatch):
    from study import validation

    monkeypatch.setattr(validation, "_trials_on_cpu", lambda spec, cfg: True)
    spec = parse_study_unchecked("name: t\n")
    cfg = {"dataset": "mnist", "fid_extractor": "inception", "iterations": 1000,
           "eval_every": 500, "fid_samples": 1000}
    line = validation.fid_plans(spec, [cfg])[0]
    # 1,000 samples at the floor, step 0, steps 500 and 1,000: 4,000 images at 5 images/s
    assert "≈ 4,000 images per trial ≈ 13m20s each" in line, line
    assert "10,000 reference images once ≈ 33m20s" in line, line
    monkeypatch.setattr(validation, "_trials_on_cpu", lambda spec, cfg: False)
    assert "per trial" not in validation.fid_plans(spec, [cfg])[0]


def test_help_texts_are_complete(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "lipstudy" in top.split("positional")[0], top
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    report = capsys.readouterr().out
    description = " ".join(report.split("\n\n")[1].split())
    assert description.endswith("figures re-made from our runs."), description


def test_presets_show_whole_first_sentences(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    for p in sorted(PRESETS_DIR.glob("*.yaml")):
        block = re.search(rf"^{re.escape(p.stem)} (.*?)(?=^\S|\Z)", text, re.S | re.M).group(1)
        shown = " ".join(block.split()).split(" [not runnable here")[0]
        described = " ".join(parse_study_unchecked(p.read_text()).description.split())
        assert described.startswith(shown) and shown[-1] in ".!?", (p.stem, shown)
        assert not shown.endswith(("Eq.", "Sec.", "...")), (p.stem, shown)


def test_printed_commands_run_as_typed(monkeypatch):
    from study import shell

    script = Path(sys.executable).parent / "lipstudy"
    monkeypatch.setattr(shell.shutil, "which", lambda name: None)
    cmd = shell.lipstudy_command("resume", "/tmp/a b")
    assert cmd.endswith(" resume '/tmp/a b'") and cmd.split()[0] != "lipstudy", cmd
    if script.exists():
        assert Path(cmd.split()[0]).resolve() == script.resolve()
    monkeypatch.setattr(shell.shutil, "which", lambda name: str(script))
    if script.exists():
        assert shell.lipstudy_command("ui") == "lipstudy ui"


def test_the_end_of_a_study_prints_the_ui_command_that_runs(monkeypatch, capsys, tmp_path):
    from study import shell, summary

    monkeypatch.setattr(shell.shutil, "which", lambda name: None)
    outcome = SimpleNamespace(storage_path=str(tmp_path), tracking=SimpleNamespace(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment_id="1"))
    summary._print_where(outcome)
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Open them with")][0]
    assert "  lipstudy ui" not in line and " ui --store " in line, line


def _modules_after(args: list[str], cwd: Path) -> tuple[int, str, list[str]]:
    """Run ``lipstudy ARGS`` in a fresh interpreter: exit status, stderr, heavy packages loaded."""
    code = ("import sys, json\nfrom study.cli import main\n"
            f"rc = main({args!r})\n"
            "heavy = sorted(m for m in ('ray', 'torch', 'mlflow') if m in sys.modules)\n"
            "print(json.dumps([rc, heavy]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=cwd)
    rc, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    return rc, out.stderr, heavy


def test_resume_of_a_wrong_directory_answers_without_ray_torch_or_mlflow(tmp_path):
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "lipstudy_study.json").write_text("{}")
    rc, err, heavy = _modules_after(["resume", str(tmp_path)], tmp_path)
    assert rc == 2 and heavy == [], (rc, heavy, err)
    assert err.count("lipstudy: error:") == 1 and "not a lipstudy study directory" in err, err
    assert f"did you mean {tmp_path / 'default'}" in err, err


def test_progress_lines_carry_an_eta():
    from study.progress import duration_text, eta_text

    assert duration_text(45) == "45s" and duration_text(250) == "4m10s"
    assert duration_text(2 * 3600 + 5 * 60) == "2h05m"
    assert eta_text(elapsed=60, fraction=0.25) == "ETA 3m00s"
    # a resumed study: the rate counts only the progress made since this driver started
    assert eta_text(elapsed=60, fraction=0.75, start_fraction=0.5) == "ETA 1m00s"
    assert eta_text(elapsed=5, fraction=0.0) == "" and eta_text(elapsed=5, fraction=1.0) == ""


def test_progress_fraction_counts_iterations_of_all_trials():
    from study.progress import ProgressPrinter

    printer = ProgressPrinter(n_trials=4, iterations=100, quiet=True)
    running = SimpleNamespace(trial_id="a", status="RUNNING", config={"iterations": 100},
                              last_result={"step": 50})
    done = SimpleNamespace(trial_id="b", status="TERMINATED", config={"iterations": 100},
                           last_result={"step": 40})  # stopped early: its work is done
    # 2 trials not created yet (a searcher suggests them later): 100 iterations each
    assert printer.fraction([running, done]) == pytest.approx(150 / 400)


def test_a_progress_line_ends_with_its_eta(capsys):
    from study.progress import ProgressPrinter

    printer = ProgressPrinter(n_trials=2, iterations=100)
    trial = SimpleNamespace(trial_id="a", status="RUNNING", config={"iterations": 100},
                            last_result={})
    printer.on_trial_start(0, [trial], trial)
    printer.t0 -= 60
    printer.on_trial_result(0, [trial], trial, {"step": 50, "fid": 12.5})  # 50 of 200 in 60 s
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"\[\s*60s 0/2 done\] .* step 50/100 fid=12\.50  \(ETA 3m00s\)", line), line


def test_pyproject_license_is_an_spdx_string():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    requires = " ".join(project["build-system"]["requires"])
    assert re.search(r"setuptools>=(\d+)", requires) and \
        int(re.search(r"setuptools>=(\d+)", requires).group(1)) >= 77  # PEP 639 strings


def test_readme_says_how_to_install_a_cpu_only_torch_and_prints_no_mlflow_ui():
    readme = (REPO / "README.md").read_text()
    assert "download.pytorch.org/whl/cpu" in readme
    assert "printed `mlflow ui" not in readme


def test_h1_counts_one_loss_and_one_block_in_the_singular():
    import pandas as pd

    from analysis.hypotheses.losses import h1

    frame = pd.DataFrame([dict(run_id="r1", loss="ns", regularizer="sn", k_sn=10.0, alpha=1.0,
                               seed=0, fid=50.0, dataset="mnist", status="finished", diverged=0.0,
                               fid_extractor="domain", fid_samples=1000)])
    verdict = h1(frame)
    assert verdict.missing.endswith("have 1 loss in 1 block"), verdict.missing
