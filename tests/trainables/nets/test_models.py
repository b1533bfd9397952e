"""Generator / discriminator architectures against Appendix B tables (a), (b) and Appendix C."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.nets.models import (
    ARCHS,
    arch_resolution,
    build_discriminator,
    build_generator,
    d_weight_layers,
)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _layer_spec(m: nn.Module) -> list[tuple]:
    """(kind, in, out, kernel, stride, padding) of the conv layers, BN/act names otherwise."""
    spec = []
    for layer in m.net:
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            kind = "deconv" if isinstance(layer, nn.ConvTranspose2d) else "conv"
            spec.append(
                (
                    kind,
                    layer.in_channels,
                    layer.out_channels,
                    layer.kernel_size[0],
                    layer.stride[0],
                    layer.padding[0],
                )
            )
        elif isinstance(layer, nn.LeakyReLU):
            spec.append(("lrelu", layer.negative_slope))
        else:
            spec.append(type(layer).__name__)
    return spec


def test_dcgan32_matches_table_b():
    g = build_generator("dcgan32", channels=3)
    assert _layer_spec(g) == [
        ("deconv", 100, 256, 4, 1, 0),
        "BatchNorm2d",
        "ReLU",
        ("deconv", 256, 128, 4, 2, 1),
        "BatchNorm2d",
        "ReLU",
        ("deconv", 128, 64, 4, 2, 1),
        "BatchNorm2d",
        "ReLU",
        ("deconv", 64, 3, 4, 2, 1),
        "Tanh",
    ]
    d = build_discriminator("dcgan32", channels=3)
    assert _layer_spec(d) == [
        ("conv", 3, 64, 4, 2, 1),
        ("lrelu", 0.2),
        ("conv", 64, 128, 4, 2, 1),
        ("lrelu", 0.2),
        ("conv", 128, 256, 4, 2, 1),
        ("lrelu", 0.2),
        ("conv", 256, 1, 4, 1, 0),
    ]


def test_dcgan64_matches_table_a():
    g = build_generator("dcgan64", channels=3)
    assert _layer_spec(g) == [
        ("deconv", 100, 512, 4, 1, 0),
        "BatchNorm2d",
        "ReLU",
        ("deconv", 512, 256, 4, 2, 1),
        "BatchNorm2d",
        "ReLU",
        ("deconv", 256, 128, 4, 2, 1),
        "BatchNorm2d",
        "ReLU",
        ("deconv", 128, 64, 4, 2, 1),
        "BatchNorm2d",
        "ReLU",
        ("deconv", 64, 3, 4, 2, 1),
        "Tanh",
    ]
    d = build_discriminator("dcgan64", channels=3)
    assert _layer_spec(d) == [
        ("conv", 3, 64, 4, 2, 1),
        ("lrelu", 0.2),
        ("conv", 64, 128, 4, 2, 1),
        ("lrelu", 0.2),
        ("conv", 128, 256, 4, 2, 1),
        ("lrelu", 0.2),
        ("conv", 256, 512, 4, 2, 1),
        ("lrelu", 0.2),
        ("conv", 512, 1, 4, 1, 0),
    ]


def test_appendix_c_bn_discriminator():
    d = build_discriminator("dcgan64", channels=3, d_norm="bn")
    assert _layer_spec(d) == [
        ("conv", 3, 64, 4, 2, 1),
        "BatchNorm2d",
        ("lrelu", 0.2),
        ("conv", 64, 128, 4, 2, 1),
        "BatchNorm2d",
        ("lrelu", 0.2),
        ("conv", 128, 256, 4, 2, 1),
        "BatchNorm2d",
        ("lrelu", 0.2),
        ("conv", 256, 512, 4, 2, 1),
        "BatchNorm2d",
        ("lrelu", 0.2),
        ("conv", 512, 1, 4, 1, 0),
    ]
    for arch, n_bn in [("dcgan32", 3), ("mlp", 2)]:
        c = 2 if arch == "mlp" else 1
        bns = [
            m
            for m in build_discriminator(arch, channels=c, d_norm="bn").modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        assert len(bns) == n_bn
        plain = build_discriminator(arch, channels=c)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in plain.modules())


@pytest.mark.parametrize("arch,channels", [("dcgan32", 1), ("dcgan32", 3), ("dcgan64", 3)])
def test_image_shapes_and_range(arch, channels):
    torch.manual_seed(0)
    res = arch_resolution(arch)
    g = build_generator(arch, channels=channels)
    d = build_discriminator(arch, channels=channels)
    z = torch.randn(5, 100)
    x = g(z)
    assert x.shape == (5, channels, res, res)
    assert x.min() >= -1 and x.max() <= 1
    assert g(z.reshape(5, 100, 1, 1)).shape == x.shape
    out = d(x)
    assert out.shape == (5,)
    assert torch.isfinite(out).all()
    assert g.out_shape == (channels, res, res)


def test_mlp_shapes():
    g = build_generator("mlp", z_dim=8, channels=2)
    d = build_discriminator("mlp", channels=2)
    x = g(torch.randn(7, 8))
    assert x.shape == (7, 2)
    assert d(x).shape == (7,)
    assert [m.out_features for m in d_weight_layers(d)] == [128, 128, 1]
    assert [m.out_features for m in d_weight_layers(g)] == [128, 128, 2]


def test_resolutions_and_errors():
    assert [arch_resolution(a) for a in ARCHS] == [32, 64, None]
    with pytest.raises(ValueError, match="resnet"):
        build_generator("resnet", channels=3)
    with pytest.raises(ValueError, match="resnet"):
        arch_resolution("resnet")
    with pytest.raises(ValueError, match="width"):
        build_discriminator("dcgan32", channels=3, width=0)
    with pytest.raises(ValueError, match="d_norm"):
        build_discriminator("dcgan32", channels=3, d_norm="ln")
    with pytest.raises(ValueError, match="32"):
        build_discriminator("dcgan32", channels=3)(torch.zeros(2, 3, 64, 64))


def test_width_scales_hidden_channels_and_parameters():
    n = {w: _n_params(build_discriminator("dcgan32", channels=3, width=w)) for w in (0.5, 1, 2)}
    assert n[0.5] < n[1] < n[2]
    # conv parameters ~ c_in·c_out, so ~width² away from the first/last layer
    assert 0.2 < n[0.5] / n[1] < 0.3
    d = build_discriminator("dcgan64", channels=3, width=0.5)
    assert [m.out_channels for m in d_weight_layers(d)] == [32, 64, 128, 256, 1]
    g = build_generator("dcgan64", channels=3, width=0.5)
    assert [m.out_channels for m in d_weight_layers(g)] == [256, 128, 64, 32, 3]
    tiny = build_discriminator("dcgan32", channels=3, width=0.001)
    assert [m.out_channels for m in d_weight_layers(tiny)] == [1, 1, 1, 1]
    mlp = build_generator("mlp", channels=2, width=0.25)
    assert [m.out_features for m in d_weight_layers(mlp)] == [32, 32, 2]


@pytest.mark.parametrize("arch", ARCHS)
def test_d_bias_false_removes_all_d_biases(arch):
    c = 2 if arch == "mlp" else 3
    d = build_discriminator(arch, channels=c, d_bias=False)
    assert not [n for n, _ in d.named_parameters() if "bias" in n]
    assert all(m.bias is None for m in d_weight_layers(d))
    with_bias = build_discriminator(arch, channels=c)
    assert all(m.bias is not None for m in d_weight_layers(with_bias))
    g = build_generator(arch, channels=c)
    assert all(m.bias is not None for m in d_weight_layers(g))


@pytest.mark.parametrize("arch,n", [("dcgan32", 4), ("dcgan64", 5), ("mlp", 3)])
def test_d_weight_layers_forward_order(arch, n):
    c = 2 if arch == "mlp" else 3
    layers = d_weight_layers(build_discriminator(arch, channels=c))
    assert len(layers) == n
    first, last = layers[0], layers[-1]
    assert getattr(first, "in_channels", getattr(first, "in_features", None)) == c
    assert getattr(last, "out_channels", getattr(last, "out_features", None)) == 1


def test_dcgan_init():
    torch.manual_seed(0)
    g = build_generator("dcgan64", channels=3)
    d = build_discriminator("dcgan64", channels=3, d_norm="bn")
    for m in list(g.modules()) + list(d.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.weight.numel() > 10000:
            assert abs(m.weight.std().item() - 0.02) < 0.002
            assert abs(m.weight.mean().item()) < 0.002
            if m.bias is not None:
                assert torch.all(m.bias == 0)
        if isinstance(m, nn.BatchNorm2d):
            assert abs(m.weight.mean().item() - 1) < 0.01
            assert 0.005 < m.weight.std().item() < 0.04
            assert torch.all(m.bias == 0)
