"""The paper-scale presets encode the Lipschitz paper's tables, the epsilon counterfactual uses the
factor worked out from Eq. 5 (eps0 * k_SN^n, n counted on the real discriminator), and every GPU-hour
estimate in a header is what study/cost.py's model gives."""

from __future__ import annotations

import math
import re

import pytest

from study.spec import expand_grid, load_study
from tests.study.test_presets import fake_celeba  # noqa: F401  (autouse: CelebA layout on disk)

TABLE2_LOSSES = {"ns", "ls", "wgan", "cos", "exp"}
TABLE5_LOSSES = {"ns", "ls", "ls0", "cos", "exp"}
DATASETS = {("mnist", "dcgan32"), ("cifar10", "dcgan32"), ("celeba", "dcgan64")}


def _cfgs(name):
    spec, _ = load_study(name)
    return spec, expand_grid(spec)


def _common(cfgs, seeds=3):
    assert {(c["dataset"], c["arch"]) for c in cfgs} == DATASETS
    assert all(c["regularizer"] == "sn" and c["optimizer"] == "rmsprop" and c["lr_d"] == 5e-5
               and c["iterations"] == 100_000 and c["batch_size"] == 64 for c in cfgs)
    assert {c["seed"] for c in cfgs} == set(range(seeds))


def test_table2_losses_by_ksn_by_dataset():
    spec, cfgs = _cfgs("lipschitz-table2")
    _common(cfgs)
    assert {(c["loss"], c["k_sn"]) for c in cfgs} == {
        (loss, k) for loss in TABLE2_LOSSES for k in (0.2, 0.25, 0.5, 1.0, 5.0, 10.0, 50.0)}
    assert len(cfgs) == 5 * 7 * 3 * 3
    assert spec.scheduler == "fifo"


@pytest.mark.parametrize("name,k,alphas", [
    ("lipschitz-table5a", 50.0, (1e-11, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1)),
    ("lipschitz-table5b", 1.0, (1e1, 1e3, 1e5, 1e7, 1e9, 1e11)),
])
def test_table5_alpha_sweeps(name, k, alphas):
    _, cfgs = _cfgs(name)
    _common(cfgs)
    assert {c["k_sn"] for c in cfgs} == {k}
    assert {(c["loss"], c["alpha"]) for c in cfgs} == {(lo, a) for lo in TABLE5_LOSSES for a in alphas}


def test_degenerate_table():
    _, cfgs = _cfgs("lipschitz-degenerate")
    _common(cfgs)
    assert {(c["k_sn"], c["alpha"]) for c in cfgs} == {(50.0, 1e-25)}
    assert {c["loss"] for c in cfgs} == {"wgan", "ns", "ls0", "cos", "exp"}


def _n_sn_layers(arch: str, dataset: str) -> int:
    from trainables.data.datasets import channels
    from trainables.nets.models import build_discriminator
    from trainables.gan.regularizers import get_regularizer

    reg = get_regularizer("sn", k_sn=0.5)
    D = reg.apply(build_discriminator(arch, channels=channels(dataset)))
    return reg.n_layers(D)


def test_eps_counterfactual_scales_eps_by_k_to_the_n():
    _, cfgs = _cfgs("lipschitz-eps-counterfactual")
    _common(cfgs)
    assert {c["loss"] for c in cfgs} == TABLE2_LOSSES
    eps0 = 1e-8
    for ds, arch in DATASETS:
        n = _n_sn_layers(arch, ds)
        for k in (0.2, 0.25, 0.5, 1.0):
            for loss in TABLE2_LOSSES:
                eps = {c["eps"] for c in cfgs if (c["dataset"], c["k_sn"], c["loss"], c["seed"])
                       == (ds, k, loss, 0)}
                want = {eps0, eps0 * k ** n}
                assert len(eps) == len(want), (ds, k, loss, eps)
                for e in eps:
                    assert any(math.isclose(e, w, rel_tol=1e-9) for w in want), (ds, k, e, n)
    assert _n_sn_layers("dcgan32", "mnist") == 4  # docs/design.md's n for the 32x32 D


def test_search_preset_spans_the_mission_space():
    from study.spec import check_study

    spec, _ = load_study("search-lipschitz")
    check_study(spec)
    assert spec.search == "optuna" and spec.sampler == "tpe" and spec.scheduler == "asha"
    assert spec.space["alpha"].loguniform == (1e-25, 1e11)
    assert spec.space["eps"].loguniform is not None
    k_keys = {"k_sn": "sn", "k_gp": "gp", "gran_k": "gran", "alr_k": "alr"}
    for key, reg in k_keys.items():
        assert spec.space[key].when == {"regularizer": reg}
    assert set(spec.space["regularizer"].choice) == set(k_keys.values()) | {"none"}
    assert {"rmsprop", "adam"} == set(spec.space["optimizer"].choice)
    first = spec.points_to_evaluate[0]
    assert first == {"loss": "ns", "regularizer": "sn", "k_sn": 1.0, "alpha": 1.0,
                     "optimizer": "rmsprop", "eps": 1e-8}
    assert spec.num_samples * len(spec.seed_list) <= 300  # fits a 64 GiB disk at 2 checkpoints


@pytest.mark.parametrize("name", ["lipschitz-table2", "lipschitz-table5a", "lipschitz-table5b",
                                  "lipschitz-degenerate", "lipschitz-eps-counterfactual"])
def test_header_gpu_hours_match_the_cost_model(name):
    from study.cost import study_gpu_hours

    spec, cfgs = _cfgs(name)
    stated = float(re.search(r"about\s+([\d.]+)\s+GPU-hours", spec.description).group(1))
    modelled = study_gpu_hours(cfgs)
    assert stated == pytest.approx(modelled, rel=0.1), (stated, modelled)


def test_search_header_full_run_bound_matches_the_cost_model():
    from study.cost import study_gpu_hours
    from study.spec import representative_configs

    spec, _ = load_study("search-lipschitz")
    stated = float(re.search(r"at most\s+([\d.]+)\s+GPU-hours", spec.description).group(1))
    per_trial = study_gpu_hours([c for c in representative_configs(spec)
                                 if c["regularizer"] == "sn"][:1])
    assert stated == pytest.approx(per_trial * spec.num_samples * len(spec.seed_list), rel=0.15)
