"""A pack's stats step (``Population.measure``): all members measured at once, one host read.

A pack of P members used to run each member's own ``GANTrial.measure`` in turn: ≥ 3 host reads
(``.tolist()``) per member plus one per SN layer (``float`` of its σ), so P times the reads of a
trial. The batched stats (``trainables.metrics.stats.member_stats``) read all members' values in one.
"""

from __future__ import annotations

import pytest
import torch

from trainables.config import validate_trial
from trainables.pack.population import Population, train_population
from trainables.metrics.stats import member_stats, one_member, spectral_norms
from trainables.train import Callbacks, GANTrial

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = dict(dataset="ring8", arch="mlp", batch_size=32, device="cpu", lr_d=2e-4, lr_g=2e-4)
#: Tensor methods that bring a value to the host (a device sync off CPU).
HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


def _counting_host_reads(monkeypatch) -> list[int]:
    count = [0]
    for name in HOST_READS:
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **k):
            count[0] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return count


def _stats_step_reads(monkeypatch, regularizer: str, P: int) -> int:
    """Host reads between the pack's divergence read and the last member's ``on_stats`` at the
    first stats step (step 1; evaluation only at step 2)."""
    base = dict(TOY, regularizer=regularizer, iterations=2, stats_every=1, eval_every=2,
                fid_samples=64)
    losses = ("ns", "wgan", "ls", "hinge")
    cfgs = [validate_trial({**base, "loss": losses[i % 4], "seed": i}, check_data=False)
            for i in range(P)]
    count = _counting_host_reads(monkeypatch)
    marks: dict[str, list[int]] = {"div": [], "stats": []}
    divergences = Population.divergences

    def marked(self):
        out = divergences(self)
        marks["div"].append(count[0])
        return out

    monkeypatch.setattr(Population, "divergences", marked)

    class Mark(Callbacks):
        def on_stats(self, step, metrics):
            if step == 1:
                marks["stats"].append(count[0])

    train_population(cfgs, [Mark() for _ in cfgs])
    monkeypatch.undo()
    assert len(marks["stats"]) == P
    return marks["stats"][-1] - marks["div"][0]


@pytest.mark.parametrize("regularizer", ["sn", "gp", "none"])
def test_pack_stats_step_reads_the_host_once_whatever_the_pack_size(monkeypatch, regularizer):
    reads = {P: _stats_step_reads(monkeypatch, regularizer, P) for P in (2, 8)}
    assert reads == {2: 1, 8: 1}, reads


def test_member_stats_of_a_stack_are_each_members_own_stats_bit_for_bit():
    """member_stats over a stacked batch equals, member by member, the P = 1 computation of a
    one-config trial on that member's own tensors (toy SN trials, four losses, own k_SN / α),
    including the SVD-based σ of the SN layers."""
    base = dict(TOY, regularizer="sn", iterations=10, stats_every=5, eval_every=10)
    cfgs = [validate_trial({**base, "loss": loss, "k_sn": k, "alpha": a, "seed": i},
                           check_data=False)
            for i, (loss, k, a) in enumerate([("ns", 1.0, 1.0), ("wgan", 5.0, 1.0),
                                              ("ls", 0.5, 0.1), ("ns", 2.0, 1.0)])]
    pop = Population(cfgs)
    for _ in range(3):
        out = pop.train_step()
    pack = pop.measure(out, list(range(len(cfgs))))
    for i, cfg in enumerate(cfgs):
        trial = GANTrial(cfg, "cpu")
        trial.load_state_dict(pop.member_state(i))
        solo = trial.measure({**pop.member_out(out, i)})
        assert solo == pack[i], i
    # the SVDs: stacked σ equal each member's own
    ws = [pop.D.weight(info, training=False, detach=True)
          for _k, _p, info in pop.D.layers if info.get("sn")]
    stacked = spectral_norms(ws)
    for i in range(len(cfgs)):
        assert torch.equal(stacked[i], spectral_norms([w[i:i + 1] for w in ws])[0])


def test_member_stats_refuses_mismatched_members():
    D = torch.nn.Linear(2, 1)
    x = torch.zeros(2, 4, 2)
    f = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="2 members but 1 losses"):
        member_stats(one_member(D), x, x, f, f, f, torch.zeros(2), [object()])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pack_stats_step_syncs_the_gpu_a_fixed_number_of_times():
    """On CUDA, the syncs of ``Population.measure`` (torch's sync debug mode: the one read, and
    each SN layer's SVD convergence check) do not grow with the pack."""
    import warnings

    def syncs(P: int) -> int:
        base = dict(TOY, regularizer="sn", iterations=10, stats_every=5, eval_every=10,
                    device="cuda")
        cfgs = [validate_trial({**base, "loss": ("ns", "wgan")[i % 2], "seed": i},
                               check_data=False) for i in range(P)]
        pop = Population(cfgs)
        out = pop.train_step()
        pop.measure(out, list(range(P)))  # first call: index tensors made once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                pop.measure(out, list(range(P)))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in seen)

    assert syncs(2) == syncs(8)
