"""Spectral normalization scaled by k_SN (Eq. 1 of the Lipschitz paper): the ``sn`` regularizer,
in its single-trial form (torch's ``spectral_norm`` parametrization followed by :class:`KScale`)
and its batched form for a pack (:class:`BatchedSpectralNorm`, reached through the layer's
:class:`KScale`: ``trainables.nets.batched_net.BatchedNet`` asks it for the batched weight).

The batched form is torch's parametrization op for op, over a leading member axis: one power
iteration per train-mode forward (u ← normalize(W v), v ← normalize(Wᵀ u), in place, no grad),
σ = vdot(u, W v) with u, v constants, W̄ = (W/σ)·k (the product skipped when every k is 1: ×1.0
is exact), with the backward that autograd computes for those ops written out
(:class:`_SNWeight`, two passes over W fewer). On CPU each member's weight and gradient are its
own trial's bit for bit (the batched matrix-vector products only where they reproduce
``torch.mv``; ``trainables.nets.batched_net``). The forward on a detached W (the G step's D) runs
without autograd.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from trainables import names
from trainables.nets.batched_net import member_mtv, member_mv, member_normalize, member_sum, member_vdot
from trainables.nets.models import d_weight_layers
from trainables.params import SNParams
from trainables.gan.regularizer_base import PackForm, Regularizer, has_bn
from trainables.metrics.stats import spectral_norms

__all__ = ["BatchedSpectralNorm", "SpectralNorm", "sn_layers"]


class KScale(nn.Module):
    """Parametrization W ↦ k·W, chained after torch's spectral norm: W̄ = k·W/σ(W) (Eq. 1).

    ``k`` is a plain attribute, not a buffer: it is configuration, so it stays out of the
    state dict and loading a state saved at another k keeps this module's k.
    """

    def __init__(self, k: float):
        super().__init__()
        self.k = float(k)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.k

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w / self.k

    def extra_repr(self) -> str:
        return f"k={self.k:g}"

    def batched(self, layers: Sequence[nn.Module], prefix: str,
                device: torch.device) -> "BatchedSpectralNorm":
        """The batched form of this layer's spectral norm over the members' ``layers`` (the same
        layer of every member's D), for ``trainables.nets.batched_net.BatchedNet``."""
        return BatchedSpectralNorm(layers, prefix, device)


def sn_layers(D: nn.Module) -> list[nn.Module]:
    """D's weight layers that carry the SN parametrization, in forward order."""
    out = []
    for m in d_weight_layers(D):
        if parametrize.is_parametrized(m, "weight") and isinstance(
                m.parametrizations.weight[-1], KScale):
            out.append(m)
    return out


def _effective_weight(m: nn.Module) -> torch.Tensor:
    """The weight the layer's forward uses (k·W/σ̂(W)), without advancing the power iteration.

    In train mode, evaluating torch's spectral-norm parametrization runs a power-iteration step
    and updates u, v in place; for a read-only diagnostic we evaluate it in eval mode (the stored
    u, v give σ̂ = uᵀ W v) and restore the modes afterwards.
    """
    plist = m.parametrizations.weight
    modes = [p.training for p in plist]
    try:
        for p in plist:
            p.train(False)
        with torch.no_grad():
            return m.weight.detach().clone()
    finally:
        for p, mode in zip(plist, modes):
            p.train(mode)


class SpectralNorm(Regularizer):
    """Spectral normalization scaled by k_SN (Eq. 1): W̄ = k_SN · W / σ(W) on every D layer.

    Built on ``torch.nn.utils.parametrizations.spectral_norm`` (σ estimated by one power
    iteration per forward in train mode, as Miyato et al.; u, v frozen in eval mode) followed by a
    second registered parametrization multiplying by k_SN. The trainable parameter is the
    unnormalized W (``parametrizations.weight.original``).

    σ is that of the weight reshaped to a matrix (out_channels, in_channels·kh·kw), which is what
    torch (and Miyato et al.) normalize — not the operator norm of the convolution. So
    K ≈ k_SN^n (n = number of SN layers; Eq. 3 writes (k_SN)^{N+1}) is the paper's approximation,
    not a certified bound. With bias-free layers and LeakyReLU the scaling itself is exact:
    D at k_SN equals k_SN^n · D at 1 (Eq. 3), and for a linear loss every gradient carries k_SN^n.

    Refuses a D with BatchNorm (d_norm="bn" is Appendix C's GP discriminator): BN undoes the
    per-layer scale and breaks Eq. 3.
    """

    Params = SNParams
    Pack = PackForm  # no penalty term: the batched D normalizes (BatchedSpectralNorm)

    def apply(self, D: nn.Module) -> nn.Module:
        if has_bn(D):
            raise ValueError(
                "regularizer 'sn' cannot be combined with d_norm='bn' (BatchNorm in D breaks "
                "K ≈ k_sn^n; Appendix C uses BN only with the gradient penalty)"
            )
        layers = d_weight_layers(D)
        if not layers:
            raise ValueError("regularizer 'sn': D has no conv/linear layers")
        if sn_layers(D) or any(parametrize.is_parametrized(m, "weight") for m in layers):
            raise ValueError("regularizer 'sn': D is already parametrized (applied twice?)")
        for m in layers:
            spectral_norm(m, name="weight", n_power_iterations=1)
            parametrize.register_parametrization(m, "weight", KScale(self.params.k_sn))
        return D

    def n_layers(self, D: nn.Module) -> int:
        """n: the number of SN layers (D's weight layers, whether or not SN is applied yet)."""
        return len(sn_layers(D)) or len(d_weight_layers(D))

    def lipschitz_k(self, D: nn.Module) -> float:
        try:
            return self.params.k_sn ** self.n_layers(D)
        except OverflowError:
            return math.inf

    def metrics(self, D: nn.Module) -> dict[str, float]:
        """sn_sigma_<i>: σ(W̄) of layer i, computed exactly (SVD of the reshaped effective weight,
        with σ̂ from the stored u, v; ``trainables.metrics.stats.spectral_norms``, as a pack computes
        them for all its members at once); sn_sigma_product: their product (≈ k_SN^n once the
        power iteration has converged); sn_k_product: k_SN^n, the target. One device sync."""
        sigmas = spectral_norms([_effective_weight(m)[None] for m in sn_layers(D)])
        return self.sigma_metrics(sigmas[0].tolist(), D)

    def sigma_metrics(self, sigmas: list[float], D: nn.Module) -> dict[str, float]:
        """:meth:`metrics` from the layers' σ(W̄) (measured already)."""
        out: dict[str, float] = {}
        log_prod = 0.0
        for i, s in enumerate(sigmas):
            out[f"sn_sigma_{i}"] = s
            log_prod += math.log(s) if s > 0 else -math.inf
        out[names.SN_SIGMA_PRODUCT] = math.exp(log_prod) if log_prod < 709 else math.inf
        out[names.SN_K_PRODUCT] = self.lipschitz_k(D)
        return out


def _state_name(owner: nn.Module, tensor: torch.Tensor) -> str:
    """The state-dict name, within ``owner``, of its parameter or buffer ``tensor`` (by
    identity)."""
    for name, t in (*owner.named_parameters(), *owner.named_buffers()):
        if t is tensor:
            return name
    raise KeyError("tensor not held by the layer")


class BatchedSpectralNorm:
    """The spectral norm of one weight layer of P members (torch's parametrization, then the
    k_SN product), over the stacked weights and u, v buffers of ``BatchedNet``.

    ``w``, ``u``, ``v``: the layer's state-dict names (``prefix`` + the name torch gives the
    unnormalized weight and the power iteration's vectors, found by identity from the
    parametrization objects; torch exposes u, v only as the buffers ``_u``, ``_v`` of its
    parametrization). ``k``: the members' k_SN, a number when all agree, else a (P,) tensor."""

    def __init__(self, layers: Sequence[nn.Module], prefix: str, device: torch.device):
        m0 = layers[0]
        plist = m0.parametrizations.weight
        sn = plist[0]
        self.eps = sn.eps
        self.w = prefix + _state_name(m0, plist.original)
        self.u = prefix + _state_name(m0, sn._u)
        self.v = prefix + _state_name(m0, sn._v)
        ks = [float(m.parametrizations.weight[-1].k) for m in layers]
        self.k = ks[0] if len(set(ks)) == 1 else torch.tensor(ks, device=device,
                                                              dtype=torch.float32)

    def weight(self, w: torch.Tensor, buffers: dict[str, torch.Tensor], training: bool,
               detach: bool) -> torch.Tensor:
        """k·W/σ(W) per member from the stacked W (P, out, …), after one power iteration in
        train mode (u, v in ``buffers`` updated in place, as the parametrization does)."""
        with torch.no_grad() if detach else contextlib.nullcontext():
            P = w.shape[0]
            wm = w.reshape(P, w.shape[1], -1)  # dim 0 of each member's weight (Linear / Conv2d)
            u, v = buffers[self.u], buffers[self.v]
            if training:
                with torch.no_grad():
                    wd = wm.detach()
                    u.copy_(member_normalize(member_mv(wd, v), self.eps))
                    v.copy_(member_normalize(member_mtv(wd, u), self.eps))
            # u, v as they are now: the next forward updates the buffers in place
            return _SNWeight.apply(w, u.clone(), v.clone(), self.k)


class _SNWeight(torch.autograd.Function):
    """W̄ = (W / σ)·k per member, σ = ``torch.vdot(u, torch.mv(W, v))`` with u, v constants:
    torch's spectral norm (after its power iteration) then the k_SN parametrization, the
    product skipped when k is 1.0 (exact). Forward by ``member_mv`` / ``member_vdot``, backward as
    autograd differentiates those ops in the one-config trial, in their order:
    ∂(W/σ) = ∂W̄·k; ∂σ = −Σ ∂(W/σ)·((W/σ)/σ) (the forward's W/σ reused: the same bits; the sum
    negated instead of every term: IEEE sums are sign-symmetric); ∂W = ∂(W/σ)/σ + (∂σ·u) ⊗ v
    (mv's outer product, exact products, added in place as autograd adds it). Two passes over W
    fewer than autograd's chain, and no autograd node per member."""

    @staticmethod
    def forward(ctx, w, u, v, k):
        P = w.shape[0]
        wm = w.reshape(P, w.shape[1], -1)  # dim 0 of each member's weight (Linear / Conv2d)
        sigma = member_vdot(u, member_mv(wm, v))
        sb = sigma.reshape((P,) + (1,) * (w.dim() - 1))
        wn = w / sb
        kt = k if isinstance(k, torch.Tensor) else None
        ctx.save_for_backward(wn, sb, u, v, kt)
        ctx.k = k if kt is None else None
        if kt is not None:
            return wn * kt.reshape(sb.shape)
        return wn if k == 1.0 else wn * k

    @staticmethod
    def backward(ctx, g):
        wn, sb, u, v, kt = ctx.saved_tensors
        P = wn.shape[0]
        if kt is not None:
            gn = g * kt.reshape(sb.shape)
        else:
            gn = g if ctx.k == 1.0 else g * ctx.k
        gw = gn / sb
        gs = -member_sum(gn * (wn / sb))
        gx = gs.unsqueeze(1) * u  # vdot's backward
        # mv's outer product, added as autograd adds it (not addcmul_: its kernel fuses a*b+c)
        gw.view(P, gw.shape[1], -1).add_(gx.unsqueeze(2) * v.unsqueeze(1))
        return gw, None, None, None
