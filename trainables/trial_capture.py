"""The captured step modes of a one-config trial: ``compiled`` and ``cuda_graph``.

Both run the step that ``GANTrial._iteration`` writes, only captured: ``compiled`` puts G's
forward, D's loss, the G loss and both optimizer steps under ``torch.compile`` (each ``backward``
runs the AOTAutograd backward graphs; fused kernels round differently, so it is not bit-identical
to eager); ``cuda_graph`` captures the whole iteration (n_dis D steps, the G step, both optimizer
updates, the divergence flag) once as a CUDA graph and replays it, with batches and z drawn
outside the graph from the trial's own generators into static buffers (the eager draws).
:class:`CapturedSteps` is mixed into ``trainables.trial.GANTrial``.
"""

from __future__ import annotations

from typing import Any

import torch

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
