"""Each regularizer tested by the property its paper states, on networks where the answer is known.

gp   Lipschitz paper Eq. 18 / WGAN-GP: hand values on linear and quadratic f, one-sided (LP) mode.
r1   γ/2·E_real‖∇f‖², by hand.
gran GraN-GAN Eq. 16/20 (the value of g) and Eq. 19 (‖∇ₓg‖ = K‖∇f‖²/(‖∇f‖²+ε) per sample).
alr  ALR Eq. 16 (power iteration finds ∇f's direction), Eq. 15/17 (ratio, penalty, violations).
js   Roth et al. Eq. 28 by hand, Eq. 26 = Eq. 28 (log-parametrisation), Algorithm 1's γ schedule.
clip every D parameter in [−c, c] after apply and after a real D step.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from trainables.config import ConfigError, validate_trial
from trainables.nets.models import build_discriminator, build_generator
from trainables.gan.regularizers import (
    REGULARIZERS,
    GraNDiscriminator,
    get_regularizer,
    keys_by_regularizer,
)
from trainables.metrics.stats import input_grad_norms


class LinearD(nn.Module):
    """f(x) = w·x + b per sample: ∇ₓf = w everywhere."""

    def __init__(self, w: torch.Tensor, b: float = 0.3):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b, dtype=w.dtype))

    def forward(self, x):
        return x.flatten(1) @ self.w + self.b


class QuadraticD(nn.Module):
    """f(x) = ½‖x‖² per sample: ∇ₓf = x."""

    def forward(self, x):
        return 0.5 * x.flatten(1).pow(2).sum(1)


def _w(d=12, norm=2.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    return w / w.norm() * norm


def _batch(b=8, d=12, seed=1, shape=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    return x if shape is None else x.reshape(b, *shape)


# ------------------------------------------------------------------------------ registry / keys


def test_every_paper_regularizer_is_registered_with_the_design_keys():
    assert keys_by_regularizer() == {
        "none": (),
        "sn": ("k_sn",),
        "gp": ("k_gp", "gp_lambda", "gp_mode"),
        "r1": ("r1_gamma",),
        "gran": ("gran_k", "gran_eps"),
        "alr": ("alr_k", "alr_lambda", "alr_xi", "alr_eps_min", "alr_eps_max", "alr_iters"),
        "js": ("js_gamma0", "js_decay"),
        "clip": ("clip_c",),
    }


def test_paper_defaults():
    p = {name: cls.Params().model_dump() for name, cls in REGULARIZERS.items()}
    assert p["gp"] == {"k_gp": 1.0, "gp_lambda": 10.0, "gp_mode": "two-sided"}  # App. C, WGAN-GP
    assert p["alr"] == {"alr_k": 1.0, "alr_lambda": 100.0, "alr_xi": 10.0, "alr_eps_min": 0.1,
                        "alr_eps_max": 10.0, "alr_iters": 1}  # ALR Sec. 4
    assert p["js"] == {"js_gamma0": 2.0, "js_decay": 0.01}  # Roth et al. Algorithm 1
    assert p["clip"] == {"clip_c": 0.01}  # WGAN
    assert p["gran"]["gran_k"] == 1.0


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"regularizer": "gp", "gran_k": 2.0}, "gran_k"),  # another regularizer's key
        ({"regularizer": "gran", "k_gp": 1.0}, "k_gp"),
        ({"regularizer": "gp", "gp_mode": "both"}, "gp_mode"),
        ({"regularizer": "gp", "k_gp": -1.0}, "k_gp"),
        ({"regularizer": "gran", "gran_k": 0.0}, "gran_k"),
        ({"regularizer": "gran", "gran_eps": 0.0}, "gran_eps"),
        ({"regularizer": "alr", "alr_eps_min": 2.0, "alr_eps_max": 1.0}, "alr_eps_max"),
        ({"regularizer": "alr", "alr_iters": 0}, "alr_iters"),
        ({"regularizer": "js", "js_decay": 1.5}, "js_decay"),
        ({"regularizer": "clip", "clip_c": float("inf")}, "clip_c"),
        ({"regularizer": "r1", "r1_gamma": -1}, "r1_gamma"),
        ({"regularizer": "gran", "d_norm": "bn"}, "d_norm"),  # per-sample gradient needs no BN
        ({"regularizer": "sn", "d_norm": "bn"}, "d_norm"),
    ],
)
def test_bad_keys_rejected_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as e:
        validate_trial({"dataset": "ring8", "arch": "mlp", **raw}, check_data=False)
    assert e.value.key == key


def test_bn_is_allowed_with_gp_and_the_others():
    for reg in ("gp", "r1", "alr", "js", "clip", "none"):
        cfg = validate_trial({"dataset": "ring8", "arch": "mlp", "regularizer": reg, "d_norm": "bn"})
        assert cfg["d_norm"] == "bn"


def test_lipschitz_k_is_the_target_of_each_regularizer():
    d = build_discriminator("dcgan32", channels=1, width=0.125)
    assert get_regularizer("sn", k_sn=2.0).lipschitz_k(d) == 2.0**4
    assert get_regularizer("gp", k_gp=0.5).lipschitz_k(d) == 0.5
    assert get_regularizer("gran", gran_k=0.83).lipschitz_k(d) == 0.83
    assert get_regularizer("alr", alr_k=3.0).lipschitz_k(d) == 3.0
    for name in ("none", "r1", "js", "clip"):
        assert get_regularizer(name).lipschitz_k(d) is None


# ----------------------------------------------------------------------------------------- gp


@pytest.mark.parametrize("k,norm", [(1.0, 2.5), (1.0, 0.4), (3.0, 2.5), (0.0, 2.5)])
def test_gp_equals_hand_value_on_linear_f(k, norm):
    """‖∇f(x̂)‖ = ‖w‖ at every interpolate, so Eq. 18 is λ(‖w‖ − k)², and its gradient w.r.t. w
    (through the double backprop) is 2λ(‖w‖ − k)·w/‖w‖."""
    lam = 7.0
    D = LinearD(_w(norm=norm))
    reg = get_regularizer("gp", k_gp=k, gp_lambda=lam)
    pen, _ = reg.penalty(D, _batch(seed=1), _batch(seed=2), step=0, total_steps=10)
    assert pen.item() == pytest.approx(lam * (norm - k) ** 2, rel=1e-12)
    (gw,) = torch.autograd.grad(pen, D.w)
    torch.testing.assert_close(gw, 2 * lam * (norm - k) * D.w.detach() / norm)
    m = reg.metrics(D)
    assert m["gp_grad_norm_mean"] == pytest.approx(norm) and m["gp_grad_norm_max"] == pytest.approx(norm)


def test_gp_interpolates_between_real_and_fake_with_the_global_rng():
    """With ∇f(x) = x, the penalty depends on where x̂ lies: reproduce u = torch.rand(B, 1, …)."""
    real, fake = _batch(seed=3, shape=(3, 2, 2)), _batch(seed=4, shape=(3, 2, 2))
    reg = get_regularizer("gp", k_gp=1.0, gp_lambda=10.0)
    torch.manual_seed(123)
    pen, _ = reg.penalty(QuadraticD(), real, fake, step=0, total_steps=1)
    torch.manual_seed(123)
    u = torch.rand(real.shape[0], 1, 1, 1, dtype=real.dtype)
    x_hat = u * real + (1 - u) * fake
    want = 10.0 * ((x_hat.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
    assert pen.item() == pytest.approx(want.item(), rel=1e-12)
    assert not (u == 0).all() and not (u == 1).all()


def test_gp_one_sided_is_zero_when_every_gradient_is_below_k():
    real, fake = _batch(seed=5), _batch(seed=6)
    below = LinearD(_w(norm=0.9))
    pen, _ = get_regularizer("gp", k_gp=1.0, gp_mode="one-sided").penalty(
        below, real, fake, step=0, total_steps=1)
    assert pen.item() == 0.0
    assert all(g is None or (g == 0).all()
               for g in torch.autograd.grad(pen, list(below.parameters()), allow_unused=True))
    # … the same point is penalized two-sided, and above k both modes agree
    two, _ = get_regularizer("gp", k_gp=1.0).penalty(below, real, fake, step=0, total_steps=1)
    assert two.item() == pytest.approx(10 * 0.1**2)
    above = LinearD(_w(norm=1.7))
    one, _ = get_regularizer("gp", k_gp=1.0, gp_mode="one-sided").penalty(
        above, real, fake, step=0, total_steps=1)
    assert one.item() == pytest.approx(10 * 0.7**2)


def test_gp_quadratic_one_sided_mixes_samples_above_and_below():
    """∇f(x̂) = x̂: only the samples with ‖x̂‖ > k contribute to the one-sided mean."""
    real = fake = _batch(b=16, seed=7)  # x̂ = real whatever u is
    k = float(real.norm(dim=1).median())
    pen, _ = get_regularizer("gp", k_gp=k, gp_lambda=2.0, gp_mode="one-sided").penalty(
        QuadraticD(), real, fake, step=0, total_steps=1)
    want = 2.0 * (torch.relu(real.norm(dim=1) - k) ** 2).mean()
    assert pen.item() == pytest.approx(want.item(), rel=1e-12)
    assert 0 < want.item()


@pytest.mark.parametrize("k", [0.0, 1.0])
def test_gp_has_finite_gradient_at_zero_input_gradient(k):
    D = LinearD(torch.zeros(12, dtype=torch.float64))
    pen, _ = get_regularizer("gp", k_gp=k).penalty(D, _batch(), _batch(seed=2), step=0, total_steps=1)
    assert pen.item() == pytest.approx(10 * k**2)
    (gw,) = torch.autograd.grad(pen, D.w)
    assert torch.isfinite(gw).all()


@pytest.mark.parametrize("arch", ["dcgan32", "dcgan64", "mlp"])
def test_gp_works_with_appendix_c_batchnorm_discriminator(arch):
    torch.manual_seed(0)
    ch = 2 if arch == "mlp" else 3
    D = build_discriminator(arch, channels=ch, width=0.0625, d_norm="bn")
    res = {"dcgan32": 32, "dcgan64": 64, "mlp": None}[arch]
    shape = (4, ch) if res is None else (4, ch, res, res)
    real, fake = torch.rand(shape) * 2 - 1, torch.rand(shape) * 2 - 1
    reg = get_regularizer("gp")
    D = reg.apply(D)
    pen, _ = reg.penalty(D, real, fake, step=0, total_steps=1)
    names, params = zip(*D.named_parameters())
    grads = dict(zip(names, torch.autograd.grad(pen, params, allow_unused=True)))
    assert torch.isfinite(pen) and pen.item() > 0
    # a bias / BN shift enters ∇ₓf only through LeakyReLU masks (gradient 0 a.e.) or through later
    # batch statistics, so its gradient may be 0 or None; every weight and BN scale must get a
    # finite, non-zero one
    for name, g in grads.items():
        if name.endswith("bias"):
            assert g is None or torch.isfinite(g).all(), name
            continue
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


# ----------------------------------------------------------------------------------------- r1


def test_r1_equals_hand_value_and_ignores_fake():
    real = _batch(seed=8)
    pen, _ = get_regularizer("r1", r1_gamma=4.0).penalty(
        QuadraticD(), real, _batch(seed=9), step=0, total_steps=1)
    assert pen.item() == pytest.approx(2.0 * real.pow(2).sum(1).mean().item(), rel=1e-12)
    pen2, _ = get_regularizer("r1", r1_gamma=4.0).penalty(
        QuadraticD(), real, 100 * _batch(seed=10), step=0, total_steps=1)
    assert pen2.item() == pen.item()
    lin = LinearD(_w(norm=1.5))
    pen3, _ = get_regularizer("r1", r1_gamma=4.0).penalty(lin, real, real, step=0, total_steps=1)
    assert pen3.item() == pytest.approx(2.0 * 1.5**2)


# --------------------------------------------------------------------------------------- gran


def _random_leaky_net(arch: str, seed: int):
    """A random LeakyReLU network with biases, in float64; weights scaled up from DCGAN's N(0, .02)
    so that samples land in many linear pieces with varied gradient norms."""
    torch.manual_seed(seed)
    ch = 2 if arch == "mlp" else 1
    D = build_discriminator(arch, channels=ch, width=0.125 if arch != "mlp" else 0.25).double()
    with torch.no_grad():
        for p in D.parameters():
            p.normal_(0, 0.3)
    res = {"dcgan32": 32, "mlp": None}[arch]
    shape = (10, ch) if res is None else (10, ch, res, res)
    x = (torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    return D, x


def _grad_norm_f(D, x):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x)
    return g.flatten(1).norm(dim=1)


@pytest.mark.parametrize("arch", ["mlp", "dcgan32"])
@pytest.mark.parametrize("K", [0.83, 5.0])
def test_gran_eq19_input_gradient_norm_per_sample(arch, K):
    """‖∇ₓg(x)‖ = K·‖∇f‖²/(‖∇f‖² + ε) for every sample (Eq. 19, scaled by K = 1/τ, Eq. 20). ε is set to
    the median ‖∇f‖², so the slope varies across samples and differs from K: the identity is not
    the trivial ‖∇g‖ = K."""
    f, x = _random_leaky_net(arch, seed=11)
    n = _grad_norm_f(f, x)
    eps = float(n.pow(2).median())
    g_net = get_regularizer("gran", gran_k=K, gran_eps=eps).apply(f)
    xi = x.clone().requires_grad_(True)
    g = g_net(xi)
    (gx,) = torch.autograd.grad(g.sum(), xi)
    got = gx.flatten(1).norm(dim=1)
    want = K * n**2 / (n**2 + eps)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert (want < 0.9 * K).all() and (want.max() - want.min()) > 0.01 * K  # not the trivial K
    assert (got < K).all()
    # and the value of g is Eq. 16/20 itself
    with torch.no_grad():
        fx = f(x)
    torch.testing.assert_close(g.detach(), K * fx * n / (n**2 + eps), rtol=1e-10, atol=1e-12)


def test_gran_fig3_tight_gradient_norm_in_float32():
    """Fig. 3: with ε ≪ ‖∇f‖², ‖∇ₓg‖ sits at K with a spread < 1e-6 (float32, as trained)."""
    f, x = _random_leaky_net("mlp", seed=12)
    f, x = f.float(), x.float()
    K = 0.83
    g_net = get_regularizer("gran", gran_k=K).apply(f)  # default ε
    norms = input_grad_norms(g_net, x)  # the trainer's own measurement, through the wrapper
    assert (norms - K).abs().max().item() < 1e-6 * 10  # float32 rounding of ~1e-7 per op
    assert float(norms.max() - norms.min()) < 1e-6


def test_gran_refuses_bn_and_double_apply():
    with pytest.raises(ValueError, match="bn"):
        get_regularizer("gran").apply(build_discriminator("mlp", channels=2, d_norm="bn"))
    g = get_regularizer("gran").apply(build_discriminator("mlp", channels=2))
    assert isinstance(g, GraNDiscriminator)
    with pytest.raises(ValueError, match="already"):
        get_regularizer("gran").apply(g)


def test_gran_in_the_generator_step_and_in_eval_mode():
    """The trainer's G step freezes D (requires_grad False): g still differentiates w.r.t. its
    input, so G gets gradients, D gets none, and G's gradient is K·R(‖∇f‖)·∇f pushed through G
    (the normalization factor is piecewise constant, Eq. 18)."""
    torch.manual_seed(0)
    f = build_discriminator("mlp", channels=2, width=0.25)
    G = build_generator("mlp", channels=2, width=0.25, z_dim=8)
    K, eps = 2.0, 1e-3
    D = get_regularizer("gran", gran_k=K, gran_eps=eps).apply(f)
    z = torch.randn(6, 8)
    D.requires_grad_(False)
    x = G(z)
    loss = -D(x).mean()
    gG = torch.autograd.grad(loss, list(G.parameters()))
    assert all(p.grad is None for p in D.parameters())
    # reference: the same gradient with the normalization factor held constant
    x2 = G(z)
    fx = f(x2)
    xd = x2.detach().requires_grad_(True)
    (gf,) = torch.autograd.grad(f(xd).sum(), xd)
    n = gf.norm(dim=1)
    ref = -(K * fx * (n / (n**2 + eps))).mean()
    gref = torch.autograd.grad(ref, list(G.parameters()))
    for a, b in zip(gG, gref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    D.requires_grad_(True)
    # eval mode and no_grad: same values, no graph
    xe = torch.randn(5, 2)
    train_out = D(xe).detach()
    D.eval()
    with torch.no_grad():
        ev = D(xe)
    assert ev.grad_fn is None
    torch.testing.assert_close(ev, train_out)
    D.train()


def test_gran_metrics_report_the_eq19_slope_of_the_last_d_step():
    torch.manual_seed(0)
    reg = get_regularizer("gran", gran_k=0.5, gran_eps=1e-3)
    D = reg.apply(build_discriminator("mlp", channels=2, width=0.25))
    x = torch.randn(8, 2)
    D(x)  # a D-step forward (train mode, D parameters trainable)
    m = reg.metrics(D)
    n = _grad_norm_f(D.f, x)
    assert m["gran_f_grad_norm_mean"] == pytest.approx(n.mean().item(), rel=1e-5)
    assert m["gran_slope_min"] == pytest.approx((0.5 * n**2 / (n**2 + 1e-3)).min().item(), rel=1e-5)


# ---------------------------------------------------------------------------------------- alr


@pytest.mark.parametrize("iters", [1, 3])
def test_alr_power_iteration_finds_w_for_linear_f(iters):
    w = _w(norm=2.5)
    D = LinearD(w)
    reg = get_regularizer("alr", alr_iters=iters)
    x = _batch(b=16)
    torch.manual_seed(0)
    r = reg.perturbation(D, x)
    cos = (r @ w) / (r.norm(dim=1) * w.norm())
    assert (cos.abs() > 0.99).all()  # parallel to w (the sign of r is immaterial to |Δf|)
    eps = r.norm(dim=1)
    assert (eps >= 0.1 - 1e-12).all() and (eps <= 10 + 1e-12).all()
    assert eps.std() > 0  # ε ~ U[0.1, 10] per sample
    torch.manual_seed(1)
    ratio = reg.ratios(D, x)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 2.5), rtol=1e-9, atol=0)


@pytest.mark.parametrize("K,violating", [(1.0, True), (4.0, False)])
def test_alr_penalty_and_violations_around_norm_w(K, violating):
    """‖w‖ = 2.5: K below it → every real and fake sample violates, penalty λ(‖w‖ − K)²;
    K above it → no violation, penalty 0."""
    D = LinearD(_w(norm=2.5))
    reg = get_regularizer("alr", alr_k=K, alr_lambda=3.0)
    real, fake = _batch(b=8, seed=1), _batch(b=8, seed=2)
    pen, _ = reg.penalty(D, real, fake, step=0, total_steps=1)
    m = reg.metrics(D)
    if violating:
        assert pen.item() == pytest.approx(3.0 * (2.5 - K) ** 2, rel=1e-9)
        assert m["alr_violations"] == 16 and m["alr_violations_real"] == 8
        assert m["alr_violations_fake"] == 8
    else:
        assert pen.item() == 0.0
        assert m["alr_violations"] == 0
    assert m["alr_ratio_max"] == pytest.approx(2.5)


def test_alr_violation_count_on_mixed_batch():
    """Per-sample slopes: f(x) = ½‖x‖² has ratio ≈ ‖x‖ for a small ε; the count is the number of
    samples with ‖x‖ > K (a small ξ: the power iteration probes the gradient near x)."""
    x = _batch(b=20, seed=3)
    srt = x.norm(dim=1).sort().values
    K = float(srt[13] + srt[14]) / 2  # 6 samples above, none within ε of K
    reg = get_regularizer("alr", alr_k=K, alr_xi=1e-6, alr_eps_min=1e-6, alr_eps_max=1e-6)
    reg.penalty(QuadraticD(), x[:10], x[10:], step=0, total_steps=1)
    m = reg.metrics(None)
    above = x.norm(dim=1) > K
    assert m["alr_violations"] == above.sum().item() == 6
    assert m["alr_violations_real"] == above[:10].sum().item()


def test_alr_direction_beats_random_on_a_deep_net():
    """Eq. 16 approximates argmax of the Lipschitz quotient: on a piecewise-linear net with a small
    ε (and ξ, so that the probe stays in x's linear piece) the adversarial ratio matches ‖∇f(x)‖
    (the local maximum) and beats a random direction."""
    f, x = _random_leaky_net("mlp", seed=13)
    reg = get_regularizer("alr", alr_xi=1e-4, alr_eps_min=1e-4, alr_eps_max=1e-4)
    torch.manual_seed(0)
    ratio = reg.ratios(f, x).detach()
    n = _grad_norm_f(f, x)
    rel = ((ratio - n).abs() / n).median()
    assert rel < 1e-2
    u = torch.randn_like(x)
    u = 1e-4 * u / u.norm(dim=1, keepdim=True)
    with torch.no_grad():
        rand_ratio = (f(x + u) - f(x)).abs() / 1e-4
    assert (ratio >= rand_ratio - 1e-9).float().mean() >= 0.9


# ----------------------------------------------------------------------------------------- js


def _sigmoid(t):
    return 1 / (1 + math.exp(-t))


def test_js_omega_equals_eq28_by_hand_on_linear_f():
    w = _w(norm=1.7)
    D = LinearD(w, b=0.2)
    real, fake = _batch(b=6, seed=1), _batch(b=6, seed=2)
    fr = (real @ w + 0.2).tolist()
    ff = (fake @ w + 0.2).tolist()
    want = (sum((1 - _sigmoid(t)) ** 2 for t in fr) / 6 + sum(_sigmoid(t) ** 2 for t in ff) / 6) * 1.7**2
    reg = get_regularizer("js")
    om = reg.omega(D, real, fake)
    assert om.item() == pytest.approx(want, rel=1e-12)
    pen, info = reg.penalty(D, real, fake, step=49, total_steps=100)
    gamma = 2.0 * 0.01 ** (50 / 100)
    assert info == {"js_gamma": pytest.approx(gamma)}
    assert pen.item() == pytest.approx(gamma / 2 * want, rel=1e-12)
    assert reg.metrics(D)["js_omega"] == pytest.approx(want)


def test_js_logit_form_eq28_equals_log_form_eq26():
    """Appendix: E_P‖∇ln φ‖² + E_Q‖∇ln(1−φ)‖² (Eq. 26, φ = σ(f)) equals Eq. 28 — an independent
    autograd computation on a deep net."""
    f, x = _random_leaky_net("mlp", seed=14)
    real, fake = x[:5], x[5:]
    om = get_regularizer("js").omega(f, real, fake)

    def sq_grad(fn, xs):
        xs = xs.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(f(xs)).sum(), xs)
        return g.pow(2).sum(1).mean()

    want = sq_grad(torch.nn.functional.logsigmoid, real) + sq_grad(
        lambda t: torch.nn.functional.logsigmoid(-t), fake)
    assert om.item() == pytest.approx(want.item(), rel=1e-10)


def test_js_gamma_follows_algorithm1_schedule():
    reg = get_regularizer("js")  # γ0 = 2, α = 0.01
    T = 1000
    gam = [reg.gamma(s, T) for s in range(T)]
    assert gam[0] == pytest.approx(2.0 * 0.01 ** (1 / T))  # t = 1
    assert gam[T // 2 - 1] == pytest.approx(2.0 * 0.1)  # t = T/2: γ0·√α
    assert gam[-1] == pytest.approx(0.02)  # t = T: γ0·α
    assert all(a > b for a, b in itertools.pairwise(gam))
    flat = get_regularizer("js", js_gamma0=0.1, js_decay=1.0)  # "γ = 0.1 without annealing"
    assert {flat.gamma(s, T) for s in (0, 10, T - 1)} == {0.1}


# --------------------------------------------------------------------------------------- clip


@pytest.mark.parametrize("d_norm", ["none", "bn"])
def test_clip_keeps_every_d_parameter_in_the_box_after_a_step(d_norm):
    from trainables.train import GANTrial

    c = 0.005
    cfg = validate_trial({"dataset": "ring8", "arch": "mlp", "width": 0.25, "loss": "wgan",
                          "regularizer": "clip", "clip_c": c, "d_norm": d_norm, "lr_d": 0.5,
                          "lr_g": 1e-3, "iterations": 3, "eval_every": 3, "batch_size": 16,
                          "device": "cpu"})
    trial = GANTrial(cfg)
    params = list(trial.D.parameters())
    assert all(p.abs().max() <= c for p in params)  # clipped once at apply
    before = [p.detach().clone() for p in params]
    for _ in range(3):
        trial.train_step()
        assert all(p.abs().max() <= c for p in trial.D.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trial.D.parameters()))  # it trained
    # without the clip, this lr would have left the box
    m = trial.regularizer.metrics(trial.D)
    assert 0 < m["clip_frac_at_bound"] <= 1
