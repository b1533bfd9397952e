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

How the step executes is the trial key ``step_mode`` (docs/design.md "Throughput", issue #12); it
never changes what a step computes, only where the host waits (:func:`resolve_step_mode`):

* ``eager``: the step as written; the host reads the losses after every step (one device sync per
  step) to check divergence.
* ``sync_free``: the same step, bit for bit, with no host sync inside it: the first non-finite
  step and its losses are flagged on the device (``div_step`` / ``div_vals``, as
  ``trainables.population`` does for packs) and read only at stats / evaluation steps and when the
  trial is stopped; the trial then ends ``diverged`` with the step and reason eager gives. On CUDA
  an in-memory image set is moved to the device once, so a batch is gathered there from the
  indices the trial's CPU ``data_gen`` draws (the same draws as eager; only the 64 indices cross).
* ``compiled``: ``sync_free`` with G's forward, D's loss, the G loss and both optimizer steps under
  ``torch.compile`` (each ``backward`` runs the AOTAutograd backward graphs). Not bit-identical to
  eager (fused kernels); ``tests/trainables/test_step_modes.py`` states the tolerance.
* ``cuda_graph``: ``sync_free`` with the whole iteration (n_dis D steps, the G step, both optimizer
  updates, the divergence flag) captured once as a CUDA graph and replayed; batches and z are
  drawn outside the graph from the trial's own generators into static buffers (same draws as
  eager). CUDA only.

``compiled`` and ``cuda_graph`` capture the D step, so they take only the regularizers whose D step
is plain forward / backward / update (:data:`CAPTURE_REGULARIZERS`); the others are refused with
one message (:func:`step_mode_problem`).

Evaluation (FID/KID on a fixed z, sample grids) lives in :mod:`trainables.evaluation`, with the FID
scale every image run carries: ``fid_floor`` and ``fid_init`` at step 0 (before the first step, via
``Callbacks.on_stats``), ``fid_quality`` at every evaluation, ``*_final`` with the final one.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from trainables import data as data_lib
from trainables import streams
from trainables.config import ConfigError
from trainables.devices import apply_precision, resolve_device  # noqa: F401 - re-exported
from trainables.evaluation import (  # noqa: F401 - FID_REF_MAX etc. re-exported
    FID_REF_MAX, FINAL_KEEP, GRID_SAMPLES, Evaluator, final_evaluation, initial_scale,
    with_quality,
)
from trainables.losses import get_loss
from trainables.models import build_discriminator, build_generator, d_weight_layers
from trainables.optim import build_optimizer
from trainables.regularizers import get_regularizer
from trainables.stats import theorem1_bound, trial_stats
from trainables.step_modes import (  # noqa: F401 - STEP_MODES, step_mode_problem re-exported
    STEP_MODES, captured_regularizers, step_mode_problem,
)


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


# ----------------------------------------------------------------------------------- step modes

#: Regularizers whose single-trial D step ``compiled`` and ``cuda_graph`` capture (from
#: :data:`trainables.step_modes.CAPTURE`).
CAPTURE_REGULARIZERS: frozenset[str] = captured_regularizers("compiled", packed=False)


def check_step_mode(cfg: dict[str, Any]) -> None:
    """Raise ``ConfigError("step_mode", …)`` (one line) when :func:`step_mode_problem` finds one."""
    problem = step_mode_problem(cfg)
    if problem:
        raise ConfigError("step_mode", problem)


def resolve_step_mode(cfg: dict[str, Any], device: torch.device | str) -> str:
    """The step mode a trial runs on ``device``: one of :data:`STEP_MODES`.

    ``auto`` is ``sync_free`` on CPU and, for now, on CUDA too: no GPU has measured ``compiled``
    or ``cuda_graph`` faster than ``sync_free`` yet (``bench/gpu_throughput.py`` measures them;
    switch CUDA's ``auto`` to the captured mode once its results file shows it faster).
    ``auto`` never refuses a config. An explicit mode the config cannot run raises
    ``ConfigError`` (:func:`check_step_mode`), except ``cuda_graph`` on a device that turned out
    not to be CUDA (``device: auto`` / ``cuda`` without a GPU), which warns once and runs
    ``sync_free``. Used by :func:`train` and by the pack side (``trainables.population``)."""
    check_step_mode(cfg)
    mode = cfg.get("step_mode", "auto")
    if mode == "auto":
        return "sync_free"
    device = torch.device(device)
    if mode == "cuda_graph" and device.type != "cuda":
        warnings.warn(f"step_mode 'cuda_graph' needs CUDA and this trial runs on {device.type}: "
                      f"running it sync_free", RuntimeWarning, stacklevel=2)
        return "sync_free"
    return mode


