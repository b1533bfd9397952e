"""The on-disk cache of reference features and FID floors, per (dataset, split, resolution,
extractor, n) under ``$LIPSTUDY_CACHE`` or ``~/.cache/lipstudy/fid``, written atomically so
concurrent trials never read a half-written file; a cached file is only reused when the
extractor's weights (fingerprint) and :data:`CACHE_FORMAT` match."""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trainables.atomic import write_atomic
from trainables.metrics.extractors import (
    FeatureExtractor, built_extractor, get_extractor, images_to_features,
)
from trainables.metrics.fid_stats import feature_stats, fid_from_stats
from trainables.names import DATASET, FID, RESOLUTION, SEED

__all__ = [
    "CACHE_FORMAT",
    "FLOOR_SEED",
    "default_cache_dir",
    "fid_floor",
    "floor_cache_path",
    "floor_indices",
    "reference_cache_path",
    "reference_features",
]

#: Bump when the chain changes in a way that changes features (invalidates cached references).
CACHE_FORMAT = 1
#: Seed of the fixed permutation that picks the real training images behind :func:`fid_floor`.
FLOOR_SEED = 0


def default_cache_dir() -> Path:
    env = os.environ.get("LIPSTUDY_CACHE")
    return Path(env) if env else Path.home() / ".cache/lipstudy/fid"


def _slug(value: object) -> str:
    """Readable file-name part; when characters had to be replaced, a short hash keeps it unique."""
    s = str(value)
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", s).strip("._")[:60] or "x"
    if slug != s:
        slug += "_" + hashlib.sha256(s.encode()).hexdigest()[:8]
    return slug


