"""Optimizers, and the ε hypothesis's invariance: (k_SN, ε·k_SN^n) trains exactly like (1, ε)."""

from __future__ import annotations

import pytest
import torch

from trainables.nets.models import build_discriminator, build_generator
from trainables.gan.optim import OPTIMIZERS, build_optimizer
from trainables.gan.regularizers import get_regularizer, sn_layers

N = 4  # SN layers of dcgan32


def test_both_build_and_eps_reaches_param_groups():
    assert OPTIMIZERS == ("rmsprop", "adam")
    p = [torch.nn.Parameter(torch.zeros(3))]
    rms = build_optimizer("rmsprop", p, lr=5e-5, eps=1e-3, rmsprop_decay=0.9)
    assert isinstance(rms, torch.optim.RMSprop)
    g = rms.param_groups[0]
    assert (g["lr"], g["eps"], g["alpha"], g["momentum"], g["centered"]) == (
        5e-5,
        1e-3,
        0.9,
        0,
        False,
    )
    adam = build_optimizer("adam", p, lr=2e-4, eps=1e-7, beta1=0.0, beta2=0.9)
    assert isinstance(adam, torch.optim.Adam)
    g = adam.param_groups[0]
    assert (g["lr"], g["eps"], g["betas"]) == (2e-4, 1e-7, (0.0, 0.9))
    assert build_optimizer("adam", p, lr=1e-4, eps=0.0).param_groups[0]["betas"] == (0.5, 0.999)


def test_errors():
    p = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match="sgd"):
        build_optimizer("sgd", p, lr=1e-3, eps=1e-8)
    with pytest.raises(ValueError, match="eps"):
        build_optimizer("rmsprop", p, lr=1e-3, eps=-1e-8)
    with pytest.raises(ValueError, match="lr"):
        build_optimizer("adam", p, lr=0.0, eps=1e-8)
    with pytest.raises(ValueError, match="beta2"):
        build_optimizer("adam", p, lr=1e-3, eps=1e-8, beta2=1.0)


def test_eps_is_outside_the_root():
    """One RMSprop step from zero state: Δw = −lr·g/(√((1−ρ)g²) + ε), torch's form."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer("rmsprop", [w], lr=1.0, eps=0.5, rmsprop_decay=0.99)
    w.grad = torch.tensor([2.0])
    opt.step()
    outside = -2.0 / ((0.01 * 4.0) ** 0.5 + 0.5)
    inside = -2.0 / (0.01 * 4.0 + 0.5) ** 0.5
    assert w.item() == pytest.approx(outside, rel=1e-6)
    assert abs(w.item() - inside) > 0.1


def _train_wgan(k: float, eps: float, opt_name: str, init: dict, g_init: dict, steps: int = 3):
    """A few WGAN steps of SN-D (bias-free) and G; both optimizers with the same ε."""
    d = get_regularizer("sn", k_sn=k).apply(
        build_discriminator("dcgan32", channels=3, width=0.25, d_bias=False)
    )
    d.load_state_dict(init)
    g = build_generator("dcgan32", channels=3, width=0.25)
    g.load_state_dict(g_init)
    opt_d = build_optimizer(opt_name, d.parameters(), lr=1e-4, eps=eps)
    opt_g = build_optimizer(opt_name, g.parameters(), lr=1e-4, eps=eps)
    gen = torch.Generator().manual_seed(123)
    for _ in range(steps):
        real = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
        z = torch.randn(4, 100, generator=gen)
        d_loss = d(g(z).detach()).mean() - d(real).mean()  # linear in f
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = -d(g(z)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    return d, g


def _max_rel_diff(a: dict, b: dict, skip: frozenset[str] = frozenset()) -> float:
    return max(
        ((a[key].float() - b[key].float()).abs().max() / a[key].float().abs().max()).item()
        for key in a
        if a[key].is_floating_point() and key not in skip
    )


def _pre_bn_biases(g: torch.nn.Module) -> frozenset[str]:
    """G's deconv biases that feed a BatchNorm. Their exact gradient is 0 (BN subtracts the batch
    mean), so autograd hands the optimizer rounding noise, which RMSprop/Adam normalize into
    ~lr-sized steps that differ between any two runs; they do not change G's train-mode output."""
    net = list(g.net)
    return frozenset(
        f"net.{i}.bias"
        for i, m in enumerate(net[:-1])
        if isinstance(m, torch.nn.ConvTranspose2d) and isinstance(net[i + 1], torch.nn.BatchNorm2d)
    )


@pytest.mark.parametrize("opt_name,k", [("rmsprop", 0.2), ("rmsprop", 5.0), ("adam", 0.2)])
def test_matching_eps_is_eps_times_k_pow_n(opt_name, k):
    """What is invariant: the trainable parameter under SN is the unnormalized W. Its gradient at
    k_SN is k_SN^n × the one at 1 (linear loss), and g/(√v + ε) is unchanged when g → s·g and
    ε → s·ε. So with ε·k^n the W's (and u, v, and G's parameters) follow the same trajectory as
    the run at k_SN = 1 with ε, W/σ(W) stays identical, and D at k stays k^n × D at 1.
    Control: the same ε at both k does not give the same trajectory."""
    torch.manual_seed(0)
    init = (
        get_regularizer("sn")
        .apply(build_discriminator("dcgan32", channels=3, width=0.25, d_bias=False))
        .state_dict()
    )
    g_init = build_generator("dcgan32", channels=3, width=0.25).state_dict()
    eps = 1e-6
    d1, g1 = _train_wgan(1.0, eps, opt_name, init, g_init)
    dk, gk = _train_wgan(k, eps * k**N, opt_name, init, g_init)
    d_naive, g_naive = _train_wgan(k, eps, opt_name, init, g_init)

    w_keys = [key for key in init if key.endswith("parametrizations.weight.original")]
    assert len(w_keys) == N
    w0 = torch.cat([init[key].flatten() for key in w_keys])

    def update(d):  # the step taken by the trainable parameters: the unnormalized W's
        state = d.state_dict()
        return torch.cat([state[key].flatten() for key in w_keys]) - w0

    with torch.no_grad():
        du1, duk, du_naive = update(d1), update(dk), update(d_naive)
    assert du1.norm() > 1e-2 * w0.norm()  # training did move W
    assert ((duk - du1).norm() / du1.norm()).item() < 1e-4
    # control: the same ε at both k is not the same run (0.5 at k=0.2, 0.04 at k=5 here)
    assert ((du_naive - du1).norm() / du1.norm()).item() > 1e-2
    assert _max_rel_diff(d1.state_dict(), dk.state_dict()) < 1e-4  # W's and u, v buffers
    skip = _pre_bn_biases(g1)
    assert len(skip) == 3
    assert _max_rel_diff(g1.state_dict(), gk.state_dict(), skip) < 1e-4
    assert _max_rel_diff(g1.state_dict(), g_naive.state_dict(), skip) > 1e-3

    z = torch.randn(4, 100)
    with torch.no_grad():  # train mode (batch statistics), as G is used in training
        torch.testing.assert_close(gk(z), g1(z), rtol=1e-4, atol=1e-4)

    x = torch.rand(4, 3, 32, 32) * 2 - 1
    d1.eval(), dk.eval()
    with torch.no_grad():
        want = k**N * d1(x)
        torch.testing.assert_close(dk(x), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    assert len(sn_layers(dk)) == N
