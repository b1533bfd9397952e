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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--stats-every", type=int, default=50)
    ap.add_argument("--width", type=float, default=0.125)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from trainables.config import validate_trial
    from trainables.train import train

    fixed = dict(dataset="fashion_mnist_mini", arch="dcgan32", width=args.width, loss="ns",
                 regularizer="sn", k_sn=1.0, lr_d=2e-4, lr_g=2e-4, iterations=args.iterations,
                 eval_every=args.iterations, fid_samples=500, fid_extractor="domain", device="cpu")
    bare_cfg = validate_trial({**fixed, "stats_every": args.iterations})
    t0 = time.time()
    bare = train(bare_cfg)
    bare_wall = time.time() - t0
    bare_med = statistics.median(bare.step_times) * 1e3
    bare_mean = statistics.fmean(bare.step_times) * 1e3

    from mlflow.tracking import MlflowClient

    from study.spec import load_study
    from study.tuner import run_study

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        study = {**fixed, "stats_every": args.stats_every}
        lines = "\n".join(f"  {k}: {v}" for k, v in study.items())
        Path("bench.yaml").write_text(f"name: bench-step-overhead\nfixed:\n{lines}\n"
                                      "resources: {cpu: 1, gpu: 0}\n")
        spec, text = load_study("bench.yaml")
        import ray

        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        t0 = time.time()
        outcome = run_study(spec, text, tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                            storage_path=f"{tmp}/results", quiet=True)
        trial_wall = time.time() - t0
        ray.shutdown()
        client = MlflowClient(outcome.tracking.tracking_uri)
        (run,) = [r for r in client.search_runs([outcome.tracking.experiment_id])
                  if r.data.tags.get("mlflow.parentRunId")]
        trial_med = run.data.metrics["step_time_median_ms"]
        trial_mean = run.data.metrics["step_time_mean_ms"]
        os.chdir("/")

    print(textwrap.dedent(f"""\
        config: NS-GAN-SN k_SN=1, dcgan32 width {args.width}, batch 64, {args.iterations} iterations,
                fashion_mnist_mini, 1 CPU thread, device cpu ({torch.__version__})
        bare  train():   median {bare_med:7.2f} ms/step  mean {bare_mean:7.2f} ms/step  (measured once, wall {bare_wall:.1f}s)
        trial in Ray:    median {trial_med:7.2f} ms/step  mean {trial_mean:7.2f} ms/step  (stats every {args.stats_every}, MLflow on; study wall {trial_wall:.1f}s)
        amortised ratio (means, includes measurement steps): {trial_mean / bare_mean:.3f}"""))
    print(f"ratio: {trial_med / bare_med:.3f}")


if __name__ == "__main__":
    main()