def reference_cache_path(dataset_key: str, split: str, resolution: int, extractor_name: str,
                         n: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """e.g. ``<cache>/fashion_mnist_mini-test-r32-domain-n2000.npz``."""
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return d / (f"{_slug(dataset_key)}-{_slug(split)}-r{int(resolution)}-{_slug(extractor_name)}"
                f"-n{int(n)}.npz")


def _meta(dataset_key: str, split: str, resolution: int, extractor: FeatureExtractor,
          n: int) -> dict[str, str]:
    return {DATASET: str(dataset_key), "split": str(split), RESOLUTION: str(int(resolution)),
            "extractor": extractor.name, "fingerprint": extractor.fingerprint, "n": str(int(n)),
            "format": str(CACHE_FORMAT)}


def _load_cached(path: Path, meta: dict[str, str], dim: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            for k, v in meta.items():
                if str(z[f"meta_{k}"]) != v:
                    return None
            feats = z["feats"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # missing/corrupt/other
        return None
    if feats.shape != (int(meta["n"]), dim):
        return None
    return feats


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``path`` via a temp file in the same directory + fsync + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda fh: np.savez(fh, **arrays))


def reference_features(dataset_key: str, split: str, resolution: int, extractor_name: str, n: int,
                       images_fn: Callable[[], torch.Tensor],
                       cache_dir: str | os.PathLike | None = None, *,
                       extractor: FeatureExtractor | None = None,
                       device: str | torch.device | None = None,
                       batch_size: int = 64) -> np.ndarray:
    """Features of the first ``n`` reference images, cached on disk.

    On a hit (same key, same extractor weights) the file is read and ``images_fn`` is not called.
    On a miss, ``images_fn()`` must return ≥ n images N×C×H×W in [−1, 1]; the features are written
    atomically. ``extractor`` must carry the same name; by default it is
    ``get_extractor(extractor_name, device)``, and with no ``device`` an instance this process
    already built for that name (e.g. the trial's, on its GPU), else one on the CPU.
    Concurrent callers may all compute on a miss; every reader sees a complete file.
    """
    if extractor is None:
        if device is None:
            extractor = built_extractor(extractor_name) or get_extractor(extractor_name, "cpu")
        else:
            extractor = get_extractor(extractor_name, device)
    elif extractor.name != extractor_name:
        raise ValueError(f"extractor {extractor.name!r} does not match key {extractor_name!r}")
    if int(n) < 2:
        raise ValueError(f"need at least 2 reference images, got n={n}")
    path = reference_cache_path(dataset_key, split, resolution, extractor_name, n, cache_dir)
    meta = _meta(dataset_key, split, resolution, extractor, n)
    feats = _load_cached(path, meta, extractor.dim)
    if feats is not None:
        return feats
    images = images_fn()
    if images.shape[0] < n:
        raise ValueError(f"images_fn returned {images.shape[0]} reference images for "
                         f"{dataset_key}/{split}, fewer than n={n}")
    feats = images_to_features(images[:n], extractor, batch_size=batch_size)
    _atomic_save_npz(path, feats=feats, **{f"meta_{k}": np.array(v) for k, v in meta.items()})
    return feats


def floor_indices(n_total: int, n: int, seed: int = FLOOR_SEED) -> torch.Tensor:
    """Which real images make the floor at N = ``n``: the first ``n`` of a fixed permutation of
    ``range(n_total)`` (seeded, independent of any trial seed; nested, so N = 500 ⊂ N = 1,000)."""
    if not 2 <= int(n) <= int(n_total):
        raise ValueError(f"the FID floor needs 2 ≤ n ≤ {n_total} real images, got n={n}")
    return torch.randperm(int(n_total), generator=torch.Generator().manual_seed(seed))[: int(n)]


def floor_cache_path(dataset_key: str, split: str, resolution: int, extractor_name: str, n: int,
                     ref_split: str, n_ref: int,
                     cache_dir: str | os.PathLike | None = None) -> Path:
    """e.g. ``<cache>/fashion_mnist_mini-train-r32-domain-n500-floor-vs-test-n2000.npz``."""
    d = reference_cache_path(dataset_key, split, resolution, extractor_name, n, cache_dir)
    return d.with_name(f"{d.stem}-floor-vs-{_slug(ref_split)}-n{int(n_ref)}.npz")


def fid_floor(dataset_key: str, split: str, resolution: int, extractor_name: str, n: int,
              n_total: int, images_fn: Callable[[torch.Tensor], torch.Tensor], ref_split: str,
              ref_stats: tuple[np.ndarray, np.ndarray], n_ref: int,
              cache_dir: str | os.PathLike | None = None, *,
              extractor: FeatureExtractor | None = None,
              device: str | torch.device | None = None) -> float:
    """The FID floor: FID of ``n`` real images of ``split`` (``images_fn(floor_indices(n_total,
    n))``, N×C×H×W in [−1, 1]) against the reference statistics ``ref_stats`` (of ``n_ref``
    images of ``ref_split``), through the same chain as generated images — what real data scores
    at this N, extractor, split and resolution (FID is biased upwards at finite N, so a run's FIDs
    are read against the floor at their own N).

    Cached like the reference: the real images' features under the key of split
    ``"<split>.perm<seed>of<n_total>"`` (:func:`reference_features`), the value in
    :func:`floor_cache_path` with the weights' fingerprint; on a hit ``images_fn`` is not called.
    With ``split == ref_split`` the real images are part of the reference (a lower floor).
    """
    ext = extractor if extractor is not None else get_extractor(extractor_name, device or "cpu")
    idx = floor_indices(n_total, n)
    path = floor_cache_path(dataset_key, split, resolution, extractor_name, n, ref_split, n_ref,
                            cache_dir)
    meta = {**_meta(dataset_key, split, resolution, ext, n), "ref_split": str(ref_split),
            "n_ref": str(int(n_ref)), "n_total": str(int(n_total)), SEED: str(FLOOR_SEED)}
    try:
        with np.load(path, allow_pickle=False) as z:
            if all(str(z[f"meta_{k}"]) == v for k, v in meta.items()):
                return float(z[FID])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    feats = reference_features(dataset_key, f"{split}.perm{FLOOR_SEED}of{int(n_total)}",
                               resolution, extractor_name, n, lambda: images_fn(idx), cache_dir,
                               extractor=ext, device=device)
    dev = device if device is not None else ext.device
    value = fid_from_stats(*feature_stats(feats, dev), *ref_stats, device=dev)
    _atomic_save_npz(path, **{FID: np.array(value)},
                     **{f"meta_{k}": np.array(v) for k, v in meta.items()})
    return value
