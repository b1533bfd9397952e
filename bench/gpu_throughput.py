"""Training throughput on one GPU (runs on CPU too, as a smoke): how much faster than what
``gpu: auto`` ships is the best step mode?

    python bench/gpu_throughput.py --out docs/results/gpu-throughput/README.md   # on the GPU
    python bench/gpu_throughput.py --width 0.125 --iterations 5 --populations 4 \\
        --modes eager,sync_free --folder-images 200 --out /tmp/gpu.md            # CPU smoke
    bench/gpu_check.sh                          # the CUDA tests and this, in under 8 minutes

Configs: the Table 2 preset (``study/presets/lipschitz-table2.yaml``: its fixed keys, its MNIST
block at ``--width``; 1 = the paper's Appendix B table b), on MNIST when it is on disk, else on the
embedded ``fashion_mnist_mini`` (same shapes); then its CelebA block (dcgan64, 64×64) on CelebA
when on disk, else on a synthetic folder of ``--folder-images`` CelebA-sized JPEGs
(``bench/jpeg_folder.py``; 20,000 by default) read as ``folder:<path>``. Either way the images
come through the trial's own data path (``GANTrial`` → ``trainables.data.datasets.load_images``), so the
timing includes what the real input pipeline costs; the output says which data ran.

Rows, per config (members: the Table 2 grid's (loss, k_SN) points interleaved, ``table2_block``):

* ``N eager trials sharing the GPU`` — the baseline, what ``gpu: auto`` ships: ``1 /
  study.cluster.AUTO_GPU_SHARE`` one-config eager trials on one device at once, each in its own
  process (as Ray runs them), timed together from a common start; ms per trial-iteration =
  wall time / (N × iterations).
* ``single <mode>`` for each step mode (``trainables.train``), one trial alone (for
  information), and ``population P <mode>`` (``trainables.pack.population.Population``) for each P in
  ``--populations``. Modes run in the order eager, sync_free, cuda_graph, compiled (compilation
  is the slowest to set up, so a spent time budget cuts it first).

Every row is wrapped: a mode the pack or device refuses, runs out of memory, raises anything, or
overruns its time limit (``--row-limit-s``, and the rest of ``--budget-s``) becomes a note row and
the sweep goes on. Timed: ``--iterations`` steps after ``--warmup`` untimed ones (compilation and
the CUDA graph's capture happen there), synchronised at both ends; every ``--stats-every`` steps
what ``train()`` does there (divergence flags, each member's ``GANTrial.measure``; ``--no-stats``:
flags only). No FID evaluation in the timing. A diverged member is noted and timed on (a pack
keeps computing it).

Prints ms per iteration and trials per GPU-hour per row, the seed-000 GPU-hours of the paper
presets (``bench/gpu_presets.py``) and, as the LAST line, ``ratio: X`` = baseline ms per
trial-iteration / best row's, for the MNIST config (``n/a`` with the reason when the baseline row
failed). ``--out`` writes the same as markdown and ``figures.json`` beside it (read by
``study/cost.py``; holds the GPU model). ``--fail-mode MODE`` makes every row of that mode raise,
to check that a failing mode leaves the rest of the run intact.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import bench_rows as rows_lib  # noqa: E402
from bench_rows import Result, Row, run_row  # noqa: E402
from gpu_report import FIGURES_NAME, summary, write_figures, write_markdown  # noqa: E402
from trainables.data import datasets as data_lib  # noqa: E402
from trainables.config import validate_trial  # noqa: E402
from trainables.train import GANTrial, resolve_device, resolve_step_mode  # noqa: E402

MODES = ("eager", "sync_free", "cuda_graph", "compiled")
TABLE2 = "lipschitz-table2"


# ------------------------------------------------------------------------------ configs


def table2_block(kind: str) -> tuple[dict, list[tuple[str, float]]]:
    """The Table 2 preset's fixed keys with its ``kind`` block's arch (``mnist`` / ``celeba``),
    and that block's (loss, k_SN) points interleaved loss by loss — ns 0.2, ls 0.2, …, exp 0.2,
    ns 0.25, … — so that a pack of any size mixes the losses as the full grid does."""
    from study.spec import PRESETS_DIR, parse_study_unchecked

    spec = parse_study_unchecked((PRESETS_DIR / f"{TABLE2}.yaml").read_text())
    block = next(b for b in spec.grid_blocks if b["dataset"] == [kind])
    mix = [(loss, float(k)) for k in block["k_sn"] for loss in block["loss"]]
    return {**spec.fixed, "arch": block["arch"][0]}, mix


def trial_config(fixed: dict, dataset: str, device: torch.device, args) -> dict:
    """``fixed`` on ``dataset`` at ``--width``, trained for ``--trial-iterations``; FID never runs
    inside the timing (the extractor: ``domain`` on the embedded data, else ``auto``)."""
    cfg = dict(fixed, dataset=dataset, width=args.width, iterations=args.trial_iterations,
               stats_every=args.stats_every, eval_every=args.trial_iterations,
               fid_extractor="domain" if dataset == "fashion_mnist_mini" else "auto",
               device=device.type, data_root=args.data_root, download=False)
    return validate_trial(cfg, check_data=False)


def members(cfg: dict, mix: list[tuple[str, float]], n: int) -> list[dict]:
    """``n`` trial configs: the mix's points in order, seeds 0, 1, … once it is used up."""
    return [dict(cfg, loss=mix[i % len(mix)][0], k_sn=mix[i % len(mix)][1], seed=i // len(mix))
            for i in range(n)]


def on_disk(dataset: str, root: str | None, resolution: int) -> bool:
    try:
        data_lib.check_dataset(dataset, root, resolution)
    except data_lib.DatasetError:
        return False
    return True


def datasets(args) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(label, preset block, dataset) per config, and the notes on what stands in for what."""
    out, notes = [], []
    if on_disk("mnist", args.data_root, 32):
        out.append(("MNIST Table 2", "mnist", "mnist"))
    else:
        out.append(("MNIST Table 2", "mnist", "fashion_mnist_mini"))
        notes.append("MNIST is not on disk: the MNIST config runs on the embedded "
                     "fashion_mnist_mini (same shapes: 1×32×32)")
    if args.no_celeba:
        return out, notes
    if on_disk("celeba", args.data_root, 64):
        out.append(("CelebA 64x64", "celeba", "celeba"))
        return out, notes
    from jpeg_folder import CELEBA_SIZE, make_jpeg_folder

    t0 = time.perf_counter()
    folder, made = make_jpeg_folder(args.folder_root, args.folder_images)
    out.append(("CelebA 64x64", "celeba", f"folder:{folder}"))
    notes.append(f"CelebA is not on disk: the CelebA config runs on a synthetic folder of "
                 f"{args.folder_images:,} {CELEBA_SIZE[0]}×{CELEBA_SIZE[1]} JPEGs ({folder}, "
                 f"{'made' if made else 'reused'} in {time.perf_counter() - t0:.1f} s) through "
                 "the folder: dataset")
    return out, notes


def prepare_data(cfg: dict) -> str:
    """Load the config's training images once, as a trial does (a decode cache, when the data
    path keeps one, is built here and not inside a timed row); one line on what it took."""
    t0 = time.perf_counter()
    data = data_lib.load_images(cfg["dataset"], cfg["data_root"], cfg["resolution"], "train",
                                False)
    n = len(data)
    kind = type(data).__name__
    del data
    return f"data: {n:,} training images ({kind}) ready in {time.perf_counter() - t0:.1f} s"


# --------------------------------------------------------------------------------- rows


def _trial_loop(trial: GANTrial, mode: str, stats: bool, diverged: list):
    """(step, read) for one trial as ``train()`` drives it in ``mode``: eager checks divergence
    after every step (one host sync), the other modes read the device flag at stats steps."""
    def step():
        out = trial.train_step()
        if mode == "eager" and not diverged and trial.divergence(out) is not None:
            diverged.append(trial.step)
        return out

    def read(out):
        if mode != "eager" and not diverged and trial.flagged_divergence() is not None:
            diverged.append(trial.step)
        if stats:
            trial.measure(out)
    return step, read


def _diverged_note(diverged: list) -> str:
    return f"diverged at step {diverged[0]} (timed on)" if diverged else ""


def single(cfg: dict, mode: str, device: torch.device, args) -> tuple[float, str]:
    resolved = resolve_step_mode(dict(cfg, step_mode=mode), device)
    if resolved != mode:
        raise rows_lib.Refused(f"not on {device.type}: runs as {resolved}")
    trial = GANTrial(cfg, device, step_mode=mode)
    diverged: list = []
    step, read = _trial_loop(trial, mode, args.stats, diverged)
    warmup = max(args.warmup, 6 if mode == "cuda_graph" else 3 if mode == "compiled" else 1)
    t0, t1 = rows_lib.timed(step, args.stats_every, read, warmup, args.iterations, device)
    return (t1 - t0) / args.iterations * 1e3, _diverged_note(diverged)


def population(configs: list[dict], mode: str, device: torch.device, args) -> tuple[float, str]:
    from trainables.pack.population import Population

    try:
        pop = Population([dict(c, step_mode=mode) for c in configs], device)
    except ValueError as err:  # the pack's (or the device's) one-line refusal
        raise rows_lib.Refused(str(err)) from None
    got = getattr(pop, "step_mode", mode)
    if got != mode:
        raise rows_lib.Refused(f"the pack runs it as {got}")
    p = len(configs)

    def read(out):
        pop.divergences()  # the flags, read as train_population reads them
        if args.stats:  # as train_population: each member's own measure on its slice
            for i in range(p):
                pop.sync(i).measure(pop.member_out(out, i))
    warmup = max(args.warmup, 6 if mode in ("cuda_graph", "compiled") else 1)
    t0, t1 = rows_lib.timed(pop.train_step, args.stats_every, read, warmup, args.iterations,
                            device)
    n_div = len(pop.divergences())
    return ((t1 - t0) / args.iterations * 1e3,
            f"{n_div} of {p} members diverged (timed on)" if n_div else "")


def _worker(cfg: dict, device: str, args, barrier, queue) -> None:
    """One eager trial of the baseline, in its own process: warm up, wait for the others, time."""
    try:
        if device == "cpu":
            torch.set_num_threads(1)
        dev = torch.device(device)
        trial = GANTrial(cfg, dev, step_mode="eager")
        diverged: list = []
        step, read = _trial_loop(trial, "eager", args.stats, diverged)
        t0, t1 = rows_lib.timed(step, args.stats_every, read, max(1, args.warmup),
                                args.iterations, dev, barrier=barrier)
        queue.put(("ok", t0, t1, _diverged_note(diverged)))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which notes it
        barrier.abort()
        queue.put(("error", rows_lib.one_line(err)))


def _collect(procs, queue) -> list[tuple]:
    """One result per process; a process that died without one (killed, crashed) is an error."""
    import queue as queue_lib

    got: list[tuple] = []
    while len(got) < len(procs):
        try:
            got.append(queue.get(timeout=1.0))
        except queue_lib.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a trial process died (exit code {dead[0]})") from None
    return got


def shared_gpu(configs: list[dict], device: torch.device, args) -> tuple[float, str]:
    """The gpu: auto baseline: one process per config, timed from a common start."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(len(configs)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(c, str(device), args, barrier, queue), daemon=True)
             for c in configs]
    for proc in procs:
        proc.start()
    try:
        got = _collect(procs, queue)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    errors = [g[1] for g in got if g[0] == "error"]
    if errors:
        raise RuntimeError(errors[0])
    wall = max(g[2] for g in got) - min(g[1] for g in got)
    notes = sorted({g[3] for g in got if g[3]})
    return wall / args.iterations * 1e3, "; ".join(notes)


