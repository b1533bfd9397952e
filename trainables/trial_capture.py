"""The captured step modes of a one-config trial: ``compiled`` and ``cuda_graph``.

Both run the step that ``GANTrial._iteration`` writes, only captured: ``compiled`` puts G's
forward, D's loss, the G loss and both optimizer steps under ``torch.compile`` (each ``backward``
runs the AOTAutograd backward graphs; fused kernels round differently, so it is not bit-identical
to eager); ``cuda_graph`` captures the whole iteration (n_dis D steps, the G step, both optimizer
updates, the divergence flag) once as a CUDA graph and replays it, with batches and z drawn
outside the graph from the trial's own generators into static buffers (the eager draws).
:class:`CapturedSteps` is mixed into ``trainables.trial.GANTrial``; :class:`GraphedStep` is the
one warm-up/capture/replay of a CUDA-graph step, for the single trial and the pack alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trainables import names
from trainables.step_modes import GRAPH_WARMUP_STEPS

#: ``torch.compile`` keyword arguments of the ``compiled`` mode: {} is the product path
#: (inductor, default mode). Tests may set ``{"backend": "aot_eager"}`` to check the capture
#: without inductor's code generation.
COMPILE_OPTIONS: dict[str, Any] = {}


class CapturedSteps:
    """The ``compiled`` and ``cuda_graph`` steps of ``GANTrial`` (its ``_iteration``, ``_flag``,
    draws, models and optimizers)."""

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

    def _graph_step(self) -> dict[str, Any]:
        """``cuda_graph``: one step of :class:`GraphedStep` (warm-up on a side stream, one
        capture on torch's capture stream, replays). Warm-up steps are real steps drawing as
        eager does, flagged as ``sync_free``; the optimizers are made capturable before each
        (their step counters on the device). Before the capture the static inputs are made
        (:meth:`_capture_inputs`); before each replay they are filled outside the graph from
        the trial's own generators (:meth:`_fill_inputs`). Spectral norm's in-place u, v updates
        and BatchNorm's running statistics are ordinary kernels in the graph."""
        b = self.cfg[names.BATCH_SIZE]
        if self._graph is None:
            self._graph = GraphedStep(self.device, capture_on_side=False)
        if self._graph.warming:
            self._make_capturable()

        def eager() -> dict[str, Any]:
            out = self._iteration(lambda k: self._real_batch(), lambda k: self._noise(b))
            self._flag(out, self.step + 1)
            return out

        out = self._graph.step(eager, self._capture_body, fill=self._fill_inputs,
                               before_capture=self._capture_inputs)
        self.step += 1
        return out if out is not None else dict(self._g_out)

    def _fill_inputs(self) -> None:
        """The static inputs of one replay, in eager's order per D step: the real batch's
        indices (or, for toys and lazy image sets, the batch itself), then z."""
        b, n_dis = self.cfg[names.BATCH_SIZE], self.cfg[names.N_DIS]
        gathered = self._g_idx is not None
        for k in range(n_dis):
            if gathered:
                self._g_idx[k].copy_(torch.randint(len(self.data), (b,), generator=self.data_gen),
                                     non_blocking=True)
            else:
                self._g_real[k].copy_(self._real_batch(), non_blocking=True)
            self._g_z[k].normal_(generator=self.noise_gen)  # = torch.randn(..., generator)

    def _make_capturable(self) -> None:
        """Optimizers with ``capturable=True``: their step counters move to the device (a resumed
        state carries them on the CPU, see :meth:`state_dict`)."""
        for opt in (self.opt_d, self.opt_g):
            for group in opt.param_groups:
                group["capturable"] = True
            for st in opt.state.values():
                if "step" in st and st["step"].device != self.device:
                    st["step"] = st["step"].to(self.device, torch.float32)

    def _capture_inputs(self) -> None:
        """Before the capture: capturable optimizers, the static inputs and step counter, and
        grads set to None (the captured backward allocates them from the graph's pool)."""
        b, n_dis, dev = self.cfg[names.BATCH_SIZE], self.cfg[names.N_DIS], self.device
        self._make_capturable()
        in_memory = not self.toy and self.data.in_memory and self.data.device == dev
        self._g_idx = [torch.zeros(b, dtype=torch.long, device=dev) for _ in range(n_dis)] \
            if in_memory else None
        self._g_real = None if in_memory else [
            torch.zeros((b, *self.sample_shape), device=dev) for _ in range(n_dis)]
        self._g_z = [torch.zeros(b, self.cfg[names.Z_DIM], device=dev) for _ in range(n_dis)]
        self._g_step = torch.full((), self.step, dtype=torch.long, device=dev)
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)

    def _capture_body(self) -> None:
        """What is captured: :meth:`_graph_body`, its outputs kept (each replay rewrites them)."""
        self._g_out = self._graph_body()

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


class GraphedStep:
    """One training step as a CUDA graph: warmed up, captured once, replayed — the single
    trial's (``CapturedSteps``) and the pack's (``trainables.pack.population``) alike.

    Each :meth:`step` call is one training step, following torch's whole-network capture recipe
    (``torch.cuda.graphs``: warm up on a side stream, capture, replay):

    1. the first :data:`GRAPH_WARMUP_STEPS` calls run ``eager()`` on a fresh side stream that
       waits for the current stream, and the current stream waits for it after (the lazy
       initialisations — optimizer state, cuBLAS handles, autograd's device threads — happen
       outside any capture);
    2. the next call runs ``before_capture()``, captures ``body()`` into a ``CUDAGraph`` (a
       capture records kernels without running them), then ``fill()`` and one replay: this
       step runs;
    3. every later call: ``fill()``, then a replay.

    ``fill`` writes the static inputs outside the graph; a caller that draws them for every
    step (warm-up included) draws before calling and passes none. The outputs are the
    caller's: ``body()`` keeps them where each replay rewrites them. ``capture_on_side``: the
    capture is recorded on that step's side stream after a device synchronize (the pack); else
    on ``torch.cuda.graph``'s own capture stream (the single trial). ``cuda`` is the CUDA
    namespace (default ``torch.cuda``, read at each call); tests pass a stand-in."""

    def __init__(self, device, *, capture_on_side: bool, cuda=None):
        self.device = device
        self.capture_on_side = capture_on_side
        self._cuda = cuda
        self.graph = None
        self.warmed = 0

    @property
    def warming(self) -> bool:
        """True while the next :meth:`step` is a warm-up step."""
        return self.graph is None and self.warmed < GRAPH_WARMUP_STEPS

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def step(self, eager: Callable[[], Any], body: Callable[[], None], *,
             fill: Callable[[], None] | None = None,
             before_capture: Callable[[], None] | None = None) -> Any:
        """One step: ``eager()``'s result while warming up, None once captured (the outputs
        are those ``body()`` left)."""
        cuda = self._cuda or torch.cuda
        if self.graph is None:
            side = None
            if self.warming or self.capture_on_side:
                side = cuda.Stream(self.device)
                side.wait_stream(cuda.current_stream(self.device))
            if self.warming:
                with cuda.stream(side):
                    out = eager()
                cuda.current_stream(self.device).wait_stream(side)
                self.warmed += 1
                return out
            if before_capture is not None:
                before_capture()
            if self.capture_on_side:
                cuda.synchronize(self.device)
            graph = cuda.CUDAGraph()
            with (cuda.graph(graph, stream=side) if self.capture_on_side
                  else cuda.graph(graph)):
                body()
            self.graph = graph
        if fill is not None:
            fill()
        self.graph.replay()
        return None
