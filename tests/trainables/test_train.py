"""The plain train function: exact resume, divergence, measurements that do not disturb training."""

import math

import pytest
import torch

from tests.trainables.tiny import images, toy
from trainables.train import Callbacks, GANTrial, train


class Recorder(Callbacks):
    def __init__(self):
        self.stats, self.evals, self.states, self.ended = {}, {}, {}, None

    def on_stats(self, step, metrics):
        self.stats[step] = dict(metrics)

    def on_eval(self, step, metrics, grid):
        assert grid.dim() == 3 and grid.shape[0] == 3 and 0 <= grid.min() and grid.max() <= 1
        self.evals[step] = dict(metrics)

    def on_checkpoint(self, step, state, metrics):
        self.states[step] = state

    def on_end(self, result):
        self.ended = result


def _params(trial_state):
    return {k: v for part in ("G", "D") for k, v in trial_state[part].items()}


def _final_state(cfg, state=None):
    rec = Recorder()
    train(cfg, rec, state=state)
    return rec, rec.states[max(rec.states)]


@pytest.mark.parametrize("make", [toy, images], ids=["toy-mlp", "dcgan32-embedded"])
def test_resume_from_checkpoint_continues_exactly(make):
    cfg = make()
    rec_full, full = _final_state(cfg)
    mid = min(rec_full.states)  # checkpoint at the first evaluation
    assert mid < cfg["iterations"]
    # a fresh process would torch.load(weights_only=True) this state: do the same round trip
    import io

    buf = io.BytesIO()
    torch.save(rec_full.states[mid], buf)
    buf.seek(0)
    restored = torch.load(buf, weights_only=True)
    rec_resumed, resumed = _final_state(cfg, state=restored)
    assert resumed["step"] == full["step"] == cfg["iterations"]
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # same metrics after the resume point, so MLflow curves continue seamlessly
    last = cfg["iterations"]
    assert rec_resumed.stats[last] == pytest.approx(rec_full.stats[last])
    assert rec_resumed.evals[last]["fid"] == pytest.approx(rec_full.evals[last]["fid"])


@pytest.mark.parametrize("make,kw", [
    (toy, {}),
    (images, {"regularizer": "gp", "d_norm": "bn", "iterations": 4, "eval_every": 4}),
    (images, {"regularizer": "gran", "loss": "wgan", "iterations": 4, "eval_every": 4}),
], ids=["toy-sn", "dcgan32-gp-bn", "dcgan32-gran"])
def test_measurements_do_not_disturb_training(make, kw):
    """Measuring every step (grad-norm distribution and finite-difference probe in eval mode, Ψ
    by autograd) leaves training bit-identical to measuring only at the end: no RNG draws, no
    spectral-norm power iteration, no BatchNorm running statistics, no parameter grads."""
    n = kw.get("iterations", 20)
    often = _final_state(make(**{**kw, "stats_every": 1}))[1]
    rarely = _final_state(make(**{**kw, "stats_every": n}))[1]
    for k, v in _params(often).items():  # includes SN u/v and BN running stats
        assert torch.equal(v, _params(rarely)[k]), k
    for part in ("data_gen", "noise_gen", "torch_rng"):
        assert torch.equal(often[part], rarely[part]), part


def test_exp_at_alpha_1e11_ends_as_diverged_with_step_and_reason():
    rec = Recorder()
    result = train(toy(loss="exp", alpha=1e11), rec)
    assert result.status == "diverged"
    assert 1 <= result.step <= 20
    assert "non-finite" in result.reason and "loss" in result.reason
    assert rec.ended is result
    assert result.metrics["diverged"] == 1.0


@pytest.mark.parametrize("loss", ["ns", "ls0", "cos", "exp", "wgan"])
def test_alpha_1e_minus_25_trains_without_nan(loss):
    rec = Recorder()
    result = train(toy(loss=loss, alpha=1e-25, iterations=10, eval_every=10), rec)
    assert result.status == "finished", result.reason
    for m in rec.stats.values():
        assert all(math.isfinite(v) for v in m.values())
        # centred losses stay O(1) although L(0)/alpha ~ 1e25
        assert abs(m["loss_d"]) < 1e3 and abs(m["loss_g"]) < 1e3
        # Eq. 13: every attained gradient of a degenerate loss is ∇L(0)
        assert m["psi_min"] == pytest.approx(m["psi_max"], abs=1e-6)


def test_metric_keys_of_the_spine_are_reported():
    rec = Recorder()
    train(images(), rec)
    # step 0, before training: the run's FID scale only (tests/trainables/metrics/test_fid_scale.py)
    assert set(rec.stats.pop(0)) == {"fid_floor", "fid_init"}
    keys = set().union(*rec.stats.values())
    for k in ("loss_d", "loss_g", "omega_real_min", "omega_real_max", "omega_fake_min",
              "omega_fake_max", "psi_min", "psi_max", "psi_attained_min", "psi_attained_max",
              "grad_norm_real", "grad_norm_fake", "omega_union_min", "omega_union_max",
              "omega_bound", "omega_within_bound", "sn_sigma_product", "sn_k_product",
              "grad_norm_real_min", "grad_norm_real_q25", "grad_norm_real_median",
              "grad_norm_real_q75", "grad_norm_fake_max", "fd_lipschitz_0.01",
              "fd_lipschitz_0.1", "fd_lipschitz_1", "fd_lipschitz_10", "fd_lipschitz_10_max"):
        assert k in keys, k
    assert set(rec.evals) == {3, 6}
    for ev in rec.evals.values():
        assert ev["fid"] >= 0 and math.isfinite(ev["kid"])
    # Ω∪ is the running union, within Theorem 1's bound; K = k_SN^n for sn
    lo = min(min(m["omega_real_min"], m["omega_fake_min"]) for m in rec.stats.values())
    hi = max(max(m["omega_real_max"], m["omega_fake_max"]) for m in rec.stats.values())
    last = rec.stats[6]
    assert (last["omega_union_min"], last["omega_union_max"]) == (lo, hi)
    assert last["omega_within_bound"] == float(hi - lo <= last["omega_bound"])
    assert last["sn_k_product"] == 1.0 and last["sn_sigma_product"] == pytest.approx(1.0, rel=0.2)


def test_final_evaluation_on_fid_final_samples_with_fid_inf():
    class Final(Recorder):
        def on_final(self, step, metrics, samples):
            self.final = (step, dict(metrics), samples)

    rec = Final()
    result = train(images(fid_final_samples=80, fid_inf=True), rec)
    step, final, samples = rec.final
    assert step == 6 and final["fid_final_samples"] == 80
    assert set(final) >= {"fid_final", "kid_final", "fid_inf"}
    assert final["fid_final"] != rec.evals[6]["fid"]  # 80 other samples than the 40 of `fid`
    assert samples.shape == (80, 1, 32, 32) and samples.dtype == torch.uint8
    assert result.metrics["fid_final"] == final["fid_final"]
    # without a separate N the final numbers are the last evaluation's, samples are its first ones
    rec2 = Final()
    train(images(), rec2)
    assert rec2.final[1]["fid_final"] == rec2.evals[6]["fid"]
    assert rec2.final[2].shape == (40, 1, 32, 32)


def test_theorem1_bound_and_lipschitz_k_for_sn():
    t = GANTrial(images(k_sn=2.0), device="cpu")
    assert t.lipschitz_k == pytest.approx(2.0 ** t.n_d_layers)
    assert t.omega_bound == pytest.approx(t.lipschitz_k * math.sqrt(4 * 1 * 32 * 32))
