"""Checkpoints load on any device: a GPU worker's checkpoint resumes (one-config trials and packs,
through the Ray trainables' own loading code), and a CUDA trial's state resumes on the CPU.

No GPU here, so the GPU worker is simulated: the trainable is told its device is ``meta`` (a
device that is not the CPU, as ``cuda`` is on a GPU worker) while the training itself runs on the
CPU. Loading the checkpoint onto the trial's device (``map_location=device``) turns every tensor,
the CPU generator states included, into a device tensor that no CPU generator or module can take;
loading to the CPU first is what makes the resume work. A CUDA trial's device generator state is
a 16-byte Philox (seed, offset) pair, built here as torch stores it. The CUDA side of the same
paths is ``tests/trainables/test_cuda.py``.
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from trainables import streams
from trainables.ray import trainable as ray_trainable
from trainables.config import validate_trial
from trainables.ray.trainable import TrialContext
from trainables.train import Callbacks, GANTrial, train

STOP = 4  # the checkpoint a retry resumes from (of 8 steps)


def toy_raw(**kw):
    base = dict(dataset="ring8", arch="mlp", width=0.25, loss="ns", regularizer="sn",
                iterations=8, stats_every=2, eval_every=STOP, fid_samples=200, batch_size=32,
                device="cpu")
    base.update(kw)
    return base


@pytest.fixture
def context(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("devices", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="study").info.run_id
    return TrialContext(uri, exp, parent, "devices")


def _fake_tune(monkeypatch, tmp_path, tag, resume_from=None):
    """``tune.report`` keeps a copy of every checkpoint directory (step → path);
    ``tune.get_checkpoint`` answers ``resume_from`` (a retried trial) or None."""
    saved = {}

    def report(metrics, checkpoint=None):
        if checkpoint is not None:
            dest = tmp_path / f"{tag}-{int(metrics['step'])}"
            shutil.copytree(checkpoint.path, dest)
            saved[int(metrics["step"])] = dest

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: (
        tune.Checkpoint.from_directory(str(resume_from)) if resume_from else None))
    return saved


def _on_a_gpu_worker(monkeypatch, module, run_name):
    """The trainable ``module`` believes it got a non-CPU device; its ``run_name`` function
    (train / train_population) still runs on the CPU."""
    real = getattr(module, run_name)

    def on_cpu(*args, device=None, **kw):
        assert device == torch.device("meta")  # the trainable's device reached the loop
        return real(*args, device="cpu", **kw)

    monkeypatch.setattr(module, "trial_device", lambda requested: torch.device("meta"))
    monkeypatch.setattr(module, run_name, on_cpu)


def _params(state):
    return {f"{part}.{k}": v for part in ("G", "D") for k, v in state[part].items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_gpu_workers_trial_checkpoint_resumes(tmp_path, monkeypatch, context):
    config = {"trial": toy_raw()}
    full = _fake_tune(monkeypatch, tmp_path, "full")
    ray_trainable.run_trial(config, context)
    assert sorted(full) == [STOP, 8]

    retried = _fake_tune(monkeypatch, tmp_path, "retry", resume_from=full[STOP])
    _on_a_gpu_worker(monkeypatch, ray_trainable, "train")
    ray_trainable.run_trial(config, context)
    assert sorted(retried) == [8]
    want = ray_trainable.load_state(str(full[8] / ray_trainable.STATE_FILE))
    got = ray_trainable.load_state(str(retried[8] / ray_trainable.STATE_FILE))
    assert _same(_params(want), _params(got))  # continued exactly (both ran on the CPU)
    for part in ("data_gen", "noise_gen", "torch_rng"):
        assert torch.equal(want[part], got[part]), part
    runs = MlflowClient(context.tracking_uri).search_runs(
        [context.experiment_id], "tags.mlflow.parentRunId = '%s'" % context.parent_run_id)
    assert [r.info.status for r in runs] == ["FINISHED"]  # the same run, continued


def test_a_gpu_workers_pack_checkpoint_resumes(tmp_path, monkeypatch, context):
    config = {"pack": [toy_raw(seed=0), toy_raw(seed=1, loss="wgan")]}
    full = _fake_tune(monkeypatch, tmp_path, "full")
    ray_trainable.run_pack(config, context)
    assert sorted(full) == [STOP, 8]

    retried = _fake_tune(monkeypatch, tmp_path, "retry", resume_from=full[STOP])
    _on_a_gpu_worker(monkeypatch, ray_trainable, "train_population")
    ray_trainable.run_pack(config, context)
    assert sorted(retried) == [8]
    want = ray_trainable.load_state(str(full[8] / ray_trainable.PACK_STATE_FILE))
    got = ray_trainable.load_state(str(retried[8] / ray_trainable.PACK_STATE_FILE))
    for a, b in zip(want["members"], got["members"], strict=True):
        assert _same(_params(a), _params(b))
        assert torch.equal(a["torch_rng"], b["torch_rng"])


# ------------------------------------------------------------- a CUDA trial's state on the CPU


class Recorder(Callbacks):
    def __init__(self):
        self.states, self.result = {}, None

    def on_checkpoint(self, step, state, metrics):
        self.states[step] = state

    def on_end(self, result):
        self.result = result


def _philox_state(seed: int, offset: int) -> torch.Tensor:
    """A CUDA generator's state as ``torch.cuda`` returns it: seed and offset, 8 bytes each."""
    return torch.tensor(list(seed.to_bytes(8, "little") + offset.to_bytes(8, "little")),
                        dtype=torch.uint8)


