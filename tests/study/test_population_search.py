"""Packed Optuna / random studies (issue #12): ``population: P`` with ``search: optuna|random``.

``study.search.PackedOptunaSearch`` fills a pack by asking the persistent Optuna study
⌊P / n_seeds⌋ times (TPE with ``constant_liar``), runs each asked configuration with every seed in
that pack, and tells each configuration's Optuna trial the mean FID of its seeds (inf when one
diverged), once. The unit tests drive it with a fake stream of pack reports (the keys
``trainables.ray.trainable.pack_report`` writes); the last test runs a small real study.
"""

from __future__ import annotations

import math
import pickle
import textwrap

import optuna
import pytest
import yaml

from study.limits import StudyError
from study.search import PackedOptunaSearch, build_searcher, configs_per_pack, load_optuna_study
from study.spec import parse_study

# an image dataset: these packs are told FID (a toy pack is told toy_quality: test_toy_objective)
FIXED = {"dataset": "fashion_mnist_mini", "arch": "dcgan32", "width": 0.125, "iterations": 12,
         "stats_every": 4, "eval_every": 6, "fid_samples": 100, "batch_size": 16, "device": "cpu"}
SPACE = {"loss": {"choice": ["ns", "wgan", "ls"]}, "k_sn": {"loguniform": [0.5, 5.0]}}


def _spec(**over):
    study = {"name": "packed", "search": "optuna", "population": 4, "num_samples": 8,
             "fixed": dict(FIXED), "space": dict(SPACE), **over}
    return parse_study(yaml.safe_dump(study, sort_keys=False), "study.yaml")


def _searcher(tmp_path, **over):
    spec = _spec(**over)
    loc = str(tmp_path / "optuna.journal")
    return spec, loc, PackedOptunaSearch(spec, loc, "packed")


def _trials(loc):
    return load_optuna_study(loc, "packed").trials


def _report(step, fids, diverged=()):
    """A pack report as ``trainables.ray.trainable.pack_report`` makes it."""
    out = {"step": step, "training_iteration": step // 6, "diverged": 0.0,
           "fid": min(f for i, f in enumerate(fids) if i not in diverged)}
    for i, f in enumerate(fids):
        out[f"fid_m{i}"] = f
        out[f"diverged_m{i}"] = 1.0 if i in diverged else 0.0
    return out


def _params(member):
    return {k: v for k, v in member.items() if k in SPACE}


def test_a_pack_asks_p_configurations_of_one_shape_from_a_constant_liar_tpe(tmp_path):
    from trainables.config import validate_trial
    from trainables.pack.packing import pack_signature

    spec, loc, searcher = _searcher(tmp_path)
    assert isinstance(searcher._sampler, optuna.samplers.TPESampler)
    assert searcher._sampler._constant_liar is True
    pack = searcher.suggest("t0")["pack"]
    assert len(pack) == 4
    for m in pack:
        assert {k: m[k] for k in FIXED} == FIXED and m["seed"] == 0
    assert len({pack_signature(validate_trial(m, check_data=False)) for m in pack}) == 1
    trials = _trials(loc)  # four asks, all pending together, one per member
    assert [t.state.name for t in trials] == ["RUNNING"] * 4
    assert [t.params for t in trials] == [_params(m) for m in pack]
    assert len({t.params["k_sn"] for t in trials}) == 4
    second = searcher.suggest("t1")["pack"]
    assert len(second) == 4 and len(_trials(loc)) == 8
    assert searcher.suggest("t2") == searcher.FINISHED  # num_samples: 8 configurations


def test_each_member_is_told_its_fid_once(tmp_path):
    spec, loc, searcher = _searcher(tmp_path)
    searcher.suggest("t0")
    searcher.on_trial_result("t0", _report(6, [30.0, 31.0, 32.0, 33.0]))
    final = _report(12, [20.0, 21.0, 22.0, 23.0])
    searcher.on_trial_result("t0", final)
    searcher.on_trial_complete("t0", final)
    trials = _trials(loc)
    assert [(t.state.name, t.value) for t in trials] == [
        ("COMPLETE", 20.0), ("COMPLETE", 21.0), ("COMPLETE", 22.0), ("COMPLETE", 23.0)]
    assert [t.intermediate_values for t in trials] == [
        {6: 30.0, 12: 20.0}, {6: 31.0, 12: 21.0}, {6: 32.0, 12: 22.0}, {6: 33.0, 12: 23.0}]
    # Tune calling again, or a searcher restored from a checkpoint taken before the tell (a
    # resumed study re-runs the pack): the storage already holds the values, nothing is re-told
    searcher.on_trial_complete("t0", _report(12, [1.0, 1.0, 1.0, 1.0]))
    stale = pickle.loads(pickle.dumps(searcher))
    stale._done.clear()
    stale.on_trial_result("t0", _report(12, [2.0, 2.0, 2.0, 2.0]))
    stale.on_trial_complete("t0", _report(12, [2.0, 2.0, 2.0, 2.0]))
    assert [(t.state.name, t.value, t.intermediate_values) for t in _trials(loc)] == [
        (t.state.name, t.value, t.intermediate_values) for t in trials]


