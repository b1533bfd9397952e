"""bench/gpu_throughput.py answers "how much faster than what ``gpu: auto`` ships?" and always
finishes with its ``ratio:`` line: every row is wrapped (a mode that raises, overruns or is refused
becomes a note), the baseline is ``gpu: auto``'s trials sharing one device in their own processes,
and pack members mix Table 2's losses and k_SN values. CPU smoke runs at a tiny width."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.spec import PRESETS_DIR, parse_study_unchecked

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
TINY = ["--width", "0.125", "--iterations", "1", "--warmup", "1", "--stats-every", "1",
        "--populations", "2"]
RATIO = re.compile(r"^ratio: \d+\.\d\d$")


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_rows
        import gpu_throughput
    finally:
        sys.path.pop(0)
    return gpu_throughput, bench_rows


def test_a_mode_that_raises_is_a_note_and_the_run_ends_with_ratio(bench, monkeypatch, capsys,
                                                                   tmp_path):
    """Any exception in a row, not only a refusal or out of memory, is that row's note."""
    gpu_throughput, _ = bench
    import trainables.pack.population

    class Broken:
        def __init__(self, *a, **k):
            raise RuntimeError("boom in the pack\nsecond line")

    monkeypatch.setattr(trainables.pack.population, "Population", Broken)
    assert gpu_throughput.main([*TINY, "--modes", "eager", "--no-celeba", "--no-stats",
                                "--out", str(tmp_path / "README.md")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert RATIO.match(out[-1]), out[-1]
    pack = next(line for line in out if line.startswith("population 2 eager"))
    assert pack.endswith("failed: RuntimeError: boom in the pack")
    baseline = next(line for line in out if line.startswith("4 eager trials sharing the CPU"))
    assert "ms/iter" in baseline and "failed" not in baseline
    assert (tmp_path / "README.md").read_text().strip().splitlines()[-1] == out[-1]


@pytest.mark.slow
@pytest.mark.scenario
def test_cpu_smoke_with_a_forced_failure_completes(tmp_path):
    """The command line: --fail-mode makes every row of a mode raise; both configs (the CelebA
    one on a synthetic JPEG folder through the folder: dataset) still run, ``ratio:`` is last,
    and figures.json says CPU (never a GPU price)."""
    out_md = tmp_path / "r" / "README.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_throughput.py"), *TINY, "--modes", "eager,sync_free",
         "--fail-mode", "sync_free", "--folder-images", "40", "--folder-root", str(tmp_path),
         "--out", str(out_md)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert RATIO.match(lines[-1]), lines[-1]
    forced = [line for line in lines if "failed: ForcedFailure: forced failure (--fail-mode "
              "sync_free)" in line]
    assert [line.split()[0:3] for line in forced] == [["single", "sync_free", "-"],
                                                      ["population", "2", "sync_free"]] * 2
    assert any("synthetic folder of 40 178×218 JPEGs" in line for line in lines)
    assert any(line.startswith("CelebA 64x64: folder:") for line in lines)
    fig = json.loads((out_md.parent / "figures.json").read_text())
    assert fig["device_type"] == "cpu" and fig["gpu_model"] is None
    assert [s["arch"] for s in fig["shapes"]] == ["dcgan32", "dcgan64"]
    assert out_md.read_text().strip().splitlines()[-1] == lines[-1]


def test_pack_members_mix_table2s_losses_and_k_sn(bench):
    gpu_throughput, _ = bench
    spec = parse_study_unchecked((PRESETS_DIR / "lipschitz-table2.yaml").read_text())
    block = next(b for b in spec.grid_blocks if b["dataset"] == ["mnist"])
    fixed, mix = gpu_throughput.table2_block("mnist")
    assert fixed["arch"] == "dcgan32" and fixed["lr_d"] == spec.fixed["lr_d"]
    assert sorted(mix) == sorted((lo, float(k)) for lo in block["loss"] for k in block["k_sn"])
    cfg = {"dataset": "fashion_mnist_mini"}
    four = gpu_throughput.members(cfg, mix, 4)
    assert len({m["loss"] for m in four}) == 4  # not four copies of one loss
    every = gpu_throughput.members(cfg, mix, 2 * len(mix))
    assert {(m["loss"], m["k_sn"]) for m in every} == set(mix)
    assert [m["seed"] for m in every] == [0] * len(mix) + [1] * len(mix)


def _args(**kw):
    base = dict(row_limit_s=300.0, fail_mode=None)
    return argparse.Namespace(**{**base, **kw})


def test_a_row_over_its_time_limit_or_past_the_budget_is_a_note(bench):
    _, rows = bench
    import torch

    cpu = torch.device("cpu")

    def slow():
        time.sleep(30)
        return 1.0, ""
    t0 = time.monotonic()
    row = rows.run_row("single compiled", 1, "compiled", slow, cpu, _args(row_limit_s=1.0),
                       deadline=time.monotonic() + 100)
    assert time.monotonic() - t0 < 10
    assert row.ms is None and row.note == "failed: RowTimeout: over its time limit (1 s)"
    skipped = rows.run_row("single eager", 1, "eager", lambda: (1.0, ""), cpu, _args(),
                           deadline=time.monotonic() + 1)
    assert skipped.ms is None and skipped.note.startswith("skipped: the time budget")
    ok = rows.run_row("single eager", 1, "eager", lambda: (2.0, "x"), cpu, _args(),
                      deadline=time.monotonic() + 100)
    assert (ok.ms, ok.note) == (2.0, "x")


def test_the_cuda_only_plugin_keeps_the_tests_that_need_cuda(tmp_path):
    """bench/gpu_check.sh's selection: tests with a skipif whose reason names CUDA (on the test
    or the module), nothing else."""
    (tmp_path / "test_a.py").write_text(
        "import pytest\n"
        "@pytest.mark.skipif(True, reason='needs CUDA')\n"
        "def test_gpu(): pass\n"
        "@pytest.mark.skipif(True, reason='needs chromium')\n"
        "def test_browser(): pass\n"
        "def test_cpu(): pass\n")
    (tmp_path / "test_b.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.skipif(True, reason='needs a CUDA device')\n"
        "def test_one(): pass\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pytest_cuda_only", "-p", "no:cacheprovider",
         "--collect-only", "-q", "-c", "/dev/null", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(BENCH)})
    listed = sorted(line.split("::")[-1] for line in proc.stdout.splitlines() if "::" in line)
    assert listed == ["test_gpu", "test_one"], proc.stdout + proc.stderr


def test_a_baseline_process_that_dies_is_an_error_not_a_hang(bench):
    import queue

    gpu_throughput, _ = bench

    class Killed:
        exitcode = -9  # SIGKILL (e.g. the kernel's OOM killer) before it reported

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"a trial process died \(exit code -9\)"):
        gpu_throughput._collect([Killed()], queue.Queue())
    assert time.monotonic() - t0 < 10
