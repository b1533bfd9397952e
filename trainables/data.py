"""Datasets for one trial: image sets in the paper's preprocessing, and the 2-D toy mixtures.

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

Small sets (the MNISTs, CIFAR-10, the embedded set, folders up to
:data:`FOLDER_IN_MEMORY_MAX` images) are decoded once and kept in memory as a uint8 N×C×R×R
tensor, so :meth:`ImageSet.batch` is one ``index_select`` plus the float conversion (and can run
on the GPU after :meth:`ImageSet.to`). CelebA (and large folders) stay lazy: one decode and
transform per item, no giant tensor.

Nothing is ever downloaded unless the caller passes ``download=True`` (the trial key
``download: true``); then torchvision's own dataset classes fetch the files into ``root``.
Files that are present are read without md5 verification, so files placed by the user (or the
tiny files made by the tests) go through exactly the same code path as downloaded ones.

The 2-D toys are the usual mode-collapse benchmarks: ``ring8`` — 8 Gaussians evenly spaced on a
circle of radius 2, std 0.02 (Metz et al., 2017, *Unrolled Generative Adversarial Networks*);
``grid25`` — a 5×5 grid of Gaussians at {−4, −2, 0, 2, 4}², std 0.05 (Srivastava et al., 2017,
*VEEGAN*; Lin et al., 2018, *PacGAN*). Metrics count a mode as covered and a sample as
"high quality" when it lies within 3 std of a mode (:func:`toy_modes`, :func:`toy_std`).
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, MNIST, CelebA, FashionMNIST
from torchvision.datasets.mnist import read_image_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from trainables.tools.make_embedded_subset import read_idx

__all__ = [
    "DEFAULT_DATASET",
    "FOLDER_PREFIX",
    "IMAGE_DATASETS",
    "TOY_DATASETS",
    "DatasetError",
    "ImageSet",
    "channels",
    "check_dataset",
    "default_data_root",
    "is_image_dataset",
    "is_toy",
    "labels_of",
    "load_images",
    "max_resolution",
    "native_resolution",
    "sample_toy",
    "to_uint8",
    "to_unit_range",
    "toy_modes",
    "toy_std",
]

# ----------------------------------------------------------------------------------------------
# names and static facts
# ----------------------------------------------------------------------------------------------

#: Fixed image dataset names. ``folder:<path>`` (see :data:`FOLDER_PREFIX`) is accepted too.
IMAGE_DATASETS: tuple[str, ...] = ("fashion_mnist_mini", "mnist", "fashion_mnist", "cifar10", "celeba")
#: 2-D toy mixtures of Gaussians (no files, sampled on the fly).
TOY_DATASETS: tuple[str, ...] = ("ring8", "grid25")
#: The embedded, offline default.
DEFAULT_DATASET = "fashion_mnist_mini"
FOLDER_PREFIX = "folder:"

#: Smallest resolution any image dataset is served at.
MIN_RESOLUTION = 8
#: Folders with at most this many images are decoded once into memory; larger ones stay lazy.
FOLDER_IN_MEMORY_MAX = 20_000
#: File extensions treated as images in ``folder:<path>`` datasets (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
EMBEDDED_NPZ = EMBEDDED_DIR / "fashion_mnist_mini.npz"
#: Where ``apt-get install dataset-fashion-mnist`` puts the official Fashion-MNIST IDX files; used
#: for ``fashion_mnist`` when no ``root`` is given and the default root does not have the files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_NATIVE = {"fashion_mnist_mini": 32, "mnist": 32, "fashion_mnist": 32, "cifar10": 32, "celeba": 64}
# Largest resolution served: up to 64 for the 28/32-pixel sets (Appendix B's 64×64 architecture
# names MNIST/CIFAR10 too), the 178-pixel crop for CelebA (no upsampling), 1024 for folders.
_MAX = {"fashion_mnist_mini": 64, "mnist": 64, "fashion_mnist": 64, "cifar10": 64, "celeba": 178}
_FOLDER_NATIVE = 64
_FOLDER_MAX = 1024
_CHANNELS = {"fashion_mnist_mini": 1, "mnist": 1, "fashion_mnist": 1, "cifar10": 3, "celeba": 3}
_SPLITS = ("train", "test")
CELEBA_CROP = 178


class DatasetError(ValueError):
    """A dataset name, location, split or resolution that cannot be served (one clear message)."""


def is_toy(name: str) -> bool:
    return name in TOY_DATASETS


def is_image_dataset(name: str) -> bool:
    return isinstance(name, str) and (name in IMAGE_DATASETS or name.startswith(FOLDER_PREFIX))


def _kind(name: object) -> str:
    """'toy', a fixed image dataset name, or 'folder'; DatasetError for anything else."""
    if isinstance(name, str):
        if name in TOY_DATASETS:
            return "toy"
        if name in IMAGE_DATASETS:
            return name
        if name.startswith(FOLDER_PREFIX):
            if not name[len(FOLDER_PREFIX):].strip():
                raise DatasetError("dataset 'folder:' needs a path, e.g. 'folder:/data/my_images'")
            return "folder"
    choices = ", ".join([*IMAGE_DATASETS, FOLDER_PREFIX + "<path>", *TOY_DATASETS])
    raise DatasetError(f"unknown dataset {name!r}; choose one of: {choices}")


def native_resolution(name: str) -> int:
    """The paper's resolution (Appendix B): 32 for the MNISTs and CIFAR-10, 64 for CelebA.

    ``folder:<path>`` datasets default to 64. Toys have no resolution (DatasetError).
    """
    kind = _kind(name)
    if kind == "toy":
        raise DatasetError(f"dataset {name!r} is a 2-D toy and has no image resolution")
    return _FOLDER_NATIVE if kind == "folder" else _NATIVE[kind]


def max_resolution(name: str) -> int:
    """The largest resolution :func:`load_images` serves ``name`` at (see module docstring)."""
    kind = _kind(name)
    if kind == "toy":
        raise DatasetError(f"dataset {name!r} is a 2-D toy and has no image resolution")
    return _FOLDER_MAX if kind == "folder" else _MAX[kind]


def channels(name: str) -> int:
    """Image channels: 1 for mnist / fashion_mnist / fashion_mnist_mini, 3 otherwise (RGB).

    For toys this is the data dimension, 2.
    """
    kind = _kind(name)
    if kind == "toy":
        return 2
    return 3 if kind == "folder" else _CHANNELS[kind]


def default_data_root() -> Path:
    """``$LIPSTUDY_DATA_ROOT`` if set, else ``~/.cache/lipstudy/data``.

    Pass an absolute ``root`` from the study layer: Ray Tune changes a trial's working directory,
    so relative paths resolve differently inside trials.
    """
    env = os.environ.get("LIPSTUDY_DATA_ROOT")
    return Path(env).expanduser() if env else Path("~/.cache/lipstudy/data").expanduser()


def _root(root: str | os.PathLike | None) -> Path:
    return default_data_root() if root is None else Path(root).expanduser()


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


def _split(split: str) -> str:
    if split not in _SPLITS:
        raise DatasetError(f"split must be one of {_SPLITS}, got {split!r}")
    return split


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


def _resize_uint8(x: torch.Tensor, resolution: int, chunk: int = 4096) -> torch.Tensor:
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


class TensorImageSet(ImageSet):
    """An :class:`ImageSet` backed by one uint8 N×C×R×R tensor."""

    in_memory = True

    def __init__(self, data: torch.Tensor, name: str, split: str) -> None:
        if data.dtype != torch.uint8 or data.ndim != 4 or data.shape[-1] != data.shape[-2]:
            raise ValueError(f"expected uint8 N×C×R×R, got {tuple(data.shape)} {data.dtype}")
        super().__init__(name, split, int(data.shape[-1]), int(data.shape[1]))
        self.data = data.contiguous()
        self.device = self.data.device

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def uint8_batch(self, idx: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.long).to(self.data.device)
        return self.data.index_select(0, idx)

    def to(self, device: str | torch.device) -> TensorImageSet:
        self.data = self.data.to(device)
        self.device = self.data.device
        return self


class ItemSource(Protocol):
    """What a :class:`LazyImageSet` reads from: ``len()`` and ``[i]`` → uint8 C×R×R."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> torch.Tensor: ...