def sweep(cfg: dict, mix, device: torch.device, args, deadline: float) -> list[Row]:
    n = rows_lib.auto_trials_per_gpu()
    specs = [(f"{n} eager trials sharing the {rows_lib.UNIT} (gpu: auto)", n, "eager",
              lambda: shared_gpu(members(cfg, mix, n), device, args))]
    for mode in MODES:
        if mode not in args.modes:
            continue
        specs.append((f"single {mode}", 1, mode, lambda m=mode: single(cfg, m, device, args)))
        specs += [(f"population {p} {mode}", p, mode,
                   lambda m=mode, p=p: population(members(cfg, mix, p), m, device, args))
                  for p in args.populations]
    rows = []
    for name, n_members, mode, fn in specs:
        rows.append(run_row(name, n_members, mode, fn, device, args, deadline))
        print(rows_lib.line(rows[-1], args.trial_iterations), flush=True)
    return rows


# -------------------------------------------------------------------------------- main


def parse(argv):
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--iterations", type=int, default=200, help="timed iterations per row")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--stats-every", type=int, default=100)
    ap.add_argument("--trial-iterations", type=int, default=100_000,
                    help="iterations per trial for trials/GPU-hour (Table 2: 1e5)")
    ap.add_argument("--populations", default="4,16,64")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="step modes to run, single and pack (comma-separated)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--no-celeba", action="store_true", help="skip the CelebA config")
    ap.add_argument("--folder-images", type=int, default=20_000,
                    help="JPEGs in the synthetic folder that stands in for CelebA when it is "
                         "not on disk")
    ap.add_argument("--folder-root", default=str(Path(tempfile.gettempdir()) / "lipstudy-bench"),
                    help="where the synthetic folder is made (once; reused)")
    ap.add_argument("--no-stats", dest="stats", action="store_false",
                    help="do not measure at stats steps (only read the divergence flags)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget-s", type=float, default=float("inf"),
                    help="seconds for all rows; rows left when it is spent are noted as skipped")
    ap.add_argument("--row-limit-s", type=float, default=300.0,
                    help="seconds one row may take (set-up, warm-up, timing) before it is noted")
    ap.add_argument("--fail-mode", default=None, choices=MODES,
                    help="every row of this mode raises (checks that the sweep survives it)")
    ap.add_argument("--out", default=None, help="write the results as markdown here")
    args = ap.parse_args(argv)
    args.populations = [int(x) for x in args.populations.split(",") if x]
    args.modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from {', '.join(MODES)}")
    if args.iterations < 1 or args.stats_every < 1 or any(p < 1 for p in args.populations):
        ap.error("--iterations, --stats-every and --populations must be positive")
    return args