def test_seeds_are_replicates_in_one_pack_and_the_told_value_is_their_mean(tmp_path):
    spec, loc, searcher = _searcher(tmp_path, population=5, seeds=2, num_samples=3)
    assert configs_per_pack(spec) == 2
    from study.packs import n_runs, n_trials, population_notes

    assert n_trials(spec) == 2 and n_runs(spec) == 6
    assert population_notes(spec) == ["population 5: each pack asks 2 configuration(s) x 2 "
                                      "seed(s) = 4 members; 3 configurations in 2 pack(s)"]
    pack = searcher.suggest("t0")["pack"]
    assert [m["seed"] for m in pack] == [0, 1, 0, 1]
    assert _params(pack[0]) == _params(pack[1]) != _params(pack[2]) == _params(pack[3])
    last = searcher.suggest("t1")["pack"]  # the 3rd configuration alone: num_samples holds
    assert [m["seed"] for m in last] == [0, 1]
    assert searcher.suggest("t2") == searcher.FINISHED
    searcher.on_trial_complete("t0", _report(12, [10.0, 20.0, 30.0, 50.0]))
    searcher.on_trial_complete("t1", _report(12, [7.0, 8.0]))
    assert [t.value for t in _trials(loc)] == [15.0, 40.0, 7.5]


def test_a_diverged_member_makes_its_configuration_inf(tmp_path):
    spec, loc, searcher = _searcher(tmp_path, population=4, seeds=2, num_samples=4)
    searcher.suggest("t0")
    searcher.suggest("t1")
    # member 1 (config 0, seed 1) diverged: its fid_m1 is its last finite FID, diverged_m1 = 1
    searcher.on_trial_result("t0", _report(6, [30.0, 31.0, 32.0, 33.0], diverged={1}))
    searcher.on_trial_complete("t0", _report(12, [20.0, 31.0, 22.0, 24.0], diverged={1}))
    # every member of the pack diverged: run_pack's last report has no fid_m<i>
    searcher.on_trial_complete("t1", {"fid": math.inf, "diverged": 1.0, "step": 9})
    trials = _trials(loc)
    assert [(t.state.name, t.value) for t in trials] == [
        ("COMPLETE", math.inf), ("COMPLETE", 23.0), ("COMPLETE", math.inf),
        ("COMPLETE", math.inf)]
    assert trials[0].intermediate_values == {} and trials[1].intermediate_values == {6: 32.5}
    assert load_optuna_study(loc, "packed").best_value == 23.0


def test_an_errored_pack_fails_its_optuna_trials(tmp_path):
    spec, loc, searcher = _searcher(tmp_path)
    searcher.suggest("t0")
    searcher.on_trial_result("t0", _report(6, [30.0, 31.0, 32.0, 33.0]))
    searcher.on_trial_complete("t0", None, error=True)
    assert [t.state.name for t in _trials(loc)] == ["FAIL"] * 4


