"""Generator and discriminator networks of the paper (Appendix B, C) plus an MLP for 2-D toys.

Architectures (``ARCHS``):

``dcgan32``  Appendix B, table (b), 32×32 (MNIST, CIFAR10)::

    G: z ∈ R^100 → reshape 1×1×100
       → 4×4 s1 deconv BN 256 ReLU        (4×4)
       → 4×4 s2 deconv BN 128 ReLU        (8×8)
       → 4×4 s2 deconv BN  64 ReLU        (16×16)
       → 4×4 s2 deconv  c Tanh            (32×32)
    D: x ∈ [-1, 1]^{32×32×c}
       → 4×4 s2 conv  64 lReLU(0.2)       (16×16)
       → 4×4 s2 conv 128 lReLU(0.2)       (8×8)
       → 4×4 s2 conv 256 lReLU(0.2)       (4×4)
       → 4×4 s1 conv   1                  (1×1)  → output shape (B,)

``dcgan64``  Appendix B, table (a), 64×64 (CelebA)::

    G: 4×4 s1 deconv BN 512 → s2 BN 256 → s2 BN 128 → s2 BN 64 (ReLU each) → s2 deconv c Tanh
    D: 4×4 s2 conv 64 → 128 → 256 → 512 (lReLU(0.2) each) → 4×4 conv 1 (4×4 → 1×1)

    Table (a) prints the last D layer as "4×4, stride=2, conv 1"; on a 4×4 map with padding 0
    stride 1 and stride 2 give the same single output, so we use stride 1 as table (b) does.

``mlp``  the toys (ring8, grid25, roth7 in 2-D; roth7_3d in 3-D; not in the paper; channels =
the data dimension)::

    G: z (z_dim) → 128 ReLU → 128 ReLU → channels (linear output, no tanh)
    D: channels → 128 lReLU(0.2) → 128 lReLU(0.2) → 1

Conventions shared by all archs:

* Padding 1 on the stride-2 4×4 layers, 0 on the stride-1 4×4 layers.
* ``width`` multiplies every *hidden* channel / unit count: ``max(1, round(c · width))``;
  ``width = 1.0`` is the paper. The image channels, the z size and D's single output unit are
  never scaled.
* The tables mark "SN" on D's hidden convs only, but the paper's K ≈ k_SN^n (Eq. 3 writes
  K = k_SN^{N+1}, Appendix D quotes 50^4 for the 4-layer 32×32 D) counts every layer; SN is
  applied by the regularizer (``trainables.gan.regularizers``), never here, and it normalizes every
  layer returned by :func:`d_weight_layers`: n = 4 (dcgan32), 5 (dcgan64), 3 (mlp).
* ``d_bias=False`` drops every conv/linear bias of D. With bias-free layers and the positively
  homogeneous LeakyReLU, D is positively homogeneous in each layer's weight, which is what makes
  Eq. 3 (D at k_SN = k_SN^n · D at 1) exact rather than approximate.
* ``d_norm="bn"`` puts BatchNorm after each hidden D layer (conv/linear → BN → lReLU), the
  gradient-penalty discriminator of Appendix C. It is not meant to be combined with SN (the SN
  regularizer refuses it). BN keeps its affine shift even with ``d_bias=False``.
* G keeps its biases; G's hidden layers are deconv → BN → ReLU. D's activations are not
  in-place (safe under double backprop for gradient penalties and under forward hooks).
* DCGAN initialisation (Radford et al.): conv / deconv weights ~ N(0, 0.02), BN weight
  ~ N(1, 0.02), BN bias and conv biases 0. The mlp's Linear layers keep torch's default init
  (N(0, 0.02) would start a 2-D toy with a nearly constant G).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from trainables.params import ARCH_RESOLUTION

__all__ = [
    "ARCHS",
    "D_NORMS",
    "Discriminator",
    "Generator",
    "arch_resolution",
    "build_discriminator",
    "build_generator",
    "d_weight_layers",
    "eval_mode",
]

ARCHS: tuple[str, ...] = tuple(ARCH_RESOLUTION)  # declared with their resolutions there
D_NORMS: tuple[str, ...] = ("none", "bn")

# Hidden channel counts exactly as the tables list them (top to bottom).
_G_CHANNELS = {"dcgan32": (256, 128, 64), "dcgan64": (512, 256, 128, 64)}
_D_CHANNELS = {"dcgan32": (64, 128, 256), "dcgan64": (64, 128, 256, 512)}
_MLP_HIDDEN = (128, 128)
_LRELU_SLOPE = 0.2
_WEIGHT_LAYER_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")


def arch_resolution(arch: str) -> int | None:
    """Image side length the arch makes and takes (32, 64), or None for the mlp (2-D points)."""
    _check_arch(arch)
    return ARCH_RESOLUTION[arch]


def _scaled(c: int, width: float) -> int:
    return max(1, round(c * width))


def _check_common(channels: int, width: float) -> None:
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    if (
        isinstance(width, bool)
        or not isinstance(width, (int, float))
        or not (math.isfinite(width) and width > 0)
    ):
        raise ValueError(f"width must be a finite number > 0, got {width!r}")


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), BN weight N(1, 0.02), BN bias / conv bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, z_dim) [or (B, z_dim, 1, 1)] → samples (B, c, R, R) in [-1, 1] or (B, c) for mlp."""

    def __init__(self, arch: str, net: nn.Sequential, *, z_dim: int, channels: int, width: float):
        super().__init__()
        self.arch = arch
        self.z_dim = z_dim
        self.channels = channels
        self.width = width
        self.resolution = ARCH_RESOLUTION[arch]
        self.net = net

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.resolution is None:
            return (self.channels,)
        return (self.channels, self.resolution, self.resolution)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.resolution is not None and z.dim() == 2:
            z = z.reshape(z.shape[0], self.z_dim, 1, 1)  # "Reshape → 1×1×100"
        return self.net(z)


