"""P copies of one generator or discriminator as stacked tensors, run as one batched model
(``trainables.population``): ``mlp`` layers as ``baddbmm``, conv layers as grouped convolutions,
BatchNorm with per-member statistics, spectral norm's power iteration batched over members.

Spectral norm computes what ``torch.nn.utils.parametrizations.spectral_norm`` followed by the
k_SN scaling computes (k·W/σ, σ = uᵀWv after one power iteration per train-mode forward, u and v
updated in place, constants for the gradient), with fewer passes over W: the mat-vecs are
batched ``bmm`` s; σ is read off the iteration's own Wᵀu (uᵀWv = (Wᵀu)·v: one mat-vec less);
k·W/σ is one pass (W/σ when every k is 1, torch's own division; W·(k/σ) otherwise) and its
backward (:class:`_SNScale`) is the closed form of autograd's, (k/σ)·G − (k/σ²)·⟨G, W⟩·u vᵀ, two
passes instead of autograd's chain through the division and the mat-vec. The results equal
torch's up to float rounding (the order of the sums; tests/trainables/test_population.py checks
weight and gradient against torch's parametrization in float64 to 1e-10); the forward on a
detached W (the G step's D) runs without autograd."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU,
           nn.LeakyReLU, nn.Tanh)


def _mv(wm: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Batched W x: (P, m, n) · (P, n) → (P, m)."""
    return torch.bmm(wm, x.unsqueeze(2)).squeeze(2)


