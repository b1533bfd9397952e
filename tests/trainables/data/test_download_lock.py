"""Trials that start together with ``download: true`` download into one data root one at a time:
two processes, torchvision's real MNIST download logic, its archive fetch replaced by a slow local
writer (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

_TRIAL = """
import json, os, socket, struct, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})

def no_network(*a, **k):
    raise AssertionError("network access attempted")
socket.socket.connect = no_network

import torchvision.datasets.mnist as tvm
root, log, barrier = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
N = 12

def slow_fetch(url, download_root, filename=None, md5=None, **kwargs):
    # what torchvision's fetch leaves behind: the extracted IDX file, written slowly
    start = time.time()
    base = Path(download_root) / filename[:-3]
    shape = (N, 28, 28) if "images" in filename else (N,)
    blob = struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(">%dI" % len(shape), *shape)
    blob += bytes((i * 7) % 256 for i in range(N * (784 if len(shape) == 3 else 1)))
    with open(base, "wb") as fh:
        fh.write(blob[: len(blob) // 2])
        fh.flush()
        time.sleep(0.25)
        fh.write(blob[len(blob) // 2:])
    with open(log, "a") as fh:
        fh.write(json.dumps([os.getpid(), start, time.time()]) + "\\n")

tvm.download_and_extract_archive = slow_fetch
from trainables.data import datasets as D
(barrier / sys.argv[4]).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.005)
ds = D.load_images("mnist", root, download=True)
print(len(ds))
"""


@pytest.mark.slow  # two fresh Python processes importing torch
def test_two_trials_downloading_into_one_root_take_turns(tmp_path):
    root, log, barrier = tmp_path / "data", tmp_path / "fetches.jsonl", tmp_path / "barrier"
    barrier.mkdir()
    script = _TRIAL.format(repo=str(REPO))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root), str(log), str(barrier),
                               str(k)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    assert [o.strip().splitlines()[-1] for o, _ in outs] == ["12", "12"]  # both have the set
    fetches = [json.loads(line) for line in log.read_text().splitlines()]
    for i, (pid_a, s_a, e_a) in enumerate(fetches):  # never two downloaders at once
        for pid_b, s_b, e_b in fetches[i + 1:]:
            assert pid_a == pid_b or e_a <= s_b or e_b <= s_a, fetches
    assert len(fetches) == 4 and len({f[0] for f in fetches}) == 1  # the second found the files
    assert (root / ".lipstudy-download.lock").is_file()
