"""One GAN trial as a plain function: build, train, measure, evaluate, checkpoint.

``train(config)`` runs a validated trial config (``trainables.config.validate_trial``) to its end and
returns a :class:`TrialResult`; it needs no Ray and no MLflow. Whoever runs it observes it through a
:class:`Callbacks` object (the Ray trainable in ``trainables.ray_trainable`` logs to MLflow and
reports to Tune from there) and can resume it from ``GANTrial.state_dict()``: the state holds models
(with spectral-norm power-iteration vectors), optimizers, every RNG the trial draws from, the
step and the run's FID scale, so a restarted trial continues exactly as if it had not stopped.

The training step is the paper's (Appendix B): per iteration ``n_dis`` discriminator updates then
one generator update, z ~ N(0, I), the loss terms of Table 1 with domain scaling (Eq. 11). The
losses are always computed in float32 (α reaches 1e-25, see docs/measurements.md: fp16 underflows α).

A non-finite discriminator or generator loss ends the trial as ``diverged`` with the step and the
reason (e.g. EXP-GAN at α = 1e11 overflows: Table 5b's breakdown), it never raises.

Evaluation (FID/KID on a fixed z, sample grids) lives in :mod:`trainables.evaluation`, with the FID
scale every image run carries: ``fid_floor`` and ``fid_init`` at step 0 (before the first step, via
``Callbacks.on_stats``), ``fid_quality`` at every evaluation, ``*_final`` with the final one.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from trainables import data as data_lib
from trainables import streams
from trainables.evaluation import (  # noqa: F401 - FID_REF_MAX etc. re-exported
    FID_REF_MAX, FINAL_KEEP, GRID_SAMPLES, Evaluator, final_evaluation, initial_scale,
    with_quality,
)
from trainables.losses import get_loss
from trainables.models import build_discriminator, build_generator, d_weight_layers
from trainables.optim import build_optimizer
from trainables.regularizers import get_regularizer
from trainables.stats import domain_stats, lipschitz_probe, theorem1_bound


class Callbacks:
    """Observer of a running trial; every method is optional (the default does nothing)."""

    def on_start(self, params: dict[str, Any]) -> None:
        """Once the trial is built: derived facts (``GANTrial.params``: lipschitz_k, …)."""

    def on_stats(self, step: int, metrics: dict[str, float]) -> None:
        """Every ``stats_every`` steps (and at the last step): losses and domain statistics. Also
        at step 0 of an image trial, before training: its FID scale (``fid_floor``,
        ``fid_init``; see ``trainables.evaluation``); and the ``diverged`` marker."""

    def on_eval(self, step: int, metrics: dict[str, float], grid: torch.Tensor) -> None:
        """Every ``eval_every`` steps and at the end: FID/KID and ``fid_quality`` (or the toy
        metrics) and a sample grid (3×H×W float in [0, 1])."""

    def on_final(self, step: int, metrics: dict[str, float], samples: torch.Tensor | None) -> None:
        """Once, after the last regular evaluation: the final evaluation on ``fid_final_samples``
        (``fid_final``, ``kid_final``, optionally ``fid_inf``; image trials also
        ``fid_floor_final``, ``fid_init_final``, ``fid_quality_final``) and up to 1,000 of its
        samples as uint8 N×C×H×W (None for the 2-D toys)."""

    def on_checkpoint(self, step: int, state: dict[str, Any], metrics: dict[str, float]) -> None:
        """Right after each evaluation: a snapshot of the full resumable state (the callee may
        keep it) and the latest metrics."""

    def on_end(self, result: "TrialResult") -> None:
        """Once, when the trial finished or diverged."""


@dataclass
class TrialResult:
    status: str  # "finished" or "diverged"
    step: int
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of every metric
    step_times: list[float] = field(default_factory=list)  # seconds per step (incl. measuring and
    # logging at stats steps, excluding FID evaluations)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when torch sees a GPU, else CPU. ``cuda`` without CUDA falls back to CPU
    (a trial scheduled on a fake/absent GPU must still run)."""
    if name == "auto" or name.startswith("cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda" if name == "auto" else name)
        return torch.device("cpu")
    return torch.device(name)


