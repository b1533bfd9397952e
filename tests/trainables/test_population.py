"""Population trials (``trainables.population``): a pack's members are their one-config trials.

Every member of a pack must report, through its own callbacks, what ``train()`` reports for its
config alone: the same steps and metric names, ``loss_d`` and Ω at the last stats step within
1e-3 relative, FID within 2 %, the same status / divergence step and reason. The batched model is
not bit-identical to the unbatched one (grouped conv / bmm sum in another order), so values are
compared with tolerances; runs are kept short (tens of steps: RMSprop's first steps amplify
rounding of near-zero gradients, and GAN training is chaotic over hundreds of steps).
"""

from __future__ import annotations

import math

import pytest
import torch

from trainables.config import validate_trial
from trainables.population import (
    Population, pack_configs, pack_signature, train_population, unsupported_reason,
)
from trainables.train import Callbacks, train

TOY = dict(dataset="ring8", arch="mlp", batch_size=32, device="cpu", lr_d=2e-4, lr_g=2e-4)
IMG = dict(dataset="fashion_mnist_mini", arch="dcgan32", width=0.0625, batch_size=16,
           fid_samples=100, fid_extractor="domain", device="cpu", lr_d=2e-4, lr_g=2e-4)
KEYS = ("loss_d", "omega_real_min", "omega_real_max", "omega_fake_min", "omega_fake_max")


class Rec(Callbacks):
    def __init__(self):
        self.stats, self.evals, self.final, self.ckpts = {}, {}, None, []
        self.params, self.end, self.started = None, None, 0

    def on_start(self, params):
        self.params, self.started = params, self.started + 1

    def on_stats(self, step, metrics):
        self.stats.setdefault(step, {}).update(metrics)

    def on_eval(self, step, metrics, grid):
        self.evals[step] = dict(metrics)

    def on_final(self, step, metrics, samples):
        self.final = dict(metrics)

    def on_checkpoint(self, step, state, metrics):
        self.ckpts.append((step, state))

    def on_end(self, result):
        self.end = result


def _cfg(base, **kw):
    return validate_trial({**base, **kw}, check_data=False)


def _rel(a, b):
    return abs(a - b) / max(abs(a), 1e-6)


def assert_same_records(solo: Rec, member: Rec, *, fid_rel=0.02, rel=1e-3):
    assert member.params == solo.params
    assert member.stats.keys() == solo.stats.keys()
    assert member.evals.keys() == solo.evals.keys()
    assert [s for s, _ in member.ckpts] == [s for s, _ in solo.ckpts]
    assert (member.end.status, member.end.step, member.end.reason) == \
        (solo.end.status, solo.end.step, solo.end.reason)
    for step in solo.stats:
        assert member.stats[step].keys() == solo.stats[step].keys(), step
    if solo.end.status == "finished":
        last = max(s for s in solo.stats if solo.stats[s].get("loss_d") is not None)
        for k in KEYS:
            assert _rel(solo.stats[last][k], member.stats[last][k]) < rel, (k, last)
        for step, ev in solo.evals.items():
            assert _rel(ev["fid"], member.evals[step]["fid"]) < fid_rel, step
        assert member.final.keys() == solo.final.keys()


def run_both(cfgs):
    solo = []
    for c in cfgs:
        r = Rec()
        train(c, r)
        solo.append(r)
    members = [Rec() for _ in cfgs]
    results = train_population(cfgs, members)
    assert [r.status for r in results] == [m.end.status for m in members]
    return solo, members


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_ring8_sn_losses_k_alpha_lr_match_one_config_trials():
    base = dict(TOY, regularizer="sn", iterations=40, stats_every=10, eval_every=20,
                fid_samples=200)
    cfgs = [_cfg(base, loss="ns", k_sn=1.0, seed=0),
            _cfg(base, loss="wgan", k_sn=5.0, seed=1, lr_d=4e-4),
            _cfg(base, loss="ls", k_sn=0.5, alpha=0.1, seed=2),
            _cfg(base, loss="hinge", k_sn=1.0, seed=3, eps=1e-6)]
    for solo, member in zip(*run_both(cfgs)):
        assert_same_records(solo, member)


def test_ring8_gp_adam_and_none_with_divergence():
    gp = dict(TOY, regularizer="gp", optimizer="adam", iterations=30, stats_every=10,
              eval_every=15, fid_samples=200)
    cfgs = [_cfg(gp, loss="wgan", k_gp=1.0, seed=0),
            _cfg(gp, loss="ns", k_gp=0.0, gp_lambda=5.0, seed=1, beta2=0.99, lr_d=4e-4),
            _cfg(gp, loss="ns", k_gp=1.0, seed=2)]
    for solo, member in zip(*run_both(cfgs)):
        assert_same_records(solo, member)
    none = dict(TOY, regularizer="none", iterations=30, stats_every=10, eval_every=15,
                fid_samples=200)
    cfgs = [_cfg(none, loss="wgan", seed=0), _cfg(none, loss="exp", alpha=1e11, seed=1),
            _cfg(none, loss="ns", alpha=1e-3, seed=2)]
    solo, members = run_both(cfgs)
    assert members[1].end.status == "diverged"  # EXP at α 1e11 overflows; the rest go on
    assert members[1].stats[members[1].end.step]["diverged_step"] == solo[1].end.step
    for s, m in zip(solo, members):
        assert_same_records(s, m)


