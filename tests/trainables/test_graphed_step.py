"""``trainables.trial_capture.GraphedStep``: the one warm-up/capture/replay of a CUDA-graph step,
driven on CPU through a stand-in CUDA namespace that records every call in order.

The single trial and the pack call the same helper; their only difference is where the capture
is recorded (torch's capture stream vs the step's side stream after a device synchronize)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from trainables import trial_capture
from trainables.step_modes import GRAPH_WARMUP_STEPS
from trainables.trial_capture import GraphedStep


class FakeCuda:
    """Records streams, waits, stream contexts, synchronizes, captures and replays."""

    def __init__(self, log: list):
        self.log, self.n = log, 0
        self.current = self._stream("current")

    def _stream(self, name):
        log = self.log

        class Stream:
            def wait_stream(self, other):
                log.append(f"{name} waits {other.name}")
        s = Stream()
        s.name = name
        return s

    def Stream(self, device):
        self.n += 1
        self.log.append(f"new side{self.n}")
        return self._stream(f"side{self.n}")

    def current_stream(self, device):
        return self.current

    @contextlib.contextmanager
    def stream(self, s):
        self.log.append(f"enter {s.name}")
        yield
        self.log.append(f"exit {s.name}")

    def synchronize(self, device):
        self.log.append("synchronize")

    def CUDAGraph(self):
        log = self.log

        class Graph:
            def replay(self):
                log.append("replay")
        return Graph()

    @contextlib.contextmanager
    def graph(self, g, stream=None):
        self.log.append(f"capture on {stream.name if stream else 'torch'}")
        yield
        self.log.append("end capture")


def _run(capture_on_side: bool, steps: int) -> tuple[list, list]:
    log: list = []
    helper = GraphedStep("cuda:0", capture_on_side=capture_on_side, cuda=FakeCuda(log))
    outs = []
    for i in range(steps):
        log.append(f"-- step {i}")
        outs.append(helper.step(lambda: log.append("eager") or "eager out",
                                lambda: log.append("body"),
                                fill=lambda: log.append("fill"),
                                before_capture=lambda: log.append("before capture")))
    return log, outs


def _warmup(i: int) -> list[str]:
    n = i + 1
    return [f"-- step {i}", f"new side{n}", f"side{n} waits current", f"enter side{n}", "eager",
            f"exit side{n}", f"current waits side{n}"]


@pytest.mark.parametrize("capture_on_side", [False, True], ids=["single-trial", "pack"])
def test_warm_up_then_one_capture_then_replays_in_order(capture_on_side):
    assert GRAPH_WARMUP_STEPS == 3
    log, outs = _run(capture_on_side, GRAPH_WARMUP_STEPS + 3)
    want = [line for i in range(GRAPH_WARMUP_STEPS) for line in _warmup(i)]
    want.append(f"-- step {GRAPH_WARMUP_STEPS}")
    if capture_on_side:  # the step's own side stream, after a device synchronize
        want += ["new side4", "side4 waits current", "before capture", "synchronize",
                 "capture on side4"]
    else:  # torch.cuda.graph's own capture stream, no side stream this step
        want += ["before capture", "capture on torch"]
    want += ["body", "end capture", "fill", "replay"]  # the capture step runs by its replay
    for i in range(GRAPH_WARMUP_STEPS + 1, GRAPH_WARMUP_STEPS + 3):
        want += [f"-- step {i}", "fill", "replay"]
    assert log == want
    assert outs == ["eager out"] * GRAPH_WARMUP_STEPS + [None] * 3


def test_warming_and_captured_follow_the_steps():
    helper = GraphedStep("cuda:0", capture_on_side=False, cuda=FakeCuda([]))
    seen = []
    for _ in range(GRAPH_WARMUP_STEPS + 2):
        seen.append((helper.warming, helper.captured))
        helper.step(lambda: None, lambda: None)
    assert seen == [(True, False)] * GRAPH_WARMUP_STEPS + [(False, False), (False, True)]


def test_the_single_trial_and_the_pack_both_step_through_it(monkeypatch):
    """One ``cuda_graph`` step of a ``GANTrial`` and of a ``Population`` each call
    ``GraphedStep.step`` (a spy that runs nothing), with their own capture stream choice."""
    import trainables.pack.population as population
    from tests.trainables.pack.test_population import TOY, _cfg
    from trainables.pack.population import Population
    from trainables.trial import GANTrial

    calls = []

    def spy(self, eager, body, **kw):
        calls.append(self.capture_on_side)
        return {"spied": True}

    monkeypatch.setattr(trial_capture.GraphedStep, "step", spy)
    cfg = _cfg(dict(TOY, iterations=10, stats_every=5, eval_every=10), loss="ns")
    t = GANTrial(cfg, "cpu", step_mode="sync_free")
    t.step_mode = "cuda_graph"  # past the constructor's CUDA check
    monkeypatch.setattr(t, "_make_capturable", lambda: None)  # CPU: no capturable optimizers
    assert t.train_step() == {"spied": True} and t.step == 1
    monkeypatch.setattr(population, "resolve_pack_step_mode", lambda cfg, device: "cuda_graph")
    pop = Population([cfg])
    pop.train_step()
    assert calls == [False, True] and pop.step == 1