def _mtv(wm: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched Wᵀ y: (P, m, n) · (P, m) → (P, n)."""
    return torch.bmm(y.unsqueeze(1), wm).squeeze(1)


def _bshape(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape((-1,) + (1,) * (like.dim() - 1))


def _sn_scale(w: torch.Tensor, sigma: torch.Tensor, k) -> torch.Tensor:
    """k·W/σ per member: W/σ when every k is 1 (torch's arithmetic), else W·(k/σ)."""
    if isinstance(k, float) and k == 1.0:
        return w / _bshape(sigma, w)
    return w * _bshape(k / sigma, w)


class _SNScale(torch.autograd.Function):
    """W̄ = k·W/σ with σ = uᵀ W v and u, v constants (what autograd differentiates in torch's
    spectral norm): forward one pass over W, backward
    ∂L/∂W = (k/σ)·G − (k/σ²)·⟨G, W⟩·u vᵀ (per member), two passes over W instead of autograd's
    chain through the division and the mat-vec. Written in differentiable ops (double backward
    works, though SN never meets the gradient penalty: they are different regularizers)."""

    @staticmethod
    def forward(ctx, w, sigma, k, u, v):
        if isinstance(k, torch.Tensor):  # per-member k (P,), a constant
            ctx.k = None
            ctx.save_for_backward(w, sigma, u, v, k)
        else:
            ctx.k = k
            ctx.save_for_backward(w, sigma, u, v)
        return _sn_scale(w, sigma, k)

    @staticmethod
    def backward(ctx, g):
        if ctx.k is None:
            w, sigma, u, v, k = ctx.saved_tensors
        else:
            (w, sigma, u, v), k = ctx.saved_tensors, ctx.k
        P = w.shape[0]
        gw = _sn_scale(g, sigma, k)  # (k/σ)·G
        dot = torch.bmm(g.reshape(P, 1, -1), w.reshape(P, -1, 1)).reshape(P)  # ⟨G, W⟩
        coef = -(k / sigma) * dot / sigma
        gm = torch.baddbmm(gw.reshape(P, u.shape[1], -1), (coef.unsqueeze(1) * u).unsqueeze(2),
                           v.unsqueeze(1))
        return gm.reshape(w.shape), None, None, None, None


class BatchedNet:
    """P copies of one ``Generator`` / ``Discriminator`` (``.net`` a Sequential of
    :data:`_LAYERS`, optionally SN-parametrized) as stacked tensors keyed by state-dict names.

    ``params``: name → leaf tensor (P, …) with ``requires_grad``; ``buffers``: SN u/v, BN running
    statistics (P, …). Inputs and outputs are member-major: (P, B, …)."""

    def __init__(self, members: Sequence[nn.Module], device: torch.device, image: bool):
        self.P = len(members)
        self.image = image
        self.device = device
        m0 = members[0]
        self.out_shape = getattr(m0, "out_shape", None)
        self.z_dim = getattr(m0, "z_dim", None)
        self.is_d = self.z_dim is None
        states = [m.state_dict() for m in members]
        pnames = [n for n, _ in m0.named_parameters()]
        self.params = {n: torch.stack([s[n] for s in states]).to(device).requires_grad_(True)
                       for n in pnames}
        self.buffers = {n: torch.stack([s[n] for s in states]).to(device)
                        for n in states[0] if n not in self.params}
        self.layers: list[tuple[str, str, dict[str, Any]]] = []
        for i, mod in enumerate(m0.net):
            if not isinstance(mod, _LAYERS):
                raise TypeError(f"population: unsupported layer {type(mod).__name__}")
            pre = f"net.{i}."
            info: dict[str, Any] = {}
            if isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                from torch.nn.utils import parametrize

                if parametrize.is_parametrized(mod, "weight"):
                    plist = mod.parametrizations.weight
                    info["sn"] = True
                    info["w"] = pre + "parametrizations.weight.original"
                    info["u"] = pre + "parametrizations.weight.0._u"
                    info["v"] = pre + "parametrizations.weight.0._v"
                    info["sn_eps"] = plist[0].eps
                    ks = [float(m.net[i].parametrizations.weight[1].k) for m in members]
                    info["k"] = ks[0] if len(set(ks)) == 1 else torch.tensor(
                        ks, device=device, dtype=torch.float32)
                else:
                    info["w"] = pre + "weight"
                info["b"] = pre + "bias" if (pre + "bias") in self.params else None
                if isinstance(mod, nn.Linear):
                    self.layers.append(("linear", pre, info))
                else:
                    info.update(stride=mod.stride, padding=mod.padding)
                    self.layers.append(("conv" if isinstance(mod, nn.Conv2d) else "deconv",
                                        pre, info))
            elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                info.update(eps=mod.eps, momentum=mod.momentum)
                self.layers.append(("bn", pre, info))
            elif isinstance(mod, nn.ReLU):
                self.layers.append(("relu", pre, info))
            elif isinstance(mod, nn.LeakyReLU):
                self.layers.append(("lrelu", pre, {"slope": mod.negative_slope}))
            else:
                self.layers.append(("tanh", pre, info))

    # -- parameters ---------------------------------------------------------------------------
    def weight(self, info: dict[str, Any], training: bool, detach: bool) -> torch.Tensor:
        """The weight the layer's forward uses: W, or SN's k·W/σ(W) after one power iteration in
        train mode (``torch.nn.utils.parametrizations.spectral_norm``, batched over members).

        The power iteration is torch's (u ← normalize(W v), v ← normalize(Wᵀ u), in place, no
        grad). σ = uᵀ W v with the new u, v is read off the iteration's own Wᵀu: uᵀ W v = (Wᵀu)·v
        (one mat-vec less; equal up to rounding), and W̄ = k·W/σ is :class:`_SNScale`, whose
        backward is autograd's for torch's W/σ(W)·k written as two passes over W."""
        w = self.params[info["w"]]
        if not info.get("sn"):
            return w.detach() if detach else w
        P = self.P
        wd = w.detach()
        wm = wd.reshape(P, w.shape[1], -1)  # dim 0 of each member's weight (Linear / Conv2d)
        u, v = self.buffers[info["u"]], self.buffers[info["v"]]
        with torch.no_grad():
            if training:
                eps = info["sn_eps"]
                u.copy_(F.normalize(_mv(wm, v), dim=1, eps=eps))
                t = _mtv(wm, u)
                v.copy_(F.normalize(t, dim=1, eps=eps))
                sigma = (t * v).sum(1)
            else:
                sigma = (u * _mv(wm, v)).sum(1)
            if detach:
                return _sn_scale(wd, sigma, info["k"])
        # u, v are the buffers' values now (the next forward updates them in place)
        return _SNScale.apply(w, sigma, info["k"], u.clone(), v.clone())

    # -- forward --------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, *, training: bool = True, detach: bool = False
                 ) -> torch.Tensor:
        """x: (P, B, …) member-major → (P, B, …) (D: (P, B))."""
        P, B = x.shape[0], x.shape[1]
        p = self.params
        if self.image:
            if x.dim() == 3:  # G input z (P, B, z) → (B, P·z, 1, 1)
                h = x.transpose(0, 1).reshape(B, -1, 1, 1)
            else:  # (P, B, C, H, W) → (B, P·C, H, W)
                h = x.transpose(0, 1).reshape(B, -1, x.shape[-2], x.shape[-1])
        else:
            h = x
        for kind, _pre, info in self.layers:
            if kind == "linear":
                w = self.weight(info, training, detach)
                b = info["b"]
                if b is not None:
                    bb = p[b].detach() if detach else p[b]
                    h = torch.baddbmm(bb.unsqueeze(1), h, w.transpose(1, 2))
                else:
                    h = torch.bmm(h, w.transpose(1, 2))
            elif kind in ("conv", "deconv"):
                w = self.weight(info, training, detach)
                b = info["b"]
                bias = None
                if b is not None:
                    bias = (p[b].detach() if detach else p[b]).reshape(-1)
                wf = w.reshape((-1,) + tuple(w.shape[2:]))
                if kind == "conv":
                    h = F.conv2d(h, wf, bias, info["stride"], info["padding"], groups=P)
                else:
                    h = F.conv_transpose2d(h, wf, bias, info["stride"], info["padding"],
                                           groups=P)
            elif kind == "bn":
                pre = _pre
                wt, bs = p[pre + "weight"], p[pre + "bias"]
                if detach:
                    wt, bs = wt.detach(), bs.detach()
                rm, rv = self.buffers[pre + "running_mean"], self.buffers[pre + "running_var"]
                if h.dim() == 3:  # mlp (P, B, C) → (B, P·C)
                    hh = h.transpose(0, 1).reshape(B, -1)
                    hh = F.batch_norm(hh, rm.view(-1), rv.view(-1), wt.reshape(-1),
                                      bs.reshape(-1), training, info["momentum"], info["eps"])
                    h = hh.reshape(B, P, -1).transpose(0, 1)
                else:
                    h = F.batch_norm(h, rm.view(-1), rv.view(-1), wt.reshape(-1), bs.reshape(-1),
                                     training, info["momentum"], info["eps"])
                if training:
                    nbt = self.buffers.get(pre + "num_batches_tracked")
                    if nbt is not None:
                        nbt.add_(1)
            elif kind == "relu":
                h = F.relu(h)
            elif kind == "lrelu":
                h = F.leaky_relu(h, info["slope"])
            else:
                h = torch.tanh(h)
        if self.is_d:  # (B, P, 1, 1) or (P, B, 1) → (P, B)
            return h.reshape(B, P).transpose(0, 1) if self.image else h.reshape(P, B)
        if self.image:  # (B, P·c, H, W) → (P, B, c, H, W)
            return h.reshape((B, P, -1) + tuple(h.shape[2:])).transpose(0, 1)
        return h

    # -- members ----------------------------------------------------------------------------------
    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        out = {n: t[i].detach() for n, t in self.params.items()}
        out.update({n: t[i] for n, t in self.buffers.items()})
        return out
