"""Every shipped preset validates (`lipstudy validate` exit 0) and encodes its paper's settings.

CelebA presets need the dataset on disk: the check looks only at file names, so a torchvision-style
layout of empty files under $LIPSTUDY_DATA_ROOT stands in for it (CIFAR-10 presets use
``download: true`` and validate anywhere).
"""

from __future__ import annotations

import pytest

from study.cli import main
from study.spec import PRESETS_DIR, expand_grid, load_study

PRESETS = sorted(PRESETS_DIR.glob("*.yaml"))


@pytest.fixture(autouse=True)
def fake_celeba(tmp_path, monkeypatch):
    folder = tmp_path / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    (folder / "img_align_celeba" / "000001.jpg").write_bytes(b"")
    for name in ("list_eval_partition.txt", "identity_CelebA.txt", "list_attr_celeba.txt",
                 "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt"):
        (folder / name).write_text("")
    monkeypatch.setenv("LIPSTUDY_DATA_ROOT", str(tmp_path))


def test_the_paper_presets_are_shipped():
    names = {p.stem for p in PRESETS}
    assert {"lipschitz-appc-gp-vs-sn", "gran-table1-robustness", "alr-wgan-alp",
            "roth-js-annealing"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_validates(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert "ok" in capsys.readouterr().out
    spec, _ = load_study(path)
    assert "GPU-h" in spec.description or path.stem == "default"


def _configs(name):
    spec, _ = load_study(name)
    return expand_grid(spec)


def test_gran_table1_settings_a_to_e():
    table1 = {(1e-4, 0.5, 0.9, 5), (2e-4, 0.5, 0.999, 1), (1e-3, 0.5, 0.999, 5),
              (1e-3, 0.9, 0.999, 5), (2e-4, 0.0, 0.9, 5)}
    cfgs = _configs("gran-table1-robustness")
    methods = {(c["loss"], c["regularizer"]) for c in cfgs}
    assert methods == {("ns", "gran"), ("hinge", "sn"), ("wgan", "gp")}
    for method in methods:
        settings = {(c["lr_d"], c["beta1"], c["beta2"], c["n_dis"]) for c in cfgs
                    if (c["loss"], c["regularizer"]) == method}
        assert settings == table1, method
    assert all(c["lr_g"] == c["lr_d"] and c["optimizer"] == "adam" for c in cfgs)


def test_alr_preset_uses_section4_hyperparameters():
    cfgs = _configs("alr-wgan-alp")
    main_runs = [c for c in cfgs if c["regularizer"] == "alr" and c["alr_lambda"] == 100.0
                 and c["d_norm"] == "none"]
    assert len(main_runs) == 10  # the paper's 10 seeds
    c = main_runs[0]
    assert (c["alr_k"], c["alr_xi"], c["alr_eps_min"], c["alr_eps_max"], c["alr_iters"]) == (
        1.0, 10.0, 0.1, 10.0, 1)
    assert (c["loss"], c["lr_d"], c["beta1"], c["beta2"], c["n_dis"], c["batch_size"]) == (
        "wgan", 2e-4, 0.0, 0.9, 5, 64)


def test_roth_preset_compares_annealed_constant_and_unregularized():
    cfgs = _configs("roth-js-annealing")
    kinds = {(c["dataset"], c["regularizer"], c.get("js_gamma0"), c.get("js_decay"), c["d_norm"])
             for c in cfgs}
    for ds in ("cifar10", "celeba"):
        for d_norm in ("bn", "none"):
            assert {(ds, "js", 2.0, 0.01, d_norm), (ds, "js", 0.1, 1.0, d_norm),
                    (ds, "none", None, None, d_norm)} <= kinds
    assert all(c["loss"] == "ns" for c in cfgs)


def test_appendix_c_preset_gp_with_bn_vs_sn():
    cfgs = _configs("lipschitz-appc-gp-vs-sn")
    gp = [c for c in cfgs if c["regularizer"] == "gp"]
    sn = [c for c in cfgs if c["regularizer"] == "sn"]
    assert all(c["d_norm"] == "bn" and c["gp_lambda"] == 10.0 for c in gp)
    assert all(c.get("d_norm", "none") == "none" for c in sn)
    assert {c["loss"] for c in cfgs} == {"ns", "ls", "wgan"}
    assert all(c["dataset"] == "celeba" and c["arch"] == "dcgan64" for c in cfgs)


# ---------------------------------------------------------------------------- toy-references
def _toy_references():
    spec, _ = load_study("toy-references")
    return spec, expand_grid(spec)


def test_toy_references_preset_design():
    """ring8 at Roth et al.'s batch 512 and z ∈ R^2; the JS and unregularized arms differ only in
    the regularizer; GraN (K, ε) has its (1, ε/K) partner at K ∈ {2, 4, 8}; the bias-free SN runs
    scale ε by k_SN^3 exactly; the packable blocks pack (fewer Ray trials than configurations)."""
    from trainables.pack.packing import pack_configs

    spec, cfgs = _toy_references()
    assert {c["dataset"] for c in cfgs} == {"ring8"}
    assert {(c["batch_size"], c["z_dim"], c["arch"]) for c in cfgs} == {(512, 2, "mlp")}
    drop = ("regularizer", "js_gamma0", "js_decay")
    arms = {c["regularizer"]: {k: v for k, v in c.items() if k not in drop}
            for c in cfgs if c["regularizer"] in ("js", "none") and c["seed"] == 0}
    assert arms["js"] == arms["none"] and arms["js"]["iterations"] == 10_000
    assert arms["js"]["lr_d"] == arms["js"]["lr_g"] == 1e-3 and arms["js"]["optimizer"] == "adam"
    gran = {(c["gran_k"], c["eps"], c["seed"]) for c in cfgs if c["regularizer"] == "gran"}
    for k in (2.0, 4.0, 8.0):
        for seed in range(3):
            assert (k, 1e-4, seed) in gran and (1.0, 1e-4 / k, seed) in gran
    kscale = {c["k_sn"]: c["eps"] for c in cfgs if c.get("d_bias") is False}
    assert kscale == {1.0: 1e-8, 2.0: 1e-8 * 2 ** 3, 4.0: 1e-8 * 4 ** 3}  # bit-exact ε·k^n
    packs = pack_configs(cfgs, spec.population)
    assert len(packs) == 1 + 3 + 3 * 6 + 1 and len(cfgs) == 33
    assert "GPU-h" in spec.description and "CPU: ≈" in spec.description


def test_toy_references_preset_decides_its_hypotheses():
    """A frame with the preset's own configurations and seeds (synthetic outcomes: the baseline
    collapsed, JS and SN learned, the identities exact) is enough for a verdict on every
    hypothesis the preset feeds: none is inconclusive for want of runs."""
    import pandas as pd

    from analysis import hypotheses, load

    spec, cfgs = _toy_references()
    rows = []
    for i, c in enumerate(cfgs):
        s = c["seed"]
        base = 1.0 + 0.1 * s
        scale = c.get("gran_k", 1.0) if c["regularizer"] == "gran" else (
            c["k_sn"] ** 3 if c.get("d_bias") is False else 1.0)
        eps1 = c.get("eps", 1e-8) / scale  # the K = 1 / k_SN = 1 partner's ε
        om = base * (1.0 + 1e3 * eps1) * scale
        collapsed = c["regularizer"] == "none"
        rows.append({**c, "run_id": f"r{i}", "status": "finished", "origin": "run",
                     "fid_extractor": "data-space", "n_d_layers": 3,
                     "fid": (2.0 if collapsed else 0.01) * base * (1.0 + 1e3 * eps1),
                     "modes_covered": 1.0 if collapsed else 8.0,
                     "hq_share": 0.1 if collapsed else 0.6,
                     "omega_real_min": -om, "omega_real_max": om, "omega_fake_min": -0.5 * om,
                     "omega_fake_max": 0.5 * om})
    frame = load.concat([load.type_columns(pd.DataFrame(rows))])
    verdicts = {v.name: v for v in hypotheses.evaluate(frame, spec.hypotheses)}
    assert set(verdicts) == set(spec.hypotheses)
    for name, v in verdicts.items():
        assert v.verdict == "supported", (name, v.verdict, v.missing, v.details)
