"""Regularizer registry, `none`, and `sn` (Eq. 1) with the exact scaling of Eq. 3 and its gradients."""

from __future__ import annotations

import copy

import pydantic
import pytest
import torch

from trainables.nets.models import arch_resolution, build_discriminator, build_generator, d_weight_layers
from trainables.gan.regularizers import (
    REGULARIZERS,
    Regularizer,
    get_regularizer,
    keys_by_regularizer,
    register_regularizer,
    sn_layers,
)
from trainables.params import REGULARIZER_PARAMS, RegularizerParams, declare_regularizer

N_LAYERS = {"dcgan32": 4, "dcgan64": 5, "mlp": 3}


def _input(arch: str, b: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    res = arch_resolution(arch)
    shape = (b, 2) if res is None else (b, 3, res, res)
    return torch.rand(shape, generator=gen) * 2 - 1


def _channels(arch: str) -> int:
    return 2 if arch == "mlp" else 3


def _sn_pair(arch: str, k: float, *, width: float = 1.0, d_bias: bool = False):
    """(D at k_SN = 1, D at k_SN = k) with identical W, u, v: one D's state copied into the other."""
    torch.manual_seed(0)
    d1 = get_regularizer("sn", k_sn=1.0).apply(
        build_discriminator(arch, channels=_channels(arch), width=width, d_bias=d_bias)
    )
    dk = get_regularizer("sn", k_sn=k).apply(
        build_discriminator(arch, channels=_channels(arch), width=width, d_bias=d_bias)
    )
    dk.load_state_dict(d1.state_dict())
    return d1, dk


# ---------------------------------------------------------------------------------- registry


def test_registry_has_none_and_sn():
    assert {"none", "sn"} <= set(REGULARIZERS)
    assert REGULARIZERS["sn"].name == "sn"
    assert keys_by_regularizer()["sn"] == ("k_sn",)
    assert keys_by_regularizer()["none"] == ()
    assert get_regularizer("sn").params.k_sn == 1.0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "abc"])
def test_sn_rejects_bad_k_naming_the_key(bad):
    with pytest.raises(ValueError, match="k_sn"):
        get_regularizer("sn", k_sn=bad)


def test_foreign_or_unknown_keys_are_errors_naming_the_key():
    with pytest.raises(ValueError, match="k_gp"):
        get_regularizer("sn", k_sn=1.0, k_gp=1.0)
    with pytest.raises(ValueError, match="k_sn"):
        get_regularizer("none", k_sn=5.0)
    with pytest.raises(pydantic.ValidationError):
        get_regularizer("sn", ksn=5.0)


def test_unknown_regularizer_named_in_error():
    with pytest.raises(ValueError, match="spectral") as e:
        get_regularizer("spectral")
    assert "sn" in str(e.value)  # lists the known ones


def test_register_custom_and_duplicate():
    try:

        @declare_regularizer("_test_clip")
        class P(RegularizerParams):
            c: float = 0.01

        @register_regularizer("_test_clip")
        class Clip(Regularizer):
            Params = P

            def after_d_step(self, D):
                for p in D.parameters():
                    p.data.clamp_(-self.params.c, self.params.c)

        reg = get_regularizer("_test_clip", c=0.5)
        assert isinstance(reg, Clip) and reg.name == "_test_clip"
        d = reg.apply(build_discriminator("mlp", channels=2))
        reg.after_d_step(d)
        assert max(p.abs().max().item() for p in d.parameters()) <= 0.5
        with pytest.raises(ValueError, match="already registered"):
            register_regularizer("_test_clip")(Clip)
    finally:
        REGULARIZERS.pop("_test_clip", None)
        REGULARIZER_PARAMS.pop("_test_clip", None)

    class Loose(pydantic.BaseModel):
        x: float = 1.0

    with pytest.raises(TypeError, match="extra"):

        @register_regularizer("_test_loose")
        class L(Regularizer):
            Params = Loose

    assert "_test_loose" not in REGULARIZERS


