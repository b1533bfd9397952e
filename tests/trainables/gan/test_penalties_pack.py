"""The gradient penalty's pack form (``GradientPenalty.pack``): on the batched D of P members it is,
member by member and bit for bit on CPU, each member's own ``GradientPenalty.penalty_at`` (Eq. 18):
the penalty, the per-sample norms behind its diagnostics, and the gradient w.r.t. D's parameters
(the double backward that D's update uses; D's last bias gets none: it does not reach ∇ₓf)."""

from __future__ import annotations

import pytest
import torch

from trainables.nets.batched_net import BatchedNet
from trainables.nets.models import build_discriminator
from trainables.gan.penalties import GradientPenalty, GradientPenaltyPack
from trainables.gan.regularizers import get_regularizer

CPU = torch.device("cpu")


def _members(n: int, arch: str, channels: int, width: float):
    torch.manual_seed(3)
    return [build_discriminator(arch, channels=channels, width=width) for _ in range(n)]


def _check_pack(params: list[dict], arch: str = "mlp", shape: tuple[int, ...] = (2,),
                width: float = 0.5, batch: int = 16) -> None:
    regs = [get_regularizer("gp", **p) for p in params]
    Ds = _members(len(regs), arch, shape[0], width)
    pack = GradientPenalty.pack(regs, CPU)
    bd = BatchedNet(Ds, CPU, image=arch != "mlp")
    g = torch.Generator().manual_seed(5)
    P = len(regs)
    real = torch.randn((P, batch) + shape, generator=g)
    fake = torch.randn((P, batch) + shape, generator=g)
    u = torch.rand((P, batch) + (1,) * len(shape), generator=g)
    pen = pack.penalty(bd, real, fake, u)
    grads = torch.autograd.grad(pen.sum(), list(bd.params.values()), materialize_grads=True)
    assert pen.shape == (P,)
    for i, (reg, D) in enumerate(zip(regs, Ds)):
        x_hat = u[i] * real[i] + (1 - u[i]) * fake[i]
        ref, norms = reg.penalty_at(D, x_hat)
        assert torch.equal(pen[i], ref), (i, pen[i].item(), ref.item())
        ref_grads = torch.autograd.grad(ref, list(D.parameters()), materialize_grads=True)
        for gb, gr in zip(grads, ref_grads):
            assert torch.equal(gb[i], gr), i
        st = pack.member_stash(i)
        assert torch.equal(st["gp_grad_norm_mean"], norms.mean())
        assert torch.equal(st["gp_grad_norm_max"], norms.max())


def test_pack_of_mixed_targets_is_each_members_penalty():
    """Members with their own λ and k_GP, one zero-centred (k_GP = 0: the sum of squares)."""
    _check_pack([dict(k_gp=1.0), dict(k_gp=0.0, gp_lambda=5.0), dict(k_gp=2.5, gp_lambda=10.0)])


@pytest.mark.parametrize("params", [
    [dict(k_gp=1.0, gp_mode="one-sided"), dict(k_gp=0.5, gp_mode="one-sided", gp_lambda=3.0)],
    [dict(k_gp=0.0), dict(k_gp=0.0, gp_lambda=2.0)],
    [dict(k_gp=1.0), dict(k_gp=1.0)],
])
def test_pack_one_sided_all_zero_and_equal_members(params):
    _check_pack(params)


def test_pack_of_conv_discriminators():
    """dcgan32 members (convolutions run per member on CPU) give each member's penalty too."""
    _check_pack([dict(k_gp=1.0), dict(k_gp=0.0, gp_lambda=5.0)], arch="dcgan32",
                shape=(1, 32, 32), width=0.0625, batch=4)


def test_pack_declarations_and_refusals():
    assert GradientPenalty.packs() and GradientPenalty.Pack is GradientPenaltyPack
    assert GradientPenaltyPack.draws_u
    two = [get_regularizer("gp"), get_regularizer("gp", gp_mode="one-sided")]
    with pytest.raises(ValueError, match="share gp_mode"):
        GradientPenalty.pack(two, CPU)
    with pytest.raises(TypeError, match="every member"):
        GradientPenalty.pack([get_regularizer("gp"), get_regularizer("none")], CPU)
    with pytest.raises(ValueError, match="one config per trial"):
        type(get_regularizer("r1")).pack([get_regularizer("r1")], CPU)