def test_restore_keeps_the_checkpoints_packs_and_fails_later_asks(tmp_path):
    """Tune pickles the searcher and restores its last experiment checkpoint; the storage has
    moved on since (asks made after it: stale, FAIL); the papers' defaults still go first."""
    points = [{"loss": "ns", "k_sn": 1.0}, {"loss": "wgan", "k_sn": 1.0},
              {"loss": "ls", "k_sn": 1.0}]
    spec, loc, searcher = _searcher(tmp_path, population=2, num_samples=6,
                                    points_to_evaluate=points)
    tuner_pkl = pickle.dumps(searcher)  # what Tune keeps of the searcher in tuner.pkl
    assert [_params(m) for m in searcher.suggest("a")["pack"]] == points[:2]
    ckpt = str(tmp_path / "searcher-state.pkl")
    searcher.save(ckpt)
    later = searcher.suggest("b")["pack"]  # asked after the checkpoint; the driver dies
    assert _params(later[0]) == points[2]
    searcher.on_trial_complete("a", _report(12, [5.0, 6.0]))  # told after the checkpoint

    restored = pickle.loads(tuner_pkl)
    restored.restore(ckpt)
    states = [t.state.name for t in _trials(loc)]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "WAITING"]
    # the re-run pack "a" ends again: no second tell; the default asked by the lost pack is
    # asked again, first
    restored.on_trial_complete("a", _report(12, [9.0, 9.0]))
    assert [t.value for t in _trials(loc)[:2]] == [5.0, 6.0]
    again = restored.suggest("c")["pack"]
    assert _params(again[0]) == points[2]
    restored.suggest("d")
    assert restored.suggest("e") == restored.FINISHED  # 6 configurations in all, as before


def test_random_search_packs_with_a_random_sampler(tmp_path):
    from study.tuner import param_space

    spec, loc, searcher = _searcher(tmp_path, search="random", population=3, num_samples=3)
    assert isinstance(searcher._sampler, optuna.samplers.RandomSampler)
    assert param_space(spec) == {}
    assert len(searcher.suggest("t0")["pack"]) == 3
    searcher.on_trial_complete("t0", _report(12, [3.0, 2.0, 1.0]))
    assert [t.value for t in _trials(loc)] == [3.0, 2.0, 1.0]


def test_validation_refuses_searched_shape_keys_and_more_seeds_than_a_pack(tmp_path):
    space = {"regularizer": {"choice": ["sn", "gp"]}, "width": {"choice": [0.25, 0.5]},
             "loss": SPACE["loss"], "k_sn": {**SPACE["k_sn"], "when": {"regularizer": "sn"}}}
    fixed = {k: v for k, v in FIXED.items() if k != "width"}
    with pytest.raises(StudyError) as err:
        _spec(space=space, fixed=fixed)
    msg = str(err.value)
    assert "population" in msg and "'regularizer', 'width'" in msg and "population: 1" in msg
    assert "'loss'" not in msg and "'k_sn'" not in msg
    with pytest.raises(StudyError, match=r"3 seeds do not fit in a pack of 2"):
        _spec(population=2, seeds=3)
    _spec(population=1, space=space, fixed=fixed)  # unpacked: anything may be searched


def test_a_regularizer_the_population_cannot_batch_runs_one_config_per_trial(tmp_path):
    from ray.tune.search import Repeater

    from study.packs import n_trials, population_notes
    from study.tuner import param_space

    fixed = {**FIXED, "regularizer": "gran"}
    spec = _spec(fixed=fixed, space={"loss": SPACE["loss"]}, seeds=2, num_samples=3)
    assert configs_per_pack(spec) == 0
    assert n_trials(spec) == 6 and "trial" in param_space(spec)
    assert population_notes(spec) == ["regularizer 'gran' runs one config per trial "
                                      "(population supports none, sn, gp)"]
    assert isinstance(build_searcher(spec, str(tmp_path / "o.journal"), "s"), Repeater)


def test_pack_report_flags_each_diverged_member():
    from trainables.ray.trainable import pack_report

    latest = [{"fid": 10.0}, {"fid": 12.0, "diverged": 1.0}, {}]
    results = [None, {"status": "diverged", "step": 4, "reason": "nan"}, None]
    rep = pack_report(6, latest, results)
    assert rep["fid"] == 10.0 and rep["pack_live"] == 2.0
    assert [rep[f"diverged_m{i}"] for i in range(3)] == [0.0, 1.0, 0.0]
    assert rep["fid_m1"] == 12.0 and rep["fid_m2"] == math.inf


# --- one real study ------------------------------------------------------------------------------