def test_a_regularizer_is_registered_against_its_declaration():
    """The torch class of a name must carry the Params declared for it (trainables.params), and
    have a Pack form exactly when the declaration says it packs; nothing is registered otherwise."""

    class Undeclared(RegularizerParams):
        c: float = 1.0

    with pytest.raises(TypeError, match="declared as '_test_undeclared'"):

        @register_regularizer("_test_undeclared")
        class U(Regularizer):
            Params = Undeclared

    with pytest.raises(TypeError, match="declared as '_test_other'"):  # gp's Params
        register_regularizer("_test_other")(type("O", (Regularizer,), {"Params": REGULARIZERS[
            "gp"].Params}))
    try:

        @declare_regularizer("_test_packs")
        class Packs(RegularizerParams):
            packs = True

        with pytest.raises(TypeError, match="Params.packs is True but the class has no Pack"):
            register_regularizer("_test_packs")(type("NP", (Regularizer,), {"Params": Packs}))
    finally:
        REGULARIZER_PARAMS.pop("_test_packs", None)
    assert not {"_test_undeclared", "_test_other", "_test_packs"} & set(REGULARIZERS)


def test_the_torch_registry_agrees_with_the_declarations():
    """One name list: every declared regularizer has its torch class with the declared Params,
    k_key and packing, and every torch class is declared (the registries of losses and
    optimizers likewise)."""
    from trainables.gan.losses import LOSSES
    from trainables.gan.optim import OPTIMIZERS
    from trainables.params import LOSS_NAMES, OPTIMIZER_PARAMS

    assert list(REGULARIZERS) == list(REGULARIZER_PARAMS)
    for name, cls in REGULARIZERS.items():
        declared = REGULARIZER_PARAMS[name]
        assert cls.Params is declared and cls.name == name
        assert cls.k_key == declared.k_key and cls.packs() == declared.packs
    assert list(LOSSES) == list(LOSS_NAMES)
    assert OPTIMIZERS == tuple(OPTIMIZER_PARAMS)


def test_none_is_identity():
    reg = get_regularizer("none")
    d = build_discriminator("mlp", channels=2)
    before = copy.deepcopy(d.state_dict())
    assert reg.apply(d) is d
    x = _input("mlp")
    pen, info = reg.penalty(d, x, x, step=0, total_steps=10)
    assert pen.shape == () and pen.item() == 0 and info == {}
    assert reg.lipschitz_k(d) is None and reg.metrics(d) == {}
    reg.after_d_step(d)
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())


# ------------------------------------------------------------------------------------- sn


@pytest.mark.parametrize("arch", ["dcgan32", "dcgan64", "mlp"])
def test_sn_parametrizes_every_layer_and_k_is_k_pow_n(arch):
    reg = get_regularizer("sn", k_sn=5.0)
    d = build_discriminator(arch, channels=_channels(arch))
    assert reg.lipschitz_k(d) == 5.0 ** N_LAYERS[arch]  # n known before apply too
    originals = [m.weight for m in d_weight_layers(d)]
    out = reg.apply(d)
    assert out is d
    assert len(sn_layers(d)) == len(d_weight_layers(d)) == N_LAYERS[arch]
    assert reg.lipschitz_k(d) == 5.0 ** N_LAYERS[arch]
    # the trainable parameter is the unnormalized W, the very same Parameter objects
    assert [m.parametrizations.weight.original for m in sn_layers(d)] == originals
    params = set(map(id, d.parameters()))
    assert all(id(w) in params for w in originals)
    assert d(_input(arch)).shape == (6,)


def test_sn_refuses_bn_and_double_apply():
    with pytest.raises(ValueError, match="bn"):
        get_regularizer("sn").apply(build_discriminator("dcgan32", channels=3, d_norm="bn"))
    d = get_regularizer("sn").apply(build_discriminator("mlp", channels=2))
    with pytest.raises(ValueError, match="already"):
        get_regularizer("sn").apply(d)


