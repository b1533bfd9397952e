"""Where each image dataset's files are and how they are read: the ``check`` / ``load`` /
``reference_size`` functions that :data:`trainables.data.datasets.DATASETS` registers per dataset.

Nothing is ever downloaded unless the caller passes ``download=True``; then torchvision's own
dataset classes fetch the files into ``root``, one process at a time per root (an exclusive lock
on ``root/.lipstudy-download.lock``: trials starting together on a fresh node download once).
Files that are present are read without md5 verification, so files placed by the user (or the
tiny files made by the tests) go through exactly the same code path as downloaded ones.

Every ``check_*(name, root, download)`` returns ``""`` when the dataset can be served, else one
message naming what is missing; it only looks at file names. Every ``load_*(name, root, split,
resolution, download)`` returns an :class:`~trainables.data.imagesets.ImageSet`, and is called (by
:func:`trainables.data.datasets.load_images`) only after the name, split, resolution and the check passed.

CelebA and image folders are decoded once per split, crop and resolution into a memory-mapped
uint8 cache (:mod:`trainables.data.image_cache`), then served like the in-memory sets (decoded per
batch only when no cache folder can hold the split).

The ``check_*`` functions and the paths import no torch, so a config is checked without it; torch,
torchvision, PIL and the tensor image sets are imported by the functions that read images.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainables.data.errors import DatasetError
from trainables.data.idx import read_idx

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from trainables.data.imagesets import ImageSet, ItemSource

__all__ = [
    "CELEBA_CROP",
    "DEBIAN_FASHION_MNIST_DIR",
    "EMBEDDED_DIR",
    "EMBEDDED_NPZ",
    "IMAGE_EXTENSIONS",
    "celeba_items",
    "check_celeba",
    "check_cifar",
    "check_embedded",
    "check_folder",
    "check_idx",
    "default_data_root",
    "download_lock",
    "embedded_arrays",
    "embedded_reference_size",
    "folder_items",
    "folder_reference_size",
    "load_celeba",
    "load_cifar",
    "load_embedded",
    "load_folder",
    "load_idx",
]

FOLDER_PREFIX = "folder:"
#: File extensions treated as images in ``folder:<path>`` datasets (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "embedded"
EMBEDDED_NPZ = EMBEDDED_DIR / "fashion_mnist_mini.npz"
#: Where ``apt-get install dataset-fashion-mnist`` puts the official Fashion-MNIST IDX files; used
#: for ``fashion_mnist`` when no ``root`` is given and the default root does not have the files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: CelebA's aligned images are center-cropped to this square (then resized).
CELEBA_CROP = 178


def default_data_root() -> Path:
    """``$LIPSTUDY_DATA_ROOT`` if set, else ``~/.cache/lipstudy/data``.

    Pass an absolute ``root`` from the study layer: Ray Tune changes a trial's working directory,
    so relative paths resolve differently inside trials.
    """
    env = os.environ.get("LIPSTUDY_DATA_ROOT")
    return Path(env).expanduser() if env else Path("~/.cache/lipstudy/data").expanduser()


def _root(root: str | os.PathLike | None) -> Path:
    return default_data_root() if root is None else Path(root).expanduser()


def download_lock(root: Path):
    """The exclusive lock held while torchvision downloads into ``root`` (module docstring)."""
    from trainables.data.image_cache import file_lock

    return file_lock(Path(root) / ".lipstudy-download.lock", f"downloading into {root}")


def _download_guard(root: Path, download: bool):
    """:func:`download_lock` when ``download`` (torchvision may fetch), else nothing."""
    return download_lock(root) if download else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# fashion_mnist_mini: the embedded, offline default
# ----------------------------------------------------------------------------------------------


def embedded_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×28×28 images, uint8 N labels) of one split of the embedded set."""
    with np.load(EMBEDDED_NPZ) as z:
        return z[f"{split}_images"], z[f"{split}_labels"]


def check_embedded(name: str, root: str | os.PathLike | None, download: bool) -> str:
    if not EMBEDDED_NPZ.is_file():
        return (f"dataset 'fashion_mnist_mini': the embedded file {EMBEDDED_NPZ} is missing from "
                "this installation (reinstall lipstudy)")
    return ""


def embedded_reference_size(name: str, root: str | os.PathLike | None, split: str) -> int:
    """Images in a split, from the array header (nothing decoded)."""
    with np.load(EMBEDDED_NPZ) as z:
        return int(z[f"{split}_images"].shape[0])


