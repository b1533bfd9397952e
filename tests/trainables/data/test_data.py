"""Tests for trainables.data.datasets: the embedded set, every on-disk format (tiny files written here,
loaded through the same code as real data), check_dataset messages, and the 2-D toys.

No test downloads anything: socket connects raise for the whole module.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import datasets as D
from trainables.data import sources as data_sources
from trainables.tools import make_embedded_subset as M


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted in a data test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(autouse=True)
def _isolated_default_root(tmp_path, monkeypatch):
    # never touch the user's real default data root or image cache from tests
    monkeypatch.setenv("LIPSTUDY_DATA_ROOT", str(tmp_path / "default_root"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LIPSTUDY_IMAGE_CACHE", raising=False)


# ----------------------------------------------------------------------------------------------
# helpers writing the real formats
# ----------------------------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    arr = np.asarray(arr, dtype=np.uint8)
    blob = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    blob += arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(blob)
    else:
        path.write_bytes(blob)


def fake_idx_set(folder: Path, n_train: int, n_test: int, gz: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for name, arr in arrays.items():
        write_idx(folder / name, arr, gz)
    return arrays


def write_cifar(root: Path, n_per_batch: int = 3, skip: tuple[str, ...] = ()) -> dict:
    """CIFAR-10 python layout: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        # image j of batch k: R plane = k, G plane = 100 + j, B plane = 200 (row layout as CIFAR)
        rows = np.zeros((n_per_batch, 3 * 1024), dtype=np.uint8)
        for j in range(n_per_batch):
            rows[j, :1024], rows[j, 1024:2048], rows[j, 2048:] = k, 100 + j, 200
        batches[name] = rows
        entry = {"batch_label": name, "labels": [j % 10 for j in range(n_per_batch)],
                 "data": rows, "filenames": [f"img{j}.png" for j in range(n_per_batch)]}
        if name not in skip:
            with open(folder / name, "wb") as fh:
                pickle.dump(entry, fh, protocol=2)
    if "batches.meta" not in skip:
        with open(folder / "batches.meta", "wb") as fh:
            pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072,
                         "num_cases_per_batch": n_per_batch}, fh, protocol=2)
    return batches


def write_celeba(root: Path, n: int = 6) -> None:
    """torchvision CelebA layout with n aligned 178×218 JPEGs; partitions 0,0,0,2,1,2,0...

    (at least two test images: torchvision's CelebA cannot index a split of exactly one)
    """
    folder = root / "celeba"
    img_dir = folder / "img_align_celeba"
    img_dir.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for name in names:
        arr = np.zeros((218, 178, 3), dtype=np.uint8)
        arr[:, :, 1] = 255          # green everywhere ...
        arr[:20, :] = (255, 0, 0)   # ... except 20 red rows top and bottom: cut by the 178 crop
        arr[-20:, :] = (255, 0, 0)
        Image.fromarray(arr).save(img_dir / name, quality=100, subsampling=0)
    parts = [0, 0, 0, 2, 1, 2][:n] + [0] * max(0, n - 6)
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{nm} {p}\n" for nm, p in zip(names, parts)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{nm} {i}\n" for i, nm in enumerate(names)))
    attrs = ["5_o_Clock_Shadow", "Smiling"]
    (folder / "list_attr_celeba.txt").write_text(
        f"{n}\n{' '.join(attrs)}\n" + "".join(f"{nm}  1 -1\n" for nm in names))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{nm} 95 71 226 313\n" for nm in names))
    lm = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y " \
         "rightmouth_x rightmouth_y"
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\n{lm}\n" + "".join(f"{nm} 69 109 106 113 77 142 73 152 108 154\n" for nm in names))


# ----------------------------------------------------------------------------------------------
# names, resolutions, channels
# ----------------------------------------------------------------------------------------------