@pytest.mark.parametrize("arch,k", [("dcgan32", 0.2), ("dcgan64", 5.0), ("mlp", 50.0)])
def test_sigma_of_normalized_weight_is_k(arch, k):
    """σ(W̄) → k_SN per layer once the power iteration has converged.

    σ here is the largest singular value of the weight reshaped to (out, in·kh·kw): that is what
    torch's spectral_norm (and Miyato et al.) normalize, not the operator norm of the conv.
    """
    torch.manual_seed(0)
    reg = get_regularizer("sn", k_sn=k)
    d = reg.apply(build_discriminator(arch, channels=_channels(arch), width=0.25))

    def sigmas():
        d.eval()  # eval: the weight uses the stored u, v and does not iterate further
        with torch.no_grad():
            s = [
                torch.linalg.matrix_norm(m.weight.reshape(m.weight.shape[0], -1), 2).item()
                for m in sn_layers(d)
            ]
        d.train()
        return torch.tensor(s)

    with torch.no_grad():
        d(_input(arch, b=1))
        # A train-mode forward runs one power iteration per layer when it reads the weight;
        # reading the weight directly does the same step without the convolutions.
        for m in sn_layers(d):
            for _ in range(150):
                _ = m.weight
    s = sigmas()
    torch.testing.assert_close(s, torch.full_like(s, k), rtol=1e-3, atol=0)
    m = reg.metrics(d)
    torch.testing.assert_close(torch.tensor([m[f"sn_sigma_{i}"] for i in range(len(s))]), s)
    assert m["sn_k_product"] == pytest.approx(k ** N_LAYERS[arch])
    assert m["sn_sigma_product"] == pytest.approx(k ** N_LAYERS[arch], rel=5e-3)


def test_metrics_do_not_advance_power_iteration():
    reg = get_regularizer("sn", k_sn=2.0)
    d = reg.apply(build_discriminator("dcgan32", channels=3, width=0.25))
    d.train()
    before = copy.deepcopy(d.state_dict())
    reg.metrics(d)
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())
    assert d.training and all(p.training for m in sn_layers(d) for p in m.parametrizations.weight)
    d(_input("dcgan32"))  # a train-mode forward does advance u, v
    assert not all(torch.equal(before[k], v) for k, v in d.state_dict().items())


def test_k_is_config_not_state():
    _, dk = _sn_pair("mlp", 7.0)
    assert not any("k" == key.rsplit(".", 1)[-1] for key in dk.state_dict())
    assert sn_layers(dk)[0].parametrizations.weight[1].k == 7.0


