"""The trial key ``step_mode`` on CPU (issue #12 item 2): ``sync_free`` is eager bit for bit
(finished, diverged, stopped and resumed trials), ``compiled`` stays within a stated tolerance of
eager over tens of steps, and the combinations a mode cannot run are refused in one line.
The CUDA-only modes and checks are in ``tests/trainables/test_cuda.py``."""

import contextlib
import copy
import io
import math
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

from trainables import trial_capture as train_mod
from trainables.config import ConfigError, validate_trial
from tests.trainables.tiny import images, toy
from trainables.train import (CAPTURE_REGULARIZERS, Callbacks, GANTrial, check_step_mode,
                              resolve_step_mode, step_mode_problem, train)


def unchecked(step_mode, **kw):
    """A config validate_trial refuses for its ``step_mode`` (as a hand-built config reaches
    ``train()``); asserts validate_trial refuses it first, with the same one-line message."""
    with pytest.raises(ConfigError) as err:
        toy(step_mode=step_mode, **kw)
    cfg = dict(toy(**kw), step_mode=step_mode)
    assert str(err.value) == f"step_mode: {step_mode_problem(cfg)}"
    return cfg


class Recorder(Callbacks):
    """Every callback call in order, with its step and a copy of its payload."""

    def __init__(self):
        self.calls, self.states, self.result = [], {}, None

    def on_start(self, params):
        self.calls.append(("start", None, dict(params)))

    def on_stats(self, step, metrics):
        self.calls.append(("stats", step, dict(metrics)))

    def on_eval(self, step, metrics, grid):
        self.calls.append(("eval", step, dict(metrics)))
        self.calls.append(("grid", step, grid.clone()))

    def on_final(self, step, metrics, samples):
        self.calls.append(("final", step, dict(metrics)))

    def on_checkpoint(self, step, state, metrics):
        self.states[step] = state
        self.calls.append(("checkpoint", step, dict(metrics)))

    def on_end(self, result):
        self.result = result
        self.calls.append(("end", result.step, (result.status, result.reason)))


def _run(cfg, mode, **kw):
    rec = Recorder()
    result = train(dict(cfg, step_mode=mode), rec, **kw)
    return rec, result


def _same(a, b):
    """Bit-identical payloads: tensors by torch.equal (NaN in the same places), floats by ==."""
    if isinstance(a, torch.Tensor):
        return (a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
                and torch.equal(a.isnan(), b.isnan()))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def _assert_same_run(ra, res_a, rb, res_b):
    assert [c[:2] for c in ra.calls] == [c[:2] for c in rb.calls]
    for x, y in zip(ra.calls, rb.calls):
        assert _same(x[2], y[2]), x[:2]
    assert (res_a.status, res_a.step, res_a.reason) == (res_b.status, res_b.step, res_b.reason)
    assert _same(res_a.metrics, res_b.metrics)
    assert len(res_a.step_times) == len(res_b.step_times)
    assert ra.states.keys() == rb.states.keys()
    for step in ra.states:  # models (SN u, v; BN stats), optimizers, every RNG
        assert _same(ra.states[step], rb.states[step]), step


# ------------------------------------------------------------------------------ sync_free


@pytest.mark.parametrize("make", [toy, images], ids=["toy-mlp-sn", "dcgan32-sn"])
def test_sync_free_is_bit_identical_to_eager_for_a_finished_trial(make):
    cfg = make()
    ra, res_a = _run(cfg, "eager")
    rb, res_b = _run(cfg, "sync_free")
    assert res_a.status == "finished"
    _assert_same_run(ra, res_a, rb, res_b)


def test_sync_free_with_a_penalty_and_n_dis_2_is_bit_identical_to_eager():
    """gp draws its interpolation weights from the global RNG and n_dis 2 draws two batches per
    iteration: the draws and the arithmetic are still eager's."""
    cfg = toy(regularizer="gp", loss="wgan", n_dis=2, iterations=10, stats_every=3, eval_every=5)
    ra, res_a = _run(cfg, "eager")
    rb, res_b = _run(cfg, "sync_free")
    _assert_same_run(ra, res_a, rb, res_b)


def _diverging(**kw):
    # EXP-GAN at α = 1e11 overflows (Table 5b's breakdown; tests/trainables/test_train.py);
    # one stats step and one evaluation at the end, so a sync-free trial only reads its flag
    # there, long after the first non-finite step
    return toy(loss="exp", alpha=1e11, **{"iterations": 20, "stats_every": 20,
                                          "eval_every": 20, **kw})