def test_names_and_static_facts():
    assert set(D.IMAGE_DATASETS) == {"fashion_mnist_mini", "mnist", "fashion_mnist", "cifar10",
                                     "celeba"}
    assert D.TOY_DATASETS == ("ring8", "grid25", "roth7", "roth7_3d")
    for name in ("mnist", "fashion_mnist", "fashion_mnist_mini", "cifar10"):
        assert D.native_resolution(name) == 32  # Appendix B
    assert D.native_resolution("celeba") == 64
    assert D.native_resolution("folder:/x") == 64
    assert [D.channels(n) for n in ("mnist", "fashion_mnist", "fashion_mnist_mini")] == [1, 1, 1]
    assert [D.channels(n) for n in ("cifar10", "celeba", "folder:/x")] == [3, 3, 3]
    assert D.is_toy("ring8") and not D.is_toy("mnist")
    assert D.is_image_dataset("folder:/a") and not D.is_image_dataset("grid25")
    assert issubclass(D.DatasetError, ValueError)


# ----------------------------------------------------------------------------------------------
# embedded set
# ----------------------------------------------------------------------------------------------


def test_embedded_npz_contents():
    with np.load(D.EMBEDDED_NPZ) as z:
        assert z["train_images"].shape == (6000, 28, 28) and z["train_images"].dtype == np.uint8
        assert z["test_images"].shape == (2000, 28, 28) and z["test_images"].dtype == np.uint8
        assert np.bincount(z["train_labels"], minlength=10).tolist() == [600] * 10
        assert np.bincount(z["test_labels"], minlength=10).tolist() == [200] * 10
        train_hashes = {hashlib.sha1(x.tobytes()).hexdigest() for x in z["train_images"]}
        test_hashes = {hashlib.sha1(x.tobytes()).hexdigest() for x in z["test_images"]}
    assert len(train_hashes) == 6000 and len(test_hashes) == 2000
    assert not train_hashes & test_hashes  # held-out images are disjoint from train by content
    assert D.EMBEDDED_NPZ.stat().st_size < 8 * 2**20
    for f in ("README.md", "LICENSE"):
        assert (D.EMBEDDED_DIR / f).is_file()
    assert "Zalando" in (D.EMBEDDED_DIR / "LICENSE").read_text()


def test_embedded_loads_at_paper_resolution():
    D.check_dataset("fashion_mnist_mini", None, None)
    ds = D.load_images("fashion_mnist_mini")
    assert len(ds) == 6000 and ds.shape == (1, 32, 32) and ds.in_memory
    x = ds.batch(torch.arange(0, 6000, 7))
    assert x.shape == (len(range(0, 6000, 7)), 1, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() == -1.0  # background is exactly −1
    assert torch.equal(ds[3], ds.batch(torch.tensor([3]))[0])
    assert torch.equal(ds[-1], ds[5999])
    with pytest.raises(IndexError):
        ds[6000]
    test = D.load_images("fashion_mnist_mini", split="test")
    assert len(test) == 2000
    labels = D.labels_of("fashion_mnist_mini", None, "test")
    assert labels.dtype == torch.uint8 and labels.shape == (2000,)
    assert torch.bincount(labels.long(), minlength=10).tolist() == [200] * 10


def test_embedded_native_28_is_exact_and_labels_aligned():
    ds = D.load_images("fashion_mnist_mini", resolution=28, split="test")
    with np.load(D.EMBEDDED_NPZ) as z:
        raw, lab = z["test_images"], z["test_labels"]
    assert torch.equal(D.to_uint8(ds.batch(torch.arange(2000)))[:, 0], torch.from_numpy(raw))
    assert torch.equal(D.labels_of("fashion_mnist_mini", split="test"), torch.from_numpy(lab))
    with pytest.raises(D.DatasetError, match="only available for 'fashion_mnist_mini'"):
        D.labels_of("mnist", None, "train")


def test_batch_on_generator_and_sample():
    ds = D.load_images("fashion_mnist_mini", split="test")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(ds.sample(16, g1), ds.sample(16, g2))
    assert ds.to("cpu") is ds


def test_make_embedded_subset_tool(tmp_path):
    src = tmp_path / "src"
    fake_idx_set(src, n_train=50, n_test=30, gz=True)
    out = tmp_path / "mini.npz"
    M.main([str(src), "--out", str(out), "--train-per-class", "3", "--test-per-class", "2"])
    with np.load(out) as z:
        assert z["train_images"].shape == (30, 28, 28)
        assert np.bincount(z["train_labels"]).tolist() == [3] * 10
        assert np.bincount(z["test_labels"]).tolist() == [2] * 10
    first = out.read_bytes()
    M.main([str(src), "--out", str(out), "--train-per-class", "3", "--test-per-class", "2"])
    assert out.read_bytes() == first  # reproducible
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        M.make_subset(tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,cls_dir,gz", [("fashion_mnist", "FashionMNIST", True),
                                             ("mnist", "MNIST", False)])
