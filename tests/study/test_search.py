"""The Optuna side without Ray: conditional define-by-run space, the papers' defaults tried first,
a persisted study optuna-dashboard can open, a diverged trial (FID inf) ranked worst."""

from __future__ import annotations

import math

import optuna

from study.search import DefineByRun, PersistentOptunaSearch, load_optuna_study, open_storage
from study.spec import load_study


def test_define_by_run_suggests_only_the_chosen_regularizers_keys(tmp_path):
    spec, _ = load_study("search-lipschitz")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: (DefineByRun(spec)(t), 0.0)[1], n_trials=60)
    k_of = {"sn": "k_sn", "gp": "k_gp", "gran": "gran_k", "alr": "alr_k", "none": None}
    for t in study.trials:
        k_keys = {k for k in t.params if k in {"k_sn", "k_gp", "gran_k", "alr_k"}}
        want = {k_of[t.params["regularizer"]]} - {None}
        assert k_keys == want, t.params
        assert 1e-25 <= t.params["alpha"] <= 1e11


def test_persistent_searcher_tries_defaults_first_and_ranks_divergence_worst(tmp_path):
    spec, _ = load_study("search-lipschitz")
    loc = str(tmp_path / "optuna.journal")
    searcher = PersistentOptunaSearch(
        DefineByRun(spec), metric="fid", mode="min", storage=open_storage(loc), study_name="s",
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate])
    searcher.set_search_properties("fid", "min", {})
    first = searcher.suggest("t0")
    assert first == spec.points_to_evaluate[0]
    searcher.on_trial_result("t0", {"fid": 50.0, "training_iteration": 1})
    searcher.on_trial_complete("t0", {"fid": 40.0, "training_iteration": 2})
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"fid": math.inf, "training_iteration": 1})  # diverged
    study = load_optuna_study(loc, "s")  # what optuna-dashboard opens
    states = [(t.state.name, t.value) for t in study.trials if t.state.name != "WAITING"]
    assert states == [("COMPLETE", 40.0), ("COMPLETE", math.inf)]
    # the other papers' defaults wait in the queue, ahead of TPE's own suggestions
    assert sum(t.state.name == "WAITING" for t in study.trials) == len(spec.points_to_evaluate) - 2
    assert study.best_value == 40.0
    # a result for a trial the storage already finished (a restored searcher) is skipped
    searcher._completed_trials.discard("t0")
    searcher.on_trial_result("t0", {"fid": 1.0, "training_iteration": 3})
    searcher.on_trial_complete("t0", {"fid": 1.0, "training_iteration": 3})
    assert load_optuna_study(loc, "s").best_value == 40.0
