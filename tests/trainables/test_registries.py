"""The registries of trainables: one duplicate-name rule for all four, the dataset entries, and
the regularizers' declared Lipschitz-target key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data import datasets as D
from trainables.metrics import extractors
from trainables.gan.losses import LOSSES, DomainScaledLoss, Linear, register_loss
from trainables.gan.regularizers import REGULARIZERS, Regularizer, RegularizerParams, register_regularizer


class _Loss(DomainScaledLoss):
    real_term = Linear(1.0)
    fake_term = Linear(-1.0)
    gen_term = Linear(1.0)


class _Reg(Regularizer):
    pass


class _Extractor(extractors.FeatureExtractor):
    dim, input_size = 2, 8


def _register_twice(registry, register, name, entry):
    before = dict(registry)
    with pytest.raises(ValueError, match=rf"^{register[0]} '{name}' is already registered \("):
        register[1](entry)
    assert registry == before  # a refused entry changes nothing


@pytest.mark.parametrize("which", ["loss", "regularizer", "feature extractor", "dataset"])
def test_a_name_registered_twice_is_an_error_naming_it(which):
    cases = {
        "loss": (LOSSES, register_loss("ns"), "ns", _Loss),
        "regularizer": (REGULARIZERS, register_regularizer("sn"), "sn", _Reg),
        "feature extractor": (extractors.EXTRACTORS, extractors.register_extractor("domain"),
                              "domain", _Extractor),
        "dataset": (D.DATASETS, D.register_dataset, "mnist", D.DatasetEntry("mnist", 1)),
    }
    registry, register, name, entry = cases[which]
    _register_twice(registry, (which, register), name, entry)


def test_the_same_class_registered_again_is_an_error_too():
    with pytest.raises(ValueError, match="feature extractor 'domain' is already registered"):
        extractors.register_extractor("domain")(extractors.EXTRACTORS["domain"])
    with pytest.raises(ValueError, match="regularizer 'gp' is already registered"):
        register_regularizer("gp")(REGULARIZERS["gp"])


# ----------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------


def test_every_dataset_is_one_entry():
    facts = {n: (e.channels, e.resolution, e.max_resolution, e.prefix, e.toy)
             for n, e in D.DATASETS.items()}
    assert facts == {
        "fashion_mnist_mini": (1, 32, 64, False, False),
        "mnist": (1, 32, 64, False, False),
        "fashion_mnist": (1, 32, 64, False, False),
        "cifar10": (3, 32, 64, False, False),
        "celeba": (3, 64, 178, False, False),
        "folder:": (3, 64, 1024, True, False),
        "ring8": (2, None, None, False, True),
        "roth7": (2, None, None, False, True),
        "roth7_3d": (3, None, None, False, True),
        "grid25": (2, None, None, False, True),
    }
    for e in D.DATASETS.values():
        assert e.toy or (callable(e.check) and callable(e.load))
    assert D.dataset_entry("folder:/any/where") is D.DATASETS["folder:"]
    assert D.dataset_entry("ring8").toy and D.is_toy("grid25")
    assert D.DATASETS["fashion_mnist_mini"].reference_size("fashion_mnist_mini", None,
                                                           "test") == 2000
    assert D.reference_size("cifar10", None, "test") is None  # no counter: unknown


@pytest.fixture
def custom_dataset():
    """A registered in-memory dataset: 20 train / 10 test images, 16 px native."""
    calls = []

    def check(name, root, download):
        calls.append(("check", name, download))
        return "" if root != "missing" else f"dataset {name!r}: nothing at {root}"

    def load(name, root, split, resolution, download):
        calls.append(("load", split, resolution))
        n = 20 if split == "train" else 10
        x = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, resolution,
                                                                           resolution)
        return D.TensorImageSet(x.contiguous(), name, split)

    entry = D.register_dataset(D.DatasetEntry(
        "_test_set", 3, 16, 24, check, load, lambda name, root, split: 20 if split == "train"
        else 10))
    try:
        yield calls
    finally:
        D.DATASETS.pop(entry.name)


def test_a_registered_dataset_is_served_by_the_public_functions(custom_dataset):
    assert D.native_resolution("_test_set") == 16 and D.max_resolution("_test_set") == 24
    assert D.channels("_test_set") == 3 and D.is_image_dataset("_test_set")
    assert D.reference_size("_test_set", None, "test") == 10
    D.check_dataset("_test_set", None, None)
    with pytest.raises(D.DatasetError, match="resolution 32 is not available.*8..24"):
        D.check_dataset("_test_set", None, 32)
    with pytest.raises(D.DatasetError, match="nothing at missing"):
        D.load_images("_test_set", "missing")
    ds = D.load_images("_test_set", split="test", resolution=8)
    assert len(ds) == 10 and ds.shape == (3, 8, 8)
    assert np.allclose(ds[3].numpy(), 3 / 127.5 - 1)
    assert custom_dataset[-2:] == [("check", "_test_set", False), ("load", "test", 8)]
    with pytest.raises(D.DatasetError, match="unknown dataset 'nope'.*_test_set"):
        D.channels("nope")


# ----------------------------------------------------------------------------------------------
# the regularizers' Lipschitz-target key
# ----------------------------------------------------------------------------------------------


def test_each_regularizer_declares_the_key_of_its_k():
    assert {n: c.k_key for n, c in REGULARIZERS.items()} == {
        "none": None, "sn": "k_sn", "gp": "k_gp", "r1": None, "gran": "gran_k", "alr": "alr_k",
        "js": None, "clip": None}
    for name, cls in REGULARIZERS.items():
        reg = cls(cls.Params(**({cls.k_key: 3.0} if cls.k_key else {})))
        if name != "sn":  # sn aims at k_sn^n (n layers), the others at the key's value
            assert reg.lipschitz_k(None) == (3.0 if cls.k_key else None)


def test_a_k_key_outside_params_is_refused():
    class P(RegularizerParams):
        c: float = 1.0

    with pytest.raises(TypeError, match="k_key 'k' is not one of its Params keys"):

        @register_regularizer("_test_k")
        class _K(Regularizer):
            Params = P
            k_key = "k"

    assert "_test_k" not in REGULARIZERS