def test_idx_in_torchvision_layout(tmp_path, name, cls_dir, gz):
    arrays = fake_idx_set(tmp_path / cls_dir / "raw", n_train=12, n_test=5, gz=gz)
    D.check_dataset(name, tmp_path, None)
    ds = D.load_images(name, tmp_path)
    assert len(ds) == 12 and ds.shape == (1, 32, 32)
    x = ds.batch(torch.arange(12))
    assert x.min() >= -1 and x.max() <= 1
    native = D.load_images(name, tmp_path, resolution=28, split="test")
    assert len(native) == 5
    expect = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float() / 127.5 - 1
    assert torch.allclose(native.batch(torch.arange(5))[:, 0], expect)


def test_idx_resize_28_to_32_is_bilinear_antialias(tmp_path):
    arrays = fake_idx_set(tmp_path, n_train=3, n_test=2, gz=True)  # flat folder layout
    ds = D.load_images("mnist", tmp_path, resolution=32)
    src = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float().unsqueeze(1)
    ref = torch.nn.functional.interpolate(src, size=(32, 32), mode="bilinear", antialias=True,
                                          align_corners=False).round().clamp(0, 255) / 127.5 - 1
    assert torch.allclose(ds.batch(torch.arange(3)), ref)
    const = np.full((1, 28, 28), 255, np.uint8)
    write_idx(tmp_path / "c" / "train-images-idx3-ubyte", const, gz=False)
    for f in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        write_idx(tmp_path / "c" / f, arrays[f][:1], gz=False)
    assert torch.all(D.load_images("mnist", tmp_path / "c")[0] == 1.0)