#: ``torch.compile`` keyword arguments of the ``compiled`` mode: {} is the product path
#: (inductor, default mode). Tests may set ``{"backend": "aot_eager"}`` to check the capture
#: without inductor's code generation (seconds instead of a minute on 2 cores).
COMPILE_OPTIONS: dict[str, Any] = {}
#: Real training steps run eagerly on a side stream before the CUDA graph is captured (the
#: lazy initialisations: optimizer state, cuBLAS handles, autograd's device threads).
GRAPH_WARMUP_STEPS = 3


def divergence_reason(step: int, vals: list[float]) -> str | None:
    """The reason a step's (loss_d, loss_g, penalty) end the trial, None when all are finite."""
    bad = [f"{n}={v}" for n, v in zip(("loss_d", "loss_g", "penalty"), vals)
           if not math.isfinite(v)]
    return f"non-finite {', '.join(bad)} at step {step}" if bad else None


class GANTrial:
    """The state of one trial and its step; see the module docstring."""

    def __init__(self, config: dict[str, Any], device: torch.device | str | None = None,
                 step_mode: str | None = None):
        """``step_mode``: one of :data:`STEP_MODES` as :func:`resolve_step_mode` gives it
        (:func:`train` passes it); None is ``eager``, for callers that drive ``train_step`` and
        check :meth:`divergence` themselves (the pack's members, benchmarks)."""
        self.cfg = cfg = dict(config)
        self.device = torch.device(device) if device is not None else resolve_device(cfg["device"])
        self.step_mode = step_mode or "eager"
        if self.step_mode not in STEP_MODES:
            raise ValueError(
                f"step_mode {self.step_mode!r}: expected one of {', '.join(STEP_MODES)}")
        if self.step_mode == "cuda_graph" and self.device.type != "cuda":
            raise ValueError(f"step_mode 'cuda_graph' needs a CUDA device, not {self.device}")
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
        if (self.step_mode != "eager" and self.device.type != "cpu" and self.data is not None
                and self.data.in_memory):
            self.data.to(self.device)  # resident: batches gathered on the device (evaluator too)
        # sync-free divergence: step of the first non-finite loss (-1: none) and the values
        self.div_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.div_vals = torch.zeros(3, device=self.device)
        self._compiled: tuple | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_warm = 0
        self._g_idx = self._g_real = self._g_z = self._g_step = self._g_out = None

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
    def _draw_indices(self) -> torch.Tensor:
        """The real batch's indices from the trial's CPU ``data_gen``, sent (without waiting) to
        where the image store lives."""
        idx = torch.randint(len(self.data), (self.cfg["batch_size"],), generator=self.data_gen)
        if self.data.device.type != "cpu":
            idx = idx.to(self.data.device, non_blocking=True)  # H2D: the host does not wait
        return idx

    def _real_batch(self) -> torch.Tensor:
        b = self.cfg["batch_size"]
        if self.toy:
            return data_lib.sample_toy(self.cfg["dataset"], b, self.data_gen).to(
                self.device, non_blocking=True)
        return self.data.batch(self._draw_indices()).to(self.device, non_blocking=True)

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg["z_dim"], device=self.device, generator=self.noise_gen)

    def _d_outputs(self, real: torch.Tensor, fake: torch.Tensor):
        if self.concat_d:
            out = self.D(torch.cat([real, fake])).reshape(-1)
            return out[: real.shape[0]], out[real.shape[0]:]
        return self.D(real).reshape(-1), self.D(fake).reshape(-1)

    # the pieces of one iteration; ``compiled`` runs them under torch.compile
    def _generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor):
        f_real, f_fake = self._d_outputs(real, fake)
        return f_real, f_fake, self.loss.d_real(f_real).mean() + self.loss.d_fake(f_fake).mean()

    def _g_loss(self, fake: torch.Tensor):
        f_gen = self.D(fake).reshape(-1)
        return f_gen, self.loss.g(f_gen).mean()

    def _d_update(self) -> None:
        self.opt_d.step()
        self.regularizer.after_d_step(self.D)

    def _g_update(self) -> None:
        self.opt_g.step()

    def _iteration(self, real_of: Callable[[int], torch.Tensor],
                   z_of: Callable[[int], torch.Tensor], fns=None) -> dict[str, Any]:
        """n_dis D updates then one G update (Appendix B), the real batch and z of D step k from
        ``real_of(k)`` / ``z_of(k)`` (drawn in that order, as eager always drew them);
        ``fns`` = (generate, d_loss, g_loss, d_update, g_update), the compiled pieces or, by
        default, the methods themselves."""
        cfg = self.cfg
        generate, d_loss, g_loss, d_update, g_update = fns or (
            self._generate, self._d_loss, self._g_loss, self._d_update, self._g_update)
        for k in range(cfg["n_dis"]):
            real = real_of(k)
            fake = generate(z_of(k))
            f_real, f_fake, loss_d = d_loss(real, fake.detach())
            penalty, reg_metrics = self.regularizer.penalty(
                self.D, real, fake.detach(), step=self.step, total_steps=cfg["iterations"]
            )
            self.opt_d.zero_grad(set_to_none=True)
            (loss_d + penalty).backward()
            d_update()
        self.D.requires_grad_(False)
        f_gen, loss_g = g_loss(fake)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        g_update()
        self.D.requires_grad_(True)
        return {"real": real, "fake": fake.detach(), "f_real": f_real.detach(),
                "f_fake": f_fake.detach(), "f_gen": f_gen.detach(), "loss_d": loss_d.detach(),
                "loss_g": loss_g.detach(), "penalty": penalty.detach(), "reg_metrics": reg_metrics}

    def train_step(self) -> dict[str, Any]:
        """One iteration: n_dis D updates, one G update. Returns detached tensors for stats.

        In ``eager`` mode the caller checks :meth:`divergence`; in the other modes the step
        flags it on the device and the caller reads :meth:`flagged_divergence` when it wants."""
        b = self.cfg["batch_size"]
        mode = self.step_mode
        if mode == "cuda_graph":
            return self._graph_step()
        fns = self._compiled_fns() if mode == "compiled" else None
        out = self._iteration(lambda k: self._real_batch(), lambda k: self._noise(b), fns)
        self.step += 1
        if mode != "eager":
            self._flag(out, self.step)
        return out

    def divergence(self, out: dict[str, Any]) -> str | None:
        """Reason string if this step's losses are not finite, else None (one device sync)."""
        vals = torch.stack([out["loss_d"].float(), out["loss_g"].float(), out["penalty"].float()])
        if bool(torch.isfinite(vals).all()):
            return None
        return divergence_reason(self.step, vals.tolist())

    @torch.no_grad()
    def _flag(self, out: dict[str, Any], step: int | torch.Tensor) -> None:
        """Record on the device the first step whose losses are not finite and their values
        (``div_step`` −1: none yet). No host sync."""
        vals = torch.stack([out["loss_d"].float(), out["loss_g"].float(), out["penalty"].float()])
        new = ~torch.isfinite(vals).all() & (self.div_step < 0)
        self.div_step.copy_(torch.where(new, step, self.div_step))
        self.div_vals.copy_(torch.where(new, vals, self.div_vals))

    def flagged_divergence(self) -> tuple[int, str] | None:
        """(step, reason) of the first non-finite step flagged on the device since the trial
        (or its resume) started, None when there is none: one host read. The reason is worded
        as :meth:`divergence` words it at that step."""
        step = int(self.div_step)
        if step < 0:
            return None
        return step, divergence_reason(step, self.div_vals.tolist())

    # -- compiled -----------------------------------------------------------------------------
    def _compiled_fns(self):
        """The pieces of :meth:`_iteration` under ``torch.compile(**COMPILE_OPTIONS)``, built on
        first use. Forwards and losses become AOTAutograd graphs whose backward graphs run on
        ``backward()`` (dynamo graph-breaks at ``Tensor.backward``); the optimizer steps are
        compiled too (torch's recipe; torch.optim graph-breaks around its own ``step`` body).
        G's forward is its own graph: the G step back-propagates through it after the D step's
        backward has freed D's graph. Starts from an empty dynamo cache: each trial's modules and
        optimizers guard by identity, and trials that share a worker process would otherwise
        pile up entries until ``recompile_limit`` turns compilation silently off."""
        if self._compiled is None:
            torch._dynamo.reset()
            self._compiled = tuple(
                torch.compile(f, **COMPILE_OPTIONS)
                for f in (self._generate, self._d_loss, self._g_loss, self._d_update,
                          self._g_update))
        return self._compiled

    # -- CUDA graph ---------------------------------------------------------------------------
    def _graph_step(self) -> dict[str, Any]:
        """``cuda_graph``: the first :data:`GRAPH_WARMUP_STEPS` steps run eagerly on a side
        stream (real steps, flagged as ``sync_free``), then the whole iteration is captured once
        (``torch.cuda.graph``) and replayed every step. Before each replay the static inputs are
        filled outside the graph from the trial's own generators, in eager's order: the real
        batch's indices (or, for toys and lazy image sets, the batch itself) and z of each D
        step. The optimizers run with ``capturable=True`` (their step counters on the device);
        spectral norm's in-place u, v updates and BatchNorm's running statistics are ordinary
        kernels in the graph."""
        b, n_dis = self.cfg["batch_size"], self.cfg["n_dis"]
        if self._graph is None and self._graph_warm < GRAPH_WARMUP_STEPS:
            self._make_capturable()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                out = self._iteration(lambda k: self._real_batch(), lambda k: self._noise(b))
                self.step += 1
                self._flag(out, self.step)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._graph_warm += 1
            return out
        if self._graph is None:
            self._capture()
        gathered = self._g_idx is not None
        for k in range(n_dis):  # eager's order per D step: the real batch, then z
            if gathered:
                self._g_idx[k].copy_(torch.randint(len(self.data), (b,), generator=self.data_gen),
                                     non_blocking=True)
            else:
                self._g_real[k].copy_(self._real_batch(), non_blocking=True)
            self._g_z[k].normal_(generator=self.noise_gen)  # = torch.randn(..., generator)
        self._graph.replay()
        self.step += 1
        return dict(self._g_out)

    def _make_capturable(self) -> None:
        """Optimizers with ``capturable=True``: their step counters move to the device (a resumed
        state carries them on the CPU, see :meth:`state_dict`)."""
        for opt in (self.opt_d, self.opt_g):
            for group in opt.param_groups:
                group["capturable"] = True
            for st in opt.state.values():
                if "step" in st and st["step"].device != self.device:
                    st["step"] = st["step"].to(self.device, torch.float32)

    def _capture(self) -> None:
        b, n_dis, dev = self.cfg["batch_size"], self.cfg["n_dis"], self.device
        self._make_capturable()
        in_memory = not self.toy and self.data.in_memory and self.data.device == dev
        self._g_idx = [torch.zeros(b, dtype=torch.long, device=dev) for _ in range(n_dis)] \
            if in_memory else None
        self._g_real = None if in_memory else [
            torch.zeros((b, *self.sample_shape), device=dev) for _ in range(n_dis)]
        self._g_z = [torch.zeros(b, self.cfg["z_dim"], device=dev) for _ in range(n_dis)]
        self._g_step = torch.full((), self.step, dtype=torch.long, device=dev)
        # grads set to None: the captured backward allocates them from the graph's pool
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._graph_body()
        self._graph, self._g_out = graph, out

    def _graph_body(self) -> dict[str, Any]:
        """What the graph holds: one iteration on the static inputs, the device step counter
        and the divergence flag."""
        gathered = self._g_idx is not None
        out = self._iteration((lambda k: self.data.batch(self._g_idx[k])) if gathered
                              else (lambda k: self._g_real[k]),
                              lambda k: self._g_z[k])
        self._g_step.add_(1)
        self._flag(out, self._g_step)
        return out

    # ----------------------------------------------------------------------------- measuring
    def measure(self, out: dict[str, Any]) -> dict[str, float]:
        """Losses (centred by L(0)/α), the domain statistics of this step's batch, the running
        union Ω∪ with Theorem 1's bound, the input-gradient norm distribution and the
        finite-difference Lipschitz probe (``trainables.stats``: the one-member case of a
        pack's batched stats), and the regularizer's metrics.

        Touches nothing training uses: no RNG draw, no parameter ``.grad``, no spectral-norm
        power iteration, no BatchNorm running statistics (tests check the trajectory is
        bit-identical whether or not it is called)."""
        m = trial_stats(self.D, out, self.loss)
        return self.record_stats(m, out["reg_metrics"], self.regularizer.metrics(self.D))

    def record_stats(self, m: dict[str, float], *more: dict[str, float]) -> dict[str, float]:
        """This step's measured stats ``m`` completed as a record: the running union Ω∪ (kept by
        the trial) with Theorem 1's bound, then the ``more`` metrics (the regularizer's)."""
        lo = min(m["omega_real_min"], m["omega_fake_min"])
        hi = max(m["omega_real_max"], m["omega_fake_max"])
        self.omega_union = [min(self.omega_union[0], lo), max(self.omega_union[1], hi)]
        m["omega_union_min"], m["omega_union_max"] = self.omega_union
        if self.omega_bound is not None:
            m["omega_bound"] = self.omega_bound
            m["omega_within_bound"] = float(self.omega_union[1] - self.omega_union[0] <= self.omega_bound)
        for extra in more:
            m.update(extra)
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
            "opt_g": self._opt_state(self.opt_g),
            "opt_d": self._opt_state(self.opt_d),
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "omega_union": list(self.omega_union),
            "fid_scale": dict(self.fid_scale),
            # whose generators ``noise_gen`` and ``cuda_rng`` are (see load_state_dict)
            "device_type": self.device.type,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _opt_state(self, opt: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state dict; under ``cuda_graph`` in the form an eager trial has
        (``capturable`` off, step counters as CPU float32 tensors), so a checkpoint resumes in
        any step mode. New dicts: the live optimizer state is not touched."""
        sd = opt.state_dict()
        if self.step_mode != "cuda_graph":
            return sd
        return {
            "state": {i: {k: (v.to("cpu", torch.float32) if k == "step" else v)
                          for k, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": [dict(g, capturable=False) for g in sd["param_groups"]],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`, whatever device its tensors were saved or loaded on.

        Model and optimizer tensors are copied to this trial's device (``load_state_dict`` of
        modules and optimizers copies). Generator states are CPU ByteTensors for every generator
        type, so any that arrive elsewhere (a checkpoint loaded with ``map_location`` a GPU) are
        brought back to the CPU. The device-side generators (``noise_gen``, the CUDA global RNG)
        are restored only on the device type they were saved from (``device_type``; older states
        say CUDA by carrying ``cuda_rng``); on another device type their state means nothing (a
        Philox seed and offset vs a Mersenne-Twister state), so they are re-seeded from the trial
        seed and the step (:func:`trainables.streams.reseed_value`): deterministic, but not the
        draws the saved device would have made."""
        self._graph, self._graph_warm, self._compiled = None, 0, None  # re-captured on next step
        self.div_step.fill_(-1)  # a checkpoint is never of a diverged trial
        self.div_vals.zero_()
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.data_gen.set_state(state["data_gen"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        saved = state.get("device_type") or ("cuda" if "cuda_rng" in state else "cpu")
        if saved == self.device.type:
            self.noise_gen.set_state(state["noise_gen"].cpu())
            if "cuda_rng" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        else:
            seed = self.cfg["seed"]
            self.noise_gen.manual_seed(streams.reseed_value(seed, streams.NOISE, self.step))
            if self.device.type == "cuda":
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(
                        streams.reseed_value(seed, streams.DEVICE_GLOBAL, self.step))
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

    ``step_mode`` (:func:`resolve_step_mode`; a config it cannot run raises ``ConfigError``
    before anything is built): outside ``eager`` divergence is read from the device flag at
    stats / evaluation steps and when ``should_stop`` stops the trial, and a trial that
    diverged in between ends exactly as eager ends it (same step, reason, callbacks, metrics;
    ``step_times`` up to the step before).

    ``precision`` (``trainables.devices.apply_precision``: TF32 off or on) is set for the
    process before the trial is built.
    """
    cb = callbacks or Callbacks()
    dev = torch.device(device) if device is not None else resolve_device(config["device"])
    mode = resolve_step_mode(config, dev)
    apply_precision(config.get("precision", "fp32"), dev)
    trial = GANTrial(config, dev, step_mode=mode)
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
    first_step = trial.step
    flagged = trial.step_mode != "eager"  # divergence flagged on the device, read when needed

    def diverged(reason: str, step: int | None = None) -> TrialResult:
        """End the trial as diverged (a result, never an exception): marker metrics + on_end.
        ``step``: the flagged step (sync-free modes), else the current one."""
        step = trial.step if step is None else step
        del step_times[max(0, step - first_step - 1):]  # as eager: the steps before it
        marker = {"diverged": 1.0, "diverged_step": float(step)}
        latest.update(marker)
        cb.on_stats(step, marker)
        result = TrialResult("diverged", step, reason, latest, step_times)
        cb.on_end(result)
        return result

    while trial.step < total:
        t0 = time.perf_counter()
        out = trial.train_step()
        last = trial.step == total
        if flagged:
            if trial.step % cfg["stats_every"] == 0 or trial.step % cfg["eval_every"] == 0 or last:
                hit = trial.flagged_divergence()
                if hit is not None:
                    return diverged(hit[1], hit[0])
        else:
            reason = trial.divergence(out)
            if reason is not None:
                return diverged(reason)
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
            hit = trial.flagged_divergence() if flagged else None
            if hit is not None:  # eager would have ended at that step
                return diverged(hit[1], hit[0])
            break
    latest["diverged"] = 0.0
    result = TrialResult("finished", trial.step, None, latest, step_times)
    cb.on_end(result)
    return result
