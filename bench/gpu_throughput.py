"""Training throughput on one GPU (falls back to CPU): one-config vs population trials.

    python bench/gpu_throughput.py                 # the paper's MNIST Table 2 config, width 1
    python bench/gpu_throughput.py --width 0.125 --steps 20   # quick CPU smoke run

Config: dcgan32 (Appendix B table b), 1 channel, SN, NS loss, RMSprop 5e-5, batch 64 on the
embedded Fashion-MNIST subset (MNIST's shapes; ``--dataset mnist`` when it is on disk). Modes:
``single eager`` (``GANTrial.train_step`` + its per-step divergence check, a host sync),
``single sync-free`` (the same step, divergence read only every ``--stats-every`` steps) and
``population P eager`` for P in ``--populations`` (``trainables.population``: data resident on
the device, divergence flagged on the device). CUDA-graph capture of the population step is not
implemented yet (listed as such). Prints ms/iteration, trials per GPU-hour at ``--iterations``
iterations per trial (training only, no evaluation) and best/eager.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables.config import validate_trial  # noqa: E402
from trainables.population import Population  # noqa: E402
from trainables.train import GANTrial, resolve_device  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion_mnist_mini")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--stats-every", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--populations", default="4,16,64")
    args = ap.parse_args(argv)
    device = resolve_device("auto")
    base = dict(dataset=args.dataset, arch="dcgan32", width=args.width, regularizer="sn",
                loss="ns", optimizer="rmsprop", batch_size=64, iterations=args.iterations,
                eval_every=args.iterations, device=device.type, fid_extractor="domain")
    cfg = validate_trial(base, check_data=False)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})"
          f", dcgan32 width {args.width}, batch 64, {args.steps} timed steps", flush=True)
    rows: list[tuple[str, float, int]] = []

    def timed(step, n_members):
        for _ in range(args.warmup):
            step(0)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i + 1)
        _sync(device)
        return (time.perf_counter() - t0) / args.steps * 1e3

    trial = GANTrial(cfg, device)
    rows.append(("single eager", timed(lambda i: trial.divergence(trial.train_step()), 1), 1))
    trial = GANTrial(cfg, device)

    def sync_free(i):
        out = trial.train_step()
        if i % args.stats_every == 0:
            trial.divergence(out)
    rows.append(("single sync-free", timed(sync_free, 1), 1))
    for p in [int(x) for x in args.populations.split(",") if x]:
        try:
            pop = Population([dict(cfg, seed=s) for s in range(p)], device)
        except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
            rows.append((f"population {p} eager (out of memory)", float("nan"), p))
            continue

        def pstep(i, pop=pop):
            pop.train_step()
            if i % args.stats_every == 0:
                pop.divergences()
        rows.append((f"population {p} eager", timed(pstep, p), p))
        rows.append((f"population {p} graphed (not implemented)", float("nan"), p))
        del pop
    eager = rows[0][1]
    best = eager
    for name, ms, p in rows:
        per_hour = p * 3600e3 / (ms * args.iterations) if ms == ms else float("nan")
        print(f"{name:42s} {ms:9.2f} ms/iter  {per_hour:10.2f} trials/GPU-hour")
        if ms == ms:
            best = min(best, ms / p)
    print(f"best/eager: {eager / best:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