class Discriminator(nn.Module):
    """x → scalar score per sample, shape (B,). ``self.net`` holds the layers in forward order."""

    def __init__(
        self,
        arch: str,
        net: nn.Sequential,
        *,
        channels: int,
        width: float,
        d_bias: bool,
        d_norm: str,
    ):
        super().__init__()
        self.arch = arch
        self.channels = channels
        self.width = width
        self.d_bias = d_bias
        self.d_norm = d_norm
        self.resolution = ARCH_RESOLUTION[arch]
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resolution is not None and tuple(x.shape[-2:]) != (self.resolution,) * 2:
            raise ValueError(
                f"{self.arch} discriminator takes {self.resolution}×{self.resolution} inputs, "
                f"got shape {tuple(x.shape)}"
            )
        return self.net(x).reshape(x.shape[0])


def build_generator(arch: str, *, z_dim: int = 100, channels: int, width: float = 1.0) -> Generator:
    """The generator of Appendix B (table (b) for dcgan32, table (a) for dcgan64) or the toy MLP.

    ``channels``: image channels (1 MNIST, 3 CIFAR10/CelebA) or, for ``mlp``, the data dimension
    (2 for the 2-D toys, 3 for roth7_3d: ``trainables.data.toys.toy_dim``).
    """
    _check_arch(arch)
    _check_common(channels, width)
    if not isinstance(z_dim, int) or isinstance(z_dim, bool) or z_dim < 1:
        raise ValueError(f"z_dim must be a positive int, got {z_dim!r}")
    layers: list[nn.Module] = []
    if arch == "mlp":
        c_in = z_dim
        for h in _MLP_HIDDEN:
            c = _scaled(h, width)
            layers += [nn.Linear(c_in, c), nn.ReLU(inplace=True)]
            c_in = c
        layers.append(nn.Linear(c_in, channels))
    else:
        c_in = z_dim
        for i, h in enumerate(_G_CHANNELS[arch]):
            c = _scaled(h, width)
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(c_in, c, 4, stride, pad, bias=True),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            c_in = c
        layers += [nn.ConvTranspose2d(c_in, channels, 4, 2, 1, bias=True), nn.Tanh()]
    g = Generator(arch, nn.Sequential(*layers), z_dim=z_dim, channels=channels, width=width)
    _dcgan_init(g)
    return g


def build_discriminator(
    arch: str, *, channels: int, width: float = 1.0, d_bias: bool = True, d_norm: str = "none"
) -> Discriminator:
    """The discriminator of Appendix B (tables (a)/(b)), Appendix C with ``d_norm="bn"``, or the MLP.

    Output shape (B,). No spectral normalization here: that is ``regularizers.get_regularizer("sn")``.
    """
    _check_arch(arch)
    _check_common(channels, width)
    if d_norm not in D_NORMS:
        raise ValueError(f"unknown d_norm {d_norm!r}; expected one of {', '.join(D_NORMS)}")
    if not isinstance(d_bias, bool):
        raise TypeError(f"d_bias must be a bool, got {d_bias!r}")
    bn = d_norm == "bn"
    layers: list[nn.Module] = []
    if arch == "mlp":
        c_in = channels
        for h in _MLP_HIDDEN:
            c = _scaled(h, width)
            layers.append(nn.Linear(c_in, c, bias=d_bias))
            if bn:
                layers.append(nn.BatchNorm1d(c))
            layers.append(nn.LeakyReLU(_LRELU_SLOPE))
            c_in = c
        layers.append(nn.Linear(c_in, 1, bias=d_bias))
    else:
        c_in = channels
        for h in _D_CHANNELS[arch]:
            c = _scaled(h, width)
            layers.append(nn.Conv2d(c_in, c, 4, 2, 1, bias=d_bias))
            if bn:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(_LRELU_SLOPE))
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 4, 1, 0, bias=d_bias))
    d = Discriminator(
        arch, nn.Sequential(*layers), channels=channels, width=width, d_bias=d_bias, d_norm=d_norm
    )
    _dcgan_init(d)
    return d


def d_weight_layers(D: nn.Module) -> list[nn.Module]:
    """D's conv / linear layers in forward order (the layers SN normalizes; n = len of this).

    Relies on D being built in forward order (``nn.Sequential``), so that ``modules()``'s
    registration order is the forward order. Parametrized layers (``ParametrizedConv2d`` …)
    subclass the originals and are included.
    """
    return [m for m in D.modules() if isinstance(m, _WEIGHT_LAYER_TYPES)]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (BatchNorm uses its running statistics and does not update them;
    spectral norm does not advance its power iteration), its previous mode restored afterwards."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)