def test_sync_free_diverged_trial_ends_at_eagers_step_with_eagers_reason():
    cfg = _diverging()
    ra, res_a = _run(cfg, "eager")
    rb, res_b = _run(cfg, "sync_free")
    assert res_a.status == "diverged"
    assert res_a.step < cfg["iterations"]  # flagged steps before the sync-free read
    assert res_a.reason.startswith("non-finite ") and res_a.reason.endswith(
        f"at step {res_a.step}")
    _assert_same_run(ra, res_a, rb, res_b)
    assert res_b.metrics["diverged_step"] == float(res_a.step)


def test_sync_free_reads_its_flag_when_stopped_between_stats_steps():
    """A trial stopped (``should_stop``) after diverging ends diverged at eager's step."""
    cfg = _diverging()
    _, res_a = _run(cfg, "eager")
    stop_at = res_a.step + 2
    assert stop_at < cfg["iterations"]
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) >= stop_at

    ra, res_a2 = _run(cfg, "eager", should_stop=should_stop)
    calls.clear()
    rb, res_b = _run(cfg, "sync_free", should_stop=should_stop)
    assert res_b.status == "diverged" and res_b.step == res_a.step
    _assert_same_run(ra, res_a2, rb, res_b)


def test_sync_free_stopped_before_diverging_finishes_like_eager():
    cfg = toy(iterations=20)
    ra, res_a = _run(cfg, "eager", should_stop=lambda: True)
    rb, res_b = _run(cfg, "sync_free", should_stop=lambda: True)
    assert res_a.status == "finished" and res_a.step == 1
    _assert_same_run(ra, res_a, rb, res_b)


