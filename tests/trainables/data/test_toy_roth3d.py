"""Roth et al.'s 2-D submanifold mixture in 3-D (``roth7_3d``; App. 7.3, Sec. 5.1): the embedding's
geometry checked against an independent rotation (scipy), samples on the tilted plane, the toy
metrics of real data (7 modes, the 2-D Rayleigh high-quality share), the in-plane picture
coordinates, the 3-D MLP, and a pack's draws equal to its members' own. Cheap: no Ray, no
training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from trainables.data import datasets as D
from trainables.metrics.toy_quality import HQ_REAL
from trainables.data.toys import toy_draw, toy_plane, toy_plane_coords

NAME = "roth7_3d"
#: App. 7.3: rotation by π/4 about (1, −1, 0)/√2, then translation by (1, 1, 1)/√3.
ROT = Rotation.from_rotvec(math.pi / 4 * np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0))
SHIFT = np.ones(3) / math.sqrt(3.0)


def _real(n, seed=0):
    return D.sample_toy(NAME, n, torch.Generator().manual_seed(seed)).double()


def test_centres_are_roths_embedding_of_the_unit_circle():
    angles = 2 * math.pi * np.arange(7) / 7
    flat = np.stack([np.cos(angles), np.sin(angles), np.zeros(7)], axis=1)
    want = ROT.apply(flat) + SHIFT
    modes = D.toy_modes(NAME)
    assert modes.shape == (7, 3) and modes.dtype == torch.float32
    assert np.allclose(modes.numpy(), want, atol=1e-6)
    axes, origin = toy_plane(NAME)
    normal = ROT.apply([0.0, 0.0, 1.0])
    assert np.allclose(normal, [-0.5, -0.5, 1 / math.sqrt(2.0)])  # R·e₃, worked by hand
    assert np.allclose(axes.numpy(), ROT.apply(np.eye(3)[:2]))  # u = R·e₁, v = R·e₂
    assert np.allclose(origin.numpy(), SHIFT)
    rel = modes.double() - origin
    assert torch.allclose(rel.norm(dim=1), torch.ones(7, dtype=torch.float64), atol=1e-6)
    assert (rel @ torch.from_numpy(normal)).abs().max() < 1e-6  # all in the tilted plane
    assert abs(normal[2]) < 0.99  # the plane is tilted, not the xy plane


def test_samples_lie_on_the_plane_with_in_plane_std():
    x = _real(20000)
    assert x.shape == (20000, 3) and D.channels(NAME) == 3 and D.toy_std(NAME) == 0.01
    normal = torch.from_numpy(ROT.apply([0.0, 0.0, 1.0]))
    assert ((x - torch.from_numpy(SHIFT)) @ normal).abs().max() < 1e-6
    flat = toy_plane_coords(NAME, x)
    d = torch.cdist(flat, toy_plane_coords(NAME, D.toy_modes(NAME).double()))
    nearest = d.argmin(dim=1)
    for m in range(7):  # per mode: the in-plane std is 0.01 on each plane axis
        pts = flat[nearest == m]
        assert np.allclose(pts.std(0).numpy(), 0.01, rtol=0.1)


def test_real_samples_share_within_3_sigma_is_the_2d_rayleigh_value():
    """The noise lies in the plane, so a real sample's 3-D distance to its centre is std times a
    2-D Rayleigh variable: P(r ≤ 3σ) = 1 − e^(−9/2), not the 3-D (Maxwell) share ≈ 0.971."""
    x = _real(200_000, seed=1)
    near = torch.cdist(x, D.toy_modes(NAME).double()).min(dim=1).values
    share = float((near <= 3 * D.toy_std(NAME)).double().mean())
    assert share == pytest.approx(HQ_REAL, abs=0.0015)  # binomial sd ≈ 2.3e-4
    maxwell = math.erf(3 / math.sqrt(2)) - math.sqrt(2 / math.pi) * 3 * math.exp(-4.5)
    assert abs(share - maxwell) > 0.01


class _RealData(torch.nn.Module):
    """A 'generator' that returns fresh real samples of the mixture."""

    def forward(self, z):
        return D.sample_toy(NAME, z.shape[0], torch.Generator().manual_seed(3))


def test_toy_metrics_of_real_data_cover_7_modes_at_hq_real():
    from trainables.metrics.evaluation import Evaluator

    ev = Evaluator({"dataset": NAME, "seed": 0, "z_dim": 2, "fid_samples": 4000},
                   torch.device("cpu"), None)
    res = ev.evaluate(_RealData())
    assert res["modes_covered"] == 7
    assert res["hq_share"] == pytest.approx(HQ_REAL, abs=0.008)  # sd ≈ 1.7e-3 at n 4000
    assert res["fid"] < 1e-3  # data-space FD of real against real, in 3-D
    grid = ev.sample_grid(_RealData())
    assert grid.shape == (3, 256, 256)


def test_picture_coordinates_are_the_circle_in_its_plane():
    flat = toy_plane_coords(NAME, D.toy_modes(NAME))
    assert torch.allclose(flat, D.toy_modes("roth7"), atol=1e-6)  # the unit circle, 2πk/7
    ring = D.sample_toy("ring8", 5, torch.Generator().manual_seed(0))
    assert torch.equal(toy_plane_coords("ring8", ring), ring)  # 2-D toys: unchanged


def test_the_mlp_takes_and_makes_3d_points():
    from trainables.config import validate_trial
    from trainables.train import GANTrial

    cfg = validate_trial(dict(dataset=NAME, arch="mlp", width=0.25, z_dim=2, batch_size=8,
                              iterations=2, stats_every=1, eval_every=2, fid_samples=50,
                              device="cpu", seed=0))
    t = GANTrial(cfg)
    assert t.sample_shape == (3,) and t._real_batch().shape == (8, 3)
    assert t.G(torch.zeros(4, 2)).shape == (4, 3)
    assert t.D(torch.zeros(4, 3)).shape == (4,)


def test_the_3d_toy_draw_is_element_wise():
    """toys.toy_draw of roth7_3d on stacked (pack, member) draws equals the draw of one member's
    slice, so a pack's batched draw is each member's own (checked end to end, with ring8 and the
    image data, in tests/trainables/pack/test_population.py::
    test_pack_draws_are_each_members_own_draws).
    """
    which = torch.randint(7, (2, 3, 5))
    noise = torch.randn(2, 3, 5, 2)
    stacked = toy_draw(NAME)(which, noise)
    assert torch.equal(stacked[1, 2], toy_draw(NAME)(which[1, 2], noise[1, 2]))