def test_fashion_mnist_default_root_falls_back_to_debian_dir(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    fake_idx_set(debian, n_train=4, n_test=2, gz=True)
    monkeypatch.setattr(data_sources, "DEBIAN_FASHION_MNIST_DIR", debian)
    D.check_dataset("fashion_mnist", None, 32)
    assert len(D.load_images("fashion_mnist", None)) == 4
    with pytest.raises(D.DatasetError):  # explicit roots do not fall back
        D.check_dataset("fashion_mnist", tmp_path / "empty", 32)


def test_idx_missing_and_partial_messages(tmp_path):
    with pytest.raises(D.DatasetError) as e:
        D.check_dataset("mnist", tmp_path, None)
    msg = str(e.value)
    assert "'mnist'" in msg and "train-images-idx3-ubyte" in msg and "download: true" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg
    raw = tmp_path / "MNIST" / "raw"
    fake_idx_set(raw, 3, 2, gz=True)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(D.DatasetError) as e:
        D.check_dataset("mnist", tmp_path, None)
    assert "missing t10k-labels-idx1-ubyte " in str(e.value)
    assert "train-images" not in str(e.value).split("(looked")[0]
    with pytest.raises(D.DatasetError, match="not found"):
        D.load_images("mnist", tmp_path)
    D.check_dataset("mnist", tmp_path, None, download=True)  # would be fetched: no error


# ----------------------------------------------------------------------------------------------
# CIFAR-10 python pickle batches
# ----------------------------------------------------------------------------------------------


def test_cifar10_pickle_batches(tmp_path):
    write_cifar(tmp_path, n_per_batch=3)
    D.check_dataset("cifar10", tmp_path, 32)
    train = D.load_images("cifar10", tmp_path)
    test = D.load_images("cifar10", tmp_path, split="test")
    assert len(train) == 15 and len(test) == 3 and train.shape == (3, 32, 32)
    img = train[4]  # batch index 1 (data_batch_2), image 1
    to = lambda v: v / 127.5 - 1
    assert torch.allclose(img[0], torch.full((32, 32), to(1.0)))
    assert torch.allclose(img[1], torch.full((32, 32), to(101.0)))
    assert torch.allclose(img[2], torch.full((32, 32), to(200.0)))
    assert torch.allclose(test[2][0], torch.full((32, 32), to(5.0)))  # test_batch is k=5
    assert D.load_images("cifar10", tmp_path, resolution=64).shape == (3, 64, 64)


def test_cifar10_missing_files_message(tmp_path):
    write_cifar(tmp_path, skip=("data_batch_3", "batches.meta"))
    with pytest.raises(D.DatasetError) as e:
        D.check_dataset("cifar10", tmp_path, None)
    msg = str(e.value)
    assert "missing data_batch_3, batches.meta" in msg and "download: true" in msg
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(D.DatasetError, match="extract it"):
        D.check_dataset("cifar10", tmp_path, None)


# ----------------------------------------------------------------------------------------------
# image folder
# ----------------------------------------------------------------------------------------------


def test_image_folder_pngs(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(12):
        if i % 3 == 0:  # grayscale, non-square: converted to RGB, center-cropped
            arr = np.full((40, 60), 10 * i, np.uint8)
            Image.fromarray(arr, "L").save(folder / "sub" / f"g{i:02d}.png")
        else:
            arr = np.zeros((50, 50, 3), np.uint8)
            arr[..., 0] = 10 * i
            Image.fromarray(arr).save(folder / f"c{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    name = f"folder:{folder}"
    D.check_dataset(name, None, None)
    train = D.load_images(name, resolution=16)
    test = D.load_images(name, resolution=16, split="test")
    assert len(train) == 11 and len(test) == 1 and train.shape == (3, 16, 16)
    assert train.in_memory
    x = train.batch(torch.arange(11))
    assert x.min() >= -1 and x.max() <= 1
    # relative folder paths resolve against root
    assert len(D.load_images("folder:imgs", tmp_path, resolution=16)) == 11
    assert D.load_images(name).shape == (3, 64, 64)


def test_image_folder_is_served_from_its_decode_cache(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(folder / f"{i:03d}.png")
    ds = D.load_images(f"folder:{folder}", resolution=8)
    assert ds.in_memory and len(ds) == 18 and ds.path is not None
    b = ds.batch(torch.tensor([0, 9]))  # sorted names, 009 held out → index 9 is 010
    assert torch.allclose(D.to_uint8(b)[:, :, 0, 0].float(), torch.tensor([[0.0] * 3, [10.0] * 3]))
    assert pickle.loads(pickle.dumps(ds)).batch(torch.tensor([1])).shape == (1, 3, 8, 8)


def test_image_folder_messages(tmp_path):
    with pytest.raises(D.DatasetError, match="does not exist"):
        D.check_dataset(f"folder:{tmp_path / 'nope'}", None, None)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(D.DatasetError, match="contains no images"):
        D.check_dataset(f"folder:{tmp_path / 'empty'}", None, None)
    with pytest.raises(D.DatasetError, match="needs a path"):
        D.check_dataset("folder:", None, None)
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(one / "a.png")
    with pytest.raises(D.DatasetError, match="split 'test' is empty"):
        D.load_images(f"folder:{one}", split="test")


# ----------------------------------------------------------------------------------------------
# CelebA
# ----------------------------------------------------------------------------------------------


def test_celeba_missing_message(tmp_path):
    with pytest.raises(D.DatasetError) as e:
        D.check_dataset("celeba", tmp_path, 64)
    msg = str(e.value)
    assert "'celeba'" in msg and "img_align_celeba" in msg and "list_eval_partition.txt" in msg
    assert "download: true" in msg and str(tmp_path / "celeba") in msg


def test_celeba_fake_files_through_torchvision(tmp_path):
    write_celeba(tmp_path)
    D.check_dataset("celeba", tmp_path, None)
    train = D.load_images("celeba", tmp_path)
    test = D.load_images("celeba", tmp_path, split="test")
    assert len(train) == 3 and len(test) == 2 and train.in_memory  # the decode cache
    x = train.batch(torch.tensor([0, 2]))
    assert x.shape == (2, 3, 64, 64)
    # the 178 center crop removed the red bands: the image is green everywhere (JPEG tolerance)
    green = torch.tensor([-1.0, 1.0, -1.0]).view(1, 3, 1, 1)
    assert (x - green).abs().max() < 0.05  # edge rows included (without the crop: red there)
    assert pickle.loads(pickle.dumps(test))[0].shape == (3, 64, 64)


# ----------------------------------------------------------------------------------------------
# generic checks
# ----------------------------------------------------------------------------------------------


def test_unknown_and_bad_arguments(tmp_path):
    with pytest.raises(D.DatasetError, match="unknown dataset 'imagenet'.*fashion_mnist_mini"):
        D.check_dataset("imagenet", tmp_path, None)
    with pytest.raises(D.DatasetError, match="resolution 128 is not available.*'mnist'"):
        D.check_dataset("mnist", tmp_path, 128)
    with pytest.raises(D.DatasetError, match="resolution 4 is not available"):
        D.check_dataset("fashion_mnist_mini", None, 4)
    with pytest.raises(D.DatasetError, match="integer"):
        D.check_dataset("fashion_mnist_mini", None, 32.0)
    with pytest.raises(D.DatasetError, match="split"):
        D.load_images("fashion_mnist_mini", split="valid")
    with pytest.raises(D.DatasetError, match="sample_toy"):
        D.load_images("ring8")
    D.check_dataset("ring8", None, None)  # toys need no files
    with pytest.raises(D.DatasetError, match="resolution 256 is not available.*'celeba'"):
        D.check_dataset("celeba", tmp_path, 256)


def test_celeba_download_needs_gdown(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "gdown" else real(n, *a))
    with pytest.raises(D.DatasetError, match="gdown"):
        D.check_dataset("celeba", tmp_path, None, download=True)


# ----------------------------------------------------------------------------------------------
# toys
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n_modes,std", [("ring8", 8, 0.02), ("grid25", 25, 0.05),
                                               ("roth7", 7, 0.01)])
def test_toys(name, n_modes, std):
    modes = D.toy_modes(name)
    assert modes.shape == (n_modes, 2) and D.toy_std(name) == std
    if name in ("ring8", "roth7"):  # radius 2 (Metz et al.), the unit circle (Roth et al. App. 7.3)
        radius = 2.0 if name == "ring8" else 1.0
        assert torch.allclose(modes.norm(dim=1), torch.full((n_modes,), radius))
        angles = torch.atan2(modes[:, 1].double(), modes[:, 0].double()) % (2 * math.pi)
        assert torch.allclose(angles.sort().values,
                              torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes,
                              atol=1e-6)
    else:
        assert sorted(set(modes[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    x = D.sample_toy(name, 20000, torch.Generator().manual_seed(0))
    assert x.shape == (20000, 2) and x.dtype == torch.float32
    d = torch.cdist(x, modes)
    nearest = d.argmin(dim=1)
    assert d.min(dim=1).values.max() < 6 * std  # every sample sits on a mode
    counts = torch.bincount(nearest, minlength=n_modes)
    assert counts.min() > 0.7 * 20000 / n_modes  # roughly equal weights
    for m in range(n_modes):  # per-mode means near the centres, per-mode std as configured
        pts = x[nearest == m]
        assert (pts.mean(0) - modes[m]).abs().max() < 4 * std / pts.shape[0] ** 0.5 + 1e-3
        assert abs(pts.std(0).mean().item() - std) < 0.2 * std
    same = D.sample_toy(name, 100, torch.Generator().manual_seed(7))
    assert torch.equal(same, D.sample_toy(name, 100, torch.Generator().manual_seed(7)))
    assert not torch.equal(same, D.sample_toy(name, 100, torch.Generator().manual_seed(8)))


def test_toy_errors():
    with pytest.raises(D.DatasetError, match="not a toy"):
        D.toy_modes("mnist")
    with pytest.raises(D.DatasetError, match="unknown dataset"):
        D.sample_toy("ring9", 3, torch.Generator())