class LazyImageSet(ImageSet):
    """An :class:`ImageSet` that decodes and transforms one item at a time (CelebA, big folders).

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


# ----------------------------------------------------------------------------------------------
# per-dataset file layouts and checks
# ----------------------------------------------------------------------------------------------

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_ALL = _IDX_FILES["train"] + _IDX_FILES["test"]
_TV_IDX_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)
_CIFAR_FILES = _CIFAR_TRAIN + _CIFAR_TEST + ("batches.meta",)

_CELEBA_DIR = "celeba"
_CELEBA_IMG_DIR = "img_align_celeba"
_CELEBA_FILES = ("list_eval_partition.txt", "identity_CelebA.txt", "list_attr_celeba.txt",
                 "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt")


def _idx_path(folder: Path, base: str) -> Path | None:
    """``folder/base`` or ``folder/base.gz``, whichever exists (plain first)."""
    for p in (folder / base, folder / (base + ".gz")):
        if p.is_file():
            return p
    return None


def _idx_candidates(name: str, root: str | os.PathLike | None) -> list[Path]:
    base = _root(root)
    cands = [base / _TV_IDX_CLASS[name] / "raw", base]
    if root is None and name == "fashion_mnist":
        cands.append(DEBIAN_FASHION_MNIST_DIR)
    return cands


def _find_idx_dir(name: str, root: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The first folder holding all four IDX files (plain or .gz), or None and a message."""
    cands = _idx_candidates(name, root)
    best, best_missing = cands[0], list(_IDX_ALL)
    for folder in cands:
        missing = [b for b in _IDX_ALL if _idx_path(folder, b) is None]
        if not missing:
            return folder, ""
        if len(missing) < len(best_missing):
            best, best_missing = folder, missing
    where = " or ".join(str(c) for c in cands)
    extra = ("; or apt-get install -y dataset-fashion-mnist and leave data_root unset (it then "
             f"falls back to {DEBIAN_FASHION_MNIST_DIR})" if name == "fashion_mnist" else "")
    msg = (f"dataset {name!r} not found: missing {', '.join(best_missing)} (plain or .gz) in {best} "
           f"(looked in {where}). Put the four IDX files in {cands[0]} (torchvision layout) or "
           f"directly in data_root, or set download: true to fetch them (needs internet){extra}")
    return None, msg


