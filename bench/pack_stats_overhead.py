"""What one stats step of a pack costs, against one pack training step.

    .venv/bin/python bench/pack_stats_overhead.py [--packs 8 64] [--rounds 5] [--width 0.125]
                                                  [--arch dcgan32|mlp] [--device cpu]

A pack of P dcgan32 (width 1/8, batch 64, the embedded Fashion-MNIST subset) or ring8 mlp
NS/WGAN/LS/hinge SN members, on one CPU thread by default. Interleaved in every round, each timed separately:

* ``step``  — one ``Population.train_step`` (the whole pack);
* ``stats`` — the pack's stats step: ``Population.measure`` where it exists (all members at once,
  one host read), else every member's own ``GANTrial.measure`` after ``Population.sync`` (what
  ``train_population`` did before), so the same script times an older checkout too
  (``PYTHONPATH=<checkout> python bench/pack_stats_overhead.py``).

Prints medians in ms, per member, and the stats step as a share of a step at ``stats_every`` 1
and 50.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packs", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--arch", choices=("dcgan32", "mlp"), default="dcgan32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import trainables
    from trainables.config import validate_trial
    from trainables.pack.population import Population

    if args.arch == "dcgan32":
        base = dict(dataset="fashion_mnist_mini", arch="dcgan32", width=args.width,
                    fid_extractor="domain", fid_samples=100)
    else:
        base = dict(dataset="ring8", arch="mlp")
    base.update(regularizer="sn", batch_size=64, lr_d=2e-4, lr_g=2e-4, iterations=1000,
                stats_every=50, eval_every=1000, device=args.device)
    losses = ("ns", "wgan", "ls", "hinge")
    print(f"code: {Path(trainables.__file__).parent.parent}; torch {torch.__version__}, "
          f"{args.threads} thread(s), device {args.device}, {args.arch}"
          + (f" width {args.width}" if args.arch == "dcgan32" else "") + ", batch 64, SN")
    for P in args.packs:
        cfgs = [validate_trial({**base, "loss": losses[i % 4], "k_sn": 1.0 + i % 3, "seed": i},
                               check_data=False) for i in range(P)]
        pop = Population(cfgs)
        live = list(range(P))
        batched = hasattr(pop, "measure")

        def stats(out):
            if batched:
                return pop.measure(out, live)
            return [pop.sync(i).measure(pop.member_out(out, i)) for i in live]

        out = pop.train_step()
        stats(out)  # warm-up (first calls check batched ops' bits once per shape)
        t: dict[str, list[float]] = {"step": [], "stats": []}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            out = pop.train_step()
            t["step"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            stats(out)
            t["stats"].append(time.perf_counter() - t0)
        step, st = (statistics.median(t[k]) * 1e3 for k in ("step", "stats"))
        print(f"P={P:3d} ({'batched' if batched else 'per member'}): step {step:9.1f} ms, "
              f"stats step {st:9.1f} ms ({st / P:6.2f} ms/member); stats as share of a step: "
              f"{100 * st / step:6.1f} % at stats_every=1, {100 * st / (50 * step):5.2f} % at 50"
              f"  (n={args.rounds}, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
