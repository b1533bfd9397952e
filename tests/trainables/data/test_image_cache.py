"""The decode-once image cache (``trainables.data.image_cache``) behind CelebA and ``folder:`` datasets:
bit-identical to the per-image decode, reused without decoding, invalidated by a changed folder,
built once by concurrent loaders, served like the in-memory sets."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image

from tests.trainables.data.test_data import write_celeba
from trainables.data import datasets as D
from trainables.data import sources as data_sources
from trainables.data import image_cache
from trainables.data.imagesets import LazyImageSet, TensorImageSet, fits_on

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LIPSTUDY_IMAGE_CACHE", raising=False)
    monkeypatch.setenv("LIPSTUDY_DATA_ROOT", str(tmp_path / "default_root"))


@pytest.fixture
def opens(monkeypatch):
    """Counts PIL.Image.open calls (every decode of a file starts with one)."""
    calls = []
    real = PIL.Image.open

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting)
    return lambda: len(calls)


def write_folder(folder: Path, n: int, seed: int = 0) -> None:
    """n images of mixed formats and shapes (JPEG/PNG, RGB/grayscale/RGBA, non-square)."""
    rng = np.random.default_rng(seed)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        if i % 4 == 0:
            Image.fromarray(rng.integers(0, 256, (h, w), np.uint8), "L").save(
                folder / "sub" / f"g{i:03d}.png")
        elif i % 4 == 1:
            Image.fromarray(rng.integers(0, 256, (h, w, 4), np.uint8), "RGBA").save(
                folder / f"a{i:03d}.png")
        else:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
                folder / f"c{i:03d}.jpg", quality=90)


def per_image(name: str, split: str, resolution: int, root=None) -> LazyImageSet:
    """The per-batch decode (one PIL decode and transform per item), as served before caching."""
    items, _ = data_sources.folder_items(name, root, split, resolution)
    return LazyImageSet(items, name, split, resolution, 3)


def npy_files(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / image_cache.CACHE_DIRNAME).glob("*.npy*"))


def test_folder_cache_is_bit_identical_and_reused_without_decoding(tmp_path, opens):
    folder = tmp_path / "imgs"
    write_folder(folder, 30)
    name = f"folder:{folder}"
    idx = torch.tensor([0, 5, 26, 3, 3, 17])
    for split, res in (("train", 16), ("test", 16), ("train", 24)):
        ds = D.load_images(name, resolution=res, split=split)
        assert isinstance(ds, TensorImageSet) and ds.in_memory
        assert ds.path is not None  # served from the memory-mapped cache file
        ref = per_image(name, split, res)
        sel = idx[idx < len(ref)]
        assert torch.equal(ds.uint8_batch(sel), ref.uint8_batch(sel))
        assert torch.equal(ds.batch(torch.arange(len(ds))), ref.batch(torch.arange(len(ref))))
    assert len(npy_files(folder)) == 3  # one per (split, resolution)
    before = opens()
    again = D.load_images(name, resolution=16)
    assert opens() == before  # no file decoded: the cache was mapped
    assert torch.equal(again.uint8_batch(idx), per_image(name, "train", 16).uint8_batch(idx))


def test_changed_folder_invalidates_the_cache(tmp_path, opens):
    folder = tmp_path / "imgs"
    write_folder(folder, 20)
    name = f"folder:{folder}"
    first = D.load_images(name, resolution=16).uint8_batch(torch.arange(18)).clone()
    # replace one image's pixels (same name): re-decoded, the new pixels served
    target = folder / "c002.jpg"
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(target, quality=90)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    before = opens()
    changed = D.load_images(name, resolution=16)
    assert opens() > before
    b = changed.uint8_batch(torch.arange(18))
    assert torch.equal(b, per_image(name, "train", 16).uint8_batch(torch.arange(18)))
    assert not torch.equal(b, first)
    assert len(npy_files(folder)) == 1  # the stale fingerprint was removed
    # a new image changes the split's file list
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(folder / "z_new.png")
    assert len(D.load_images(name, resolution=16)) == 19
    assert len(npy_files(folder)) == 1


def test_celeba_layout_is_cached_through_torchvision(tmp_path, opens):
    write_celeba(tmp_path, n=8)  # partitions 0,0,0,2,1,2,0,0: 5 train, 2 test
    for split in ("train", "test"):
        ds = D.load_images("celeba", tmp_path, split=split)
        items, names = data_sources.celeba_items(tmp_path, split, 64)
        ref = LazyImageSet(items, "celeba", split, 64, 3)
        assert ds.in_memory and len(ds) == len(ref) == len(names)
        assert torch.equal(ds.uint8_batch(torch.arange(len(ds))),
                           ref.uint8_batch(torch.arange(len(ref))))
    cache = tmp_path / "celeba" / image_cache.CACHE_DIRNAME
    assert sorted(p.name.split("-")[1] for p in cache.glob("*.npy")) == ["test", "train"]
    before = opens()
    x = D.load_images("celeba", tmp_path).batch(torch.tensor([0, 4]))
    assert opens() == before
    green = torch.tensor([-1.0, 1.0, -1.0]).view(1, 3, 1, 1)  # the 178 crop cut the red bands
    assert (x - green).abs().max() < 0.05


def test_celeba_image_missing_from_the_folder_is_named(tmp_path):
    write_celeba(tmp_path, n=6)
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(D.DatasetError, match="cannot read image .*000002.jpg"):
        D.load_images("celeba", tmp_path)


def test_unreadable_image_is_named_and_leaves_no_cache(tmp_path):
    folder = tmp_path / "imgs"
    write_folder(folder, 12)
    (folder / "c003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(D.DatasetError, match="cannot be decoded: .*c003.jpg"):
        D.load_images(f"folder:{folder}", resolution=8)
    assert npy_files(folder) == []  # no partial cache left behind


_BUILDER = """
import itertools, json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
import PIL.Image
counter, real = itertools.count(), PIL.Image.open
def slow_open(*a, **k):
    next(counter)
    time.sleep(0.02)
    return real(*a, **k)
