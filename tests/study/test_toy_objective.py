"""Searches over the 2-D toys optimise ``toy_quality`` (modes covered × high-quality share, in
[0, 1], maximised), not the toys' data-space Fréchet distance: the value a toy evaluation logs,
the metric/mode Tune and the searchers use, what a diverged toy trial reports, and what the Optuna
study is told. No Ray: searchers are driven as Tune drives them."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import yaml

from study.search import (PackedOptunaSearch, build_searcher, load_optuna_study, objective,
                          objective_text)
from study.spec import parse_study
from trainables.metrics.toy_quality import HQ_REAL, TOY_QUALITY, diverged_values, toy_quality

TOY = {"dataset": "ring8", "arch": "mlp", "width": 0.25, "iterations": 12, "stats_every": 4,
       "eval_every": 6, "fid_samples": 100, "batch_size": 16, "device": "cpu"}
SPACE = {"loss": {"choice": ["ns", "wgan"]}, "k_sn": {"loguniform": [0.5, 5.0]}}


def _spec(fixed=TOY, **over):
    study = {"name": "toy", "search": "optuna", "num_samples": 4, "fixed": dict(fixed),
             "space": dict(SPACE), **over}
    return parse_study(yaml.safe_dump(study, sort_keys=False), "study.yaml")


class _Modes(torch.nn.Module):
    """A 'generator' that puts sample i exactly on mode ``picks[i % len(picks)]``."""

    def __init__(self, modes, picks):
        super().__init__()
        self.register_buffer("points", modes[list(picks)].float())

    def forward(self, z):
        return self.points[torch.arange(z.shape[0]) % len(self.points)]


@pytest.mark.parametrize("picks, want", [(range(8), 1.0), ((0, 4), 0.25)])
def test_a_toy_evaluation_logs_its_toy_quality(picks, want):
    from trainables.data.datasets import toy_modes
    from trainables.metrics.evaluation import Evaluator

    cfg = {"dataset": "ring8", "seed": 0, "z_dim": 2, "fid_samples": 400}
    ev = Evaluator(cfg, torch.device("cpu"), None)
    res = ev.evaluate(_Modes(toy_modes("ring8"), picks))
    assert res["modes_covered"] == len(list(picks)) and res["hq_share"] == 1.0
    assert res[TOY_QUALITY] == pytest.approx(want)
    final = ev.evaluate(_Modes(toy_modes("ring8"), picks), final=True)
    assert final[f"{TOY_QUALITY}_final"] == pytest.approx(want)


def test_toy_quality_is_coverage_times_the_high_quality_share_relative_to_real_data():
    assert toy_quality(8, 8, HQ_REAL) == pytest.approx(1.0)
    assert toy_quality(8, 8, 1.0) == pytest.approx(1.0)  # capped at real data's share
    assert toy_quality(2, 8, 0.0) == 0.0  # 2 modes, no sample near any: worthless, whatever FD
    assert toy_quality(4, 8, HQ_REAL / 2) == pytest.approx(0.25)


def test_toy_searches_maximise_toy_quality_and_image_searches_minimise_fid():
    assert objective(_spec()) == (TOY_QUALITY, "max")
    assert objective_text(_spec()).startswith("toy_quality (maximised)")
    image = dict(TOY, dataset="fashion_mnist_mini", arch="dcgan32", width=0.125)
    assert objective(_spec(image)) == ("fid", "min")
    assert diverged_values("ring8") == {"fid": math.inf, TOY_QUALITY: 0.0}
    assert diverged_values("fashion_mnist_mini") == {"fid": math.inf}


def test_a_toy_optuna_searcher_is_told_toy_quality_not_the_frechet_distance(tmp_path):
    """The issue's case: the lowest FD (0.15) with 2 of 8 modes and hq 0 must not be the best."""
    spec = _spec(seeds=2)
    loc = str(tmp_path / "optuna.journal")
    searcher = build_searcher(spec, loc, "toy")  # Repeater(PersistentOptunaSearch) for 2 seeds
    assert (searcher.metric, searcher.mode) == (TOY_QUALITY, "max")
    reports = {  # per configuration: its two seeds' last reports
        "collapsed": [{"fid": 0.15, TOY_QUALITY: toy_quality(2, 8, 0.0)}] * 2,
        "good": [{"fid": 3.54, TOY_QUALITY: 0.75}, {"fid": 5.0, TOY_QUALITY: 0.65}],
        "diverged": [{"fid": 2.0, TOY_QUALITY: 0.9}, {**diverged_values("ring8"), "diverged": 1.0}],
    }
    n = 0
    for name, seeds in reports.items():
        for rep in seeds:
            tid = f"t{n}"
            n += 1
            assert searcher.suggest(tid) is not None
            searcher.on_trial_complete(tid, {**rep, "training_iteration": 2})
    study = load_optuna_study(loc, "toy")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.metric_names == [TOY_QUALITY]
    values = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    assert values == pytest.approx([0.0, 0.7, 0.45])
    assert study.best_value == pytest.approx(0.7)


def test_a_packed_toy_search_tells_each_configuration_its_mean_toy_quality(tmp_path):
    from trainables.ray.trainable import pack_report

    spec = _spec(population=4, seeds=2)
    loc = str(tmp_path / "optuna.journal")
    searcher = PackedOptunaSearch(spec, loc, "packed")
    assert (searcher.metric, searcher.mode) == (TOY_QUALITY, "max")
    searcher.suggest("t0")  # 2 configurations x 2 seeds
    latest = [{"fid": 0.15, TOY_QUALITY: 0.0}, {"fid": 0.2, TOY_QUALITY: 0.1},
              {"fid": 4.0, TOY_QUALITY: 0.8}, {"fid": 9.0, TOY_QUALITY: 0.5}]
    results = [None, None, None, {"status": "diverged"}]
    rep = pack_report(12, latest, results)
    assert rep[TOY_QUALITY] == 0.8 and rep[f"{TOY_QUALITY}_m3"] == 0.5
    searcher.on_trial_result("t0", {**rep, "training_iteration": 2})
    searcher.on_trial_complete("t0", {**rep, "training_iteration": 2})
    study = load_optuna_study(loc, "packed")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    # config 0: mean of 0.0 and 0.1; config 1: its diverged seed counts as the worst value, 0
    assert [t.value for t in study.trials] == pytest.approx([0.05, 0.4])
    assert study.trials[0].intermediate_values == pytest.approx({12: 0.05})
    assert pack_report(12, [{}, {}], [{"status": "diverged"}] * 2).get(TOY_QUALITY) is None
