"""The decode-once image cache on a CelebA-sized folder: build time, and training iteration time
with the cached folder dataset against an in-memory dataset of the same size.

    python bench/image_cache.py                      # 22,500 JPEGs (20,250 in the train split)
    python bench/image_cache.py --n 2000 --iterations 20 --rounds 2 --old-iterations 20  # smoke

Makes ``--n`` synthetic CelebA-like JPEGs (178×218, smooth colour fields with a few random
ellipses and mild noise, quality 95) in a temporary folder (``--dir`` to keep or reuse one),
then serves it as ``folder:<dir>`` at 64×64 (center crop 178×178, bilinear antialiased resize:
CelebA's semantics). The cache goes to a fresh temporary ``$LIPSTUDY_IMAGE_CACHE`` (never a
user's cache). Times the cache build through ``trainables.data.datasets.load_images`` (a cold load: every
train-split image decoded once, with its progress bar) and a second load (mapped, nothing
decoded).

Then one ``GANTrial`` (dcgan64 at ``--width``, batch 64, SN, NS loss, RMSprop, on ``--device``)
runs ``train_step`` with three real-data sources swapped in under the same model:

* ``cached``: the served folder dataset (the memory-mapped cache; the file was just written, so
  its pages are in the OS page cache, as they are after a trial's first pass);
* ``in-memory``: the same pixels copied into an ordinary tensor (what MNIST/CIFAR are);
* ``per-image decode``: the per-batch PIL decode served before the cache (``LazyImageSet`` over
  the same files; ``--old-iterations`` steps per round, 0 skips it).

The arms take turns for ``--rounds`` rounds of ``--iterations`` steps after ``--warmup`` untimed
ones, in alternating order (a shared machine's load drifts; taking turns spreads it over all
arms); each arm's figure is the median round's ms per iteration, in wall-clock time and in this
process's CPU time (all threads; less sensitive to other processes on a loaded machine). Also
times the real-batch draw alone (``GANTrial._real_batch``) per arm. Prints every figure and,
last, ``ratio: X`` = cached / in-memory wall-clock ms per iteration.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from trainables.data import datasets as data_lib  # noqa: E402
from trainables.data import sources as data_sources  # noqa: E402
from trainables.config import validate_trial  # noqa: E402
from trainables.data.imagesets import LazyImageSet, TensorImageSet  # noqa: E402
from trainables.train import GANTrial  # noqa: E402

W, H = 178, 218  # CelebA's aligned images
_YY, _XX = np.mgrid[0:H, 0:W].astype(np.float32)


def _synthetic(i: int) -> np.ndarray:
    """One 218×178 RGB image: a smooth two-colour gradient, three ellipses, mild noise."""
    rng = np.random.default_rng(i)
    yy, xx = _YY, _XX
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (yy / H)[..., None]
    img = c0 * (1 - t) + c1 * t
    for _ in range(3):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        ry, rx = rng.uniform(10, 60), rng.uniform(10, 50)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[inside] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_folder(folder: Path, n: int) -> float:
    """Writes the n JPEGs not yet there (threads); returns seconds spent."""
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(n) if not (folder / f"{i:06d}.jpg").is_file()]

    def write(i: int) -> None:
        Image.fromarray(_synthetic(i)).save(folder / f"{i:06d}.jpg", quality=95)

    with ThreadPoolExecutor(4) as pool:
        for k, _ in enumerate(pool.map(write, todo), 1):
            if k % 2000 == 0:
                print(f"  wrote {k}/{len(todo)} JPEGs", file=sys.stderr, flush=True)
    return time.perf_counter() - t0


def time_steps(trial: GANTrial, data, steps: int) -> tuple[float, float]:
    """(wall, CPU) ms per ``train_step`` with ``data`` as the trial's real images (eager: the host
    reads the losses after every step, as an eager trial's divergence check does)."""
    trial.data = data
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trial.divergence(trial.train_step())
    return (1e3 * (time.perf_counter() - t0) / steps, 1e3 * (time.process_time() - c0) / steps)


