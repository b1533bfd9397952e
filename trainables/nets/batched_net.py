"""P copies of one generator or discriminator as stacked tensors, run as one batched model
(``trainables.pack.population``): ``mlp`` layers as batched matrix products; conv layers as one call
per member on CPU, grouped convolutions elsewhere; BatchNorm with per-member statistics;
spectral norm's power iteration batched over members.

**Bit for bit on CPU.** Every member's step is computed with the one-config trial's own ops on
equal inputs, so the result is the trial's exactly (tests/trainables/pack/test_population.py: toy
and dcgan32 packs give every member its trial's records, bit for bit):

* A batched op is used only where it equals, on this CPU and for this shape, the unbatched op
  applied to each member's own tensor (``F.linear`` and its backward, ``torch.mv``,
  ``F.normalize``, a tensor's full sum or mean, a loss term forward and backward): checked once
  per (op, shapes) in the process on four random draws (:func:`_same_bits`), otherwise the op
  loops over the members, each on a contiguous, 64-byte-aligned copy of its slice as a trial
  holds its tensor (MKL's results depend on alignment). Kernel choice depends on shapes, not
  values. On this box batched ``bmm`` matches ``mm`` / ``mv`` for the toy shapes except a 1-row
  weight (a transposed row form matches there, a mat-vec loops); ``torch.vdot`` never matches
  (a loop); an elementwise transcendental over 16 samples (softplus) is computed by the scalar
  tail of the vector loop and over two stacked members by the vector body: it loops.
* Convolutions, transposed convolutions and BatchNorm of the conv nets run per member
  (:meth:`BatchedNet._images_by_member`): a grouped convolution over P·C channels sums in
  another order, and GAN training amplifies that rounding to per-cent differences within tens
  of steps.
* Elementwise ops without transcendentals (add, multiply, divide, (leaky) ReLU, sqrt) are
  exactly rounded and run batched.

Off CPU (CUDA) nothing is checked: batched forms and grouped convolutions throughout (cuBLAS /
cuDNN batched kernels are not bitwise with single ones anyway); the pack-vs-trial tolerances are
the contract there.

A parametrized weight (spectral norm) is computed by the batched form its last parametrization
provides (``batched(layers, prefix, device)``: ``trainables.gan.spectral_norm.BatchedSpectralNorm``,
built on the member ops below), so this module knows no regularizer.

The linear layer is :class:`_Linear`, whose backward hands back ∂L/∂W contiguous (Gᵀ·h, the
orientation of ``F.linear``'s backward) where autograd's backward of a batched ``baddbmm`` gives
a transposed view that every later elementwise op on it (the optimizer) pays for on CPU."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainables import names


_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU,
           nn.LeakyReLU, nn.Tanh)

# -- batched ops that reproduce torch's per-member ops bit for bit --------------------------------

#: (op, shapes, dtype, device type) → whether the batched form equals the per-member op.
_BITWISE: dict[tuple, bool] = {}
#: Elementwise functions registered by :func:`member_apply` ("fn:<key>" ops).
_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}


def _ops(op: str) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """(batched form, per-member op) of an op name ("name" or "name:argument")."""
    name, _, arg = op.partition(":")
    if name == "fn":  # an elementwise function: the same callable batched and per member
        return _FNS[arg], _FNS[arg]
    if name == "mv":  # a row-vector bmm (cheaper than a column bmm or a multiply-and-sum)
        return lambda w, v: torch.bmm(v.unsqueeze(1), w.mT).squeeze(1), torch.mv
    if name == "mtv":
        return lambda w, u: torch.bmm(u.unsqueeze(1), w).squeeze(1), lambda w, u: torch.mv(w.H, u)
    if name == "normalize":
        eps = float(arg)
        return (lambda y: F.normalize(y, dim=1, eps=eps),
                lambda y: F.normalize(y, dim=0, eps=eps))
    if name == "sum_member":  # the full sum of each member's tensor (arg: its ndim, batched)
        dims = tuple(range(1, int(arg)))
        return lambda z: z.sum(dims), lambda z: z.sum()
    if name == "mean_member":  # the full mean of each member's tensor (a loss over its batch)
        dims = tuple(range(1, int(arg)))
        return lambda z: z.mean(dims), lambda z: z.mean()
    if name == "lin":
        return lambda h, w, b: torch.baddbmm(b.unsqueeze(1), h, w.mT), F.linear
    if name == "lin_row":  # (Wᵀ·hᵀ + b)ᵀ: what matches F.linear for a 1-row W
        return lambda h, w, b: torch.baddbmm(b.unsqueeze(2), w, h.mT).mT, F.linear
    if name == "lin_nb":
        return lambda h, w: torch.bmm(h, w.mT), F.linear
    if name == "lin_nb_row":
        return lambda h, w: torch.bmm(w, h.mT).mT, F.linear
    if name == "lin_gh":  # F.linear's backward (addmm's): ∂h = G·W, ∂W = (hᵀ·G)ᵀ, ∂b = Σ_B G
        return torch.bmm, torch.mm
    if name == "lin_gw":
        return lambda g, h: torch.bmm(g.mT, h), lambda g, h: h.t().mm(g).t()
    if name == "lin_gb":
        return lambda g: g.sum(1), lambda g: g.sum(0)
    raise KeyError(op)


def _own(t: torch.Tensor) -> torch.Tensor:
    """A member's slice as a one-config trial holds the tensor: contiguous and 64-byte aligned
    (torch's CPU allocator). MKL's results can depend on alignment, and a slice of a stack
    starts wherever the previous member ends. (Traced by torch.compile: always a copy.)"""
    if not torch.compiler.is_compiling() and t.is_contiguous() and t.data_ptr() % 64 == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _members(member: Callable[..., torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """stack(member(x₁[i], x₂[i], …)) over the members, each on its own (aligned) tensors."""
    return torch.stack([member(*(_own(x[i]) for x in xs)) for i in range(xs[0].shape[0])])


@torch._dynamo.assume_constant_result  # a constant of the shapes: torch.compile reads it once
def _same_bits(op: str, shapes: tuple[tuple[int, ...], ...], dtype: str, device: str) -> bool:
    """Whether ``op``'s batched form equals its per-member op (:func:`_members`) bit for bit
    for inputs of ``shapes`` (leading member axis): checked once per (op, shapes, dtype, device)
    in the process, on four seeded random draws at different scales (kernel choice depends on
    shapes and alignment, not values; several draws catch two kernels that agree on most
    values). Not checked off CPU: the batched form is taken (CUDA is not bitwise anyway)."""
    key = (op, shapes, dtype, device)
    ok = _BITWISE.get(key)
    if ok is None:
        ok = True
        if device == "cpu":
            batched, member = _ops(op)
            g = torch.Generator().manual_seed(1234)
            with torch.no_grad():
                for scale in (1.0, 1e-3, 37.0, 1e4):
                    xs = [torch.randn(s, generator=g, dtype=getattr(torch, dtype)) * scale
                          for s in shapes]
                    if not torch.equal(batched(*xs), _members(member, xs)):
                        ok = False
                        break
                    if op.startswith("fn:") and not _same_gradient(batched, xs[0], g):
                        ok = False
                        break
        _BITWISE[key] = ok
    return ok


def _same_gradient(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                   g: torch.Generator) -> bool:
    """Whether autograd's gradient of the elementwise ``fn`` over the stack equals, bit for bit,
    its gradient member by member (its backward kernels see other sizes too)."""
    with torch.enable_grad():
        zb = z.clone().requires_grad_(True)
        yb = fn(zb)
        up = torch.randn(yb.shape, generator=g, dtype=yb.dtype)
        (gb,) = torch.autograd.grad(yb, zb, up)
        gm = []
        for i in range(z.shape[0]):
            zi = z[i].clone().requires_grad_(True)
            gm.append(torch.autograd.grad(fn(zi), zi, up[i].clone())[0])
    return torch.equal(gb, torch.stack(gm))


def _bitwise(op: str, xs: Sequence[torch.Tensor]) -> bool:
    return _same_bits(op, tuple(tuple(x.shape) for x in xs), str(xs[0].dtype).split(".")[-1],
                      xs[0].device.type)


def _pick(op: str, *xs: torch.Tensor) -> torch.Tensor:
    """``op``'s batched form on ``xs`` if it reproduces the per-member op bit for bit for these
    shapes (:func:`_same_bits`), else the per-member loop."""
    batched, member = _ops(op)
    if _bitwise(op, xs):
        return batched(*xs)
    return _members(member, xs)


def register_member_fn(key: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Name an elementwise function for :func:`member_apply` (the same key, the same function;
    registered outside any torch.compile trace, which reads the registry)."""
    _FNS.setdefault(key, fn)


def member_apply(key: str, z: torch.Tensor) -> torch.Tensor:
    """The function registered as ``key`` (elementwise, e.g. a loss term) on each member's row
    of z (P, …), bit for bit as on the member's own tensor, forward and backward: batched where
    that holds for this shape, else one call per member. (CPU kernels split a tensor into vector
    chunks and a scalar tail by its size, and transcendental functions round differently in the
    two: softplus on a 16-sample batch is not softplus on two stacked ones.)"""
    return _pick(f"fn:{key}", z)


def member_sum(z: torch.Tensor) -> torch.Tensor:
    """(P,) per member ``z[i].sum()``, bit for bit (the batched reduction where it matches)."""
    return _pick(f"sum_member:{z.dim()}", z)


def member_mean(z: torch.Tensor) -> torch.Tensor:
    """(P,) per member ``z[i].mean()`` (a loss term's mean over the member's batch), bit for bit
    the one-config trial's ``.mean()`` (the batched reduction where it matches, else a loop)."""
    return _pick(f"mean_member:{z.dim()}", z)


def member_mv(wm: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per member ``torch.mv(W, x)``: (P, m, n) · (P, n) → (P, m)."""
    return _pick("mv", wm, x)


def member_mtv(wm: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per member ``torch.mv(W.H, y)``: (P, m, n) · (P, m) → (P, n)."""
    return _pick("mtv", wm, y)


def member_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per member ``F.normalize(x, dim=0, eps=eps)`` (SN's power iteration), x: (P, n)."""
    return _pick(f"normalize:{eps!r}", x)


def member_vdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per member ``torch.vdot(a, b)``: on CPU a loop (no batched form reproduces its BLAS
    dot); elsewhere (not bitwise anyway; a loop would be P kernel launches) one batched sum."""
    if a.device.type != "cpu":
        return (a.conj() * b).sum(1)
    return _members(torch.vdot, (a, b))


def _linear_fwd(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Per member ``F.linear(h, W, b)``: ``baddbmm``, or its transposed (row) form, whichever is
    bitwise (a 1-row W needs the row form), else a loop."""
    xs = (h, w) if b is None else (h, w, b)
    for op in (("lin_nb", "lin_nb_row") if b is None else ("lin", "lin_row")):
        if _bitwise(op, xs):
            return _ops(op)[0](*xs)
    return _members(F.linear, xs)


class _Linear(torch.autograd.Function):
    """Batched ``F.linear``: h (P, B, in) · W (P, out, in)ᵀ + b (P, out), forward and backward
    as ``F.linear``'s (``addmm``'s) per member: ∂h = G·W, ∂W = (hᵀ·G)ᵀ, ∂b = Σ_B G, each batched
    form checked bitwise (:func:`_pick`). ∂W comes back contiguous (autograd's backward of a
    batched ``baddbmm`` gives a transposed view, slow for the optimizer's elementwise ops on
    CPU). Written in differentiable ops: the gradient penalty's double backward goes through it."""

    @staticmethod
    def forward(ctx, h, w, b):
        ctx.save_for_backward(h, w)
        ctx.has_bias = b is not None
        return _linear_fwd(h, w, b)

    @staticmethod
    def backward(ctx, g):
        h, w = ctx.saved_tensors
        gh = gw = gb = None
        if ctx.needs_input_grad[0]:
            gh = _pick("lin_gh", g, w)
        if ctx.needs_input_grad[1]:
            gw = _pick("lin_gw", g, h)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = _pick("lin_gb", g)
        return gh, gw, gb


def _activation(kind: str, info: dict[str, Any], h: torch.Tensor) -> torch.Tensor:
    """An elementwise layer (exactly rounded: batched over the members)."""
    if kind == "relu":
        return F.relu(h)
    if kind == "lrelu":
        return F.leaky_relu(h, info["slope"])
    return torch.tanh(h)


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
        self.z_dim = getattr(m0, names.Z_DIM, None)  # a generator carries its trial key z_dim
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
                    batched = getattr(mod.parametrizations.weight[-1], "batched", None)
                    if batched is None:
                        raise TypeError(f"population: {pre}weight's parametrization has no "
                                        "batched form")
                    info["sn"] = batched([m.net[i] for m in members], pre, device)
                    info["w"] = info["sn"].w
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
                info.update(bn_eps=mod.eps, momentum=mod.momentum)
                self.layers.append(("bn", pre, info))
            elif isinstance(mod, nn.ReLU):
                self.layers.append(("relu", pre, info))
            elif isinstance(mod, nn.LeakyReLU):
                self.layers.append(("lrelu", pre, {"slope": mod.negative_slope}))
            else:
                self.layers.append(("tanh", pre, info))

    # -- parameters ---------------------------------------------------------------------------
    def weight(self, info: dict[str, Any], training: bool, detach: bool) -> torch.Tensor:
        """The weight the layer's forward uses: W, or its parametrization's batched form (SN's
        k·W/σ(W) after one power iteration in train mode: ``trainables.gan.spectral_norm``)."""
        w = self.params[info["w"]]
        if detach:
            w = w.detach()
        if not info.get("sn"):
            return w
        return info["sn"].weight(w, self.buffers, training, detach)

    # -- forward --------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, *, training: bool = True, detach: bool = False
                 ) -> torch.Tensor:
        """x: (P, B, …) member-major → (P, B, …) (D: (P, B))."""
        if self.image and self.device.type == "cpu":
            return self._images_by_member(x, training, detach)
        P, B = x.shape[0], x.shape[1]
        p = self.params
        if self.image:
            if x.dim() == 3:  # G input z (P, B, z) → (B, P·z, 1, 1)
                h = x.transpose(0, 1).reshape(B, -1, 1, 1)
            else:  # (P, B, C, H, W) → (B, P·C, H, W)
                h = x.transpose(0, 1).reshape(B, -1, x.shape[-2], x.shape[-1])
        else:
            h = x
        for kind, pre, info in self.layers:
            if kind == "linear":
                h = _Linear.apply(h, self.weight(info, training, detach), self._bias(info, detach))
            elif kind in ("conv", "deconv"):
                w = self.weight(info, training, detach)
                bias = self._bias(info, detach)
                bias = None if bias is None else bias.reshape(-1)
                wf = w.reshape((-1,) + tuple(w.shape[2:]))
                op = F.conv2d if kind == "conv" else F.conv_transpose2d
                h = op(h, wf, bias, info["stride"], info["padding"], groups=P)
            elif kind == "bn":
                h = self._bn_stacked(h, pre, info, training, detach)
            else:
                h = _activation(kind, info, h)
        if self.is_d:  # (B, P, 1, 1) or (P, B, 1) → (P, B)
            return h.reshape(B, P).transpose(0, 1) if self.image else h.reshape(P, B)
        if self.image:  # (B, P·c, H, W) → (P, B, c, H, W)
            return h.reshape((B, P, -1) + tuple(h.shape[2:])).transpose(0, 1)
        return h

    def _bias(self, info: dict[str, Any], detach: bool) -> torch.Tensor | None:
        b = info["b"]
        if b is None:
            return None
        return self.params[b].detach() if detach else self.params[b]

    def _bn_params(self, pre: str, detach: bool):
        """(weight, bias, running mean, running var) of a BatchNorm layer, stacked."""
        wt, bs = self.params[pre + "weight"], self.params[pre + "bias"]
        if detach:
            wt, bs = wt.detach(), bs.detach()
        return wt, bs, self.buffers[pre + "running_mean"], self.buffers[pre + "running_var"]

    def _count_batch(self, pre: str, training: bool) -> None:
        """BatchNorm's ``num_batches_tracked`` += 1 in train mode, as the module counts."""
        nbt = self.buffers.get(pre + "num_batches_tracked") if training else None
        if nbt is not None:
            nbt.add_(1)

    def _bn_stacked(self, h: torch.Tensor, pre: str, info: dict[str, Any], training: bool,
                    detach: bool) -> torch.Tensor:
        """BatchNorm over the members' channels side by side (per-member statistics)."""
        wt, bs, rm, rv = self._bn_params(pre, detach)
        if h.dim() == 3:  # mlp (P, B, C) → (B, P·C)
            P, B = h.shape[0], h.shape[1]
            hh = h.transpose(0, 1).reshape(B, -1)
            hh = F.batch_norm(hh, rm.view(-1), rv.view(-1), wt.reshape(-1),
                              bs.reshape(-1), training, info["momentum"], info["bn_eps"])
            h = hh.reshape(B, P, -1).transpose(0, 1)
        else:
            h = F.batch_norm(h, rm.view(-1), rv.view(-1), wt.reshape(-1), bs.reshape(-1),
                             training, info["momentum"], info["bn_eps"])
        self._count_batch(pre, training)
        return h

    def _images_by_member(self, x: torch.Tensor, training: bool, detach: bool) -> torch.Tensor:
        """The conv nets on CPU, member-major (P, B, C, H, W): every conv, transposed conv and
        BatchNorm is the one-config trial's own op on the member's own (aligned) tensors, one
        call per member — a grouped convolution over P·C channels sums in another order (oneDNN
        picks other kernels), and GAN training turns that rounding into per-cent differences
        within tens of steps (a WGAN member's Ω at step 12 moved 0.2 % in the population study
        test). Activations and the SN weights stay batched (bitwise already)."""
        P, B = x.shape[0], x.shape[1]
        h = x.reshape(P, B, -1, 1, 1) if x.dim() == 3 else x  # G's z: "Reshape → 1×1×z"
        for kind, pre, info in self.layers:
            if kind in ("conv", "deconv"):
                w = self.weight(info, training, detach)
                bias = self._bias(info, detach)
                op = F.conv2d if kind == "conv" else F.conv_transpose2d
                st, pad = info["stride"], info["padding"]
                # unbind, not h[i]: the backward of each h[i] is a zero-filled tensor of the
                # whole stack (O(P²) for P members), unbind's is one stack of the P gradients
                hs, ws = h.unbind(0), w.unbind(0)
                bs = [None] * P if bias is None else [_own(t) for t in bias.unbind(0)]
                h = torch.stack([op(_own(hs[i]), _own(ws[i]), bs[i], st, pad) for i in range(P)])
            elif kind == "bn":
                wt, bs, rm, rv = self._bn_params(pre, detach)
                # the running statistics are updated in place, in the stacked buffers' rows
                hs, wts, bss = h.unbind(0), wt.unbind(0), bs.unbind(0)
                h = torch.stack([
                    F.batch_norm(_own(hs[i]), rm[i], rv[i], _own(wts[i]), _own(bss[i]), training,
                                 info["momentum"], info["bn_eps"]) for i in range(P)])
                self._count_batch(pre, training)
            elif kind == "linear":
                raise TypeError(f"population: {kind} layer in a conv net")
            else:
                h = _activation(kind, info, h)
        return h.reshape(P, B) if self.is_d else h

    # -- members ----------------------------------------------------------------------------------
    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        out = {n: t[i].detach() for n, t in self.params.items()}
        out.update({n: t[i] for n, t in self.buffers.items()})
        return out
