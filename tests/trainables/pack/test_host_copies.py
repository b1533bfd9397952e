"""An image pack's real batch reaches its device without a blocking host→device copy.

Every ``Tensor.to`` / ``Tensor.copy_`` that crosses devices is recorded by a torch function mode.
On CPU the pack's image store is moved to the ``meta`` device, a stand-in for the GPU (a copy to it
has the same arguments as one to CUDA, and nothing else in the draw touches it); on CUDA the real
device, where the copy's source must also be pinned memory.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from trainables.config import validate_trial
from trainables.pack.population import Population

IMG = dict(dataset="fashion_mnist_mini", arch="dcgan32", width=0.0625, batch_size=16,
           fid_samples=100, fid_extractor="domain", iterations=4, stats_every=2, eval_every=4,
           regularizer="sn", loss="ns", lr_d=2e-4, lr_g=2e-4)


class CrossDeviceCopies(TorchFunctionMode):
    """Records (source device, target device, non_blocking, source pinned) of every copy between
    devices made through ``Tensor.to`` or ``Tensor.copy_``."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[tuple[str, str, bool, bool]] = []

    def _record(self, src: torch.Tensor, dst: torch.device, non_blocking: bool) -> None:
        dst = torch.device(dst)
        if (src.device.type, src.device.index or 0) != (dst.type, dst.index or 0):
            pinned = src.device.type == "cpu" and torch.cuda.is_available() and src.is_pinned()
            self.copies.append((src.device.type, dst.type, bool(non_blocking), pinned))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            device, _, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            if device is not None:
                self._record(args[0], device, non_blocking)
        elif func is torch.Tensor.copy_:
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            self._record(args[1], args[0].device, non_blocking)
        return func(*args, **kwargs)


def _pack(device: str) -> Population:
    cfgs = [validate_trial(dict(IMG, seed=s, device=device), check_data=False) for s in (1, 2)]
    return Population(cfgs)


def test_pack_gather_makes_no_blocking_copy_to_the_store_device():
    pop = _pack("cpu")
    store = pop.members[0].data
    store.to("meta")  # the GPU-resident store, as a non-CUDA build can have it
    assert store.device.type == "meta"
    n, P, B = pop.n_dis, pop.P, pop.batch
    real = torch.empty((n, P, B) + pop.sample_shape, device="meta")
    z = torch.empty((n, P, B, pop.members[0].cfg["z_dim"]))
    with CrossDeviceCopies() as mode:
        pop._draw(real, z, None)
    assert mode.copies, "the draw sends indices to the store's device"
    assert all(nb for _, _, nb, _ in mode.copies), mode.copies


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_pack_draw_copies_pinned_indices_without_blocking():
    pop = _pack("cuda")
    assert pop.members[0].data.device.type == "cuda"  # resident store
    with CrossDeviceCopies() as mode:
        real, _, _ = pop._draw()
    torch.cuda.synchronize()
    h2d = [c for c in mode.copies if c[:2] == ("cpu", "cuda")]
    assert h2d and all(nb and pinned for _, _, nb, pinned in h2d), mode.copies
    # the same draws as without the mode (the copies carried the right indices)
    again = _pack("cuda")
    assert torch.equal(again._draw()[0], real)