def test_dcgan32_tiny_sn_and_gp_match_one_config_trials():
    base = dict(IMG, regularizer="sn", iterations=12, stats_every=4, eval_every=6)
    cfgs = [_cfg(base, loss="ns", k_sn=1.0, seed=0), _cfg(base, loss="wgan", k_sn=10.0, seed=1),
            _cfg(base, loss="ls", k_sn=0.5, alpha=10.0, seed=2)]
    for solo, member in zip(*run_both(cfgs)):
        assert_same_records(solo, member)
    gp = dict(IMG, regularizer="gp", iterations=8, stats_every=4, eval_every=8)
    cfgs = [_cfg(gp, loss="wgan", seed=0), _cfg(gp, loss="ns", k_gp=0.0, seed=1)]
    for solo, member in zip(*run_both(cfgs)):
        assert_same_records(solo, member)


def test_pack_resume_continues_every_member_without_duplicate_steps():
    base = dict(TOY, regularizer="sn", iterations=40, stats_every=10, eval_every=20,
                fid_samples=200)
    cfgs = [_cfg(base, loss=loss, k_sn=k, seed=i)
            for i, (loss, k) in enumerate([("ns", 1.0), ("wgan", 2.0), ("ls", 0.5)])]
    full = [Rec() for _ in cfgs]
    packs = []
    train_population(cfgs, full, on_checkpoint=lambda s, st, lat: packs.append((s, st)))
    assert [s for s, _ in packs] == [20, 40]
    # a retried / resumed pack: from the step-20 pack state, fresh callbacks
    resumed = [Rec() for _ in cfgs]
    train_population(cfgs, resumed, state=torch.load(_save(packs[0][1]), weights_only=True))
    for f, r in zip(full, resumed):
        assert sorted(r.stats) == [30, 40] and sorted(r.evals) == [40]  # nothing twice
        for step in (30, 40):
            assert r.stats[step] == f.stats[step]  # exact: same code, same state
        assert r.evals[40] == f.evals[40]
    # a member's state is a valid one-config trial state: train() continues it
    solo = Rec()
    train(cfgs[1], solo, state=packs[0][1]["members"][1])
    assert sorted(solo.stats) == [30, 40]
    for k in KEYS:
        assert _rel(solo.stats[40][k], full[1].stats[40][k]) < 1e-3, k


def _save(state, _dir=[]):
    import tempfile

    path = tempfile.NamedTemporaryFile(suffix=".pt", delete=False).name
    torch.save(state, path)
    return path


def test_packing_groups_by_shape_keys_and_refuses_other_regularizers():
    base = dict(TOY, regularizer="sn", iterations=20, stats_every=10, eval_every=20)
    cfgs = ([_cfg(base, loss=l, k_sn=k) for l in ("ns", "wgan") for k in (1.0, 2.0, 5.0)]
            + [_cfg(base, loss="ns", batch_size=64)]
            + [_cfg(dict(base, regularizer="r1"), loss="ns")])
    packs = pack_configs(cfgs, 4)
    assert packs == [[0, 1, 2], [3, 4, 5], [6], [7]]
    assert pack_configs(cfgs, 1) == [[i] for i in range(8)]
    assert unsupported_reason(cfgs[7]) and unsupported_reason(cfgs[0]) is None
    assert pack_signature(cfgs[0]) == pack_signature(cfgs[5]) != pack_signature(cfgs[6])
    with pytest.raises(ValueError, match="shape keys"):
        Population([cfgs[0], cfgs[6]])
    with pytest.raises(ValueError, match="one config per trial"):
        Population([cfgs[7]])


def test_divergence_flag_stays_on_device_until_read():
    cfgs = [_cfg(dict(TOY, regularizer="none", iterations=20, stats_every=10, eval_every=20),
                 loss=l, alpha=a, seed=i) for i, (l, a) in enumerate([("exp", 1e11), ("ns", 1.0)])]
    pop = Population(cfgs)
    for _ in range(3):
        pop.train_step()
    assert pop.div_step.device == pop.device and pop.div_step.dtype == torch.long
    div = pop.divergences()
    assert list(div) == [0] and div[0][0] == 1 and "non-finite" in div[0][1]
    assert math.isfinite(pop.G.params["net.0.weight"][1].sum().item())