def load_embedded(name: str, root: str | os.PathLike | None, split: str, resolution: int,
                  download: bool) -> ImageSet:
    import torch

    images, _ = embedded_arrays(split)
    return _resized_set(torch.from_numpy(images).unsqueeze(1), resolution, name, split)


def _resized_set(x: torch.Tensor, resolution: int, name: str, split: str) -> ImageSet:
    """uint8 N×C×H×W images resized (once, at load time) to ``resolution``, held in memory."""
    from trainables.data.imagesets import TensorImageSet, resize_uint8

    return TensorImageSet(resize_uint8(x, resolution), name, split)


# ----------------------------------------------------------------------------------------------
# mnist, fashion_mnist: the IDX files
# ----------------------------------------------------------------------------------------------


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_ALL = _IDX_FILES["train"] + _IDX_FILES["test"]
_TV_IDX_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


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


def check_idx(name: str, root: str | os.PathLike | None, download: bool) -> str:
    return "" if download else _find_idx_dir(name, root)[1]


def _read_idx_images(kind: str, root: str | os.PathLike | None, split: str,
                     download: bool) -> torch.Tensor:
    """uint8 N×28×28 from the IDX files (torchvision's reader for plain files, gzip for .gz)."""
    import torch
    from torchvision.datasets import MNIST, FashionMNIST
    from torchvision.datasets.mnist import read_image_file

    folder, msg = _find_idx_dir(kind, root)
    if folder is None and download:  # torchvision fetches + extracts into root/<Class>/raw
        cls = MNIST if kind == "mnist" else FashionMNIST
        with download_lock(_root(root)):
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


def load_idx(name: str, root: str | os.PathLike | None, split: str, resolution: int,
             download: bool) -> ImageSet:
    x = _read_idx_images(name, root, split, download).unsqueeze(1)
    return _resized_set(x, resolution, name, split)


# ----------------------------------------------------------------------------------------------
# cifar10: the python pickle batches
# ----------------------------------------------------------------------------------------------


_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)
_CIFAR_FILES = _CIFAR_TRAIN + _CIFAR_TEST + ("batches.meta",)


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


def check_cifar(name: str, root: str | os.PathLike | None, download: bool) -> str:
    return "" if download else _check_cifar(_root(root))


