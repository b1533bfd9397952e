"""Domain statistics against hand computations (Lipschitz paper Eq. 9, Theorem 1)."""

import math

import pytest
import torch
from torch import nn

from trainables.losses import get_loss
from trainables.stats import domain_stats, input_grad_norms, theorem1_bound


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
