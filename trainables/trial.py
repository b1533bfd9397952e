"""One GAN trial's state and step: models, optimizers, draws, measurements, evaluation, state.

:class:`GANTrial` is what one trial config builds: G and D (``trainables.nets.models``) with the
config's regularizer applied to D, the loss of Table 1 with domain scaling (Eq. 11), the
optimizers, and the two generators every training draw comes from (``data_gen``, ``noise_gen``;
``trainables.streams``). Its step is the paper's (Appendix B): per iteration ``n_dis``
discriminator updates then one generator update, z ~ N(0, I). The losses are always computed in
float32 (α reaches 1e-25; fp16 underflows α).

A non-finite discriminator or generator loss is the trial's divergence (e.g. EXP-GAN at
α = 1e11 overflows: Table 5b's breakdown): in ``eager`` the caller reads it from the step's
losses (:meth:`GANTrial.divergence`, one device sync); in the other step modes the step flags the
first non-finite step on the device (``div_step`` / ``div_vals``) and the caller reads it when it
wants (:meth:`GANTrial.flagged_divergence`). The loop (``trainables.loop``) runs the trial and
ends it; ``trainables.train`` says what each step mode means.

The state (:meth:`GANTrial.state_dict`) holds models (with spectral-norm power-iteration
vectors), optimizers, every RNG the trial draws from, the step and the run's FID scale, so a
restarted trial continues exactly as if it had not stopped.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from trainables.data import datasets as data_lib
from trainables import names, streams
from trainables.devices import resolve_device
from trainables.metrics.evaluation import Evaluator, with_quality
from trainables.gan.losses import get_loss
from trainables.nets.models import build_discriminator, build_generator, d_weight_layers
from trainables.gan.optim import build_optimizer
from trainables.gan.regularizers import REGULARIZERS, get_regularizer
from trainables.metrics.stats import theorem1_bound, trial_stats
from trainables.step_modes import DIVERGENCE_VALUES, STEP_MODES, divergence_reason
from trainables.trial_capture import CapturedSteps, GraphedStep


class GANTrial(CapturedSteps):
    """The state of one trial and its step; see the module docstring."""

    def __init__(self, config: dict[str, Any], device: torch.device | str | None = None,
                 step_mode: str | None = None):
        """``step_mode``: one of :data:`STEP_MODES` as ``trainables.train.resolve_step_mode``
        gives it; None is ``eager``, for callers that drive ``train_step`` and check
        :meth:`divergence` themselves (the pack's members, benchmarks)."""
        self.cfg = cfg = dict(config)
        self.device = (torch.device(device) if device is not None
                       else resolve_device(cfg[names.DEVICE]))
        self.step_mode = step_mode or "eager"
        if self.step_mode not in STEP_MODES:
            raise ValueError(
                f"step_mode {self.step_mode!r}: expected one of {', '.join(STEP_MODES)}")
        if self.step_mode == "cuda_graph" and self.device.type != "cuda":
            raise ValueError(f"step_mode 'cuda_graph' needs a CUDA device, not {self.device}")
        torch.manual_seed(cfg[names.SEED])  # parameter initialisation
        self._build_data()
        self._build_nets()
        # Every random draw of training comes from these two generators (checkpointed), so a
        # resumed trial continues exactly; evaluation draws from its own fixed-seed generators.
        self.data_gen = streams.stream(cfg[names.SEED], streams.DATA)
        self.noise_gen = streams.stream(cfg[names.SEED], streams.NOISE, self.device)
        self.step = 0
        self.omega_union = [math.inf, -math.inf]
        self.lipschitz_k = self.regularizer.lipschitz_k(self.D)
        self.omega_bound = theorem1_bound(self.lipschitz_k, self.sample_shape)
        self.evaluator = Evaluator(cfg, self.device, self.data)
        #: fid_init, fid_floor (image trials, from step 0 on; part of the state)
        self.fid_scale: dict[str, float] = {}
        self.concat_d = cfg[names.D_NORM] == "none"  # one D forward for real+fake unless BN
        if (self.step_mode != "eager" and self.device.type != "cpu" and self.data is not None
                and self.data.in_memory):
            self.data.to(self.device)  # resident: batches gathered on the device (evaluator too)
        # sync-free divergence: step of the first non-finite loss (-1: none) and the values
        self.div_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.div_vals = torch.zeros(len(DIVERGENCE_VALUES), device=self.device)
        self._compiled: tuple | None = None
        self._graph: GraphedStep | None = None
        self._g_idx = self._g_real = self._g_z = self._g_step = self._g_out = None

    # ----------------------------------------------------------------------------- set-up
    def _build_data(self) -> None:
        """The training images (None for the toys) and the shape of one sample."""
        cfg = self.cfg
        self.toy = cfg[names.DATASET] in data_lib.TOY_DATASETS
        if self.toy:
            self.channels, self.sample_shape = 0, (data_lib.channels(cfg[names.DATASET]),)
            self.data = None
        else:
            self.channels = data_lib.channels(cfg[names.DATASET])
            self.sample_shape = (self.channels, cfg[names.RESOLUTION], cfg[names.RESOLUTION])
            self.data = data_lib.load_images(
                cfg[names.DATASET], cfg[names.DATA_ROOT], cfg[names.RESOLUTION], "train",
                cfg[names.DOWNLOAD],
            )

    def _build_nets(self) -> None:
        """G, then D with the regularizer applied, from the global RNG seeded by the trial's
        seed (in this order: the pack's members are built the same way), then the loss and the
        optimizers."""
        cfg = self.cfg
        self._g_init_rng = torch.get_rng_state()  # rebuilds the untrained G (initial_generator)
        self.G = self._new_generator().to(self.device)
        D = build_discriminator(
            cfg[names.ARCH], channels=self.channels or self.sample_shape[0], width=cfg[names.WIDTH],
            d_bias=cfg[names.D_BIAS], d_norm=cfg[names.D_NORM],
        )
        self.regularizer = get_regularizer(cfg[names.REGULARIZER], **self._regularizer_params())
        self.D = self.regularizer.apply(D).to(self.device)
        self.n_d_layers = len(d_weight_layers(D))
        self.loss = get_loss(cfg[names.LOSS], alpha=cfg[names.ALPHA])
        opt_extra = {k: cfg[k] for k in (names.BETA1, names.BETA2, names.RMSPROP_DECAY) if k in cfg}
        self.opt_d = build_optimizer(cfg[names.OPTIMIZER], self.D.parameters(), lr=cfg[names.LR_D],
                                     eps=cfg[names.EPS], **opt_extra)
        self.opt_g = build_optimizer(cfg[names.OPTIMIZER], self.G.parameters(), lr=cfg[names.LR_G],
                                     eps=cfg[names.EPS], **opt_extra)

    def _new_generator(self) -> torch.nn.Module:
        cfg = self.cfg
        return build_generator(cfg[names.ARCH], z_dim=cfg[names.Z_DIM],
                               channels=self.channels or self.sample_shape[0],
                               width=cfg[names.WIDTH])

    def _regularizer_params(self) -> dict[str, Any]:
        fields = REGULARIZERS[self.cfg[names.REGULARIZER]].Params.model_fields
        return {k: self.cfg[k] for k in fields if k in self.cfg}

    @property
    def params(self) -> dict[str, Any]:
        """Derived facts about the trial worth recording beside its config."""
        return {
            names.LIPSCHITZ_K: self.lipschitz_k,
            names.N_D_LAYERS: self.n_d_layers,
            names.OMEGA_BOUND: self.omega_bound,
            "device_type": self.device.type,
            names.G_PARAMS: sum(p.numel() for p in self.G.parameters()),
            names.D_PARAMS: sum(p.numel() for p in self.D.parameters()),
        }

    # ----------------------------------------------------------------------------- training
    def _draw_indices(self) -> torch.Tensor:
        """The real batch's indices from the trial's CPU ``data_gen``, sent (without waiting) to
        where the image store lives."""
        idx = torch.randint(len(self.data), (self.cfg[names.BATCH_SIZE],), generator=self.data_gen)
        if self.data.device.type != "cpu":
            idx = idx.to(self.data.device, non_blocking=True)  # H2D: the host does not wait
        return idx

    def _real_batch(self) -> torch.Tensor:
        b = self.cfg[names.BATCH_SIZE]
        if self.toy:
            return data_lib.sample_toy(self.cfg[names.DATASET], b, self.data_gen).to(
                self.device, non_blocking=True)
        return self.data.batch(self._draw_indices()).to(self.device, non_blocking=True)

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg[names.Z_DIM], device=self.device, generator=self.noise_gen)

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
        for k in range(cfg[names.N_DIS]):
            real = real_of(k)
            fake = generate(z_of(k))
            f_real, f_fake, loss_d = d_loss(real, fake.detach())
            penalty, reg_metrics = self.regularizer.penalty(
                self.D, real, fake.detach(), step=self.step, total_steps=cfg[names.ITERATIONS]
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
                "f_fake": f_fake.detach(), "f_gen": f_gen.detach(), names.LOSS_D: loss_d.detach(),
                names.LOSS_G: loss_g.detach(), names.PENALTY: penalty.detach(),
                "reg_metrics": reg_metrics}

    def train_step(self) -> dict[str, Any]:
        """One iteration: n_dis D updates, one G update. Returns detached tensors for stats.

        In ``eager`` mode the caller checks :meth:`divergence`; in the other modes the step
        flags it on the device and the caller reads :meth:`flagged_divergence` when it wants."""
        b = self.cfg[names.BATCH_SIZE]
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
        vals = torch.stack([out[k].float() for k in DIVERGENCE_VALUES])
        if bool(torch.isfinite(vals).all()):
            return None
        return divergence_reason(self.step, vals.tolist())

    @torch.no_grad()
    def _flag(self, out: dict[str, Any], step: int | torch.Tensor) -> None:
        """Record on the device the first step whose losses are not finite and their values
        (``div_step`` −1: none yet). No host sync."""
        vals = torch.stack([out[k].float() for k in DIVERGENCE_VALUES])
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

    # ----------------------------------------------------------------------------- measuring
    def measure(self, out: dict[str, Any]) -> dict[str, float]:
        """Losses (centred by L(0)/α), the domain statistics of this step's batch, the running
        union Ω∪ with Theorem 1's bound, the input-gradient norm distribution and the
        finite-difference Lipschitz probe (``trainables.metrics.stats``: the one-member case of a
        pack's batched stats), and the regularizer's metrics.

        Touches nothing training uses: no RNG draw, no parameter ``.grad``, no spectral-norm
        power iteration, no BatchNorm running statistics (tests check the trajectory is
        bit-identical whether or not it is called)."""
        m = trial_stats(self.D, out, self.loss)
        return self.record_stats(m, out["reg_metrics"], self.regularizer.metrics(self.D))

    def record_stats(self, m: dict[str, float], *more: dict[str, float]) -> dict[str, float]:
        """This step's measured stats ``m`` completed as a record: the running union Ω∪ (kept by
        the trial) with Theorem 1's bound, then the ``more`` metrics (the regularizer's)."""
        lo = min(m[names.OMEGA_REAL_MIN], m[names.OMEGA_FAKE_MIN])
        hi = max(m[names.OMEGA_REAL_MAX], m[names.OMEGA_FAKE_MAX])
        self.omega_union = [min(self.omega_union[0], lo), max(self.omega_union[1], hi)]
        m[names.OMEGA_UNION_MIN], m[names.OMEGA_UNION_MAX] = self.omega_union
        if self.omega_bound is not None:
            m[names.OMEGA_BOUND] = self.omega_bound
            m[names.OMEGA_WITHIN_BOUND] = float(
                self.omega_union[1] - self.omega_union[0] <= self.omega_bound)
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
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._g_init_rng)
            G = self._new_generator()
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
        self._graph, self._compiled = None, None  # re-captured on next step
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
            seed = self.cfg[names.SEED]
            self.noise_gen.manual_seed(streams.reseed_value(seed, streams.NOISE, self.step))
            if self.device.type == "cuda":
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(
                        streams.reseed_value(seed, streams.DEVICE_GLOBAL, self.step))
        self.omega_union = [float(v) for v in state["omega_union"]]
        self.fid_scale = {k: float(v) for k, v in state.get("fid_scale", {}).items()}


