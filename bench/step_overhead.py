"""Step-time overhead of a trial inside Ray Tune with every measurement and MLflow on, against the
bare train function.

    .venv/bin/python bench/step_overhead.py [--iterations 400] [--width 0.125]

Both runs train the same config (the default study's NS-GAN-SN, k_SN = 1, on the embedded data)
on one CPU thread (Ray gives a 1-CPU trial OMP_NUM_THREADS=1):

* bare:  ``trainables.train.train`` in this process, measuring only at the last step, no callbacks;
* trial: a one-trial study through ``study.tuner.run_study`` (Ray Tune, MLflow SQLite store, domain
  statistics and input-gradient norms every ``stats_every`` steps, metrics via ``log_batch``).

A step's time includes its measurement and logging but not the FID evaluations. Prints the median
and the mean (amortised, which includes the measurement steps) step time of each; the last line is
``ratio: <trial/bare>`` of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _bare(cfg) -> tuple[float, float, float]:
    from trainables.train import train

    t0 = time.time()
    res = train(cfg)
    return (statistics.median(res.step_times) * 1e3, statistics.fmean(res.step_times) * 1e3,
            time.time() - t0)


def _trial(study: dict) -> tuple[float, float, float]:
    import ray
    from mlflow.tracking import MlflowClient

    from study.spec import load_study
    from study.tuner import run_study

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            lines = "\n".join(f"  {k}: {v}" for k, v in study.items())
            Path("bench.yaml").write_text(f"name: bench-step-overhead\nfixed:\n{lines}\n"
                                          "resources: {cpu: 1, gpu: 0}\n")
            spec, text = load_study("bench.yaml")
            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
            t0 = time.time()
            outcome = run_study(spec, text, tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                                storage_path=f"{tmp}/results", quiet=True)
            wall = time.time() - t0
            ray.shutdown()
            client = MlflowClient(outcome.tracking.tracking_uri)
            (run,) = [r for r in client.search_runs([outcome.tracking.experiment_id])
                      if r.data.tags.get("mlflow.parentRunId")]
            m = run.data.metrics
            return m["step_time_median_ms"], m["step_time_mean_ms"], wall
        finally:
            os.chdir(here)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--stats-every", type=int, default=50)
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--repeats", type=int, default=2,
                    help="alternate bare/trial this many times; the least disturbed (min) median "
                         "of each side is compared (the box may be shared)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from trainables.config import validate_trial

    fixed = dict(dataset="fashion_mnist_mini", arch="dcgan32", width=args.width, loss="ns",
                 regularizer="sn", k_sn=1.0, lr_d=2e-4, lr_g=2e-4, iterations=args.iterations,
                 eval_every=args.iterations, fid_samples=500, fid_extractor="domain", device="cpu")
    bare_cfg = validate_trial({**fixed, "stats_every": args.iterations})
    load0 = os.getloadavg()[0]
    bare, trial = [], []
    for _ in range(args.repeats):
        bare.append(_bare(bare_cfg))
        trial.append(_trial({**fixed, "stats_every": args.stats_every}))
    load1 = os.getloadavg()[0]
    b, t = min(bare), min(trial)
    runs = lambda xs: ", ".join(f"{x[0]:.2f}" for x in xs)
    print(textwrap.dedent(f"""\
        config: NS-GAN-SN k_SN=1, dcgan32 width {args.width}, batch 64, {args.iterations} iterations,
                fashion_mnist_mini, 1 CPU thread, device cpu (torch {torch.__version__}),
                load average {load0:.2f} -> {load1:.2f}
        bare  train():   median {b[0]:7.2f} ms/step  mean {b[1]:7.2f} ms/step  (medians of {args.repeats} runs: {runs(bare)})
        trial in Ray:    median {t[0]:7.2f} ms/step  mean {t[1]:7.2f} ms/step  (stats every {args.stats_every}, MLflow on; medians: {runs(trial)})
        amortised ratio (means, includes measurement steps): {t[1] / b[1]:.3f}"""))
    print(f"ratio: {t[0] / b[0]:.3f}")


if __name__ == "__main__":
    main()
