"""CUDA-only checks (issue #12 item 4): tiny trials end to end on the GPU in every step mode, the
sync-free and captured steps against eager, no host sync inside a sync-free or graphed step, and a
population (pack) trial end to end with its FID on the GPU; checkpoints loaded onto the GPU and
moved between the GPU and the CPU; both values of the ``precision`` key. Skipped without CUDA;
run them with ``pytest tests/trainables/test_cuda.py`` on a GPU machine (the CPU side of the step
modes is ``tests/trainables/test_step_modes.py``, of checkpoints
``tests/trainables/ray/test_checkpoint_devices.py``, of precision
``tests/trainables/test_devices.py``).

Comparisons between modes run with ``precision: fp32`` (the default; ``train`` and
``train_population`` apply it), so differences are the modes', not TF32's."""

import copy
import math

import pytest
import torch

from trainables import streams
from trainables import train as train_mod
from tests.trainables import tiny
from trainables.ray.trainable import load_state
from trainables.train import Callbacks, GANTrial, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MODES = ["eager", "sync_free", "compiled", "cuda_graph"]


CUDA = {"device": "cuda", "precision": "fp32"}


def toy(**kw):
    """The tiny ring8 trial on the GPU: 30 steps at lr 1e-4."""
    return tiny.toy(**{**CUDA, "iterations": 30, "stats_every": 10, "eval_every": 30,
                       "lr_d": 1e-4, "lr_g": 1e-4, **kw})


def images(**kw):
    """The tiny image trial on the GPU: 8 steps, measured and evaluated every 4."""
    return tiny.images(**{**CUDA, "iterations": 8, "stats_every": 4, "eval_every": 4, **kw})


class Recorder(Callbacks):
    def __init__(self):
        self.stats, self.evals, self.states, self.final, self.result = {}, {}, {}, None, None

    def on_stats(self, step, metrics):
        self.stats.setdefault(step, {}).update(metrics)

    def on_eval(self, step, metrics, grid):
        assert grid.dim() == 3 and grid.shape[0] == 3
        self.evals[step] = dict(metrics)

    def on_final(self, step, metrics, samples):
        self.final = dict(metrics)

    def on_checkpoint(self, step, state, metrics):
        self.states[step] = state

    def on_end(self, result):
        self.result = result


@pytest.fixture
def made(monkeypatch):
    """The GANTrial objects train() builds (to look at their device, data and graph)."""
    built = []

    class Spy(GANTrial):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            built.append(self)

    monkeypatch.setattr(train_mod, "GANTrial", Spy)
    return built


def _run(cfg, mode, **kw):
    rec = Recorder()
    result = train(dict(cfg, step_mode=mode), rec, **kw)
    return rec, result


def _params(state):
    return {f"{part}.{k}": v for part in ("G", "D") for k, v in state[part].items()}


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("mode", MODES)
def test_image_trial_end_to_end_on_cuda(mode, made):
    """dcgan32 on the embedded set with SN, FID on the domain extractor, all on the GPU:
    finished, every metric finite, FID computed on CUDA; the checkpoint of every mode, loaded
    with ``map_location="cuda"`` (generator states then on the GPU), resumes eagerly."""
    cfg = images()
    rec, result = _run(cfg, mode)
    assert result.status == "finished", result.reason
    trial = made[-1]
    assert trial.step_mode == mode and trial.device.type == "cuda"
    assert all(p.is_cuda for p in trial.G.parameters())
    assert trial.evaluator._extractor.device.type == "cuda"  # FID's features on the GPU
    if mode != "eager":  # the image store is resident on the device
        assert trial.data.device.type == "cuda"
    if mode == "cuda_graph":  # 8 steps: 3 warm-up steps, then captured and replayed
        assert trial._graph.captured
    assert set(rec.evals) == {4, 8}
    for m in (*rec.stats.values(), *rec.evals.values(), rec.final):
        assert all(math.isfinite(v) for v in m.values()), m
    assert rec.final["fid_final"] >= 0
    # the checkpoint of any mode is an ordinary state: an eager trial continues from it
    state = torch.load(_roundtrip(rec.states[4]), weights_only=True, map_location="cuda")
    assert state["data_gen"].is_cuda and state["torch_rng"].is_cuda
    rec_e, res_e = _run(cfg, "eager", state=state)
    assert res_e.status == "finished" and set(rec_e.evals) == {8}


