"""A Lipschitz bound for D that Theorem 1 can use: the product of every weight layer's true operator
norm, each at the layer's actual stride, padding and input size.

Spectral normalization divides a convolution's kernel by σ of the kernel *reshaped to a matrix*
(out_channels × in_channels·kh·kw), as Miyato et al. do. That is not the convolution's operator
norm ‖x ↦ W ∗ x‖₂ on the layer's input space: overlapping windows make it larger or smaller
(Sedghi et al. 2019; Gouk et al. 2021), so K = Π σ(W̄) is the Lipschitz paper's approximation
(Sec. 4.2: "K ≈ k_SN^n"), not a bound. Here every layer's norm is that of the linear map itself:

* convolution: the largest singular value of A, the convolution without bias at the layer's
  stride, padding, dilation and groups on the input size it receives in D, by Lanczos iteration
  on A and Aᵀ (ARPACK through scipy; Aᵀ by the vector-Jacobian product, i.e. the transposed
  convolution with the matching output padding), in float64 from a fixed private seed;
* linear: the matrix 2-norm (exact SVD).

With 1-Lipschitz activations (LeakyReLU with slope ≤ 1, ReLU) between them, the composition's
Lipschitz constant is at most the product (biases do not change it): ``certified_lipschitz``. A D
with normalisation layers (BatchNorm) gets None: its batch statistics are not a fixed linear map.
Iterative solvers approach σ from below; ``margin`` (relative) is added to each layer's norm so
the product bounds the constant even when iteration stops short of the last digits.

Reading the effective weights touches nothing training uses: spectral-norm parametrizations are
evaluated in eval mode (their u, v are not advanced) and no global RNG is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def operator_norm(fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...], *,
                  tol: float = 1e-12, seed: int = 0, device: torch.device | str = "cpu") -> float:
    """‖fn‖₂ of a linear map ``fn`` on float64 inputs of shape ``in_shape`` (batch dimension
    included): the largest singular value by Lanczos bidiagonalisation (``scipy.sparse.linalg.svds``,
    ARPACK) on the map and its adjoint (``torch.func.vjp``), from a seeded start vector."""
    from scipy.sparse.linalg import LinearOperator, svds

    n_in = math.prod(in_shape)
    zero = torch.zeros(in_shape, dtype=torch.float64, device=device)
    out_shape = tuple(fn(zero).shape)
    n_out = math.prod(out_shape)

    def mv(v):
        return fn(torch.as_tensor(v.reshape(in_shape), device=device)).detach().cpu().numpy().ravel()

    def rmv(v):
        _, pullback = torch.func.vjp(fn, zero)
        return pullback(torch.as_tensor(v.reshape(out_shape), device=device))[0].detach().cpu().numpy().ravel()

    if min(n_in, n_out) == 1:
        return float(np.linalg.norm(rmv(np.ones(1)) if n_out == 1 else mv(np.ones(1))))
    op = LinearOperator((n_out, n_in), matvec=mv, rmatvec=rmv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(min(n_in, n_out))
    return float(svds(op, k=1, which="LM", tol=tol, v0=v0, return_singular_vectors=False)[0])


def layer_map(m: nn.Module, weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The linear part (no bias) of a conv / linear layer ``m`` with weight ``weight``."""
    if isinstance(m, nn.Conv2d):
        return lambda x: F.conv2d(x, weight, None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.Conv1d):
        return lambda x: F.conv1d(x, weight, None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.Linear):
        return lambda x: F.linear(x, weight)
    raise TypeError(f"no operator norm for layer type {type(m).__name__}")


def _eval_weights(D: nn.Module, layers: list[nn.Module], sample_shape: tuple[int, ...]):
    """Each layer's effective weight and input shape, from one forward of zeros in eval mode
    (parametrizations read, not advanced); every module's training flag is restored."""
    shapes: dict[int, tuple[int, ...]] = {}
    def record(mod, args):
        shapes.setdefault(id(mod), tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(record) for m in layers]
    modes = {m: m.training for m in D.modules()}
    try:
        D.eval()
        with torch.no_grad():
            p = next(D.parameters())
            D(torch.zeros((1, *sample_shape), dtype=p.dtype, device=p.device))
            weights = [m.weight.detach().clone() for m in layers]
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.train(mode)
    return weights, [shapes[id(m)] for m in layers]


def layer_norms(D: nn.Module, sample_shape: tuple[int, ...], *, tol: float = 1e-12) -> list[float]:
    """The operator norm of each of D's weight layers (forward order) at its input size."""
    from trainables.nets.models import d_weight_layers

    layers = d_weight_layers(D)
    weights, shapes = _eval_weights(D, layers, sample_shape)
    out = []
    for m, w, shape in zip(layers, weights, shapes):
        w64 = w.to(torch.float64)
        if isinstance(m, nn.Linear):
            out.append(float(torch.linalg.matrix_norm(w64, ord=2)))
        else:
            out.append(operator_norm(layer_map(m, w64), shape, tol=tol, device=w.device))
    return out


def certified_lipschitz(D: nn.Module, sample_shape: tuple[int, ...], *, margin: float = 1e-6,
                        tol: float = 1e-12) -> float | None:
    """An upper bound of D's Lipschitz constant on inputs of shape ``sample_shape`` (no batch
    dimension): Π_l ‖A_l‖₂·(1 + margin); None for a D with normalisation layers."""
    if any(isinstance(m, nn.modules.batchnorm._NormBase) for m in D.modules()):
        return None
    log_k = sum(math.log(s * (1 + margin)) if s > 0 else -math.inf
                for s in layer_norms(D, sample_shape, tol=tol))
    return math.exp(log_k) if log_k < 709 else math.inf