def _check_cifar(root: Path) -> str:
    folder = root / _CIFAR_DIR
    missing = [f for f in _CIFAR_FILES if not (folder / f).is_file()]
    if not missing:
        return ""
    hint = ""
    if (root / "cifar-10-python.tar.gz").is_file():
        hint = f"; {root / 'cifar-10-python.tar.gz'} exists: extract it in {root}"
    return (f"dataset 'cifar10' not found: missing {', '.join(missing)} in {folder} (the CIFAR-10 "
            f"python version, cifar-10-python.tar.gz extracted in data_root){hint}. Set "
            f"download: true to fetch it (needs internet), or set data_root to where it is")


def _dir_is_empty(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return next(it, None) is None


def _check_celeba(root: Path, download: bool) -> str:
    folder = root / _CELEBA_DIR
    missing = [f for f in _CELEBA_FILES if not (folder / f).is_file()]
    img_dir = folder / _CELEBA_IMG_DIR
    if not img_dir.is_dir():
        missing.insert(0, _CELEBA_IMG_DIR + "/")
    elif _dir_is_empty(img_dir):
        missing.insert(0, _CELEBA_IMG_DIR + "/ (the folder is empty)")
    if not missing:
        return ""
    if download:
        import importlib.util
        if importlib.util.find_spec("gdown") is None:
            return ("dataset 'celeba' with download: true needs the 'gdown' package "
                    "(torchvision fetches CelebA from Google Drive): pip install gdown, or place "
                    f"the files in {folder} yourself")
        return ""
    hint = ""
    if (folder / "img_align_celeba.zip").is_file() and not img_dir.is_dir():
        hint = f"; {folder / 'img_align_celeba.zip'} exists: unzip it there"
    return (f"dataset 'celeba' not found: missing {', '.join(missing)} in {folder} (torchvision "
            f"layout: data_root/celeba/ with img_align_celeba/ and the five list_*.txt / "
            f"identity_CelebA.txt files){hint}. Set download: true to fetch them from Google Drive "
            f"(needs internet and gdown; often fails on quota), or set data_root to where they are")


def _folder_path(name: str, root: str | os.PathLike | None) -> Path:
    p = Path(name[len(FOLDER_PREFIX):].strip()).expanduser()
    if not p.is_absolute() and root is not None:
        p = Path(root).expanduser() / p
    return p


def _iter_images(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for f in sorted(filenames):
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                yield Path(dirpath) / f


def _check_folder(name: str, root: str | os.PathLike | None) -> str:
    p = _folder_path(name, root)
    if not p.exists():
        return f"dataset {name!r}: folder {p} does not exist"
    if not p.is_dir():
        return f"dataset {name!r}: {p} is not a folder"
    if next(_iter_images(p), None) is None:
        return (f"dataset {name!r}: folder {p} contains no images "
                f"(looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
    return ""


def check_dataset(name: str, root: str | os.PathLike | None, resolution: int | None,
                  download: bool = False) -> None:
    """Cheap pre-flight check, before Ray starts or any data is loaded.

    Raises :class:`DatasetError` with one message naming the problem: an unknown name, a
    resolution the dataset cannot be served at (:data:`MIN_RESOLUTION` .. :func:`max_resolution`;
    ``None`` means the paper's, :func:`native_resolution`), files missing under ``root`` (which
    ones, and that ``download: true`` fetches them), a ``folder:`` path that is missing or holds no
    images. Only looks at file names, never reads the data. Toys always pass (no files,
    ``resolution`` is ignored). With ``download=True`` missing files are fine (they will be
    fetched), except CelebA without the ``gdown`` package.
    """
    kind = _kind(name)
    if kind == "toy":
        return
    _resolution(name, resolution)
    if kind == "fashion_mnist_mini":
        if not EMBEDDED_NPZ.is_file():
            raise DatasetError(f"dataset 'fashion_mnist_mini': the embedded file {EMBEDDED_NPZ} is "
                               "missing from this installation (reinstall lipstudy)")
        return
    if kind == "folder":
        msg = _check_folder(name, root)
    elif kind in _TV_IDX_CLASS:
        msg = "" if download else _find_idx_dir(kind, root)[1]
    elif kind == "cifar10":
        msg = "" if download else _check_cifar(_root(root))
    else:  # celeba
        msg = _check_celeba(_root(root), download)
    if msg:
        raise DatasetError(msg)


def reference_size(name: str, root: str | os.PathLike | None, split: str) -> int | None:
    """Images in a split when countable without loading any: the embedded set (its array
    header), a ``folder:`` dataset (file names; every 10th by sorted name is the ``test`` split),
    else None (the torchvision datasets' published splits hold 10,000 images or more)."""
    kind = _kind(name)
    split = _split(split)
    if kind == "fashion_mnist_mini":
        with np.load(EMBEDDED_NPZ) as z:
            return int(z[f"{split}_images"].shape[0])
    if kind == "folder":
        n = sum(1 for _ in _iter_images(_folder_path(name, root)))
        return n // 10 if split == "test" else n - n // 10
    return None


# ----------------------------------------------------------------------------------------------
# loaders
# ----------------------------------------------------------------------------------------------


def _load_embedded(split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(EMBEDDED_NPZ) as z:
        return z[f"{split}_images"], z[f"{split}_labels"]


def _load_idx(kind: str, root: str | os.PathLike | None, split: str,
              download: bool) -> torch.Tensor:
    """uint8 N×28×28 from the IDX files (torchvision's reader for plain files, gzip for .gz)."""
    folder, msg = _find_idx_dir(kind, root)
    if folder is None and download:  # torchvision fetches + extracts into root/<Class>/raw
        cls = MNIST if kind == "mnist" else FashionMNIST
        cls(str(_root(root)), train=(split == "train"), download=True)
        folder, msg = _find_idx_dir(kind, root)
    if folder is None:
        raise DatasetError(msg)
    path = _idx_path(folder, _IDX_FILES[split][0])
    try:
        if path.suffix == ".gz":
            images = torch.from_numpy(read_idx(path))
        else:
            images = read_image_file(str(path))
    except (ValueError, TypeError, OSError, EOFError) as exc:
        raise DatasetError(f"dataset {kind!r}: cannot read {path}: {exc}") from exc
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise DatasetError(f"dataset {kind!r}: {path} holds {tuple(images.shape)} "
                           f"{images.dtype}, expected uint8 N×H×W images")
    return images


class _CIFAR10(CIFAR10):
    """torchvision's CIFAR-10 reader (python pickle batches), checking presence instead of md5."""

    def _check_integrity(self) -> bool:
        base = Path(self.root) / self.base_folder
        return all((base / f).is_file() for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
            self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _CelebA(CelebA):
    """torchvision's CelebA reader, checking presence instead of md5 of the list files."""

    def _check_integrity(self) -> bool:
        base = Path(self.root) / self.base_folder
        return (base / _CELEBA_IMG_DIR).is_dir() and all((base / f).is_file() for f in _CELEBA_FILES)


def _load_cifar(root: str | os.PathLike | None, split: str, download: bool) -> torch.Tensor:
    r = _root(root)
    if not download and (msg := _check_cifar(r)):
        raise DatasetError(msg)
    try:
        ds = _CIFAR10(str(r), train=(split == "train"), download=download)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
        raise DatasetError(f"dataset 'cifar10': cannot read the batches in {r / _CIFAR_DIR}: "
                           f"{exc!r}") from exc
    return torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # N×3×32×32


class _PILTransform:
    """PIL → RGB → center crop (``crop`` or the short side) → bilinear antialiased resize → uint8."""

    def __init__(self, resolution: int, crop: int | None) -> None:
        self.resolution, self.crop = resolution, crop

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        side = self.crop if self.crop is not None else min(img.size)
        img = TF.center_crop(img, [side, side])
        if img.size != (self.resolution, self.resolution):
            img = TF.resize(img, [self.resolution, self.resolution],
                            interpolation=InterpolationMode.BILINEAR, antialias=True)
        return TF.pil_to_tensor(img)


class _CelebAItems:
    def __init__(self, ds: CelebA) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ds[i][0]


class _FileItems:
    def __init__(self, files: list[Path], resolution: int) -> None:
        self.files, self.transform = files, _PILTransform(resolution, None)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as img:
            return self.transform(img)


def _load_celeba(root: str | os.PathLike | None, split: str, resolution: int,
                 download: bool) -> ImageSet:
    r = _root(root)
    if msg := _check_celeba(r, download):
        raise DatasetError(msg)
    ds = _CelebA(str(r), split=split, target_type=[], download=download,
                 transform=_PILTransform(resolution, CELEBA_CROP))
    if len(ds) == 0:
        raise DatasetError(f"dataset 'celeba' has no images in split {split!r} "
                           f"(list_eval_partition.txt in {r / _CELEBA_DIR})")
    return LazyImageSet(_CelebAItems(ds), "celeba", split, resolution, 3)


def _load_folder(name: str, root: str | os.PathLike | None, split: str,
                 resolution: int) -> ImageSet:
    if msg := _check_folder(name, root):
        raise DatasetError(msg)
    folder = _folder_path(name, root)
    files = sorted(_iter_images(folder), key=lambda p: p.relative_to(folder).as_posix())
    # deterministic 90/10 split by sorted relative path: every 10th file is held out
    files = [f for i, f in enumerate(files) if (i % 10 == 9) == (split == "test")]
    if not files:
        raise DatasetError(f"dataset {name!r}: split {split!r} is empty (folder {folder} has too "
                           "few images; every 10th image by sorted name is held out as 'test')")
    items = _FileItems(files, resolution)
    if len(items) <= FOLDER_IN_MEMORY_MAX:
        data = torch.stack([items[i] for i in range(len(items))])
        return TensorImageSet(data, name, split)
    return LazyImageSet(items, name, split, resolution, 3)


def load_images(name: str, root: str | os.PathLike | None = None, resolution: int | None = None,
                split: str = "train", download: bool = False) -> ImageSet:
    """Load one split of an image dataset as an :class:`ImageSet` (float32 C×R×R in [−1, 1]).

    ``resolution=None`` is the paper's (Appendix B: 32 for the MNISTs and CIFAR-10, 64 for
    CelebA). ``split`` is ``"train"`` or ``"test"``: the official splits for the MNISTs and
    CIFAR-10, the embedded held-out 2,000 for ``fashion_mnist_mini``, torchvision's ``"test"``
    partition for CelebA, and every 10th image (by sorted relative path) for ``folder:<path>``.
    ``root`` is ignored for the embedded set; ``None`` elsewhere means :func:`default_data_root`.
    Files are only fetched (by torchvision) when ``download=True``.
    """
    kind = _kind(name)
    if kind == "toy":
        raise DatasetError(f"dataset {name!r} is a 2-D toy: use sample_toy(), not load_images()")
    split = _split(split)
    res = _resolution(name, resolution)
    if kind == "fashion_mnist_mini":
        check_dataset(name, root, res)
        images, _ = _load_embedded(split)
        x = torch.from_numpy(images).unsqueeze(1)
    elif kind in _TV_IDX_CLASS:
        x = _load_idx(kind, root, split, download).unsqueeze(1)
    elif kind == "cifar10":
        x = _load_cifar(root, split, download)
    elif kind == "celeba":
        return _load_celeba(root, split, res, download)
    else:
        return _load_folder(name, root, split, res)
    return TensorImageSet(_resize_uint8(x, res), name, split)


def labels_of(name: str, root: str | os.PathLike | None = None,
              split: str = "train") -> torch.Tensor:
    """Class labels (uint8, 0..9) aligned with ``load_images(name, root, split=split)``.

    Only for the embedded ``fashion_mnist_mini`` (used to train the small domain classifier whose
    features the FID code can use); other names raise :class:`DatasetError`.
    """
    if _kind(name) != "fashion_mnist_mini":
        raise DatasetError(f"labels_of() is only available for 'fashion_mnist_mini', not {name!r}")
    check_dataset(name, root, None)
    _, labels = _load_embedded(_split(split))
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.uint8))


# ----------------------------------------------------------------------------------------------
# 2-D toys
# ----------------------------------------------------------------------------------------------

_TOY_STD = {"ring8": 0.02, "grid25": 0.05}


def _toy_name(name: str) -> str:
    if name not in TOY_DATASETS:
        _kind(name)  # unknown names get the standard message
        raise DatasetError(f"dataset {name!r} is not a 2-D toy (toys: {', '.join(TOY_DATASETS)})")
    return name


def toy_modes(name: str) -> torch.Tensor:
    """Mode centres, float32 M×2: ring8 — 8 points at radius 2, angles 2πk/8; grid25 — {−4,−2,0,2,4}²."""
    if _toy_name(name) == "ring8":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return (2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)).to(torch.float32)
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def toy_std(name: str) -> float:
    """Per-coordinate std of each Gaussian: 0.02 for ring8, 0.05 for grid25."""
    return _TOY_STD[_toy_name(name)]


def sample_toy(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples (float32 n×2, on ``generator``'s device) from the equal-weight mixture."""
    modes = toy_modes(name).to(generator.device)
    which = torch.randint(modes.shape[0], (n,), generator=generator, device=generator.device)
    noise = torch.randn((n, 2), generator=generator, device=generator.device)
    return modes[which] + toy_std(name) * noise