STUDY = """
    name: packed-optuna
    search: optuna
    population: 4
    num_samples: 6
    fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 12, stats_every: 4,
            eval_every: 6, fid_samples: 100, batch_size: 16, device: cpu}
    space:
      loss: {choice: [ns, wgan, ls]}
      k_sn: {loguniform: [0.5, 5.0]}
    points_to_evaluate: [{loss: ns, k_sn: 1.0}]
    max_concurrent: 2
    resources: {cpu: 1, gpu: 0}
"""


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_packed_optuna_study_records_every_member_and_tells_optuna(tmp_path, ray_local,
                                                                     monkeypatch):
    from mlflow.tracking import MlflowClient

    from study.statefile import read_state
    from study.tuner import run_study

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY))
    spec = parse_study(path.read_text(), str(path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_study(spec, path.read_text(), tracking_uri=uri,
                        storage_path=str(tmp_path / "results"), quiet=True)
    assert outcome.complete and outcome.not_suggested == 0
    assert [t.status for t in outcome.trials] == ["finished"] * 6

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("packed-optuna")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if r.data.tags.get("mlflow.parentRunId")]
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    # one child run per member: two packs (4 + 2 configurations), members m0.. of each
    tags = sorted(r.data.tags["lipstudy.trial_id"] for r in runs)
    packs = {t.split("/m")[0] for t in tags}
    assert len(packs) == 2 and len(set(tags)) == 6
    assert sorted(r.data.tags["lipstudy.pack_size"] for r in runs) == ["2"] * 2 + ["4"] * 4
    for r in runs:
        assert r.data.tags["lipstudy.trial_id"].endswith(f"/m{r.data.tags['lipstudy.pack_member']}")

    state = read_state(outcome.storage_path)
    ot = load_optuna_study(state["optuna_storage"], state["optuna_study_name"])
    assert [t.state.name for t in ot.trials] == ["COMPLETE"] * 6
    assert ot.trials[0].params == {"loss": "ns", "k_sn": 1.0}  # the papers' default first
    unmatched = list(runs)
    for t in ot.trials:  # each configuration's value is its member's last toy quality (a toy)
        match = [r for r in unmatched if r.data.params["loss"] == t.params["loss"]
                 and math.isclose(float(r.data.params["k_sn"]), t.params["k_sn"], rel_tol=1e-9)]
        assert len(match) == 1, (t.params, [r.info.run_name for r in unmatched])
        unmatched.remove(match[0])
        hist = client.get_metric_history(match[0].info.run_id, "toy_quality")
        last = max(hist, key=lambda m: m.step)
        assert last.step == 12 and math.isclose(t.value, last.value, rel_tol=1e-6), (
            t.params, t.value, last.value)
        assert set(t.intermediate_values) == {6, 12}



# --- a real driver SIGKILLed mid-pack, then `lipstudy resume` (slow) ---------------------------

PACKED_CHAOS = """
    name: chaos-packed-optuna
    search: optuna
    fixed: {dataset: ring8, arch: mlp, width: 0.25, iterations: 60, stats_every: 10,
            eval_every: 20, fid_samples: 40, batch_size: 16, device: cpu}
    space:
      loss: {choice: [ns, wgan, hinge]}
      alpha: {loguniform: [0.1, 10.0]}
    points_to_evaluate: [{loss: ns, alpha: 1.0}]
    num_samples: 3
    seeds: 2
    population: 4
    max_concurrent: 2
    resources: {cpu: 1, gpu: 0}
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.scenario
def test_a_packed_optuna_study_sigkilled_mid_pack_resumes_without_losing_or_retelling(
        tmp_path, monkeypatch):
    """3 configurations x 2 seeds in packs of 2 configurations (2 Tune trials); the driver is
    SIGKILLed at the first progress line. After ``lipstudy resume`` (the chaos tests' checks):
    one FINISHED run per member, every step once, the progress counts 2 packs and the summary
    6 trials, the journal holds one COMPLETE trial per configuration whose value is the mean
    final FID of its two seeds' runs, the papers' default was asked first, and a second resume
    changes nothing."""
    import signal

    from tests.study import test_chaos as chaos

    monkeypatch.setitem(chaos.STUDIES, "packed-optuna", PACKED_CHAOS)
    study = chaos.Study(tmp_path, "packed-optuna", None)
    try:
        rc, text = study.run(moment=chaos._progress, sig=signal.SIGKILL)
        assert rc == -signal.SIGKILL, text
        chaos.finish_and_check(study, 6, 60, compare=0, optuna=True, tune_trials=2)
        from study.statefile import read_state

        state = read_state(study.study_dir)
        ot = load_optuna_study(state["optuna_storage"], state["optuna_study_name"])
        assert sum(t.state.name == "COMPLETE" for t in ot.trials) == 3
        first = min((t for t in ot.trials if t.state.name == "COMPLETE"), key=lambda t: t.number)
        assert first.params == {"loss": "ns", "alpha": 1.0}, first.params
    finally:
        study.close()
