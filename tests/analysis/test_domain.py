"""Domain hypotheses as the theorems state them (issue #10 part 5): Theorem 1 per iteration with
the measured Lipschitz constant; Ω-shift strata per dataset, architecture and extractor."""

import math

import pandas as pd

from analysis import hypotheses as H

from .conftest import make_frame
from .test_hypotheses import shift_history

K_SN, N_LAYERS = 1.0, 4
DIAM = 2 * math.sqrt(3 * 32 * 32)            # 2√(mnc), inputs in [-1, 1]^(32·32·3)
BOUND = K_SN ** N_LAYERS * DIAM              # nominal Theorem 1 bound (omega_bound)


def _runs(n=3, **kw):
    base = dict(k_sn=K_SN, lipschitz_k=K_SN ** N_LAYERS, n_d_layers=N_LAYERS, omega_bound=BOUND,
                omega_real_min=-1.0, omega_real_max=1.0, omega_fake_min=-1.0, omega_fake_max=1.0,
                omega_union_min=-0.7 * BOUND, omega_union_max=0.7 * BOUND)
    return make_frame([{**base, **kw, "run_id": f"b{s}", "seed": s} for s in range(n)])


def _hist(widths, sigma=None, runs=("b0", "b1", "b2")):
    """Per-step Ω_i of the given widths (centred at a drifting point, so Ω∪ grows past the bound)."""
    rows = []
    for rid in runs:
        for i, w in enumerate(widths):
            c = 0.4 * BOUND * (i % 2 * 2 - 1)            # Ω_i slides from side to side
            rows += [(rid, "omega_real_min", 100 * i, c - w / 2), (rid, "omega_real_max", 100 * i, c + w / 2),
                     (rid, "omega_fake_min", 100 * i, c - w / 4), (rid, "omega_fake_max", 100 * i, c + w / 4)]
            if sigma is not None and i == 0:            # logged once, carried forward
                rows.append((rid, "sn_sigma_product", 100 * i, sigma))
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])


def test_union_over_iterations_is_not_the_bound():
    """Ω∪ is 1.4× the bound (the small-grid report's 'contradicted'); every Ω_i fits: supported."""
    f = _runs()
    v = H.HYPOTHESES["domain-omega-bound"](f, histories=_hist([0.5 * BOUND, 0.8 * BOUND, 0.6 * BOUND]))
    assert v.verdict == "supported", v.details
    assert "Per iteration: 9 logged steps of 3 runs" in v.details
    assert math.isclose(v.statistic, 0.8)


def test_the_measured_constant_is_used_and_named():
    """SN's power iteration leaves Π σ above k_SN^n (1.06-1.17 measured): a width of 1.1× the
    nominal bound is inside the measured one."""
    h = _hist([0.9 * BOUND, 1.1 * BOUND], sigma=1.15)
    v = H.HYPOTHESES["domain-omega-bound"](_runs(), histories=h)
    assert v.verdict == "supported", v.details
    assert "measured SN σ-product at each step for 3 of 3 runs" in v.details
    assert "median 1.15" in v.details
    nominal = H.HYPOTHESES["domain-omega-bound"](_runs(), histories=_hist([0.9 * BOUND, 1.1 * BOUND]))
    assert nominal.verdict == "contradicted" and "nominal K = k_SN^n for the other 3" in nominal.details
    over = H.HYPOTHESES["domain-omega-bound"](_runs(arch="dcgan32"),
                                               histories=_hist([0.9 * BOUND, 1.3 * BOUND], sigma=1.15))
    assert over.verdict == "contradicted" and math.isclose(over.statistic, 1.3 / 1.15)
    assert "dcgan32: 3 of 3 runs exceed" in over.details
    assert "reshaped kernel" in over.details  # a conv violation is explained, not left bare


def test_violations_are_counted_per_architecture():
    """The report says which architectures break the bound; only a conv violation gets the
    reshaped-kernel explanation (an mlp's Π σ is a true Lipschitz bound)."""
    f = make_frame([{**_runs(1).iloc[0].to_dict(), "run_id": rid, "seed": i, "arch": arch}
                    for i, (rid, arch) in enumerate((("b0", "mlp"), ("b1", "mlp"), ("b2", "mlp")))])
    h = _hist([0.9 * BOUND, 1.3 * BOUND], sigma=1.0, runs=("b0",))
    h = pd.concat([h, _hist([0.9 * BOUND], sigma=1.0, runs=("b1", "b2"))])
    v = H.HYPOTHESES["domain-omega-bound"](f, histories=h)
    assert v.verdict == "contradicted"
    assert "mlp: 1 of 3 runs exceed" in v.details and "reshaped kernel" not in v.details


def test_final_values_without_histories_and_a_final_sigma():
    f = _runs(sn_sigma_product=1.15, omega_real_min=-0.55 * BOUND, omega_real_max=0.55 * BOUND)
    v = H.HYPOTHESES["domain-omega-bound"](f)
    assert v.verdict == "supported" and "Last logged step" in v.details
    assert H.HYPOTHESES["domain-omega-bound"](f.drop(columns="sn_sigma_product")).verdict == "contradicted"


def _shift(loss, S, n=4, **kw):
    """Runs whose Ω_i centre drifts by S·(1 + seed/10) widths over the logged steps."""
    return [dict(loss=loss, k_sn=1.0, seed=s, _drift=S * (1 + s / 10), **kw) for s in range(n)]


def _shift_verdict(rows):
    f = make_frame([{k: v for k, v in r.items() if k != "_drift"} for r in rows])
    hist = pd.concat([shift_history([rid], r["_drift"] / 4) for rid, r in zip(f["run_id"], rows)])
    return H.HYPOTHESES["domain-omega-shift"](f, histories=hist)


def test_omega_shift_never_pools_a_toy_with_images():
    img = dict(dataset="cifar10", arch="dcgan32")
    toy = dict(dataset="ring8", arch="mlp", fid_extractor="data-space")
    images = _shift("wgan", 8.0, **img) + _shift("ns", 1.0, **img)
    # ring8 NS runs whose Ω slides far: pooled with the images they would outrank WGAN's shift
    only_ns = _shift("ns", 50.0, n=8, **toy)
    v = _shift_verdict(images + only_ns)
    assert v.verdict == "supported" and v.n == 8 and v.effect_size == 1.0, v.details
    assert "1 stratum" in v.details and "ring8" not in v.details.split("One-sided")[0]
    # with WGAN on ring8 too, each stratum is compared within itself and named
    both = _shift_verdict(images + only_ns + _shift("wgan", 2.0, **toy))
    assert "2 strata" in both.details
    assert "cifar10/inception/dcgan32: median drift" in both.details and "r = +1.00" in both.details
    assert "ring8/data-space/mlp: median drift" in both.details and "r = -1.00" in both.details
