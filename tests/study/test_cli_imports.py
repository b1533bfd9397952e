"""The first answers import only what they use: ``lipstudy validate <study>`` and ``lipstudy
presets`` check configs, data and plans without torch, torchvision, Ray, MLflow or the training
module (their import time is most of a first answer's wall time; ``bench/cli_latency.py``
measures it): trial configs validate against ``trainables.params``, FID plans against
``trainables.metrics.fid_choice``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Packages a first answer must not import.
NOT_IMPORTED = ("torch", "torchvision", "ray", "mlflow", "trainables.train",
                "trainables.pack.population")

_SCRIPT = f"""
import contextlib, io, sys
from study.cli import main
for cmd in (["validate", "default"], ["presets"]):
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(cmd)
    loaded = [m for m in {NOT_IMPORTED!r} if m in sys.modules]
    print(" ".join(cmd), rc, ",".join(loaded) or "-")
"""


def test_validate_and_presets_leave_the_heavy_packages_unimported(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["validate default 0 -", "presets 0 -"], out.stdout
