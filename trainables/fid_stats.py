"""From features to numbers: (mean, covariance) as clean-fid computes them, the Fréchet distance
(on the trial's device), FID∞ (Chong & Forsyth) and KID (clean-fid's ``kernel_distance``)."""

from __future__ import annotations

import numpy as np
import torch
from cleanfid.fid import kernel_distance

__all__ = [
    "feature_stats",
    "fid_from_features",
    "fid_from_stats",
    "fid_infinity",
    "frechet_distance_torch",
    "kid_from_features",
]


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