def _as_if_saved_on_cuda(state, old_format=False):
    """``state`` of a CPU trial with its device generators replaced by CUDA ones."""
    st = copy.deepcopy(state)
    st["noise_gen"] = _philox_state(1_000_005, 4 * 32 * 100)
    st["cuda_rng"] = _philox_state(7, 256)
    if old_format:  # a state saved before device_type existed: cuda_rng says CUDA
        st.pop("device_type", None)
    else:
        st["device_type"] = "cuda"
    return st


@pytest.mark.parametrize("old_format", [False, True], ids=["device_type", "cuda_rng-only"])
def test_a_cuda_trials_state_resumes_on_the_cpu(old_format):
    cfg = validate_trial(toy_raw(seed=3))
    rec = Recorder()
    train(cfg, rec)
    st = _as_if_saved_on_cuda(rec.states[STOP], old_format)

    t = GANTrial(cfg, "cpu")
    t.load_state_dict(copy.deepcopy(st))
    expected = torch.Generator().manual_seed(streams.reseed_value(3, streams.NOISE, STOP))
    assert torch.equal(t.noise_gen.get_state(), expected.get_state())  # re-seeded (seed, step)
    assert torch.equal(t.data_gen.get_state(), st["data_gen"])  # CPU generators restored
    assert t.step == STOP and _same(_params(t.state_dict()), _params(st))

    runs = []
    for _ in range(2):  # deterministic: the same state resumed twice draws the same
        r = Recorder()
        result = train(cfg, r, state=copy.deepcopy(st))
        assert result.status == "finished" and sorted(r.states) == [8]
        runs.append(r.states[8])
    assert _same(_params(runs[0]), _params(runs[1]))
    assert not _same(_params(runs[0]), _params(rec.states[8]))  # other noise than the CPU run's
    assert runs[0]["device_type"] == "cpu"


def test_reseed_values_depend_on_seed_stream_and_step():
    values = {streams.reseed_value(s, n, t) for s in (0, 1) for n in (0, 2) for t in (0, 4)}
    assert len(values) == 8 and all(0 <= v < 2 ** 63 for v in values)
    assert streams.reseed_value(5, 2, 100) == streams.reseed_value(5, 2, 100)
