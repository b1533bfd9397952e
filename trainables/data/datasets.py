"""Datasets for one trial: the registry of image sets (the paper's preprocessing) and 2-D toys.

Preprocessing follows Appendix B of *How does Lipschitz regularization influence GAN training?*
("... to learn the distributions of the MNIST, CIFAR10 datasets at 32×32 resolution and the
CelebA dataset at 64×64 resolution ... input x ∈ [−1, 1]^{R×R×c}", c = 1 for MNIST, 3 for
CIFAR10/CelebA):

* every image set yields float32 tensors C×R×R with pixels in [−1, 1], computed as
  ``x / 127.5 − 1`` from the uint8 pixel values (0 → −1, 255 → +1);
* MNIST / Fashion-MNIST / the embedded ``fashion_mnist_mini`` (28×28 originals) and CIFAR-10
  (32×32) are served at 32×32 by default; 28 → 32 is a bilinear resize
  (``torch.nn.functional.interpolate(mode="bilinear", antialias=True, align_corners=False)``;
  the antialias flag only changes anything when *down*-sampling), rounded back to uint8 once at
  load time;
* CelebA (aligned 178×218 images) is served at 64×64 by default: center crop 178×178 (the usual
  DCGAN/SNGAN practice), then a bilinear antialiased resize to 64×64 (PIL, via torchvision);
* an image folder (``folder:<path>``) is converted to RGB, center-cropped to a square and resized
  the same way, 64×64 by default.

Every image set is one uint8 N×C×R×R tensor, so :meth:`ImageSet.batch` is one ``index_select``
plus the float conversion, and the whole set can live on the GPU after :meth:`ImageSet.to` when it
fits there. The MNISTs, CIFAR-10 and the embedded set are read into memory at load time. CelebA
and folders are decoded once per split, crop and resolution into a uint8 ``.npy`` cache that later
loads memory-map (:mod:`trainables.data.image_cache`: where it lives, how it is keyed and invalidated,
locking between trials starting together).

Nothing is ever downloaded unless the caller passes ``download=True`` (the trial key
``download: true``), and then one process at a time per data root; files that are present are
read without md5 verification.

One registered :class:`DatasetEntry` per dataset (:data:`DATASETS`) holds its channels,
resolutions and its ``check`` / ``load`` / ``reference_size`` functions; the files behind them are
read by :mod:`trainables.data.sources`, the tensors served by :mod:`trainables.data.imagesets`. The 2-D
toys (``ring8``, ``grid25``) are registered here too and live in :mod:`trainables.data.toys`.

Importing this module imports no torch: the registry, the names and :func:`check_dataset` (what a
config check needs) are plain Python; loading images, drawing toy samples and the image-set
classes (:data:`_IMAGESET_NAMES`, served from :mod:`trainables.data.imagesets` on first use) import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trainables.data import sources as _src
from trainables.data import toys as _toys
from trainables.data.errors import DatasetError
from trainables.data.sources import (  # noqa: F401 - public names of this module
    CELEBA_CROP, EMBEDDED_DIR, EMBEDDED_NPZ, FOLDER_PREFIX, default_data_root,
)
from trainables.names import DATASET
from trainables.registry import claim
from trainables.data.toys import TOY_DATASETS, toy_dim

if TYPE_CHECKING:
    import torch

    from trainables.data.imagesets import ImageSet

#: Names of this module served by :mod:`trainables.data.imagesets` (torch), imported on first use so
#: that the registry, the names and :func:`check_dataset` import no torch.
_IMAGESET_NAMES = ("ImageSet", "LazyImageSet", "TensorImageSet", "to_uint8", "to_unit_range")


def __getattr__(name: str) -> Any:
    if name in _IMAGESET_NAMES:
        from trainables.data import imagesets

        return getattr(imagesets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "FOLDER_PREFIX",
    "IMAGE_DATASETS",
    "TOY_DATASETS",
    "DatasetEntry",
    "DatasetError",
    "ImageSet",
    "LazyImageSet",
    "TensorImageSet",
    "channels",
    "check_dataset",
    "dataset_entry",
    "default_data_root",
    "is_image_dataset",
    "is_toy",
    "labels_of",
    "load_images",
    "max_resolution",
    "native_resolution",
    "reference_size",
    "register_dataset",
    "sample_toy",
    "to_uint8",
    "to_unit_range",
    "toy_modes",
    "toy_std",
]

#: The embedded, offline default.
DEFAULT_DATASET = "fashion_mnist_mini"
#: Smallest resolution any image dataset is served at.
MIN_RESOLUTION = 8
_SPLITS = ("train", "test")

# ----------------------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------------------

Root = str | os.PathLike | None


@dataclass(frozen=True)
class DatasetEntry:
    """Everything about one dataset. ``name`` is its config name, or with ``prefix=True`` the
    prefix of a family of names (``folder:<path>``). Image datasets have a ``resolution`` (the
    paper's) and a ``max_resolution``, a ``check(name, root, download)`` returning "" or what is
    missing, a ``load(name, root, split, resolution, download)`` returning an :class:`ImageSet`,
    and optionally a ``reference_size(name, root, split)`` counting a split's images without
    loading them. A ``toy`` has ``channels`` (its data dimension) and nothing else."""

    name: str
    channels: int
    resolution: int | None = None
    max_resolution: int | None = None
    check: Callable[[str, Root, bool], str] | None = None
    load: Callable[[str, Root, str, int, bool], ImageSet] | None = None
    reference_size: Callable[[str, Root, str], int] | None = None
    prefix: bool = False
    toy: bool = False


#: name (or prefix) → :class:`DatasetEntry`, in registration order.
DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    """Add ``entry`` to :data:`DATASETS` (ValueError naming a name registered twice)."""
    claim(DATASETS, DATASET, entry.name)
    DATASETS[entry.name] = entry
    return entry


# Appendix B: 32 px for the 28/32-pixel sets, 64 for CelebA; served up to 64 (Appendix B's 64×64
# architecture names MNIST/CIFAR10 too), up to the 178-pixel crop for CelebA (no upsampling), up
# to 1024 for folders.
for _entry in (
    DatasetEntry("fashion_mnist_mini", 1, 32, 64, _src.check_embedded, _src.load_embedded,
                 _src.embedded_reference_size),
    DatasetEntry("mnist", 1, 32, 64, _src.check_idx, _src.load_idx),
    DatasetEntry("fashion_mnist", 1, 32, 64, _src.check_idx, _src.load_idx),
    DatasetEntry("cifar10", 3, 32, 64, _src.check_cifar, _src.load_cifar),
    DatasetEntry("celeba", 3, 64, CELEBA_CROP, _src.check_celeba, _src.load_celeba),
    DatasetEntry(FOLDER_PREFIX, 3, 64, 1024, _src.check_folder, _src.load_folder,
                 _src.folder_reference_size, prefix=True),
    *(DatasetEntry(toy, toy_dim(toy), toy=True) for toy in TOY_DATASETS),
):
    register_dataset(_entry)
del _entry

#: The fixed image dataset names. ``folder:<path>`` (see :data:`FOLDER_PREFIX`) is accepted too.
IMAGE_DATASETS: tuple[str, ...] = tuple(
    n for n, e in DATASETS.items() if not (e.prefix or e.toy))


def dataset_entry(name: object) -> DatasetEntry:
    """The registered entry serving ``name``; DatasetError naming the choices for anything else."""
    if isinstance(name, str):
        entry = DATASETS.get(name)
        if entry is not None and not entry.prefix:
            return entry
        for entry in DATASETS.values():
            if entry.prefix and name.startswith(entry.name):
                if not name[len(entry.name):].strip():
                    raise DatasetError(f"dataset {entry.name!r} needs a path, e.g. "
                                       f"'{entry.name}/data/my_images'")
                return entry
    choices = ", ".join(e.name + "<path>" if e.prefix else e.name for e in DATASETS.values())
    raise DatasetError(f"unknown dataset {name!r}; choose one of: {choices}")


def is_toy(name: str) -> bool:
    return isinstance(name, str) and name in DATASETS and DATASETS[name].toy


def is_image_dataset(name: str) -> bool:
    if not isinstance(name, str):
        return False
    if name in DATASETS and not DATASETS[name].prefix:
        return not DATASETS[name].toy
    return any(e.prefix and name.startswith(e.name) for e in DATASETS.values())


def _image_entry(name: str) -> DatasetEntry:
    entry = dataset_entry(name)
    if entry.toy:
        raise DatasetError(f"dataset {name!r} is a 2-D toy and has no image resolution")
    return entry


def native_resolution(name: str) -> int:
    """The paper's resolution (Appendix B): 32 for the MNISTs and CIFAR-10, 64 for CelebA.

    ``folder:<path>`` datasets default to 64. Toys have no resolution (DatasetError).
    """
    return _image_entry(name).resolution


def max_resolution(name: str) -> int:
    """The largest resolution :func:`load_images` serves ``name`` at (see module docstring)."""
    return _image_entry(name).max_resolution


def channels(name: str) -> int:
    """Image channels: 1 for mnist / fashion_mnist / fashion_mnist_mini, 3 otherwise (RGB).

    For toys this is the data dimension, 2.
    """
    return dataset_entry(name).channels


def _resolution(name: str, resolution: object) -> int:
    if resolution is None:
        return native_resolution(name)
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise DatasetError(f"resolution must be an integer number of pixels, got {resolution!r}")
    lo, hi = MIN_RESOLUTION, max_resolution(name)
    if not lo <= int(resolution) <= hi:
        raise DatasetError(
            f"resolution {resolution} is not available for dataset {name!r}: it can be served at "
            f"{lo}..{hi} pixels (paper: {native_resolution(name)})")
    return int(resolution)


def _toy(name: str) -> str:
    dataset_entry(name)  # an unknown name gets the registry's message; the toys refuse the others
    return name


def toy_modes(name: str) -> torch.Tensor:
    """:func:`trainables.data.toys.toy_modes` of a registered toy."""
    return _toys.toy_modes(_toy(name))


def toy_std(name: str) -> float:
    """:func:`trainables.data.toys.toy_std` of a registered toy."""
    return _toys.toy_std(_toy(name))


def sample_toy(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """:func:`trainables.data.toys.sample_toy` of a registered toy."""
    return _toys.sample_toy(_toy(name), n, generator)


def _split(split: str) -> str:
    if split not in _SPLITS:
        raise DatasetError(f"split must be one of {_SPLITS}, got {split!r}")
    return split


# ----------------------------------------------------------------------------------------------
# the public functions
# ----------------------------------------------------------------------------------------------


def check_dataset(name: str, root: Root, resolution: int | None, download: bool = False) -> None:
    """Cheap pre-flight check, before Ray starts or any data is loaded.

    Raises :class:`DatasetError` with one message naming the problem: an unknown name, a
    resolution the dataset cannot be served at (:data:`MIN_RESOLUTION` .. :func:`max_resolution`;
    ``None`` means the paper's, :func:`native_resolution`), files missing under ``root`` (which
    ones, and that ``download: true`` fetches them), a ``folder:`` path that is missing or holds no
    images. Only looks at file names, never reads the data. Toys always pass (no files,
    ``resolution`` is ignored). With ``download=True`` missing files are fine (they will be
    fetched), except CelebA without the ``gdown`` package.
    """
    entry = dataset_entry(name)
    if entry.toy:
        return
    _resolution(name, resolution)
    if msg := entry.check(name, root, download):
        raise DatasetError(msg)


def reference_size(name: str, root: Root, split: str) -> int | None:
    """Images in a split when countable without loading any: the embedded set (its array
    header), a ``folder:`` dataset (file names; every 10th by sorted name is the ``test`` split),
    else None (the torchvision datasets' published splits hold 10,000 images or more)."""
    entry = dataset_entry(name)
    split = _split(split)
    return None if entry.reference_size is None else entry.reference_size(name, root, split)


def load_images(name: str, root: Root = None, resolution: int | None = None,
                split: str = "train", download: bool = False) -> ImageSet:
    """Load one split of an image dataset as an :class:`ImageSet` (float32 C×R×R in [−1, 1]).

    ``resolution=None`` is the paper's (Appendix B: 32 for the MNISTs and CIFAR-10, 64 for
    CelebA). ``split`` is ``"train"`` or ``"test"``: the official splits for the MNISTs and
    CIFAR-10, the embedded held-out 2,000 for ``fashion_mnist_mini``, torchvision's ``"test"``
    partition for CelebA, and every 10th image (by sorted relative path) for ``folder:<path>``.
    ``root`` is ignored for the embedded set; ``None`` elsewhere means :func:`default_data_root`.
    Files are only fetched (by torchvision) when ``download=True``.
    """
    entry = dataset_entry(name)
    if entry.toy:
        raise DatasetError(f"dataset {name!r} is a 2-D toy: use sample_toy(), not load_images()")
    split = _split(split)
    res = _resolution(name, resolution)
    if msg := entry.check(name, root, download):
        raise DatasetError(msg)
    return entry.load(name, root, split, res, download)


def labels_of(name: str, root: Root = None, split: str = "train") -> torch.Tensor:
    """Class labels (uint8, 0..9) aligned with ``load_images(name, root, split=split)``.

    Only for the embedded ``fashion_mnist_mini`` (used to train the small domain classifier whose
    features the FID code can use); other names raise :class:`DatasetError`.
    """
    if dataset_entry(name).name != "fashion_mnist_mini":
        raise DatasetError(f"labels_of() is only available for 'fashion_mnist_mini', not {name!r}")
    check_dataset(name, root, None)
    import torch

    _, labels = _src.embedded_arrays(_split(split))
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.uint8))
