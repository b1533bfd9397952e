"""What measuring and logging cost per training step, against the bare step.

    .venv/bin/python bench/stats_logging_overhead.py [--rounds 15] [--width 0.125]
                                                     [--tracking-uri URI]

The default study's trial (NS-GAN-SN, k_SN = 1, dcgan32 width 1/8, batch 64, the embedded
Fashion-MNIST subset) on one CPU thread. Interleaved in every round (so a load change on the machine
hits every quantity alike), each timed separately:

* ``step``      — one ``GANTrial.train_step`` + the divergence check (the hot path);
* ``measure``   — ``GANTrial.measure``: everything logged at a stats step (Ω/Ψ, the input-gradient
  norm distribution, the finite-difference probe at 4 δ, Ω∪ and bound, σ of every SN layer);
* ``measure_old`` — the statistics before the probe existed (Ω/Ψ + two input-gradient passes);
* ``log_sync``  — one ``MlflowTrialLogger.log_metrics`` of that step's ≈ 60 metrics (one
  ``log_batch``) to a fresh SQLite store (or ``--tracking-uri``);
* ``log_async`` — the same with ``synchronous=False`` (call only; the queue is flushed after the
  round, untimed) — what the trial thread waits for.

Prints medians (and IQR) in ms, the per-step overhead at ``stats_every`` 50 (the default study's)
and 1, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10, help="timed train steps per round")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--tracking-uri")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from mlflow.tracking import MlflowClient

    from trainables.config import validate_trial
    from trainables.tracking.mlflow_logger import MlflowTrialLogger
    from trainables.metrics.stats import domain_stats, input_grad_norms
    from trainables.train import GANTrial

    cfg = validate_trial(dict(dataset="fashion_mnist_mini", arch="dcgan32", width=args.width,
                              loss="ns", regularizer="sn", k_sn=1.0, lr_d=2e-4, lr_g=2e-4,
                              iterations=100_000, stats_every=50, eval_every=100_000,
                              fid_samples=1000, fid_extractor="domain", device="cpu"))
    trial = GANTrial(cfg, "cpu")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        uri = args.tracking_uri or f"sqlite:///{tmp}/mlflow.db"
        client = MlflowClient(uri)
        exp = client.create_experiment(f"bench-{time.time():.0f}",
                                       artifact_location=Path(tmp, "art").as_uri()
                                       if "://" not in uri or uri.startswith("sqlite") else None)
        sync = MlflowTrialLogger(uri, exp, name="sync", params=cfg)
        asyn = MlflowTrialLogger(uri, exp, name="async", params=cfg, synchronous=False)
        for _ in range(5):  # warm-up
            out = trial.train_step()
            trial.divergence(out)
        m = trial.measure(out)
        sync.log_metrics(0, m)
        asyn.log_metrics(0, m)
        asyn.flush()
        t: dict[str, list[float]] = {k: [] for k in ("step", "measure", "measure_old",
                                                       "log_sync", "log_async")}
        step = 1
        for _ in range(args.rounds):
            for _ in range(args.steps):
                t0 = time.perf_counter()
                out = trial.train_step()
                trial.divergence(out)
                t["step"].append(time.perf_counter() - t0)
            for _ in range(3):
                t0 = time.perf_counter()
                m = trial.measure(out)
                t["measure"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                domain_stats(out["f_real"], out["f_fake"], trial.loss)
                input_grad_norms(trial.D, out["real"]).mean().item()
                input_grad_norms(trial.D, out["fake"]).mean().item()
                t["measure_old"].append(time.perf_counter() - t0)
                step += 1
                t0 = time.perf_counter()
                sync.log_metrics(step, m)
                t["log_sync"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                asyn.log_metrics(step, m)
                t["log_async"].append(time.perf_counter() - t0)
            asyn.flush()
        n_metrics = len(m)
        sync.finish()
        asyn.finish()
    load1 = os.getloadavg()

    def med(k):
        return statistics.median(t[k]) * 1e3

    def iqr(k):
        q = statistics.quantiles(t[k], n=4)
        return f"[{q[0] * 1e3:.2f}, {q[2] * 1e3:.2f}]"

    print(f"config: default-study trial (NS-SN k_SN=1, dcgan32 width {args.width}, batch 64), "
          f"1 CPU thread, torch {torch.__version__}; {args.rounds} rounds; store {uri.split(':')[0]}")
    print(f"load average before {load0[0]:.2f} / after {load1[0]:.2f} (2 cores)")
    for k in t:
        print(f"  {k:12s} median {med(k):8.2f} ms  IQR {iqr(k):>20s}  n={len(t[k])}")
    print(f"  metrics per stats step: {n_metrics} (one log_batch)")
    s = med("step")
    for every in (50, 1):
        per = (med("measure") + med("log_sync")) / every
        per_a = (med("measure") + med("log_async")) / every
        print(f"stats_every={every:3d}: measuring+logging adds {per:6.2f} ms/step sync "
              f"({100 * per / s:5.1f} % of a {s:.1f} ms step), {per_a:6.2f} ms/step async "
              f"({100 * per_a / s:5.1f} %)")
    print(f"logging alone (sync) per stats step: {med('log_sync'):.2f} ms = "
          f"{100 * med('log_sync') / s:.1f} % of one step; not logging: 0")


if __name__ == "__main__":
    main()
