"""The FID scale every image run carries (issue #10; trainables/metrics/evaluation.py): fid_floor and
fid_init at step 0, fid_quality at every evaluation, the *_final scale at the final evaluation's N,
exact resume without recomputing, one MLflow entry each, nothing for the 2-D toys."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from trainables.data import datasets as data_lib
from trainables.metrics import evaluation
from trainables.metrics import extractors
from trainables.metrics import fid_cache
from trainables.metrics import fid as fid_lib
from trainables.config import validate_trial
from tests.trainables.tiny import images
from trainables.metrics.evaluation import fid_quality
from trainables import loop as loop_mod
from trainables.train import Callbacks, GANTrial, train


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """A fresh reference/floor cache per test (cache hits are asserted, not inherited)."""
    monkeypatch.setenv("LIPSTUDY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Recorder(Callbacks):
    def __init__(self):
        self.stats, self.evals, self.final, self.states = {}, {}, None, {}

    def on_stats(self, step, metrics):
        self.stats[step] = dict(metrics)

    def on_eval(self, step, metrics, grid):
        self.evals[step] = dict(metrics)

    def on_final(self, step, metrics, samples):
        self.final = (step, dict(metrics))

    def on_checkpoint(self, step, state, metrics):
        self.states[step] = state


def run(cfg, state=None):
    rec = Recorder()
    result = train(cfg, rec, state=state)
    return rec, result


def by_hand(fid, init, floor):
    return math.log(init / fid) / math.log(init / floor)


def independent_floor(cfg, n):
    """FID of n real training images (the floor's fixed subset) vs. the full reference split,
    computed here without the floor code."""
    ext = fid_lib.get_extractor("domain", "cpu")
    train_set = data_lib.load_images(cfg["dataset"], None, cfg["resolution"], "train")
    ref = data_lib.load_images(cfg["dataset"], None, cfg["resolution"], cfg["fid_ref_split"])
    real = train_set.batch(fid_lib.floor_indices(len(train_set), n))
    return fid_lib.fid_from_features(fid_lib.images_to_features(real, ext),
                                     fid_lib.images_to_features(ref.batch(torch.arange(len(ref))), ext))


# ----------------------------------------------------------------------------------------------

def test_fid_quality_formula_is_raw_and_nan_where_undefined():
    assert fid_quality(1000.0, 1000.0, 5.0) == 0.0  # the untrained generator
    assert fid_quality(5.0, 1000.0, 5.0) == pytest.approx(1.0)  # real data
    assert fid_quality(math.sqrt(5000.0), 1000.0, 5.0) == pytest.approx(0.5)  # geometric midpoint
    assert fid_quality(2000.0, 1000.0, 5.0) < 0  # worse than untrained: not clipped
    assert fid_quality(2.0, 1000.0, 5.0) > 1  # below the floor: not clipped
    for bad in ((math.nan, 1000.0, 5.0), (math.inf, 1000.0, 5.0), (0.0, 1000.0, 5.0),
                (10.0, math.nan, 5.0), (10.0, 5.0, 5.0), (10.0, 4.0, 5.0)):
        assert math.isnan(fid_quality(*bad)), bad


def test_floor_is_real_train_images_vs_reference_and_cached(cache_dir, monkeypatch):
    cfg = images(fid_samples=50)
    ext = fid_lib.get_extractor("domain", "cpu")
    train_set = data_lib.load_images("fashion_mnist_mini", None, 32, "train")
    ref = data_lib.load_images("fashion_mnist_mini", None, 32, "test")
    ref_feats = fid_lib.images_to_features(ref.batch(torch.arange(len(ref))), ext)
    ref_stats = fid_lib.feature_stats(ref_feats)
    calls = []

    def real(idx):
        calls.append(idx.clone())
        return train_set.batch(idx)

    args = ("fashion_mnist_mini", "train", 32, "domain", 50, len(train_set), real, "test",
            ref_stats, len(ref))
    value = fid_lib.fid_floor(*args, extractor=ext)
    assert value == pytest.approx(independent_floor(cfg, 50), rel=1e-9)
    assert len(calls) == 1 and torch.equal(calls[0], fid_lib.floor_indices(len(train_set), 50))
    # the subset is fixed (not the trial seed's) and nested across N
    assert torch.equal(fid_lib.floor_indices(len(train_set), 80)[:50], calls[0])
    assert len(set(calls[0].tolist())) == 50
    path = fid_lib.floor_cache_path("fashion_mnist_mini", "train", 32, "domain", 50, "test",
                                    len(ref))
    assert path.is_file() and path.name == \
        "fashion_mnist_mini-train-r32-domain-n50-floor-vs-test-n2000.npz"
    # a hit: no images, no features, no Fréchet distance
    monkeypatch.setattr(fid_cache, "images_to_features",
                        lambda *a, **k: pytest.fail("features recomputed on a cache hit"))
    monkeypatch.setattr(fid_cache, "fid_from_stats",
                        lambda *a, **k: pytest.fail("floor recomputed on a cache hit"))
    assert fid_lib.fid_floor(*args, extractor=ext) == value
    assert len(calls) == 1
    with pytest.raises(ValueError, match="n ≤ 10"):
        fid_lib.floor_indices(10, 11)


def test_scale_at_step_0_and_quality_at_every_evaluation():
    cfg = images()
    rec, result = run(cfg)
    scale = rec.stats[0]
    assert set(scale) == {"fid_floor", "fid_init"}
    # fid_init: what evaluate() gives for the untrained G, on the same fixed z
    assert scale["fid_init"] == GANTrial(cfg).evaluate()["fid"]
    assert scale["fid_floor"] == pytest.approx(independent_floor(cfg, 40), rel=1e-9)
    assert 0 < scale["fid_floor"] < scale["fid_init"]
    assert set(rec.evals) == {3, 6}
    for ev in rec.evals.values():
        assert ev["fid_quality"] == pytest.approx(
            by_hand(ev["fid"], scale["fid_init"], scale["fid_floor"]), rel=1e-12)
    # the final evaluation reuses the last one (same N, same z): so does its scale
    step, final = rec.final
    assert step == 6
    assert final["fid_floor_final"] == scale["fid_floor"]
    assert final["fid_init_final"] == scale["fid_init"]
    assert final["fid_quality_final"] == rec.evals[6]["fid_quality"]
    for k in ("fid_floor", "fid_init", "fid_quality", "fid_quality_final"):
        assert k in result.metrics, k
    assert rec.states[6]["fid_scale"] == scale  # travels with the checkpoint


def test_final_scale_is_taken_at_the_final_n_and_z():
    cfg = images(fid_final_samples=80)
    rec, _ = run(cfg)
    _, final = rec.final
    untrained = GANTrial(cfg).evaluate(final=True)
    assert final["fid_init_final"] == untrained["fid_final"]
    assert final["fid_floor_final"] == pytest.approx(independent_floor(cfg, 80), rel=1e-9)
    assert final["fid_floor_final"] != rec.stats[0]["fid_floor"]  # FID is biased by N
    assert final["fid_quality_final"] == pytest.approx(
        by_hand(final["fid_final"], final["fid_init_final"], final["fid_floor_final"]), rel=1e-12)


def test_initial_generator_is_the_untrained_g_and_leaves_the_rng_alone():
    trial = GANTrial(images())
    fresh = {k: v.clone() for k, v in trial.G.state_dict().items()}
    with torch.no_grad():
        for p in trial.G.parameters():
            p.add_(1.0)
    rng = torch.get_rng_state()
    G0 = trial.initial_generator()
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in G0.state_dict().items():
        assert torch.equal(v, fresh[k]), k


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_resume_keeps_fid_init_without_recomputing(monkeypatch):
    cfg = images()
    full, _ = run(cfg)
    state = _roundtrip(full.states[3])
    assert state["fid_scale"] == full.stats[0]
    monkeypatch.setattr(loop_mod, "initial_scale",
                        lambda trial: pytest.fail("fid_init recomputed on resume"))
    monkeypatch.setattr(evaluation.Evaluator, "floor",
                        lambda self, n: pytest.fail("fid_floor recomputed on resume"))
    resumed, result = run(cfg, state)
    assert 0 not in resumed.stats  # logged once, by the first attempt
    assert result.metrics["fid_init"] == full.stats[0]["fid_init"]
    assert resumed.evals[6] == full.evals[6]  # fid, kid, fid_quality bit-equal
    assert resumed.final == full.final
    for part in ("G", "D"):
        for k, v in full.states[6][part].items():
            assert torch.equal(v, resumed.states[6][part][k]), (part, k)
    for part in ("data_gen", "noise_gen", "torch_rng"):
        assert torch.equal(full.states[6][part], resumed.states[6][part]), part


def test_state_without_a_scale_measures_it_on_the_rebuilt_untrained_g():
    cfg = images()
    full, _ = run(cfg)
    state = _roundtrip(full.states[3])
    del state["fid_scale"]  # a checkpoint written before the scale existed
    resumed, _ = run(cfg, state)
    assert resumed.stats[0] == full.stats[0]
    assert resumed.evals[6] == full.evals[6]


def test_scale_is_logged_once_at_step_0_across_a_restart(tmp_path):
    """A trial that crashes before its first checkpoint restarts from step 0 and measures the
    scale again: the logger's high-water mark drops the repeated step-0 entries."""
    from mlflow.tracking import MlflowClient

    from trainables.tracking.mlflow_logger import MlflowTrialLogger
    from trainables.names import TRIAL_ID_TAG
    from trainables.ray.trainable import MlflowCallbacks

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("scale", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="study").info.run_id
    cfg = images(iterations=4, stats_every=2, eval_every=4)

    def logger():
        return MlflowTrialLogger(uri, exp, name="t", params=cfg, parent_run_id=parent,
                                 tags={TRIAL_ID_TAG: "t0"})

    class Crash(RuntimeError):
        pass

    class CrashAt2(MlflowCallbacks):
        def on_stats(self, step, metrics):
            super().on_stats(step, metrics)
            if step == 2:
                raise Crash

    first = logger()
    with pytest.raises(Crash):
        train(cfg, CrashAt2(first, cfg))
    again = logger()  # same trial id and parent: continues the same run
    assert again.run_id == first.run_id and again.logged_steps()["fid_init"] == 0
    rec = Recorder()

    class Both(MlflowCallbacks):
        def on_stats(self, step, metrics):
            super().on_stats(step, metrics)
            rec.on_stats(step, metrics)

        def on_eval(self, step, metrics, grid):
            super().on_eval(step, metrics, grid)
            rec.on_eval(step, metrics, grid)

    train(cfg, Both(again, cfg))
    again.finish()
    hist = {k: [(m.step, m.value) for m in client.get_metric_history(again.run_id, k)]
            for k in ("fid_floor", "fid_init", "fid_quality")}
    assert hist["fid_floor"] == [(0, rec.stats[0]["fid_floor"])]
    assert hist["fid_init"] == [(0, rec.stats[0]["fid_init"])]
    assert hist["fid_quality"] == [(4, rec.evals[4]["fid_quality"])]


def test_toys_carry_no_scale():
    cfg = validate_trial(dict(dataset="ring8", arch="mlp", width=0.25, iterations=10,
                              stats_every=5, eval_every=5, fid_samples=100, batch_size=16,
                              device="cpu"))
    rec, result = run(cfg)
    assert 0 not in rec.stats
    seen = set(result.metrics).union(*rec.stats.values(), *rec.evals.values(), rec.final[1])
    assert not {k for k in seen if k.startswith(("fid_quality", "fid_init", "fid_floor"))}
    assert {"fid", "modes_covered", "hq_share", "fid_final"} <= seen
    assert rec.states[10]["fid_scale"] == {}


def test_nonfinite_fid_ends_the_trial_without_a_quality(monkeypatch):
    real_evaluate, calls = fid_lib.evaluate, []

    def nan_after_step_0(*a, **k):
        res = real_evaluate(*a, **k)
        calls.append(res["fid"])
        if len(calls) > 1:
            res["fid"] = math.nan
        return res

    monkeypatch.setattr(fid_lib, "evaluate", nan_after_step_0)
    rec, result = run(images())
    assert result.status == "diverged" and "non-finite fid" in result.reason
    assert rec.evals == {} and "fid_quality" not in result.metrics
    assert math.isfinite(result.metrics["fid_init"])


def test_nothing_is_extractor_specific(monkeypatch, cache_dir):
    """Under the name ``inception`` (a cheap stand-in with the real network's interface: 299 px
    input, so the clean-fid resize runs too) the same scale is measured and cached."""

    class StandIn(fid_lib.FeatureExtractor):
        name, dim, input_size = "inception", 16, 299

        def __init__(self, device="cpu"):
            super().__init__(device)
            self.fingerprint = "stand-in"
            self.proj = torch.randn(3 * 8 * 8, self.dim, generator=torch.Generator().manual_seed(0))

        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1) @ self.proj / 255

    monkeypatch.setitem(fid_lib.EXTRACTORS, "inception", StandIn)
    monkeypatch.setattr(extractors, "_INSTANCES", {})
    monkeypatch.setattr(data_lib, "load_images", _first(data_lib.load_images, 300))
    cfg = images(fid_extractor="inception", iterations=3, eval_every=3, fid_samples=30)
    rec, _ = run(cfg)
    scale = rec.stats[0]
    assert 0 < scale["fid_floor"] < scale["fid_init"]
    assert rec.evals[3]["fid_quality"] == pytest.approx(
        by_hand(rec.evals[3]["fid"], scale["fid_init"], scale["fid_floor"]), rel=1e-12)
    names = sorted(p.name for p in cache_dir.iterdir())
    assert "fashion_mnist_mini-train-r32-inception-n30-floor-vs-test-n300.npz" in names


def _first(load, n):
    """``load_images`` cut to its first ``n`` images (keeps the 299-px resize test short)."""

    def cut(*a, **k):
        full = load(*a, **k)
        x = full.batch(torch.arange(min(n, len(full))))
        return data_lib.TensorImageSet(data_lib.to_uint8(x), full.name, full.split)

    return cut
