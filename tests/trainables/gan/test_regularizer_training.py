"""Every regularizer inside the real train loop, and the exact identity GraN's K analysis rests on.

* every regularizer × {ns, wgan} trains 50 iterations on ring8 (mlp) and on the embedded images
  (dcgan32) without NaN, and its ``penalty`` (plus its own diagnostics) lands in MLflow, written by
  ``MlflowTrialLogger`` to a SQLite store driven by a plain ``Callbacks`` subclass (no Ray);
  gp also with Appendix C's BatchNorm D.
* GraN Eq. 21: with a linear loss (wgan) and Adam, (K, ε_Adam) and (1, ε_Adam/K) from the same seed
  give the same G and D after 20 steps (and (1, ε_Adam) does not: ε matters in the set-up).
* The random draws of gp/alr come from the global RNG the trainer checkpoints: a resumed trial
  continues bit for bit.
"""

from __future__ import annotations

import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from trainables.config import validate_trial
from trainables.tracking.mlflow_logger import MlflowTrialLogger, run_name
from trainables.train import Callbacks, GANTrial, train

REGULARIZERS = ["none", "sn", "gp", "r1", "gran", "alr", "js", "clip"]
#: the diagnostic each regularizer must log besides ``penalty``
OWN_METRIC = {"sn": "sn_sigma_product", "gp": "gp_grad_norm_mean", "r1": "r1_grad_norm_mean",
              "gran": "gran_slope_min", "alr": "alr_violations", "js": "js_gamma",
              "clip": "clip_frac_at_bound"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite MLflow store and experiment for the module (creating a store costs seconds);
    FID reference features cached in a temporary directory."""
    root = tmp_path_factory.mktemp("mlflow")
    mp = pytest.MonkeyPatch()
    mp.setenv("LIPSTUDY_CACHE", str(root / "fid-cache"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("regularizers", artifact_location=str(root / "artifacts"))
    yield uri, exp
    mp.undo()


class MlflowCallbacks(Callbacks):
    """What the Ray trainable does, minus Ray: one MLflow run per trial."""

    def __init__(self, uri: str, experiment_id: str, cfg: dict):
        self.uri, self.exp, self.cfg = uri, experiment_id, cfg
        self.logger: MlflowTrialLogger | None = None

    def on_start(self, params):
        self.logger = MlflowTrialLogger(self.uri, self.exp, name=run_name(self.cfg),
                                        params={**self.cfg, **params})

    def on_stats(self, step, metrics):
        self.logger.log_metrics(step, metrics)

    def on_eval(self, step, metrics, grid):
        self.logger.log_metrics(step, metrics)

    def on_end(self, result):
        self.logger.finish("FINISHED" if result.status == "finished" else "FAILED")


def _toy(**kw):
    base = {"dataset": "ring8", "arch": "mlp", "width": 0.25, "iterations": 50,
            "stats_every": 25, "eval_every": 50, "fid_samples": 100, "batch_size": 16,
            "lr_d": 2e-4, "lr_g": 2e-4, "device": "cpu"}
    return validate_trial({**base, **kw})


def _images(**kw):
    base = {"dataset": "fashion_mnist_mini", "arch": "dcgan32", "width": 0.0625,
            "iterations": 50, "stats_every": 25, "eval_every": 50, "fid_samples": 40,
            "fid_extractor": "domain", "batch_size": 8,
            "lr_d": 2e-4, "lr_g": 2e-4, "device": "cpu"}
    return validate_trial({**base, **kw})


CASES = [(make, reg, loss, "none") for make in ("toy", "images") for reg in REGULARIZERS
         for loss in ("ns", "wgan")]
CASES += [(make, "gp", loss, "bn") for make in ("toy", "images") for loss in ("ns", "wgan")]


@pytest.mark.parametrize("make,reg,loss,d_norm", CASES,
                         ids=[f"{m}-{r}-{lo}{'-bn' if n == 'bn' else ''}" for m, r, lo, n in CASES])
def test_trains_50_iterations_and_logs_penalty_to_mlflow(store, make, reg, loss, d_norm):
    uri, exp = store
    cfg = (_toy if make == "toy" else _images)(regularizer=reg, loss=loss, d_norm=d_norm)
    cb = MlflowCallbacks(uri, exp, cfg)
    result = train(cfg, cb)
    assert result.status == "finished", result.reason
    assert result.step == 50
    client = MlflowClient(uri)
    run = client.get_run(cb.logger.run_id)
    assert run.info.status == "FINISHED"
    hist = client.get_metric_history(run.info.run_id, "penalty")
    assert [m.step for m in hist] == [25, 50]
    assert all(math.isfinite(m.value) and m.value >= 0 for m in hist)
    for key in ("loss_d", "loss_g", "grad_norm_real"):
        assert math.isfinite(run.data.metrics[key])
    if reg in OWN_METRIC:
        assert math.isfinite(run.data.metrics[OWN_METRIC[reg]])
    # the regularizer's K on the common axis (None where it aims at none)
    if reg in ("sn", "gp", "gran", "alr"):
        assert float(run.data.params["lipschitz_k"]) == 1.0  # k_SN^n, k_GP, K, K at defaults
    else:
        assert run.data.params["lipschitz_k"] == "None"
    if reg == "js":  # γ at the last logged step: γ0·α^(t/T) with t = 50 = T
        assert run.data.metrics["js_gamma"] == pytest.approx(2.0 * 0.01)
    if reg in ("gp", "r1", "js") and make == "toy":  # (alr: no violation at K = 1 here)
        assert max(m.value for m in hist) > 0  # the penalty is really there


# --------------------------------------------------------------------------------- GraN Eq. 21


def _gran_trial(make, K, eps):
    cfg = make(regularizer="gran", gran_k=K, gran_eps=1e-3, loss="wgan", optimizer="adam",
               beta1=0.0, beta2=0.9, eps=eps, lr_d=1e-3, lr_g=1e-3, iterations=20, eval_every=20,
               seed=3)
    trial = GANTrial(cfg)
    for _ in range(20):
        out = trial.train_step()
        assert trial.divergence(out) is None
    state = {**{f"G.{k}": v for k, v in trial.G.state_dict().items()},
             **{f"D.{k}": v for k, v in trial.D.state_dict().items()}}
    # G's deconv biases right before a BatchNorm have an exact gradient of 0 (BN subtracts them);
    # autograd returns rounding noise there, which Adam normalises into ±lr steps that differ
    # between runs. They do not change any output (checked below through G(z)), so leave them out.
    layers = list(trial.G.net)
    for i, m in enumerate(layers[:-1]):
        if isinstance(layers[i + 1], torch.nn.BatchNorm2d):
            del state[f"G.net.{i}.bias"]
    trial.G.eval()
    with torch.no_grad():
        z = torch.randn(16, cfg["z_dim"], generator=torch.Generator().manual_seed(0))
        state["G(z)"] = trial.G(z)
        state["g(G(z))/K"] = trial.D(state["G(z)"]) / K  # the critic itself carries K
    return state


def _max_rel_diff(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max() / (a[k].double().abs().max() + 1e-30))
               for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("make", [_toy, _images], ids=["toy", "images"])
@pytest.mark.parametrize("K", [4.0, 0.3])
def test_gran_eq21_k_acts_as_adam_eps_over_k(make, K):
    """g_K = K·g_1, so every gradient of the linear WGAN loss carries K and Adam's update
    m/(√v + ε) equals m₁/(√v₁ + ε/K): (K, ε) and (1, ε/K) train identically (G and D)."""
    eps = 1e-4  # large enough that ε matters for these gradients (see the control below)
    a = _gran_trial(make, K, eps)
    b = _gran_trial(make, 1.0, eps / K)
    assert a.keys() == b.keys()
    # K = 4 is a power of two: the scaling is exact in floating point, the runs agree bit for bit
    tol = 0.0 if K == 4.0 else 1e-4
    assert _max_rel_diff(a, b) <= tol
    # control: keeping ε while changing K does change training
    c = _gran_trial(make, 1.0, eps)
    assert _max_rel_diff(a, c) > 1e-3


# ------------------------------------------------------------------------- RNG and checkpoints


class _States(Callbacks):
    def __init__(self):
        self.states = {}

    def on_checkpoint(self, step, state, metrics):
        self.states[step] = state


@pytest.mark.parametrize("reg", ["gp", "alr"])
def test_random_penalties_resume_exactly(reg):
    cfg = _toy(regularizer=reg, loss="wgan", iterations=20, eval_every=10, stats_every=10)
    full = _States()
    train(cfg, full)
    resumed = _States()
    train(cfg, resumed, state=full.states[10])
    for part in ("G", "D"):
        for k, v in full.states[20][part].items():
            assert torch.equal(v, resumed.states[20][part][k]), (part, k)


# --------------------------------------------------------------- every architecture, GraN losses


@pytest.mark.parametrize("reg", REGULARIZERS)
def test_every_regularizer_steps_on_dcgan64_and_grid25(reg):
    """The other architecture and toy: a few finite steps each (the 50-step runs above cover
    dcgan32 and mlp/ring8)."""
    for cfg in (
        _images(regularizer=reg, loss="wgan", arch="dcgan64", resolution=64, batch_size=4,
                width=0.03125, iterations=3, eval_every=3),
        _toy(regularizer=reg, loss="ns", dataset="grid25", iterations=3, eval_every=3),
    ):
        trial = GANTrial(cfg)
        for _ in range(3):
            out = trial.train_step()
            assert trial.divergence(out) is None, (cfg["arch"], reg)
        m = trial.measure(out)
        assert math.isfinite(m["penalty"]) and math.isfinite(m["grad_norm_real"])


@pytest.mark.parametrize("loss", ["ns", "wgan", "hinge", "softhinge"])
def test_gran_discriminator_and_critic_losses(loss):
    """GraND (σ∘g, ns) and GraNC (g with wgan / hinge / soft hinge, GraN Sec. 3.1): training runs
    and the measured ‖∇ₓg‖ stays below K (Eq. 19) at real and fake samples."""
    K = 0.83
    cfg = _toy(regularizer="gran", gran_k=K, loss=loss, iterations=20, eval_every=20)
    trial = GANTrial(cfg)
    for _ in range(20):
        out = trial.train_step()
        assert trial.divergence(out) is None
    m = trial.measure(out)
    assert m["grad_norm_real"] <= K * (1 + 1e-5) and m["grad_norm_fake"] <= K * (1 + 1e-5)
    assert m["gran_slope_min"] <= K