def _roundtrip(state):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def test_gpu_checkpoint_loaded_as_the_trainables_do_continues_the_run(tmp_path):
    """save → ``load_state`` (what the Ray trainables call: every tensor on the CPU) → the trial
    continues on the GPU: generator states restored, parameters at the end as the uninterrupted
    run's (cuDNN may pick other algorithms: within PARAM_ATOL)."""
    cfg = images()
    full, _ = _run(cfg, "eager")
    path = tmp_path / "state.pt"
    torch.save(full.states[4], path)
    state = load_state(str(path))
    assert all(t.device.type == "cpu" for t in _tensors(state))
    assert state["device_type"] == "cuda"
    rec, res = _run(cfg, "eager", state=state)
    assert res.status == "finished" and set(rec.evals) == {8}
    assert torch.equal(full.states[8]["noise_gen"], rec.states[8]["noise_gen"])
    assert torch.equal(full.states[8]["data_gen"], rec.states[8]["data_gen"])
    for k, v in _params(full.states[8]).items():
        assert torch.allclose(v, _params(rec.states[8])[k], rtol=0, atol=PARAM_ATOL), k


@pytest.mark.parametrize("there,back", [("cuda", "cpu"), ("cpu", "cuda")])
def test_checkpoint_moves_between_the_gpu_and_the_cpu(there, back, tmp_path):
    """A trial's checkpoint resumes on the other device type: CPU generators restored, the
    device-side noise generator re-seeded from (seed, step) (its state belongs to the other
    generator type), the trial runs to its end."""
    first, _ = _run(images(device=there), "eager")
    path = tmp_path / "state.pt"
    torch.save(first.states[4], path)
    cfg = images(device=back)
    t = GANTrial(cfg, back)
    t.load_state_dict(load_state(str(path)))
    want = torch.Generator(device=back).manual_seed(
        streams.reseed_value(cfg["seed"], streams.NOISE, 4))
    assert torch.equal(t.noise_gen.get_state(), want.get_state())
    assert torch.equal(t.data_gen.get_state(), first.states[4]["data_gen"].cpu())
    rec, res = _run(cfg, "eager", state=load_state(str(path)))
    assert res.status == "finished" and set(rec.evals) == {8}
    assert rec.states[8]["device_type"] == back
    assert all(math.isfinite(v) for v in rec.final.values())


def test_tf32_precision_turns_tf32_on_and_fp32_turns_it_off():
    """The production choice ``tf32`` runs end to end with TF32 on; ``fp32`` (default) is full
    float32 again; cuDNN's autotuner is on for CUDA trials."""
    rec, res = _run(images(precision="tf32"), "eager")
    assert res.status == "finished"
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.benchmark
    for m in (*rec.stats.values(), *rec.evals.values(), rec.final):
        assert all(math.isfinite(v) for v in m.values()), m
    _run(images(iterations=4, eval_every=4), "eager")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.parametrize("mode", MODES)
def test_toy_trial_end_to_end_on_cuda(mode):
    rec, result = _run(toy(iterations=12, stats_every=4, eval_every=6), mode)
    assert result.status == "finished", result.reason
    assert set(rec.evals) == {6, 12}
    assert all(math.isfinite(v) for v in rec.stats[12].values())


# ------------------------------------------------------------------------- modes vs eager