def time_draws(trial: GANTrial, data, draws: int) -> float:
    """ms per real batch (index draw, gather, conversion to [−1, 1])."""
    trial.data = data
    t0 = time.perf_counter()
    for _ in range(draws):
        trial._real_batch()
    return 1e3 * (time.perf_counter() - t0) / draws


def build_cache(folder: Path, n: int):
    """Writes the JPEGs, loads the folder twice (build, then mapped); returns the served set."""
    print(f"JPEGs: {n} in {folder} ({W}x{H}); wrote them in {make_folder(folder, n):.1f} s")
    name = f"folder:{folder}"
    t0 = time.perf_counter()
    cached = data_lib.load_images(name, resolution=64)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    cached = data_lib.load_images(name, resolution=64)
    reload = time.perf_counter() - t0
    print(f"cache: {len(cached)} train images x 3x64x64 = {cached.data.nbytes / 2**20:.0f} MiB")
    print(f"cache build (first load, decodes every image): {build:.1f} s "
          f"({1e3 * build / len(cached):.2f} ms/image); second load (mapped): "
          f"{1e3 * reload:.0f} ms")
    return cached


def run(args: argparse.Namespace, folder: Path) -> None:
    cached = build_cache(folder, args.n)
    name = cached.name
    cfg = validate_trial(dict(
        dataset=name, arch="dcgan64", width=args.width, resolution=64, batch_size=64,
        regularizer="sn", loss="ns", optimizer="rmsprop", lr_d=5e-5, lr_g=5e-5,
        iterations=10**6, stats_every=10**6, eval_every=10**6, fid_extractor="domain",
        device=args.device), check_data=False)
    trial = GANTrial(cfg)
    arms = {"cached": cached, "in-memory": TensorImageSet(cached.data.clone(), name, "train")}
    if trial.device.type != "cpu":
        for ds in arms.values():
            ds.to(trial.device)
    steps = {"cached": args.iterations, "in-memory": args.iterations}
    if args.old_iterations > 0:
        items, _ = data_sources.folder_items(name, None, "train", 64)
        arms["per-image decode"] = LazyImageSet(items, name, "train", 64, 3).to(trial.device)
        steps["per-image decode"] = args.old_iterations
    for k, ds in arms.items():
        time_steps(trial, ds, args.warmup)
    rounds: dict[str, list[tuple[float, float]]] = {k: [] for k in arms}
    for r in range(args.rounds):
        for k in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            rounds[k].append(time_steps(trial, arms[k], steps[k]))
    wall = {k: statistics.median(w for w, _ in v) for k, v in rounds.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in rounds.items()}
    draw = {k: time_draws(trial, ds, 5 * steps[k]) for k, ds in arms.items()}
    print(f"train_step, dcgan64 width {args.width}, batch 64, {trial.device}, "
          f"{torch.get_num_threads()} torch thread(s); median of {args.rounds} rounds:")
    for k in arms:
        print(f"  {k:16s} {wall[k]:8.2f} ms/iter wall, {cpu[k]:8.2f} ms/iter CPU "
              f"({steps[k]} steps/round; wall rounds "
              f"{', '.join(f'{w:.0f}' for w, _ in rounds[k])}); real batch alone "
              f"{draw[k]:.2f} ms")
    print(f"CPU-time ratio cached / in-memory: {cpu['cached'] / cpu['in-memory']:.3f}")
    print(f"ratio: {wall['cached'] / wall['in-memory']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=22_500, help="JPEGs in the folder")
    ap.add_argument("--dir", type=Path, help="folder for the JPEGs (kept; default: a temp dir)")
    ap.add_argument("--width", type=float, default=0.125, help="dcgan64 channel multiplier")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (a Ray trial runs with OMP_NUM_THREADS=1)")
    ap.add_argument("--iterations", type=int, default=40, help="timed steps per round and arm")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--old-iterations", type=int, default=5,
                    help="timed steps per round with the per-image decode (0: skip)")
    args = ap.parse_args(argv)
    if args.n < 10:
        ap.error("--n must be at least 10 (every 10th image is the test split)")
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="lipstudy-image-cache-bench-"))
    os.environ["LIPSTUDY_IMAGE_CACHE"] = str(tmp / "cache")
    folder = args.dir or tmp / "celeba_like"
    try:
        run(args, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
