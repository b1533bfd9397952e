"""Build the embedded offline dataset ``trainables/embedded/fashion_mnist_mini.npz``.

The subset is made from the official Fashion-MNIST IDX files (Xiao et al., 2017; MIT licence,
Copyright (c) 2017 Zalando SE) as shipped by the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/*-ubyte.gz``):

* 6,000 training images, 600 per class, drawn without replacement from the official 60k train split;
* 2,000 held-out images, 200 per class, drawn without replacement from the official 10k test split.

Selection is class-balanced and seeded (``numpy.random.default_rng(seed)``, default seed 0); within
each split the chosen indices are sorted so the arrays keep the official order. Images are stored
unchanged as uint8 28×28 (resizing to the paper's 32×32 and scaling to [−1, 1] happen at load time
in :mod:`trainables.data.datasets`). Written with ``numpy.savez_compressed``.

Usage::

    python -m trainables.tools.make_embedded_subset [SRC_DIR] [--out PATH] [--seed 0]
        [--train-per-class 600] [--test-per-class 200]

Only numpy and the standard library are used, so the script runs without torch.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from trainables.data.idx import read_idx

DEFAULT_SRC = "/usr/share/datasets/fashion-mnist"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "embedded" / "fashion_mnist_mini.npz"
NUM_CLASSES = 10

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of each class 0..9, drawn without replacement, returned sorted."""
    chosen = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        if idx.size < per_class:
            raise ValueError(f"class {c} has only {idx.size} images, {per_class} requested")
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def make_subset(src: Path, seed: int = 0, train_per_class: int = 600,
                test_per_class: int = 200) -> dict[str, np.ndarray]:
    missing = [name for name in FILES.values() if not (src / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(missing)} under {src} "
            "(install with: apt-get install -y dataset-fashion-mnist)")
    arrays = {key: read_idx(src / name) for key, name in FILES.items()}
    rng = np.random.default_rng(seed)
    out = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = arrays[f"{split}_labels"]
        idx = balanced_indices(labels, per_class, rng)
        out[f"{split}_images"] = arrays[f"{split}_images"][idx].astype(np.uint8)
        out[f"{split}_labels"] = labels[idx].astype(np.uint8)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="?", default=DEFAULT_SRC,
                    help=f"folder with the Fashion-MNIST *-ubyte.gz files (default {DEFAULT_SRC})")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output .npz path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-per-class", type=int, default=600)
    ap.add_argument("--test-per-class", type=int, default=200)
    args = ap.parse_args(argv)

    subset = make_subset(Path(args.src), args.seed, args.train_per_class, args.test_per_class)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **subset)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    for key, arr in subset.items():
        print(f"{key}: {arr.shape} {arr.dtype}")
    print(f"wrote {out} ({out.stat().st_size} bytes) sha256 {digest}")


if __name__ == "__main__":
    main()