@functools.cache
def _cifar10_class() -> type:
    """torchvision's CIFAR-10 reader (python pickle batches), checking presence instead of md5."""
    from torchvision.datasets import CIFAR10

    class _CIFAR10(CIFAR10):
        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            return all((base / f).is_file() for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return _CIFAR10


def load_cifar(name: str, root: str | os.PathLike | None, split: str, resolution: int,
               download: bool) -> ImageSet:
    r = _root(root)
    try:
        with _download_guard(r, download):
            ds = _cifar10_class()(str(r), train=(split == "train"), download=download)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
        raise DatasetError(f"dataset 'cifar10': cannot read the batches in {r / _CIFAR_DIR}: "
                           f"{exc!r}") from exc
    import torch

    x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # N×3×32×32
    return _resized_set(x, resolution, name, split)


# ----------------------------------------------------------------------------------------------
# celeba (torchvision layout) and image folders: decoded with PIL
# ----------------------------------------------------------------------------------------------


class _PILTransform:
    """PIL → RGB → center crop (``crop`` or the short side) → bilinear antialiased resize → uint8."""

    def __init__(self, resolution: int, crop: int | None) -> None:
        self.resolution, self.crop = resolution, crop

    def __call__(self, img: Image.Image) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        img = img.convert("RGB")
        side = self.crop if self.crop is not None else min(img.size)
        img = TF.center_crop(img, [side, side])
        if img.size != (self.resolution, self.resolution):
            img = TF.resize(img, [self.resolution, self.resolution],
                            interpolation=InterpolationMode.BILINEAR, antialias=True)
        return TF.pil_to_tensor(img)


_CELEBA_DIR = "celeba"
_CELEBA_IMG_DIR = "img_align_celeba"
_CELEBA_FILES = ("list_eval_partition.txt", "identity_CelebA.txt", "list_attr_celeba.txt",
                 "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt")


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


def check_celeba(name: str, root: str | os.PathLike | None, download: bool) -> str:
    return _check_celeba(_root(root), download)


@functools.cache
def _celeba_class() -> type:
    """torchvision's CelebA reader, checking presence instead of md5 of the list files."""
    from torchvision.datasets import CelebA

    class _CelebA(CelebA):
        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            return ((base / _CELEBA_IMG_DIR).is_dir()
                    and all((base / f).is_file() for f in _CELEBA_FILES))

    return _CelebA


class _CelebAItems:
    def __init__(self, ds) -> None:  # a torchvision CelebA
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ds[i][0]


def _cached_set(items: ItemSource, name: str, kind: str, split: str, resolution: int,
                crop: int | None, base: Path, names: list[str], near: Path) -> ImageSet:
    """The split ``items`` (decoding the files ``base/name``) through the decode-once cache;
    decoded per batch when no cache folder can hold it."""
    import torch

    from trainables.data.image_cache import cached_images, fingerprint
    from trainables.data.imagesets import LazyImageSet, TensorImageSet

    key = f"{kind}-{split}-crop{crop or 'short'}-{resolution}"
    fp = fingerprint(base, names, extra=key)
    arr = cached_images(items, key, (3, resolution, resolution), near, base, fp,
                        f"{name} {split} {resolution}px ({len(names)} images)")
    if arr is None:
        return LazyImageSet(items, name, split, resolution, 3)
    return TensorImageSet(torch.from_numpy(arr), name, split, path=arr.filename)


def celeba_items(root: str | os.PathLike | None, split: str, resolution: int,
                 download: bool = False) -> tuple[ItemSource, list[str]]:
    """CelebA's split as torchvision reads it, one decoded and transformed item at a time, and
    its file names in ``img_align_celeba/``."""
    r = _root(root)
    with _download_guard(r, download):
        ds = _celeba_class()(str(r), split=split, target_type=[], download=download,
                     transform=_PILTransform(resolution, CELEBA_CROP))
    if len(ds) == 0:
        raise DatasetError(f"dataset 'celeba' has no images in split {split!r} "
                           f"(list_eval_partition.txt in {r / _CELEBA_DIR})")
    return _CelebAItems(ds), list(ds.filename)


def load_celeba(name: str, root: str | os.PathLike | None, split: str, resolution: int,
                download: bool) -> ImageSet:
    items, names = celeba_items(root, split, resolution, download)
    folder = _root(root) / _CELEBA_DIR
    return _cached_set(items, "celeba", "celeba", split, resolution, CELEBA_CROP,
                       folder / _CELEBA_IMG_DIR, names, folder)


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


def check_folder(name: str, root: str | os.PathLike | None, download: bool) -> str:
    p = _folder_path(name, root)
    if not p.exists():
        return f"dataset {name!r}: folder {p} does not exist"
    if not p.is_dir():
        return f"dataset {name!r}: {p} is not a folder"
    if next(_iter_images(p), None) is None:
        return (f"dataset {name!r}: folder {p} contains no images "
                f"(looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
    return ""


def folder_reference_size(name: str, root: str | os.PathLike | None, split: str) -> int:
    """Images in a split, from the file names (every 10th by sorted name is the ``test`` split)."""
    n = sum(1 for _ in _iter_images(_folder_path(name, root)))
    return n // 10 if split == "test" else n - n // 10


class _FileItems:
    def __init__(self, files: list[Path], resolution: int) -> None:
        self.files, self.transform = files, _PILTransform(resolution, None)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as img:
            return self.transform(img)


def folder_items(name: str, root: str | os.PathLike | None, split: str,
                 resolution: int) -> tuple[ItemSource, list[str]]:
    """A folder dataset's split, one decoded and transformed file at a time, and the files'
    paths relative to the folder (sorted; every 10th is the ``test`` split)."""
    folder = _folder_path(name, root)
    names = sorted(p.relative_to(folder).as_posix() for p in _iter_images(folder))
    # deterministic 90/10 split by sorted relative path: every 10th file is held out
    names = [f for i, f in enumerate(names) if (i % 10 == 9) == (split == "test")]
    if not names:
        raise DatasetError(f"dataset {name!r}: split {split!r} is empty (folder {folder} has too "
                           "few images; every 10th image by sorted name is held out as 'test')")
    return _FileItems([folder / f for f in names], resolution), names


def load_folder(name: str, root: str | os.PathLike | None, split: str, resolution: int,
                download: bool) -> ImageSet:
    items, names = folder_items(name, root, split, resolution)
    folder = _folder_path(name, root)
    return _cached_set(items, name, "folder", split, resolution, None, folder, names, folder)
