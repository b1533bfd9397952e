"""From features to numbers: (mean, covariance) as clean-fid computes them, the Fréchet distance
(on the trial's device), FID∞ (Chong & Forsyth) and KID (clean-fid's ``kernel_distance``, on the
trial's device)."""

from __future__ import annotations

import numpy as np
import torch

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


#: Bytes of gathered subsets and kernel matrices held at once by :func:`kid_from_features`: small
#: on the CPU (buffers that stay in the allocator's reach instead of fresh pages per subset).
KID_CHUNK_BYTES = {"cpu": 1 << 25, "other": 1 << 30}


def kid_subsets(n1: int, n2: int, m: int, num_subsets: int,
                seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """The subsets ``cleanfid.fid.kernel_distance`` draws, in its order: per subset ``m`` rows of
    the second features, then ``m`` of the first, each ``np.random.choice(n, m, replace=False)``
    from numpy's global RNG. With ``seed`` set, that RNG is seeded for the draws and its previous
    state restored afterwards (reproducible, no side effect). Returns (rows of the first,
    rows of the second), each ``num_subsets`` × m."""
    state = np.random.get_state() if seed is not None else None
    try:
        if seed is not None:
            np.random.seed(seed)
        i1, i2 = [], []
        for _ in range(num_subsets):
            i2.append(np.random.choice(n2, m, replace=False))
            i1.append(np.random.choice(n1, m, replace=False))
    finally:
        if state is not None:
            np.random.set_state(state)
    return np.stack(i1), np.stack(i2)


def kid_from_features(f1: np.ndarray, f2: np.ndarray, *, num_subsets: int = 100,
                      max_subset_size: int = 1000, seed: int | None = 0,
                      device: str | torch.device | None = None) -> float:
    """KID: clean-fid's ``kernel_distance`` (Bińkowski et al. 2018, the unbiased MMD² with the
    cubic polynomial kernel k(x, y) = (xᵀy/d + 1)³, averaged over ``num_subsets`` random subsets
    of m = min(n₁, n₂, ``max_subset_size``) rows of each side), computed in torch on ``device``
    (default CPU) on the same subsets (:func:`kid_subsets`: clean-fid's draws from numpy's RNG).

    Per subset (x from ``f2``, y from ``f1``, clean-fid's roles):
    (Σ_{i≠j} k(xᵢ, xⱼ) + k(yᵢ, yⱼ))/(m − 1) − 2·Σ_{i,j} k(xᵢ, yⱼ)/m; KID = their sum/(S·m).
    On a GPU everything is float64 (no TF32 there); on the CPU the inner products and kernel
    values are float32, as clean-fid's, and the sums over rows float64 (clean-fid's are
    float32; MPS, without float64, computes on the CPU). Equal to ``kernel_distance`` on the
    same subsets within 1e-4 (tested).
    """
    f1, f2 = np.asarray(f1), np.asarray(f2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"KID needs two N×dim feature arrays of one dim, got {f1.shape} and "
                         f"{f2.shape}")
    m = min(f1.shape[0], f2.shape[0], max_subset_size)
    if m < 2 or num_subsets < 1:
        raise ValueError(f"KID needs subsets of at least 2 rows and at least one subset, got "
                         f"m={m}, num_subsets={num_subsets}")
    i1, i2 = kid_subsets(f1.shape[0], f2.shape[0], m, num_subsets, seed)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "mps":  # no float64 there
        dev = torch.device("cpu")
    dt = torch.float32 if dev.type == "cpu" else torch.float64
    x_all = torch.as_tensor(f2).to(dev).to(dt)
    y_all = torch.as_tensor(f1).to(dev).to(dt)
    ix, iy = torch.as_tensor(i2).to(dev), torch.as_tensor(i1).to(dev)
    d = f1.shape[1]

    def kernel_sums(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per subset: Σ of (aᵀb/d + 1)³ over all entries, and over the diagonal (row sums in
        the kernel's dtype, their sum in float64)."""
        k = torch.bmm(a, b.mT).div_(d).add_(1).pow_(3)
        return (k.sum(dim=2).double().sum(dim=1),
                k.diagonal(dim1=1, dim2=2).double().sum(dim=1))

    size = dt.itemsize
    budget = KID_CHUNK_BYTES["cpu" if dev.type == "cpu" else "other"]
    chunk = max(1, budget // (size * m * (2 * m + 2 * d)))
    total = torch.zeros((), dtype=torch.float64, device=dev)
    for s in range(0, num_subsets, chunk):
        x, y = x_all[ix[s:s + chunk]], y_all[iy[s:s + chunk]]
        xx, xx_diag = kernel_sums(x, x)
        yy, yy_diag = kernel_sums(y, y)
        xy, _ = kernel_sums(x, y)
        total += ((xx - xx_diag + yy - yy_diag) / (m - 1) - xy * 2 / m).sum()
    return float(total / num_subsets / m)