@pytest.mark.parametrize("arch", ["dcgan32", "dcgan64"])
@pytest.mark.parametrize("k", [0.2, 5.0, 50.0])
def test_eq3_exact_output_scaling(arch, k):
    """Eq. 3: bias-free, LeakyReLU D at k_SN equals k_SN^n × D at k_SN = 1 (same W, u, v)."""
    d1, dk = _sn_pair(arch, k)
    d1.eval(), dk.eval()
    x = _input(arch)
    with torch.no_grad():
        f1, fk = d1(x), dk(x)
    want = k ** N_LAYERS[arch] * f1
    torch.testing.assert_close(fk, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_eq3_fails_with_biases():
    """Control: nonzero biases are not scaled by SN, so Eq. 3 is only approximate with them."""
    d1, dk = _sn_pair("dcgan32", 5.0, d_bias=True)
    with torch.no_grad():
        for m in d_weight_layers(d1):
            m.bias.normal_(0, 0.1)
    dk.load_state_dict(d1.state_dict())
    d1.eval(), dk.eval()
    x = _input("dcgan32")
    with torch.no_grad():
        want = 5.0**4 * d1(x)
        got = dk(x)
    assert (got - want).abs().max() > 1e-3 * want.abs().max()


@pytest.mark.parametrize(
    "arch,k", [("dcgan32", 0.2), ("dcgan32", 5.0), ("dcgan64", 0.25), ("mlp", 10.0)]
)
def test_gradients_carry_k_pow_n_for_linear_loss(arch, k):
    """The ε factor: for the linear WGAN loss every D parameter gradient (the unnormalized W) and
    every G parameter gradient at k_SN is k_SN^n × the one at 1, so torch's matching ε is ε·k^n."""
    width = 0.25 if arch == "dcgan64" else 0.5
    d1, dk = _sn_pair(arch, k, width=width)
    torch.manual_seed(1)
    g1 = build_generator(arch, channels=_channels(arch), width=width)
    gk = copy.deepcopy(g1)
    real = _input(arch, b=4)
    z = torch.randn(4, 100)
    scale = k ** N_LAYERS[arch]
    grads = []
    for g, d in [(g1, d1), (gk, dk)]:  # both in train mode: same power-iteration steps
        d_loss = d(g(z).detach()).mean() - d(real).mean()  # WGAN D loss (Table 1), linear in f
        gd = torch.autograd.grad(d_loss, list(d.parameters()))
        g_loss = -d(g(z)).mean()
        gg = torch.autograd.grad(g_loss, list(g.parameters()))
        grads.append((gd, gg))
    (gd1, gg1), (gdk, ggk) = grads
    assert len(gd1) == N_LAYERS[arch]  # bias-free: the parameters are the n unnormalized W's
    for grads1, gradsk in [(gd1, gdk), (gg1, ggk)]:
        # atol relative to the network's largest gradient: G's deconv biases sit before BN, so
        # their exact gradient is 0 and what autograd returns is rounding noise at either k.
        atol = 1e-5 * scale * max(a.abs().max().item() for a in grads1)
        for a, b in zip(grads1, gradsk):
            torch.testing.assert_close(b, scale * a, rtol=1e-4, atol=atol)
    # and the factor really is there (not trivially 1)
    ratio = gdk[0].norm() / gd1[0].norm()
    assert ratio.item() == pytest.approx(scale, rel=1e-4)


def test_the_design_docs_worked_example_adds_a_regularizer():
    """docs/design.md's "Adding a regularizer" code, run as written: the declaration and the class
    register R2, a trial with it validates, its penalty is γ/2·mean‖∇f(fake)‖², and the captured
    modes refuse it with the declared reason."""
    import re
    from pathlib import Path

    from trainables import params as params_mod
    from trainables.gan import regularizer_base
    from trainables.config import validate_trial
    from trainables.step_modes import capture_refusal

    doc = (Path(__file__).resolve().parents[3] / "docs" / "design.md").read_text()
    section = doc[doc.index("### Adding a regularizer"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns = {**vars(params_mod), **vars(regularizer_base)}
    try:
        exec(compile(code, "design.md", "exec"), ns)
        assert validate_trial({"dataset": "ring8", "arch": "mlp", "regularizer": "r2",
                               "r2_gamma": 2.0}, check_data=False)["r2_gamma"] == 2.0
        assert "double backward" in capture_refusal("compiled", "r2", packed=False)
        reg = get_regularizer("r2", r2_gamma=2.0)
        torch.manual_seed(0)
        D = build_discriminator("mlp", channels=2)
        real, fake = _input("mlp", 8, 1), _input("mlp", 8, 2)
        pen, _ = reg.penalty(D, real, fake, step=0, total_steps=1)
        x = fake.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x)
        assert torch.allclose(pen, 0.5 * 2.0 * g.pow(2).sum(1).mean(), rtol=1e-6)
        assert set(reg.metrics(D)) == {"r2_grad_norm_mean"}
    finally:
        REGULARIZERS.pop("r2", None)
        REGULARIZER_PARAMS.pop("r2", None)
