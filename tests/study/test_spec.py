"""Study files: presets validate; every malformed file gets exit 2 and one line naming the problem,
before Ray or MLflow start, writing nothing."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from study.cli import main
from study.spec import StudyError, check_study, expand_grid, load_study

GOOD = """
name: t
fixed: {dataset: fashion_mnist_mini, arch: dcgan32, width: 0.125, iterations: 10, eval_every: 5}
grid: {loss: [ns, wgan], k_sn: [0.5, 10.0]}
seeds: 2
"""


def write(tmp_path, text, name="study.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_default_study_is_the_table2_miniature():
    spec, _ = load_study("default")
    configs = check_study(spec)
    assert len(configs) >= 9
    assert {c["loss"] for c in configs} >= {"ns", "ls", "wgan"}
    assert {c["k_sn"] for c in configs} >= {1.0, 10.0}
    assert len({c["k_sn"] for c in configs if c["k_sn"] >= 5}) >= 4  # H1's blocks (the header)
    assert all(c["eval_every"] * 2 <= c["iterations"] for c in configs)  # FID at >= 2 steps


def test_grid_expands_product_times_seeds(tmp_path):
    spec, _ = load_study(write(tmp_path, GOOD))
    configs = expand_grid(spec)
    assert len(configs) == 2 * 2 * 2
    assert {(c["loss"], c["k_sn"], c["seed"]) for c in configs} == {
        (l, k, s) for l in ("ns", "wgan") for k in (0.5, 10.0) for s in (0, 1)}


def test_conditional_grid_blocks(tmp_path):
    spec, _ = load_study(write(tmp_path, """
        name: t
        fixed: {iterations: 10, eval_every: 5}
        grid:
          - {regularizer: [sn], k_sn: [1.0, 5.0]}
          - {regularizer: [none]}
    """))
    assert [c.get("k_sn") for c in expand_grid(spec)] == [1.0, 5.0, None]


def test_optuna_space_validates_conditionals(tmp_path):
    spec, _ = load_study(write(tmp_path, """
        name: t
        search: optuna
        fixed: {iterations: 10, eval_every: 5}
        space:
          regularizer: {choice: [sn, none]}
          k_sn: {loguniform: [0.1, 100], when: {regularizer: sn}}
          alpha: {loguniform: [1.0e-25, 1.0e11]}
        num_samples: 4
    """))
    configs = check_study(spec)
    assert any("k_sn" not in c for c in configs)
    assert {c["alpha"] for c in configs} == {1e-25, 1e11}


BAD = {
    "unknown-top-key": ("name: t\nfixd: {}\n", "fixd: unknown key"),
    "unknown-trial-key": ("name: t\nfixed: {lossy: ns}\n", "fixed.lossy: unknown trial key"),
    "key-of-other-regularizer": ("name: t\nfixed: {regularizer: none, k_sn: 2}\n",
                                 "fixed.k_sn: belongs to regularizer 'sn'"),
    "k-sn-zero": ("name: t\nfixed: {k_sn: 0}\n", "fixed.k_sn"),
    "k-sn-negative-in-grid": ("name: t\ngrid: {k_sn: [1, -2]}\n", "grid.k_sn"),
    "alpha-zero": ("name: t\nfixed: {alpha: 0}\n", "fixed.alpha"),
    "alpha-negative": ("name: t\ngrid: {alpha: [1.0, -1.0e-3]}\n", "grid.alpha"),
    "eps-negative": ("name: t\nfixed: {eps: -1.0e-8}\n", "fixed.eps"),
    "unknown-loss": ("name: t\ngrid: {loss: [ns, hinged]}\n", "unknown loss 'hinged'"),
    "unknown-regularizer": ("name: t\nfixed: {regularizer: dropout}\n", "unknown regularizer"),
    "unknown-dataset": ("name: t\nfixed: {dataset: imagenet}\n", "fixed.dataset"),
    "unknown-arch": ("name: t\nfixed: {arch: resnet}\n", "unknown arch 'resnet'"),
    "unknown-optimizer": ("name: t\nfixed: {optimizer: sgd}\n", "unknown optimizer"),
    "adam-key-under-rmsprop": ("name: t\nfixed: {beta1: 0.5}\n", "belongs to optimizer 'adam'"),
    "resolution-arch-mismatch": ("name: t\nfixed: {arch: dcgan32, resolution: 64}\n",
                                 "fixed.resolution: arch 'dcgan32' makes 32x32"),
    "mlp-on-images": ("name: t\nfixed: {arch: mlp}\n", "fixed.arch"),
    "toy-with-dcgan": ("name: t\nfixed: {dataset: ring8}\n", "needs arch 'mlp'"),
    "missing-folder": ("name: t\nfixed: {dataset: 'folder:/nonexistent/imgs', arch: dcgan64}\n",
                       "fixed.dataset"),
    "mnist-missing-on-disk": ("name: t\nfixed: {dataset: mnist, data_root: /nonexistent}\n",
                              "fixed.dataset"),
    "gpu-share-over-one": ("name: t\nresources: {gpu: 1.5}\n", "resources.gpu"),
    "cpu-zero": ("name: t\nresources: {cpu: 0}\n", "resources.cpu"),
    "bad-search": ("name: t\nsearch: bayes\n", "search"),
    "bad-scheduler": ("name: t\nscheduler: pbt\n", "scheduler"),
    "seed-fixed": ("name: t\nfixed: {seed: 3}\n", "fixed.seed"),
    "seeds-zero": ("name: t\nseeds: 0\n", "seeds"),
    "empty-grid-list": ("name: t\ngrid: {loss: []}\n", "grid.loss: an empty list"),
    "grid-with-space": ("name: t\ngrid: {loss: [ns]}\nspace: {alpha: {loguniform: [1, 2]}}\n", "space"),
    "optuna-without-space": ("name: t\nsearch: optuna\n", "space"),
    "loguniform-nonpositive": ("name: t\nsearch: optuna\nspace: {alpha: {loguniform: [0, 1]}}\n",
                               "space.alpha"),
    "when-on-unknown": ("name: t\nsearch: optuna\nspace: {k_sn: {uniform: [1, 2], when: {reg: sn}}}\n",
                        "space.k_sn.when"),
    "bad-name": ("name: 'my study!'\n", "name"),
    "missing-name": ("fixed: {loss: ns}\n", "name"),
    "iterations-zero": ("name: t\nfixed: {iterations: 0}\n", "fixed.iterations"),
    "eval-beyond-run": ("name: t\nfixed: {iterations: 10, eval_every: 100}\n", "fixed.eval_every"),
    "bn-with-sn": ("name: t\nfixed: {d_norm: bn}\n", "fixed.d_norm"),
    "alpha-not-number": ("name: t\nfixed: {alpha: tiny}\n", "fixed.alpha"),
    "not-a-mapping": ("- just\n- a list\n", "must be a YAML mapping"),
    "not-yaml": ("name: t\nfixed: {loss: [ns\n", "not valid YAML"),
    "empty-file": ("", "the file is empty"),
    "gpu-share-negative": ("name: t\nresources: {gpu: -0.25}\n", "resources.gpu"),
    "custom-resource-zero": ("name: t\nresources: {custom: {node_a: 0}}\n", "resources.custom"),
    "k-gp-of-gp-under-sn": ("name: t\nfixed: {k_gp: 1.0}\n", "fixed.k_gp: belongs to regularizer 'gp'"),
    "gran-k-zero": ("name: t\nfixed: {regularizer: gran, gran_k: 0}\n", "fixed.gran_k"),
    "unknown-sampler": ("name: t\nsearch: optuna\nsampler: cmaes\n"
                        "space: {alpha: {loguniform: [1, 2]}}\n", "sampler"),
    "point-outside-space": ("name: t\nsearch: optuna\nspace: {alpha: {loguniform: [1, 2]}}\n"
                            "points_to_evaluate: [{alpha: 5.0}]\n",
                            "points_to_evaluate[0].alpha: 5.0 is outside the space"),
    "point-inactive-key": ("name: t\nsearch: optuna\nspace: {regularizer: {choice: [sn, none]},"
                           " k_sn: {uniform: [1, 2], when: {regularizer: sn}}}\n"
                           "points_to_evaluate: [{regularizer: none, k_sn: 1.5}]\n",
                           "points_to_evaluate[0].k_sn: inactive"),
    "points-on-grid": ("name: t\ngrid: {loss: [ns]}\npoints_to_evaluate: [{loss: ns}]\n",
                       "points_to_evaluate: only for search optuna/random"),
    "asha-with-searched-iterations": ("name: t\nsearch: optuna\nscheduler: asha\n"
                                      "space: {iterations: {int: [10, 20]}}\n", "space.iterations"),
    "checkpoints-zero": ("name: t\ncheckpoints_to_keep: 0\n", "checkpoints_to_keep"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_study_is_one_clear_line(tmp_path, case, capsys, monkeypatch):
    text, expected = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)
    # the CLI: exit 2, exactly one stderr line, nothing written
    code = main(["run", str(path)])
    out, errout = capsys.readouterr()
    assert code == 2
    assert errout.count("\n") == 1 and expected in errout
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml"]


def test_missing_study_file_names_the_presets(capsys):
    assert main(["validate", "no-such-study"]) == 2
    assert "default" in capsys.readouterr().err


def test_validate_command_ok(capsys):
    assert main(["validate", "default"]) == 0
    assert "ok" in capsys.readouterr().out


def test_bad_input_exits_before_ray_or_mlflow_are_imported(tmp_path):
    """The console script on a bad file: exit 2, one line, and neither Ray nor MLflow started."""
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nfixed: {k_sn: -1}\n")
    code = (
        "import sys; from study.cli import main; rc = main(['run', sys.argv[1]]);"
        "assert 'ray' not in sys.modules and 'mlflow' not in sys.modules, 'started too much';"
        "sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "k_sn" in proc.stderr
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["bad.yaml"]