def environment(device: torch.device) -> list[str]:
    import platform

    lines = [f"torch {torch.__version__}, CUDA {torch.version.cuda or '-'}, "
             f"cuDNN {torch.backends.cudnn.version() or '-'}, Python {platform.python_version()}, "
             f"TF32 for convolutions {torch.backends.cudnn.allow_tf32}, for matmuls "
             f"{torch.backends.cuda.matmul.allow_tf32}"]
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        lines.insert(0, f"GPU: {prop.name} ({prop.total_memory / 2**30:.0f} GiB, compute "
                        f"capability {prop.major}.{prop.minor})")
    else:
        lines.insert(0, f"device: CPU ({platform.processor() or platform.machine()}, "
                        f"{torch.get_num_threads()} torch threads) — a smoke run, not a GPU "
                        "figure")
    return lines


def measure(args, device: torch.device, configs) -> list[Result]:
    """Every config's rows, each config within its share of the time budget (the first, MNIST,
    gets 60 % of what is left when another follows)."""
    end = time.monotonic() + args.budget_s
    results = []
    for i, (label, kind, dataset) in enumerate(configs):
        fixed, mix = table2_block(kind)
        cfg = trial_config(fixed, dataset, device, args)
        share = 0.6 if i + 1 < len(configs) else 1.0
        deadline = time.monotonic() + (end - time.monotonic()) * share
        print(f"\n{label}: {dataset}, {cfg['arch']} width {args.width:g}, batch "
              f"{cfg['batch_size']}, SN, {cfg['optimizer']} {cfg['lr_d']:g}; members "
              f"{', '.join(f'{lo} {k:g}' for lo, k in mix[:6])}, …; {args.iterations} timed "
              f"iterations after {args.warmup} warm-up", flush=True)
        try:
            print(prepare_data(cfg), flush=True)
        except Exception as err:  # noqa: BLE001 - the rows say it again, one by one
            print(f"data: failed: {rows_lib.one_line(err)}", flush=True)
        results.append(Result(label, cfg, sweep(cfg, mix, device, args, deadline)))
    return results


