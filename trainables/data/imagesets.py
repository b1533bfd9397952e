"""Image sets as the train loop and the FID code see them, and the pixel conversions.

An :class:`ImageSet` yields float32 C×R×R tensors in [−1, 1] (``x / 127.5 − 1`` from uint8 pixels,
Appendix B of *How does Lipschitz regularization influence GAN training?*). Small sets are one
uint8 N×C×R×R tensor (:class:`TensorImageSet`: a batch is one ``index_select`` plus the float
conversion, and can run on the GPU after :meth:`ImageSet.to`); the tensor may be a memory-mapped
decode cache (:mod:`trainables.data.image_cache`). :class:`LazyImageSet` decodes one item at a time
(what the cache is built from). Which dataset is served how is :mod:`trainables.data.datasets`'s business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from trainables.data.errors import DatasetError

__all__ = [
    "DEVICE_SHARE",
    "DatasetError",
    "ImageSet",
    "ItemSource",
    "LazyImageSet",
    "TensorImageSet",
    "fits_on",
    "resize_uint8",
    "to_uint8",
    "to_unit_range",
]


# ----------------------------------------------------------------------------------------------
# pixel conversion
# ----------------------------------------------------------------------------------------------


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float32 in [−1, 1] as ``x / 127.5 − 1`` (Appendix B input range)."""
    if x.dtype == torch.uint8:  # true division promotes to float32: one pass fewer
        return torch.div(x, 127.5).sub_(1.0)
    return x.to(torch.float32).div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_unit_range` for [−1, 1] floats (clamped, rounded): for FID / grids."""
    return x.detach().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def resize_uint8(x: torch.Tensor, resolution: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 N×C×H×W tensor to N×C×R×R (rounded to uint8)."""
    if x.shape[-2:] == (resolution, resolution):
        return x.contiguous()
    out = torch.empty((x.shape[0], x.shape[1], resolution, resolution), dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        y = F.interpolate(x[i:i + chunk].to(torch.float32), size=(resolution, resolution),
                          mode="bilinear", antialias=True, align_corners=False)
        out[i:i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


# ----------------------------------------------------------------------------------------------
# ImageSet
# ----------------------------------------------------------------------------------------------


class ImageSet(Dataset):
    """Images of one dataset split as float32 C×R×R tensors in [−1, 1] (no labels).

    ``ds[i]`` is one image; ``ds.batch(idx)`` is a B×C×R×R batch for a LongTensor of indices —
    the fast path for the train loop and FID code. Use :meth:`to` to keep an in-memory set on the
    GPU so batches are gathered and converted there.
    """

    def __init__(self, name: str, split: str, resolution: int, n_channels: int) -> None:
        self.name = name
        self.split = split
        self.resolution = resolution
        self.channels = n_channels
        self.device = torch.device("cpu")

    # -- to implement ----------------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def uint8_batch(self, idx: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """uint8 B×C×R×R pixels for ``idx`` (on :attr:`device`)."""
        raise NotImplementedError

    in_memory: bool = False

    # -- shared ----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return i % n

    def __getitem__(self, i: int) -> torch.Tensor:
        i = self._check_index(int(i))
        return to_unit_range(self.uint8_batch(torch.tensor([i]))[0])

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Float32 B×C×R×R in [−1, 1] for a 1-D LongTensor of indices (any device)."""
        return to_unit_range(self.uint8_batch(idx))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images drawn uniformly with replacement (indices drawn on ``generator``'s device)."""
        dev = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randint(len(self), (n,), generator=generator, device=dev)
        return self.batch(idx)

    def to(self, device: str | torch.device) -> ImageSet:
        """Produce batches on ``device`` (in-memory sets move their uint8 store). Returns self."""
        self.device = torch.device(device)
        return self

    def __repr__(self) -> str:
        where = "in memory" if self.in_memory else "lazy"
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={self.shape}, {where}, device={self.device})")


#: An image store moves to a CUDA device only when it takes at most this share of the device's
#: free memory (the rest is left to the models, their activations and other trials on the GPU);
#: a larger one stays on the host, gathered there batch by batch.
DEVICE_SHARE = 0.25


def fits_on(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` may be kept resident on ``device`` (:data:`DEVICE_SHARE` of CUDA's free
    memory; any other device: yes)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_SHARE * free


class TensorImageSet(ImageSet):
    """An :class:`ImageSet` backed by one uint8 N×C×R×R tensor.

    ``path`` names the ``.npy`` file a memory-mapped ``data`` comes from: pickling such a set (on
    the host) stores the path, not the pixels, and unpickling maps the file again.
    """

    in_memory = True

    def __init__(self, data: torch.Tensor, name: str, split: str,
                 path: str | Path | None = None) -> None:
        if data.dtype != torch.uint8 or data.ndim != 4 or data.shape[-1] != data.shape[-2]:
            raise ValueError(f"expected uint8 N×C×R×R, got {tuple(data.shape)} {data.dtype}")
        super().__init__(name, split, int(data.shape[-1]), int(data.shape[1]))
        self.data = data.contiguous()
        self.device = self.data.device
        self.path = None if path is None else str(path)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def uint8_batch(self, idx: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.long).to(self.data.device, non_blocking=True)
        return self.data.index_select(0, idx)

    def to(self, device: str | torch.device) -> TensorImageSet:
        """Move the store to ``device`` when it fits there (:func:`fits_on`), else keep it where
        it is (check :attr:`device`). Returns self."""
        device = torch.device(device)
        if self.data.device != device and fits_on(self.data.nbytes, device):
            self.data = self.data.to(device)
            self.device = self.data.device
        return self

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.path is not None and self.data.device.type == "cpu":
            state["data"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.data is None:
            self.data = torch.from_numpy(np.load(self.path, mmap_mode="c", allow_pickle=False))


class ItemSource(Protocol):
    """What a :class:`LazyImageSet` reads from: ``len()`` and ``[i]`` → uint8 C×R×R."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> torch.Tensor: ...


class LazyImageSet(ImageSet):
    """An :class:`ImageSet` that decodes and transforms one item at a time, per batch (the
    per-item path that :mod:`trainables.data.image_cache` decodes once; served sets use the cache).

    Picklable (no closures), so it also works in a ``DataLoader`` with worker processes.
    """

    in_memory = False

    def __init__(self, source: ItemSource, name: str, split: str, resolution: int,
                 n_channels: int) -> None:
        super().__init__(name, split, resolution, n_channels)
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def uint8_batch(self, idx: torch.Tensor) -> torch.Tensor:
        items = [self.source[self._check_index(int(i))] for i in torch.as_tensor(idx).tolist()]
        if not items:
            return torch.empty((0, *self.shape), dtype=torch.uint8, device=self.device)
        return torch.stack(items).to(self.device)

