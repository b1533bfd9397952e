"""The certified Lipschitz bound (trainables.metrics.lipschitz_bound): each conv layer's operator norm at
its stride/padding/input size equals the exact dense-matrix norm; the product bounds D's gradients
and finite differences; reading it changes nothing training uses."""

from __future__ import annotations

import torch
from torch import nn

from trainables.metrics.lipschitz_bound import certified_lipschitz, layer_map, layer_norms, operator_norm
from trainables.nets.models import build_discriminator, d_weight_layers
from trainables.gan.regularizers import get_regularizer


def _dense(fn, in_shape):
    """The matrix of a linear map: fn applied to every basis vector (exact, small sizes only)."""
    n = 1
    for s in in_shape:
        n *= s
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape[1:])
    return fn(eye).reshape(n, -1).T


def test_conv_operator_norm_matches_the_dense_matrix():
    torch.manual_seed(0)
    for stride, padding, k, hw in ((2, 1, 4, 8), (1, 0, 3, 6), (2, 0, 3, 7), (1, 1, 3, 5)):
        conv = nn.Conv2d(2, 3, k, stride=stride, padding=padding).double()
        fn = layer_map(conv, conv.weight.detach())
        exact = float(torch.linalg.matrix_norm(_dense(fn, (1, 2, hw, hw)), ord=2))
        got = operator_norm(fn, (1, 2, hw, hw))
        assert abs(got - exact) <= 1e-8 * exact, (stride, padding, k, hw, got, exact)
        # SN's reshaped-kernel σ is another number: the gap the paper's K ≈ Π σ leaves
        reshaped = float(torch.linalg.matrix_norm(conv.weight.detach().reshape(3, -1), ord=2))
        assert abs(reshaped - exact) > 1e-3 * exact


def _sn_d(k_sn=1.0, arch="dcgan32", channels=1, width=0.125):
    torch.manual_seed(1)
    D = get_regularizer("sn", k_sn=k_sn).apply(build_discriminator(arch, channels=channels, width=width))
    x = torch.rand(16, channels, 32, 32) * 2 - 1
    for _ in range(5):
        D(x)                    # power iterations settle (train mode)
    return D, x


def test_certified_k_bounds_gradients_and_finite_differences():
    D, x = _sn_d()
    K = certified_lipschitz(D, (1, 32, 32))
    xg = x.clone().requires_grad_(True)
    D.eval()
    g = torch.autograd.grad(D(xg).sum(), xg)[0].flatten(1).norm(dim=1)
    assert float(g.max()) <= K
    y = x + 0.01 * torch.randn_like(x)
    with torch.no_grad():
        fd = (D(y) - D(x)).abs() / (y - x).flatten(1).norm(dim=1)
    assert float(fd.max()) <= K
    norms = layer_norms(D, (1, 32, 32))
    assert len(norms) == len(d_weight_layers(D))


def test_reading_the_bound_changes_nothing_training_uses():
    D, x = _sn_d(k_sn=0.5)
    state = {k: v.clone() for k, v in D.state_dict().items()}
    modes = [m.training for m in D.modules()]
    rng = torch.get_rng_state()
    certified_lipschitz(D, (1, 32, 32))
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in D.modules()] == modes
    for k, v in D.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_batchnorm_d_has_no_certified_bound():
    D = build_discriminator("dcgan32", channels=1, width=0.125, d_norm="bn")
    assert certified_lipschitz(D, (1, 32, 32)) is None


def test_mlp_bound_is_the_product_of_matrix_norms():
    D = build_discriminator("mlp", channels=2, width=1.0)
    want = 1.0
    for m in d_weight_layers(D):
        want *= float(torch.linalg.matrix_norm(m.weight.detach().double(), ord=2))
    assert abs(certified_lipschitz(D, (2,), margin=0.0) - want) <= 1e-9 * want


def test_an_sn_trial_logs_its_certified_bound_at_the_end():
    """train() reports ``lipschitz_certified`` with the final evaluation; for the MLP (linear
    layers: operator norm = σ of the matrix) it equals the measured σ-product."""
    from trainables.config import validate_trial
    from trainables.train import train

    cfg = validate_trial(dict(dataset="ring8", arch="mlp", width=1.0, regularizer="sn", k_sn=1.0,
                              loss="wgan", iterations=10, stats_every=10, eval_every=10,
                              fid_samples=200), check_data=False)
    final = train(cfg).metrics
    assert abs(final["lipschitz_certified"] / final["sn_sigma_product"] - 1) < 1e-5
