"""Domain statistics against hand computations (Lipschitz paper Eq. 9, Theorem 1)."""

import math

import pytest
import torch
from torch import nn

from trainables.gan.losses import get_loss
from trainables.metrics.stats import domain_stats, input_grad_norms, theorem1_bound


def test_omega_and_psi_of_ns_by_hand():
    loss = get_loss("ns")
    f_real = torch.tensor([-0.683, 0.5, 2.091])
    f_fake = torch.tensor([-0.2, 0.1])
    m = domain_stats(f_real, f_fake, loss)
    assert m["omega_real_min"] == pytest.approx(-0.683) and m["omega_real_max"] == pytest.approx(2.091)
    assert m["omega_fake_min"] == pytest.approx(-0.2) and m["omega_fake_max"] == pytest.approx(0.1)
    # Eq. 9 on L = -log σ(ω): ∇L(ω) = -σ(-ω) at the ends of Ω (paper Fig. 1b row k_SN = 1)
    assert m["psi_min"] == pytest.approx(-0.664, abs=1e-3)
    assert m["psi_max"] == pytest.approx(-0.110, abs=1e-3)
    # attained: -σ(-f) at the reals, +σ(f) at the fakes
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    attained = [-sig(0.683), -sig(-0.5), -sig(-2.091), sig(-0.2), sig(0.1)]
    assert m["psi_attained_min"] == pytest.approx(min(attained), abs=1e-6)
    assert m["psi_attained_max"] == pytest.approx(max(attained), abs=1e-6)
    assert m["psi_attained_mean"] == pytest.approx(sum(attained) / 5, abs=1e-6)


def test_psi_of_ls_uses_the_paper_term():
    m = domain_stats(torch.tensor([-2.46, 12.02]), torch.tensor([0.0]), get_loss("ls"))
    assert m["psi_min"] == pytest.approx(-4.92, abs=1e-4)
    assert m["psi_max"] == pytest.approx(24.04, abs=1e-4)


def test_input_grad_norm_of_a_linear_discriminator_is_the_weight_norm():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))
    x = torch.randn(5, 3, 2, 2)
    norms = input_grad_norms(D, x)
    assert norms.shape == (5,)
    assert torch.allclose(norms, D[1].weight.norm().expand(5), rtol=1e-6)
    assert D[1].weight.grad is None  # no parameter gradient leaks out of a measurement
    assert D.training


def test_theorem1_bound_matches_appendix_a():
    m, n = 64, 64
    assert theorem1_bound(1.0, (3, m, n)) == pytest.approx(math.sqrt(12 * m * n))
    assert theorem1_bound(None, (1, 2, 2)) is None


# ----------------------------------------------------------------------------------------------
# Gradient-norm distribution and the finite-difference Lipschitz probe (GraN-GAN Fig. 3-4)
# ----------------------------------------------------------------------------------------------

from trainables.metrics.stats import FD_DELTAS, fd_key, lipschitz_probe


def test_probe_of_a_linear_discriminator_is_its_weight_norm_at_every_delta():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))
    real, fake = torch.randn(6, 3, 2, 2), torch.randn(4, 3, 2, 2)
    m = lipschitz_probe(D, real, fake)
    w = float(D[1].weight.detach().norm())
    for side in ("real", "fake"):
        for q in ("", "_min", "_q25", "_median", "_q75", "_max"):
            assert m[f"grad_norm_{side}{q}"] == pytest.approx(w, rel=1e-5), (side, q)
    for d in FD_DELTAS:
        for suffix in ("", "_real", "_fake", "_max"):
            assert m[fd_key(d) + suffix] == pytest.approx(w, rel=1e-4), (d, suffix)
    assert [fd_key(d) for d in FD_DELTAS] == ["fd_lipschitz_0.01", "fd_lipschitz_0.1",
                                              "fd_lipschitz_1", "fd_lipschitz_10"]


def test_probe_quantiles_and_relu_lower_bound():
    """Quantiles are those of the per-sample norms; for a ReLU net Δ(δ → 0) → ‖∇f‖ and every Δ
    stays below the global bound Π σ(Wᵢ)."""
    torch.manual_seed(1)
    D = nn.Sequential(nn.Flatten(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    real, fake = torch.randn(64, 8), torch.randn(32, 8) * 3
    m = lipschitz_probe(D, real, fake)
    norms = input_grad_norms(D, real)
    q = torch.quantile(norms, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])).tolist()
    got = [m[f"grad_norm_real_{k}"] for k in ("min", "q25", "median", "q75", "max")]
    assert got == pytest.approx(q, rel=1e-5)
    assert m["grad_norm_real"] == pytest.approx(float(norms.mean()), rel=1e-5)
    with torch.no_grad():
        bound = float(torch.linalg.matrix_norm(D[1].weight, 2) * torch.linalg.matrix_norm(D[3].weight, 2))
    for d in FD_DELTAS:
        assert 0 <= m[fd_key(d) + "_max"] <= bound * (1 + 1e-5), d
    all_norms = torch.cat([norms, input_grad_norms(D, fake)])
    assert m[fd_key(0.01)] == pytest.approx(float(all_norms.median()), rel=0.05)


def test_probe_leaves_bn_stats_rng_grads_and_mode_alone():
    torch.manual_seed(2)
    D = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.LeakyReLU(0.2), nn.Flatten(),
                      nn.Linear(4 * 6 * 6, 1))
    D(torch.randn(16, 1, 8, 8)).sum().backward()  # running stats and .grad as after a D step
    before = {k: v.clone() for k, v in D.state_dict().items()}
    grads = [p.grad.clone() for p in D.parameters()]
    x = torch.randn(8, 1, 8, 8)
    rng = torch.get_rng_state()
    m = lipschitz_probe(D, x, x.flip(0))
    assert all(math.isfinite(v) for v in m.values())
    assert torch.equal(torch.get_rng_state(), rng)  # no RNG draw
    assert D.training
    for k, v in D.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running mean/var/num_batches untouched
    for p, g in zip(D.parameters(), grads):
        assert torch.equal(p.grad, g)  # no parameter gradient written