def hours_of(results: list[Result], args) -> list[tuple]:
    from gpu_presets import preset_hours

    measured = {(r.arch, data_lib.channels(r.dataset)): r.best.ms_per_trial_iter
                for r in results if r.best is not None}
    ref = ("dcgan32", 1)
    if args.width != 1.0 or ref not in measured:
        return []
    return preset_hours(measured, ref)


def main(argv=None) -> int:
    args = parse(argv)
    device = resolve_device(args.device)
    rows_lib.UNIT = "GPU" if device.type == "cuda" else "CPU"
    env = environment(device)
    print("\n".join(env))
    configs, notes = datasets(args)
    print("\n".join(notes))
    results = measure(args, device, configs)
    print()
    print("\n".join(summary(results)))
    hours = hours_of(results, args)
    if not hours:
        print(f"(preset {rows_lib.UNIT}-hours only at --width 1 with the MNIST config timed)")
    for name, n, h, note in hours:
        print(f"  {name:24s} {n:4d} configs  {h:8.2f} {rows_lib.UNIT}-hours"
              + (f"  ({note})" if note else ""))
    if args.out:
        write_markdown(Path(args.out), env, notes, results, hours, args)
        figures = Path(args.out).with_name(FIGURES_NAME)
        write_figures(figures, device, env, results)
        print(f"\nwrote {args.out} and {figures} (read by study/cost.py)")
    print(results[0].ratio_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