#: sync_free / compiled / cuda_graph vs eager on CUDA, 30 steps of the ring8 mlp with SN at
#: lr 1e-4 (TF32 off): parameters (with SN's u, v) within 1e-5 absolute, the last stats step's
#: losses and Ω ends within 1e-4 relative. sync_free runs eager's kernels (only the batch is
#: gathered on the device); compiled fuses kernels; cuda_graph uses capturable optimizers.
PARAM_ATOL, METRIC_RTOL = 1e-5, 1e-4


@pytest.mark.parametrize("mode", ["sync_free", "compiled", "cuda_graph"])
@pytest.mark.parametrize("make", [toy, lambda **kw: images(iterations=12, stats_every=6,
                                                           eval_every=12, lr_d=1e-4,
                                                           lr_g=1e-4, **kw)],
                         ids=["toy-mlp-sn", "dcgan32-sn"])
def test_mode_matches_eager_on_cuda(mode, make, made):
    cfg = make()
    n = cfg["iterations"]
    ra, res_a = _run(cfg, "eager")
    rb, res_b = _run(cfg, mode)
    assert res_a.status == res_b.status == "finished"
    if mode == "cuda_graph":
        assert made[-1]._graph.captured
    pa, pb = _params(ra.states[n]), _params(rb.states[n])
    for k in pa:
        assert torch.allclose(pa[k], pb[k], rtol=0, atol=PARAM_ATOL), (
            k, float((pa[k] - pb[k]).abs().max()))
    for part in ("data_gen", "noise_gen"):  # the trial's own draws, as many of them
        assert torch.equal(ra.states[n][part], rb.states[n][part]), part
    for key in ("loss_d", "loss_g", "omega_real_min", "omega_real_max", "omega_fake_min",
                "omega_fake_max"):
        assert rb.stats[n][key] == pytest.approx(ra.stats[n][key], rel=METRIC_RTOL,
                                                 abs=1e-6), key


@pytest.mark.parametrize("mode", ["sync_free", "compiled", "cuda_graph"])
def test_divergence_flagged_on_the_device_ends_at_eagers_step(mode):
    """A D weight set to NaN before step 6 (after the graph's capture): the flag read later
    gives eager's step and reason."""
    cfg = toy(iterations=12)

    def run(m):
        t = GANTrial(cfg, "cuda", step_mode=m)
        while t.step < 12:
            if t.step == 5:
                with torch.no_grad():
                    next(t.D.parameters()).fill_(float("nan"))  # in place: the graph sees it
            out = t.train_step()
            if m == "eager" and (reason := t.divergence(out)) is not None:
                return t.step, reason
        if m == "cuda_graph":
            assert t._graph.captured
        return t.flagged_divergence()

    want = run("eager")
    assert want[0] == 6 and want[1].endswith("at step 6")
    assert run(mode) == want


def test_exp_at_alpha_1e11_diverges_at_eagers_step_on_cuda():
    cfg = toy(loss="exp", alpha=1e11, iterations=20, stats_every=20, eval_every=20)
    _, res_a = _run(cfg, "eager")
    _, res_b = _run(cfg, "sync_free")
    assert res_a.status == res_b.status == "diverged"
    assert (res_a.step, res_a.reason) == (res_b.step, res_b.reason)


@pytest.mark.parametrize("mode", ["sync_free", "cuda_graph"])
@pytest.mark.parametrize("make", [toy, images], ids=["toy-mlp-sn", "dcgan32-sn"])
def test_step_has_no_host_sync(mode, make):
    """torch.cuda.set_sync_debug_mode("error") raises on any synchronizing CUDA call: none in
    a sync-free step, none in a graph replay with its input draws."""
    t = GANTrial(make(iterations=20, eval_every=20), "cuda", step_mode=mode)
    for _ in range(5):  # optimizer state, (cuda_graph) the warm-up steps and the capture
        t.train_step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            t.train_step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert t.flagged_divergence() is None and t.step == 10