class GANTrial:
    """The state of one trial and its step; see the module docstring."""

    def __init__(self, config: dict[str, Any], device: torch.device | str | None = None):
        self.cfg = cfg = dict(config)
        self.device = torch.device(device) if device is not None else resolve_device(cfg["device"])
        self.toy = cfg["dataset"] in data_lib.TOY_DATASETS
        torch.manual_seed(cfg["seed"])  # parameter initialisation
        if self.toy:
            self.channels, self.sample_shape = 0, (2,)
            self.data = None
        else:
            self.channels = data_lib.channels(cfg["dataset"])
            self.sample_shape = (self.channels, cfg["resolution"], cfg["resolution"])
            self.data = data_lib.load_images(
                cfg["dataset"], cfg["data_root"], cfg["resolution"], "train", cfg["download"]
            )
        self._g_init_rng = torch.get_rng_state()  # rebuilds the untrained G (initial_generator)
        self.G = build_generator(
            cfg["arch"], z_dim=cfg["z_dim"], channels=self.channels or 2, width=cfg["width"]
        ).to(self.device)
        D = build_discriminator(
            cfg["arch"], channels=self.channels or 2, width=cfg["width"],
            d_bias=cfg["d_bias"], d_norm=cfg["d_norm"],
        )
        reg_keys = self._regularizer_params()
        self.regularizer = get_regularizer(cfg["regularizer"], **reg_keys)
        self.D = self.regularizer.apply(D).to(self.device)
        self.n_d_layers = len(d_weight_layers(D))
        self.loss = get_loss(cfg["loss"], alpha=cfg["alpha"])
        opt_extra = {k: cfg[k] for k in ("beta1", "beta2", "rmsprop_decay") if k in cfg}
        self.opt_d = build_optimizer(cfg["optimizer"], self.D.parameters(), lr=cfg["lr_d"],
                                     eps=cfg["eps"], **opt_extra)
        self.opt_g = build_optimizer(cfg["optimizer"], self.G.parameters(), lr=cfg["lr_g"],
                                     eps=cfg["eps"], **opt_extra)
        # Every random draw of training comes from these two generators (checkpointed), so a
        # resumed trial continues exactly; evaluation draws from its own fixed-seed generators.
        self.data_gen = streams.stream(cfg["seed"], streams.DATA)
        self.noise_gen = streams.stream(cfg["seed"], streams.NOISE, self.device)
        self.step = 0
        self.omega_union = [math.inf, -math.inf]
        self.lipschitz_k = self.regularizer.lipschitz_k(self.D)
        self.omega_bound = theorem1_bound(self.lipschitz_k, self.sample_shape)
        self.evaluator = Evaluator(cfg, self.device, self.data)
        #: fid_init, fid_floor (image trials, from step 0 on; part of the state)
        self.fid_scale: dict[str, float] = {}
        self.concat_d = cfg["d_norm"] == "none"  # one D forward for real+fake unless BN

    # ----------------------------------------------------------------------------- set-up
    def _regularizer_params(self) -> dict[str, Any]:
        from trainables.regularizers import REGULARIZERS

        fields = REGULARIZERS[self.cfg["regularizer"]].Params.model_fields
        return {k: self.cfg[k] for k in fields if k in self.cfg}

    @property
    def params(self) -> dict[str, Any]:
        """Derived facts about the trial worth recording beside its config."""
        return {
            "lipschitz_k": self.lipschitz_k,
            "n_d_layers": self.n_d_layers,
            "omega_bound": self.omega_bound,
            "device_type": self.device.type,
            "g_params": sum(p.numel() for p in self.G.parameters()),
            "d_params": sum(p.numel() for p in self.D.parameters()),
        }

    # ----------------------------------------------------------------------------- training
    def _real_batch(self) -> torch.Tensor:
        b = self.cfg["batch_size"]
        if self.toy:
            return data_lib.sample_toy(self.cfg["dataset"], b, self.data_gen).to(self.device)
        idx = torch.randint(len(self.data), (b,), generator=self.data_gen)
        return self.data.batch(idx).to(self.device, non_blocking=True)

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg["z_dim"], device=self.device, generator=self.noise_gen)

    def _d_outputs(self, real: torch.Tensor, fake: torch.Tensor):
        if self.concat_d:
            out = self.D(torch.cat([real, fake])).reshape(-1)
            return out[: real.shape[0]], out[real.shape[0]:]
        return self.D(real).reshape(-1), self.D(fake).reshape(-1)

    def train_step(self) -> dict[str, Any]:
        """One iteration: n_dis D updates, one G update. Returns detached tensors for stats."""
        cfg, loss = self.cfg, self.loss
        for _ in range(cfg["n_dis"]):
            real = self._real_batch()
            fake = self.G(self._noise(cfg["batch_size"]))
            f_real, f_fake = self._d_outputs(real, fake.detach())
            loss_d = loss.d_real(f_real).mean() + loss.d_fake(f_fake).mean()
            penalty, reg_metrics = self.regularizer.penalty(
                self.D, real, fake.detach(), step=self.step, total_steps=cfg["iterations"]
            )
            self.opt_d.zero_grad(set_to_none=True)
            (loss_d + penalty).backward()
            self.opt_d.step()
            self.regularizer.after_d_step(self.D)
        self.D.requires_grad_(False)
        f_gen = self.D(fake).reshape(-1)
        loss_g = loss.g(f_gen).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        self.step += 1
        return {"real": real, "fake": fake.detach(), "f_real": f_real.detach(),
                "f_fake": f_fake.detach(), "f_gen": f_gen.detach(), "loss_d": loss_d.detach(),
                "loss_g": loss_g.detach(), "penalty": penalty.detach(), "reg_metrics": reg_metrics}

    def divergence(self, out: dict[str, Any]) -> str | None:
        """Reason string if this step's losses are not finite, else None (one device sync)."""
        vals = torch.stack([out["loss_d"].float(), out["loss_g"].float(), out["penalty"].float()])
        if bool(torch.isfinite(vals).all()):
            return None
        ld, lg, pen = vals.tolist()
        bad = [f"{n}={v}" for n, v in (("loss_d", ld), ("loss_g", lg), ("penalty", pen))
               if not math.isfinite(v)]
        return f"non-finite {', '.join(bad)} at step {self.step}"

    # ----------------------------------------------------------------------------- measuring
    def measure(self, out: dict[str, Any]) -> dict[str, float]:
        """Losses (centred by L(0)/α), the domain statistics of this step's batch, the running
        union Ω∪ with Theorem 1's bound, the input-gradient norm distribution and the
        finite-difference Lipschitz probe (``trainables.stats``), and the regularizer's metrics.

        Touches nothing training uses: no RNG draw, no parameter ``.grad``, no spectral-norm
        power iteration, no BatchNorm running statistics (tests check the trajectory is
        bit-identical whether or not it is called)."""
        loss = self.loss
        with torch.no_grad():
            loss_d = loss.d_real_centered(out["f_real"]).mean() + loss.d_fake_centered(out["f_fake"]).mean()
            loss_g = loss.g_centered(out["f_gen"]).mean()
        m = domain_stats(out["f_real"], out["f_fake"], loss)
        m.update(lipschitz_probe(self.D, out["real"], out["fake"]))
        tail = torch.stack([loss_d, loss_g, out["penalty"].float()])
        m.update(zip(("loss_d", "loss_g", "penalty"), tail.tolist()))
        lo = min(m["omega_real_min"], m["omega_fake_min"])
        hi = max(m["omega_real_max"], m["omega_fake_max"])
        self.omega_union = [min(self.omega_union[0], lo), max(self.omega_union[1], hi)]
        m["omega_union_min"], m["omega_union_max"] = self.omega_union
        if self.omega_bound is not None:
            m["omega_bound"] = self.omega_bound
            m["omega_within_bound"] = float(self.omega_union[1] - self.omega_union[0] <= self.omega_bound)
        m.update(out["reg_metrics"])
        m.update(self.regularizer.metrics(self.D))
        return m

    # ----------------------------------------------------------------------------- evaluation
    def sample_grid(self) -> torch.Tensor:
        """A fixed-z grid of 64 samples (same z at every evaluation), 3×H×W in [0, 1]."""
        return self.evaluator.sample_grid(self.G)

    def evaluate(self, final: bool = False, keep_images: int = 0) -> dict[str, Any]:
        """FID/KID on ``fid_samples`` generated samples vs. the reference split (or the toy
        metrics), always from the same fixed z (seeded generator) so successive evaluations
        differ only by G; with the FID scale known, also ``fid_quality``.

        ``final=True``: the end-of-training evaluation on ``fid_final_samples`` (another fixed z
        stream), keys ``fid_final``, ``kid_final``, ``fid_final_samples`` and, with ``fid_inf``,
        ``fid_inf`` (Chong & Forsyth's extrapolation to N → ∞ from the same features).
        ``keep_images`` > 0 also returns that many samples as uint8 under ``"images"``.
        """
        res = self.evaluator.evaluate(self.G, final=final, keep_images=keep_images)
        return res if final or self.toy else with_quality(res, self.fid_scale)

    def initial_generator(self) -> torch.nn.Module:
        """The untrained G, rebuilt exactly from the seed (the global RNG is left untouched)."""
        cfg = self.cfg
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._g_init_rng)
            G = build_generator(cfg["arch"], z_dim=cfg["z_dim"], channels=self.channels or 2,
                                width=cfg["width"])
        return G.to(self.device)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (loadable with ``weights_only=True``)."""
        state = {
            "step": self.step,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "omega_union": list(self.omega_union),
            "fid_scale": dict(self.fid_scale),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.data_gen.set_state(state["data_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step = int(state["step"])
        self.omega_union = [float(v) for v in state["omega_union"]]
        self.fid_scale = {k: float(v) for k, v in state.get("fid_scale", {}).items()}


def train(
    config: dict[str, Any],
    callbacks: Callbacks | None = None,
    *,
    state: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrialResult:
    """Run one validated trial config to its end (or divergence); see the module docstring.

    ``state`` resumes from ``GANTrial.state_dict()``. Metrics go to ``callbacks.on_stats`` every
    ``stats_every`` steps, FID/KID and a sample grid to ``callbacks.on_eval`` every ``eval_every``
    steps and at the last step, each evaluation followed by ``callbacks.on_checkpoint``. An image
    trial starting at step 0 first measures its FID scale (``fid_floor``, ``fid_init``) and passes
    it to ``callbacks.on_stats(0, …)``; a resumed one carries it in its state.
    """
    cb = callbacks or Callbacks()
    trial = GANTrial(config, device)
    if state is not None:
        trial.load_state_dict(state)
    cb.on_start(trial.params)
    cfg = trial.cfg
    latest: dict[str, float] = {}
    if not trial.toy:
        if trial.fid_scale:  # resumed: measured and logged at step 0 by an earlier attempt
            latest.update(trial.fid_scale)
        else:  # step 0 (or a state from before the scale existed): one extra evaluation
            trial.fid_scale = initial_scale(trial)
            latest.update(trial.fid_scale)
            cb.on_stats(0, dict(trial.fid_scale))
    step_times: list[float] = []
    total = cfg["iterations"]

    def diverged(reason: str) -> TrialResult:
        """End the trial as diverged (a result, never an exception): marker metrics + on_end."""
        marker = {"diverged": 1.0, "diverged_step": float(trial.step)}
        latest.update(marker)
        cb.on_stats(trial.step, marker)
        result = TrialResult("diverged", trial.step, reason, latest, step_times)
        cb.on_end(result)
        return result

    while trial.step < total:
        t0 = time.perf_counter()
        out = trial.train_step()
        reason = trial.divergence(out)
        if reason is not None:
            return diverged(reason)
        last = trial.step == total
        if trial.step % cfg["stats_every"] == 0 or last:
            m = trial.measure(out)
            latest.update(m)
            cb.on_stats(trial.step, m)
        # a step's time includes its measurement and logging, not the FID evaluation below
        step_times.append(time.perf_counter() - t0)
        if trial.step % cfg["eval_every"] == 0 or last:
            ev = trial.evaluate()
            if not math.isfinite(ev["fid"]):
                return diverged(f"non-finite fid={ev['fid']} at step {trial.step}")
            latest.update(ev)
            cb.on_eval(trial.step, ev, trial.sample_grid())
            if last:
                final = final_evaluation(trial, ev)
                samples = final.pop("images", None)
                if not math.isfinite(final.get("fid_final", math.nan)):
                    return diverged(f"non-finite fid_final at step {trial.step}")
                latest.update(final)
                cb.on_final(trial.step, final, samples)
            # a snapshot (state_dict() holds live tensors that the next step would change)
            cb.on_checkpoint(trial.step, copy.deepcopy(trial.state_dict()), dict(latest))
        if should_stop is not None and should_stop():
            break
    latest["diverged"] = 0.0
    result = TrialResult("finished", trial.step, None, latest, step_times)
    cb.on_end(result)
    return result
