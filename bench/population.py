"""Population trials vs one-config trials: the same configs, trained both ways, in one run.

    python bench/population.py --dataset ring8 --population 16
    python bench/population.py --dataset fashion_mnist_mini --width 0.125 --population 8

The configs are a grid over loss × k_SN (SN on, as in real trials; ring8: the hypotheses-cpu toy
block's set-up — mlp, batch 64, RMSprop 5e-4, stats every 100, FID on 1,000 samples; images:
dcgan32 at ``--width``, the default study's set-up). One side runs each config through the plain
``train()`` one after another (what P single-CPU trials cost), the other runs them as one pack
through ``train_population`` (what one population trial costs), both with ``--threads`` torch
threads and everything a trial does (stats, evaluations, final evaluation; no MLflow). Prints
trials per hour for each and, as the LAST line, ``speedup: X`` (population / one-config).

``--step-mode`` sets the pack's ``step_mode`` (``auto``: the trial default; ``compiled`` pays its
torch.compile in the pack's time, as a trial would — inductor's on-disk cache makes a repeat
cheaper); ``--pack-only`` times the pack alone (no one-config side, no speedup line), to compare
step modes. The load average (1, 5, 15 min) is printed at the start and at the end: the figures
mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables.config import validate_trial  # noqa: E402
from trainables.pack.population import train_population  # noqa: E402
from trainables.train import train  # noqa: E402

LOSSES = ("ns", "ls", "wgan", "hinge", "ls0", "softhinge", "mm", "cos")
K_SN = (0.5, 1.0, 2.0, 5.0, 10.0, 0.25, 4.0, 50.0)


def configs(args) -> list[dict]:
    toy = args.dataset in ("ring8", "grid25")
    base = dict(dataset=args.dataset, regularizer="sn", optimizer="rmsprop", device="cpu",
                batch_size=64, iterations=args.iterations)
    if toy:
        base.update(arch="mlp", width=1.0, lr_d=5e-4, lr_g=5e-4, stats_every=100,
                    eval_every=args.eval_every or args.iterations, fid_samples=1000)
    else:
        base.update(arch="dcgan32", width=args.width, lr_d=2e-4, lr_g=2e-4, stats_every=50,
                    eval_every=args.eval_every or args.iterations, fid_samples=500,
                    fid_extractor="domain")
    n_loss = min(len(LOSSES), max(1, round(args.population ** 0.5)))
    n_k = -(-args.population // n_loss)
    grid = list(itertools.product(LOSSES[:n_loss], K_SN[:n_k]))[: args.population]
    return [validate_trial({**base, "loss": loss, "k_sn": k, "seed": i}, check_data=False)
            for i, (loss, k) in enumerate(grid)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ring8")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=0, help="0 = once, at the end")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--step-mode", default="auto",
                    choices=("auto", "eager", "sync_free", "compiled", "cuda_graph"),
                    help="the pack's step_mode")
    ap.add_argument("--pack-only", action="store_true",
                    help="time the population trial only (no one-config side, no speedup)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfgs = configs(args)
    print(f"load average at start: {_load()}", flush=True)
    print(f"{len(cfgs)} configs: {args.dataset}, {cfgs[0]['arch']} width {cfgs[0]['width']}, "
          f"{args.iterations} iterations, batch {cfgs[0]['batch_size']}, regularizer sn, "
          f"{args.threads} thread(s), pack step_mode {args.step_mode}", flush=True)
    # warm-up (imports, reference statistics, first-call costs) outside the timings
    warm = dict(cfgs[0], iterations=2, stats_every=1, eval_every=2)
    train(warm)
    train_population([warm, dict(warm, seed=99)])

    n = len(cfgs)
    if not args.pack_only:
        t0 = time.perf_counter()
        solo = [train(c) for c in cfgs]
        t_solo = time.perf_counter() - t0
        print(f"one-config trials: {t_solo:8.1f} s for {n} trials = "
              f"{n / t_solo * 3600:8.1f} trials/hour", flush=True)
    t0 = time.perf_counter()
    pack = train_population([dict(c, step_mode=args.step_mode) for c in cfgs])
    t_pack = time.perf_counter() - t0
    first = pack[0].step_times[0] * n if pack[0].step_times else float("nan")
    print(f"population trial : {t_pack:8.1f} s for {n} trials = "
          f"{n / t_pack * 3600:8.1f} trials/hour (first step {first:.2f} s)")
    print(f"load average at end: {_load()}")
    if args.pack_only:
        return 0
    fid = [(a.metrics.get("fid"), b.metrics.get("fid")) for a, b in zip(solo, pack)]
    rel = max((abs(a - b) / abs(a) for a, b in fid if a and b), default=float("nan"))
    print(f"statuses equal: {[a.status for a in solo] == [b.status for b in pack]}; "
          f"max relative FID difference member vs trial: {rel:.2e}")
    print(f"speedup: {t_solo / t_pack:.2f}")
    return 0


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