def test_cuda_graph_trial_resumes_from_its_checkpoint():
    cfg = toy(iterations=20, stats_every=5, eval_every=10)
    r_full, _ = _run(cfg, "cuda_graph")
    st = r_full.states[10]
    assert all(s["step"].device.type == "cpu" for s in st["opt_d"]["state"].values())
    assert not any(g["capturable"] for g in st["opt_d"]["param_groups"])
    rb, res_b = _run(cfg, "cuda_graph", state=copy.deepcopy(st))
    ra, _ = _run(cfg, "eager", state=copy.deepcopy(st))
    assert res_b.status == "finished" and sorted(rb.stats) == [15, 20]
    for k, v in _params(ra.states[20]).items():
        assert torch.allclose(v, _params(rb.states[20])[k], rtol=0, atol=PARAM_ATOL), k


# ----------------------------------------------------------------------------- population


@pytest.mark.parametrize("mode", ["eager", "sync_free", "cuda_graph"])
def test_population_end_to_end_on_cuda_with_fid_on_the_gpu(mode, monkeypatch):
    """A pack of 3 image configs (two losses, two k_SN, two seeds) through
    ``trainables.pack.population.train_population`` on CUDA: every member finished with a finite FID
    (domain extractor on the GPU) and, as issue #12 requires of a pack, its loss_d and Ω at the
    last stats step within 1e-3 relative and its FID within 2 % of its one-config trial."""
    from trainables.pack import population

    packs = []

    class Spy(population.Population):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            packs.append(self)

    monkeypatch.setattr(population, "Population", Spy)
    cfgs = [images(step_mode=mode, **kw) for kw in
            ({"seed": 0}, {"seed": 1, "loss": "wgan"}, {"seed": 0, "k_sn": 2.0})]
    recs = [Recorder() for _ in cfgs]
    results = population.train_population(cfgs, recs, device="cuda")
    assert len(packs) == 1 and packs[0].device.type == "cuda"
    for m in packs[0].members:  # every member's FID features came from the GPU
        assert m.evaluator._extractor.device.type == "cuda"
    for cfg, rec, res in zip(cfgs, recs, results):
        assert res.status == "finished", res.reason
        assert math.isfinite(rec.evals[8]["fid"]) and math.isfinite(rec.final["fid_final"])
        single, res1 = _run(dict(cfg, step_mode="eager"), "eager")
        assert res1.status == "finished"
        for key in ("loss_d", "omega_real_min", "omega_real_max", "omega_fake_min",
                    "omega_fake_max"):
            assert rec.stats[8][key] == pytest.approx(single.stats[8][key], rel=1e-3,
                                                      abs=1e-6), key
        assert rec.evals[8]["fid"] == pytest.approx(single.evals[8]["fid"], rel=0.02)


def test_cpu_pack_checkpoint_resumes_on_cuda_with_reseeded_member_rngs(tmp_path):
    """A CPU pack's checkpoint on a CUDA worker: every member's CUDA RNG (its penalties' draws)
    is re-seeded from (seed, step), as a one-config trial's CUDA RNG is, and the pack trains to
    its end."""
    from trainables.pack import population

    cfgs = [toy(device="cpu", iterations=8, stats_every=4, eval_every=4, seed=s) for s in (0, 1)]
    saved = {}
    population.train_population(cfgs, on_checkpoint=lambda step, st, latest: saved.update(
        {step: st}))
    path = tmp_path / "pack.pt"
    torch.save(saved[4], path)
    cuda_cfgs = [dict(c, device="cuda") for c in cfgs]
    pop = population.Population(cuda_cfgs, "cuda", load_state(str(path))["members"])
    for cfg, rng in zip(cuda_cfgs, pop.rngs):
        want = torch.Generator(device="cuda").manual_seed(
            streams.reseed_value(cfg["seed"], streams.DEVICE_GLOBAL, 4))
        assert torch.equal(rng.get_state(), want.get_state())
    results = population.train_population(cuda_cfgs, state=load_state(str(path)), device="cuda")
    assert [r.status for r in results] == ["finished", "finished"]
