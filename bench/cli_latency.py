"""How long the first answers of the ``lipstudy`` command take: wall time of a fresh process, as a
user waits for it.

    python bench/cli_latency.py                 # 5 repeats of each command
    python bench/cli_latency.py --repeats 9

Runs, from a temporary directory (so no study directory or store of the checkout is seen):

* ``lipstudy --help``;
* ``lipstudy validate default`` (the default preset: its trial configs, data and FID plan);
* ``lipstudy presets`` (every preset, checked for its data on this machine);
* ``lipstudy resume <a directory that holds no study>`` (answers with one error line, exit 2).

Each command runs ``--repeats`` times after one untimed warm-up (the OS file cache; it also
lists the imports, with ``-X importtime``), in turns
(a shared machine's load drifts; taking turns spreads it over all commands). Prints per command
the median, min and max wall seconds, the exit status and the heavy packages (Ray, torch,
MLflow) the command imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("ray", "torch", "mlflow")


def commands(empty_dir: Path) -> dict[str, list[str]]:
    return {"--help": ["--help"], "validate default": ["validate", "default"],
            "presets": ["presets"], "resume <not a study>": ["resume", str(empty_dir)]}


def run_once(args: list[str], cwd: Path, trace: bool = False) -> tuple[float, set[str], int]:
    """Wall seconds of ``python -m study.cli ARGS`` (what the ``lipstudy`` script runs), its exit
    status and, with ``trace`` (``-X importtime``, not timed), the heavy packages it imported."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, *(["-X", "importtime"] if trace else []), "-m",
                          "study.cli", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    wall = time.perf_counter() - t0
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in out.stderr.splitlines() if line.startswith("import time:")}
    return wall, imported & set(HEAVY), out.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "not-a-study").mkdir()
        cmds = commands(cwd / "not-a-study")
        times: dict[str, list[float]] = {name: [] for name in cmds}
        heavy: dict[str, set[str]] = {}
        status: dict[str, int] = {}
        for name, cmd in cmds.items():  # warm-up, untimed
            _, heavy[name], status[name] = run_once(cmd, cwd, trace=True)
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                times[name].append(run_once(cmd, cwd)[0])
    print(f"lipstudy first answers, wall seconds over {args.repeats} runs "
          f"(python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f})")
    print(f"{'command':24s} {'median':>7s} {'min':>7s} {'max':>7s}  exit  heavy imports")
    for name, ts in times.items():
        print(f"{name:24s} {statistics.median(ts):7.2f} {min(ts):7.2f} {max(ts):7.2f}  "
              f"{status[name]:4d}  {', '.join(sorted(heavy[name])) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