PIL.Image.open = slow_open
from trainables.data import datasets as D
barrier = Path(sys.argv[2])
(barrier / sys.argv[3]).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.005)
ds = D.load_images("folder:" + sys.argv[1], resolution=16)
import hashlib
print(json.dumps({{"opens": next(counter),
                  "sha": hashlib.sha256(ds.data.numpy().tobytes()).hexdigest()}}))
"""


@pytest.mark.slow  # two fresh Python processes importing torch
def test_concurrent_builders_make_one_intact_cache(tmp_path):
    folder = tmp_path / "imgs"
    write_folder(folder, 40)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = _BUILDER.format(repo=str(REPO))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(folder), str(barrier), str(k)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    res = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert sorted(r["opens"] for r in res) == [0, 36]  # one decoded the split, the other waited
    ref = per_image(f"folder:{folder}", "train", 16).uint8_batch(torch.arange(36))
    expect = hashlib.sha256(ref.numpy().tobytes()).hexdigest()
    assert [r["sha"] for r in res] == [expect, expect]
    files = npy_files(folder)
    assert len(files) == 1 and files[0].endswith(".npy")  # no temporary file left


def test_cache_locations(tmp_path, monkeypatch, opens, capsys):
    folder = tmp_path / "imgs"
    write_folder(folder, 12)
    name = f"folder:{folder}"
    # the folder cannot be written: the user cache directory (XDG_CACHE_HOME) holds it
    real = image_cache._writable
    monkeypatch.setattr(image_cache, "_writable", lambda d: d.parent != folder and real(d))
    ds = D.load_images(name, resolution=8)
    user = tmp_path / "xdg" / "lipstudy" / "image-cache"
    assert len(list(user.glob("*/*.npy"))) == 1 and not npy_files(folder)
    assert Path(ds.path).is_relative_to(user)
    # no room anywhere (or nothing writable): decoded per batch, the same pixels, said once
    monkeypatch.setattr(image_cache, "_free_bytes", lambda d: 10**5)
    lazy = D.load_images(name, resolution=24)
    assert isinstance(lazy, LazyImageSet) and not lazy.in_memory
    assert "decoding every batch instead" in capsys.readouterr().err
    assert torch.equal(lazy.uint8_batch(torch.arange(10)),
                       per_image(name, "train", 24).uint8_batch(torch.arange(10)))
    monkeypatch.setattr(image_cache, "_writable", lambda d: False)
    assert not D.load_images(name, resolution=12).in_memory
    # an explicit cache folder wins
    monkeypatch.setattr(image_cache, "_writable", real)
    monkeypatch.setattr(image_cache, "_free_bytes", lambda d: 10**12)
    monkeypatch.setenv("LIPSTUDY_IMAGE_CACHE", str(tmp_path / "local"))
    before = opens()
    D.load_images(name, resolution=8)
    assert opens() > before and len(list((tmp_path / "local").glob("*/*.npy"))) == 1


def test_mapped_set_pickles_by_path_and_moves_when_it_fits(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    write_folder(folder, 24)
    ds = D.load_images(f"folder:{folder}", resolution=32)
    blob = pickle.dumps(ds)
    assert len(blob) < ds.data.nbytes // 4  # the path, not the pixels
    back = pickle.loads(blob)
    every = torch.arange(len(ds))
    assert torch.equal(back.uint8_batch(every), ds.uint8_batch(every))
    # residency: a store moves to a CUDA device only within DEVICE_SHARE of its free memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 10**6, 8 * 10**6))
    assert fits_on(10**6, torch.device("cuda")) and not fits_on(10**6 + 1, torch.device("cuda"))
    assert fits_on(10**12, torch.device("cpu"))
    assert ds.to("meta").data.device.type == "meta"  # not CUDA: always moves


def test_progress_line_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import fails
    out = np.empty((5, 3, 2, 2), np.uint8)
    items = [torch.full((3, 2, 2), i, dtype=torch.uint8) for i in range(5)]
    image_cache.decode_into(items, out, "decoding toy", chunk=2)
    assert out[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert "decoding toy: 5/5 images" in capsys.readouterr().err