@pytest.mark.parametrize("make", [toy, images], ids=["toy-mlp-sn", "dcgan32-sn"])
def test_sync_free_resumed_from_a_checkpoint_continues_as_eager(make):
    cfg = make()
    r_full, res_full = _run(cfg, "eager")
    mid = min(r_full.states)
    assert mid < cfg["iterations"]
    buf = io.BytesIO()
    torch.save(r_full.states[mid], buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    # a copy each: the optimizers adopt the loaded state's tensors and update them in place
    ra, res_a = _run(cfg, "eager", state=copy.deepcopy(state))
    rb, res_b = _run(cfg, "sync_free", state=copy.deepcopy(state))
    _assert_same_run(ra, res_a, rb, res_b)
    last = cfg["iterations"]
    assert _same(rb.states[last], r_full.states[last])  # = the run that never stopped


def test_sync_free_resumed_after_a_diverged_read_is_not_marked_diverged():
    """The device flag belongs to the attempt: a state loaded into a trial clears it."""
    cfg = toy()
    trial = GANTrial(cfg, "cpu", step_mode="sync_free")
    state = trial.state_dict()
    trial.div_step.fill_(3)
    trial.load_state_dict(state)
    assert trial.flagged_divergence() is None


# ------------------------------------------------------------------------------- compiled


def _params(state):
    return {f"{part}.{k}": v for part in ("G", "D") for k, v in state[part].items()}


#: compiled vs eager after 30 steps of a ring8 mlp with SN (lr 1e-4): parameters (incl. SN u, v)
#: within 1e-5 absolute (they move ~1e-2 from their initial values over the 30 steps), the
#: last stats step's losses and Ω ends within 1e-4 relative (+1e-6 absolute). Measured here:
#: 1.5e-7 with inductor, ~1e-7 with aot_eager (float reassociation, fused kernels).
PARAM_ATOL, METRIC_RTOL = 1e-5, 1e-4


def _compare_compiled(monkeypatch, options):
    monkeypatch.setattr(train_mod, "COMPILE_OPTIONS", options)
    cfg = toy(lr_d=1e-4, lr_g=1e-4, iterations=30, stats_every=10, eval_every=30)
    ra, res_a = _run(cfg, "eager")
    graphs = counters["stats"]["unique_graphs"]
    rb, res_b = _run(cfg, "compiled")
    # really compiled: G's forward, the D loss, the G loss and both optimizer updates at least
    assert counters["stats"]["unique_graphs"] - graphs >= 5
    assert res_a.status == res_b.status == "finished"
    sa, sb = ra.states[30], rb.states[30]
    pa, pb = _params(sa), _params(sb)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.allclose(pa[k], pb[k], rtol=0, atol=PARAM_ATOL), (
            k, float((pa[k] - pb[k]).abs().max()))
    # the draws are the trial's own: every generator at the same place
    for part in ("data_gen", "noise_gen", "torch_rng"):
        assert torch.equal(sa[part], sb[part]), part
    la = [c[2] for c in ra.calls if c[:2] == ("stats", 30)][0]
    lb = [c[2] for c in rb.calls if c[:2] == ("stats", 30)][0]
    for key in ("loss_d", "loss_g", "omega_real_min", "omega_real_max", "omega_fake_min",
                "omega_fake_max"):
        assert lb[key] == pytest.approx(la[key], rel=METRIC_RTOL, abs=1e-6), key
    return rb


def test_compiled_matches_eager_within_tolerance_aot_eager(monkeypatch):
    """The capture itself (dynamo + AOTAutograd: SN's in-place power iteration, the optimizer
    steps, the G step back-propagating through G's own compiled graph), without inductor's code
    generation so it takes seconds."""
    _compare_compiled(monkeypatch, {"backend": "aot_eager"})


@pytest.mark.slow
def test_compiled_matches_eager_within_tolerance_inductor(monkeypatch):
    """The product path: inductor (C++ kernels on CPU; ~40 s to compile on 2 busy cores)."""
    _compare_compiled(monkeypatch, {})


def test_compiled_trial_resumes_from_its_checkpoint(monkeypatch):
    monkeypatch.setattr(train_mod, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    cfg = toy(lr_d=1e-4, lr_g=1e-4, iterations=20, stats_every=5, eval_every=10)
    r_full, _ = _run(cfg, "compiled")
    rb, res_b = _run(cfg, "compiled", state=copy.deepcopy(r_full.states[10]))
    assert res_b.status == "finished"
    assert [c[1] for c in rb.calls if c[0] == "stats"] == [15, 20]  # no step twice
    for k, v in _params(r_full.states[20]).items():
        assert torch.allclose(v, _params(rb.states[20])[k], rtol=0, atol=PARAM_ATOL), k


def test_compiled_diverged_trial_ends_at_eagers_step(monkeypatch):
    monkeypatch.setattr(train_mod, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    cfg = _diverging()
    _, res_a = _run(cfg, "eager")
    _, res_b = _run(cfg, "compiled")
    assert res_b.status == "diverged"
    assert (res_b.step, res_b.reason) == (res_a.step, res_a.reason)


# ------------------------------------------------------------------------- refusals / auto


def _one_line(err):
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("step_mode: ")
    return msg


def test_cuda_graph_on_a_cpu_device_is_refused_in_one_line():
    cfg = unchecked("cuda_graph")
    assert cfg["device"] == "cpu"
    with pytest.raises(ConfigError) as err:
        check_step_mode(cfg)
    msg = _one_line(err)
    assert "'cuda_graph'" in msg and "CUDA" in msg and "'cpu'" in msg
    with pytest.raises(ConfigError) as err:  # train() refuses it before building anything
        train(cfg)
    assert str(err.value) == msg


@pytest.mark.parametrize("mode", ["compiled", "cuda_graph"])
@pytest.mark.parametrize("reg", ["gp", "r1", "js", "alr"])
def test_captured_modes_refuse_regularizers_they_do_not_capture(mode, reg):
    cfg = unchecked(mode, regularizer=reg, device="auto")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    msg = _one_line(err)
    assert f"not {reg!r}" in msg and "use sync_free" in msg
    assert err.value.key == "step_mode"


def test_compiled_gran_is_refused_for_its_double_backward():
    cfg = unchecked("compiled", regularizer="gran", loss="wgan")
    msg = step_mode_problem(cfg)
    assert "'gran'" in msg and "double backward" in msg


@pytest.mark.parametrize("reg", sorted(CAPTURE_REGULARIZERS))
def test_captured_regularizers_pass_the_check(reg):
    assert step_mode_problem(toy(regularizer=reg, step_mode="compiled")) is None
    assert step_mode_problem(toy(regularizer=reg, device="auto", step_mode="cuda_graph")) is None


def test_auto_is_sync_free_on_cpu_and_cuda_and_never_refuses():
    for reg in ("sn", "gp", "alr"):
        cfg = toy(regularizer=reg)  # step_mode defaults to auto
        assert cfg["step_mode"] == "auto"
        assert resolve_step_mode(cfg, torch.device("cpu")) == "sync_free"
        assert resolve_step_mode(cfg, torch.device("cuda")) == "sync_free"
    assert resolve_step_mode(toy(step_mode="eager"), "cpu") == "eager"


def test_cuda_graph_without_a_gpu_at_run_time_warns_and_runs_sync_free():
    cfg = toy(device="auto", step_mode="cuda_graph", iterations=4, stats_every=2, eval_every=4)
    with pytest.warns(RuntimeWarning, match="cuda_graph.*sync_free"):
        assert resolve_step_mode(cfg, torch.device("cpu")) == "sync_free"
    if torch.cuda.is_available():
        return
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ra, res_a = _run(cfg, "cuda_graph")
    assert sum("cuda_graph" in str(w.message) for w in seen) == 1
    rb, res_b = _run(cfg, "eager")
    _assert_same_run(ra, res_a, rb, res_b)


def test_gantrial_refuses_an_unknown_or_impossible_mode():
    with pytest.raises(ValueError, match="step_mode 'cuda_graph' needs a CUDA device"):
        GANTrial(toy(), "cpu", step_mode="cuda_graph")
    with pytest.raises(ValueError, match="expected one of eager, sync_free"):
        GANTrial(toy(), "cpu", step_mode="graphed")
    assert GANTrial(toy(), "cpu").step_mode == "eager"  # the API the pack and benches drive


# ------------------------------------------------------- cuda_graph's host logic, simulated


@pytest.mark.parametrize("make,kw", [(toy, {"n_dis": 2}), (images, {}), (toy, {"nan_at": 6})],
                         ids=["toy-n_dis-2", "dcgan32-gathered", "toy-nan-after-capture"])
def test_cuda_graph_host_logic_matches_eager_on_cpu(make, kw, monkeypatch):
    """What ``cuda_graph`` does around the graph, on CPU: the warm-up steps, the static inputs
    filled from the trial's generators before each replay (gathered indices for an in-memory
    set, batches for the toys), the device step counter and the divergence flag. The CUDA
    capture is replaced by a stand-in whose replay runs the graph's body (``_graph_body``) at
    replay time, so every replay computes what the captured kernels would; the real capture is
    tests/trainables/test_cuda.py's. Bit-identical to eager, flags included."""
    nan_at = kw.pop("nan_at", None)
    cfg = make(**kw)

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: Stream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())

    def run(graphed):
        t = GANTrial(cfg, "cpu", step_mode="sync_free")
        replays = []
        if graphed:
            t.step_mode = "cuda_graph"  # past the constructor's CUDA check
            monkeypatch.setattr(t, "_make_capturable", lambda: None)  # CPU: no capturable

            class Graph:
                def replay(self):
                    t._g_out = GANTrial._graph_body(t)
                    replays.append(t.step)

            @contextlib.contextmanager
            def capture(graph):  # the capture records; it runs nothing
                t._graph_body = lambda: {}
                yield
                del t._graph_body

            monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
            monkeypatch.setattr(torch.cuda, "graph", capture)
        outs, eager_div = [], None
        for _ in range(10):
            if t.step == nan_at:
                with torch.no_grad():
                    next(t.D.parameters()).fill_(float("nan"))
            out = t.train_step()
            outs.append({k: v.clone() for k, v in out.items() if isinstance(v, torch.Tensor)})
            if eager_div is None:
                eager_div = t.divergence(out) and (t.step, t.divergence(out))
        return t, outs, replays, eager_div

    ta, outs_a, _, div_a = run(False)
    tb, outs_b, replays, _ = run(True)
    assert len(replays) == 10 - train_mod.GRAPH_WARMUP_STEPS  # captured, then replayed
    assert _same(outs_a, outs_b)
    sa, sb = ta.state_dict(), tb.state_dict()
    assert _same({k: sa[k] for k in ("G", "D", "data_gen", "noise_gen", "torch_rng")},
                 {k: sb[k] for k in ("G", "D", "data_gen", "noise_gen", "torch_rng")})
    # the portable optimizer state: eager's form (CPU float32 step, capturable off)
    assert _same(sa["opt_d"]["state"], sb["opt_d"]["state"])
    assert not any(g["capturable"] for g in sb["opt_d"]["param_groups"])
    if nan_at is None:
        assert tb.flagged_divergence() is None
    else:
        assert div_a == (nan_at + 1, tb.flagged_divergence()[1])
        assert tb.flagged_divergence()[0] == nan_at + 1 > train_mod.GRAPH_WARMUP_STEPS


def test_validate_trial_refuses_a_step_mode_the_config_cannot_run():
    """The refusal comes at validation (before any study starts), in one line naming the key."""
    from trainables.config import ConfigError, validate_trial

    with pytest.raises(ConfigError) as err:
        validate_trial(dict(dataset="ring8", arch="mlp", device="cpu", step_mode="cuda_graph"),
                       check_data=False)
    assert str(err.value).startswith("step_mode: ") and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="^step_mode: .*gp"):
        validate_trial(dict(dataset="ring8", arch="mlp", device="cpu", regularizer="gp",
                            step_mode="compiled"), check_data=False)
    assert validate_trial(dict(dataset="ring8", arch="mlp", device="cpu",
                               step_mode="sync_free"), check_data=False)["step_mode"] == "sync_free"
