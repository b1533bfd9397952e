"""Training throughput on one GPU (runs on CPU too, as a smoke): every step mode, one-config and
population trials (issue #12 item 4).

    python bench/gpu_throughput.py --out docs/results/gpu-throughput/README.md   # on the GPU
    python bench/gpu_throughput.py --width 0.125 --iterations 5 --populations 4 \\
        --modes eager,sync_free --out /tmp/gpu.md                                 # CPU smoke

Config: the paper's MNIST Table 2 set-up (Appendix B, table b; ``study/presets/lipschitz-table2``)
at ``--width`` (1 = the paper): dcgan32, 1 channel, SN (k_SN 1), NS loss, RMSprop lr 5e-5, batch
64, n_dis 1. On MNIST when it is on disk, else on the embedded ``fashion_mnist_mini`` (same shapes;
the output says which). Then the CelebA 64×64 config (dcgan64, 3 channels) when CelebA is on disk.

Modes (what a trial's ``step_mode`` runs, ``trainables.train``): ``single eager`` (the host checks
divergence after every step), ``single sync_free`` / ``single compiled`` / ``single cuda_graph``
(divergence read every ``--stats-every`` steps, as ``train()`` reads it), and ``population P
<mode>`` for P in ``--populations`` via ``trainables.population.Population`` (members differ in
seed and k_SN, as a Table 2 pack does) with ``step_mode`` eager and each captured mode: a mode the
pack (or the device) refuses is listed with its one-line reason. Timed: ``--iterations`` training
steps after ``--warmup`` untimed ones (compilation, the CUDA graph's warm-up and capture happen
there), synchronised at both ends. Every ``--stats-every`` steps the loop does what ``train()`` /
``train_population()`` do there: read the divergence flags and measure each trial (member) with
its own ``GANTrial.measure`` (``--no-stats``: only the flags). No FID evaluation in the timing.

Prints, per mode, ms per iteration (of the whole pack for populations) and trials per GPU-hour at
``--trial-iterations`` iterations per trial (training only), then the seed-000 studies' GPU-hours
(below) and, as the LAST line, ``ratio: X`` = (eager ms/iteration) / (best ms per trial-iteration)
for the MNIST config. ``--out`` writes the same as markdown, with the GPU, torch and CUDA versions.

Seed-000 GPU-hours: the Table 2, 5a, 5b and degenerate presets' configurations with seed 0, each
costed as iterations × (the best mode's ms per trial-iteration) + its FID evaluations at
``study.cost``'s FID_IMG_PER_S (modelled, not measured here). Configurations of another shape than
a measured one (CIFAR-10: 3 channels; CelebA when not on disk) scale the MNIST figure by the
cost model's FLOP ratio (``study.cost``; an upper bound where the measured figure is partly launch
latency, which does not grow with FLOPs), and the output says so.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables import data as data_lib  # noqa: E402
from trainables.config import ConfigError, validate_trial  # noqa: E402
from trainables.train import GANTrial, resolve_device, resolve_step_mode  # noqa: E402

SINGLE_MODES = ("eager", "sync_free", "compiled", "cuda_graph")
PACK_MODES = ("eager", "sync_free", "compiled", "cuda_graph")
PRESETS = ("lipschitz-table2", "lipschitz-table5a", "lipschitz-table5b", "lipschitz-degenerate")
K_SN = (0.2, 0.25, 0.5, 1.0, 5.0, 10.0, 50.0)  # Table 2's k_SN: a pack's members
#: "GPU", or "CPU" on a smoke run without CUDA (the hours are the device's)
UNIT = "GPU"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def base_config(dataset: str, arch: str, width: float, device: torch.device, stats_every: int,
                trial_iterations: int, data_root: str | None) -> dict:
    """Table 2's fixed keys (study/presets/lipschitz-table2.yaml) at ``width``."""
    return validate_trial(dict(
        dataset=dataset, arch=arch, width=width, regularizer="sn", loss="ns", optimizer="rmsprop",
        lr_d=5e-5, lr_g=5e-5, eps=1e-8, batch_size=64, iterations=trial_iterations,
        stats_every=stats_every, eval_every=trial_iterations, fid_extractor="domain"
        if dataset == "fashion_mnist_mini" else "auto", device=device.type,
        data_root=data_root), check_data=False)


def on_disk(dataset: str, root: str | None, resolution: int) -> bool:
    try:
        data_lib.check_dataset(dataset, root, resolution)
    except data_lib.DatasetError:
        return False
    return True


class Row:
    def __init__(self, name: str, members: int, ms: float | None = None, note: str = ""):
        self.name, self.members, self.ms, self.note = name, members, ms, note

    @property
    def ms_per_trial_iter(self) -> float | None:
        return None if self.ms is None else self.ms / self.members

    def per_hour(self, trial_iterations: int) -> float | None:
        if self.ms is None:
            return None
        return self.members * 3600e3 / (self.ms * trial_iterations)


def _timed(step, stats_every: int, read, warmup: int, iterations: int,
           device: torch.device) -> float:
    """ms per iteration over ``iterations`` calls of ``out = step()``, ``read(out)`` after every
    ``stats_every``-th."""
    for i in range(warmup):
        out = step()
        if (i + 1) % stats_every == 0:
            read(out)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(iterations):
        out = step()
        if (i + 1) % stats_every == 0:
            read(out)
    _sync(device)
    return (time.perf_counter() - t0) / iterations * 1e3


def single(cfg: dict, mode: str, device: torch.device, args) -> Row:
    name = f"single {mode}"
    try:
        resolved = resolve_step_mode(dict(cfg, step_mode=mode), device)
    except ConfigError as err:
        return Row(name, 1, note=f"refused: {err}")
    if resolved != mode:
        return Row(name, 1, note=f"not on {device.type}: runs as {resolved}")
    trial = GANTrial(cfg, device, step_mode=mode)
    if mode == "eager":
        def step():
            out = trial.train_step()
            if trial.divergence(out) is not None:
                raise RuntimeError("diverged during the benchmark")
            return out
    else:
        step = trial.train_step

    def read(out):
        if mode != "eager" and trial.flagged_divergence() is not None:
            raise RuntimeError("diverged during the benchmark")
        if args.stats:
            trial.measure(out)
    warmup = max(args.warmup, 6 if mode == "cuda_graph" else 3 if mode == "compiled" else 1)
    ms = _timed(step, args.stats_every, read, warmup, args.iterations, device)
    del trial
    return Row(name, 1, ms)


def population(cfg: dict, p: int, mode: str, device: torch.device, args) -> Row:
    from trainables.population import Population

    name = f"population {p} {mode}"
    members = [dict(cfg, seed=i // len(K_SN), k_sn=K_SN[i % len(K_SN)], step_mode=mode)
               for i in range(p)]
    try:
        pop = Population(members, device)
    except (ValueError, ConfigError) as err:  # the pack's (or the device's) clear refusal
        return Row(name, p, note=f"refused: {err}")
    except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
        return Row(name, p, note="out of memory")
    got = getattr(pop, "step_mode", None)
    if got is not None and got != mode:
        del pop
        return Row(name, p, note=f"the pack runs it as {got}")

    def read(out):
        if pop.divergences():
            raise RuntimeError("a member diverged during the benchmark")
        if args.stats:  # as train_population: each member's own measure on its slice
            for i in range(p):
                pop.sync(i).measure(pop.member_out(out, i))
    warmup = max(args.warmup, 6 if mode in ("cuda_graph", "compiled") else 1)
    try:
        ms = _timed(pop.train_step, args.stats_every, read, warmup, args.iterations, device)
    except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
        return Row(name, p, note="out of memory")
    finally:
        del pop
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return Row(name, p, ms)


def sweep(cfg: dict, device: torch.device, args) -> list[Row]:
    rows = []
    for mode in SINGLE_MODES:
        if mode in args.modes:
            rows.append(single(cfg, mode, device, args))
            print(_line(rows[-1], args.trial_iterations), flush=True)
    for p in args.populations:
        for mode in PACK_MODES:
            if mode in args.modes:
                rows.append(population(cfg, p, mode, device, args))
                print(_line(rows[-1], args.trial_iterations), flush=True)
    return rows


def _line(row: Row, trial_iterations: int) -> str:
    if row.ms is None:
        return f"{row.name:34s} {'-':>10s} ms/iter  {'-':>10s} trials/{UNIT}-hour  {row.note}"
    return (f"{row.name:34s} {row.ms:10.3f} ms/iter  {row.per_hour(trial_iterations):10.2f} "
            f"trials/{UNIT}-hour")


def best_of(rows: list[Row]) -> Row:
    timed = [r for r in rows if r.ms is not None]
    return min(timed, key=lambda r: r.ms_per_trial_iter)


# ----------------------------------------------------------------------------- presets


def preset_hours(measured: dict[tuple[str, int], float], ref_key: tuple[str, int]) -> list[tuple]:
    """(preset, configurations, GPU-hours, notes) for each preset's seed-000 configurations.

    ``measured``: (arch, channels) → best ms per trial-iteration. Other shapes scale the
    ``ref_key`` figure by study.cost's modelled FLOPs per iteration."""
    from study import cost
    from study.spec import PRESETS_DIR, parse_study_unchecked
    from study.validation import expand_grid

    def flops(arch, channels, width, batch, n_dis=1):
        g, d = cost._fwd_flops(arch, channels, width, batch)
        return n_dis * (g + 6 * d) + 3 * g + 3 * d

    out = []
    for name in PRESETS:
        # schema only: costing a preset needs none of its datasets on disk
        spec = parse_study_unchecked((PRESETS_DIR / f"{name}.yaml").read_text())
        seed0 = spec.seed_list[0]
        cfgs = [validate_trial(c, check_data=False) for c in expand_grid(spec)
                if c["seed"] == seed0]
        seconds, scaled = 0.0, set()
        for c in cfgs:
            key = (c["arch"], data_lib.channels(c["dataset"]))
            if key in measured:
                ms = measured[key]
            else:
                ref_arch, ref_ch = ref_key
                ratio = (flops(c["arch"], key[1], float(c["width"]), int(c["batch_size"]),
                               int(c["n_dis"]))
                         / flops(ref_arch, ref_ch, float(c["width"]), int(c["batch_size"])))
                ms = measured[ref_key] * ratio
                scaled.add(f"{c['dataset']} ({c['arch']}, ×{ratio:.2f} FLOPs)")
            n_evals = math.ceil(c["iterations"] / c["eval_every"])
            seconds += c["iterations"] * ms / 1e3 + n_evals * c["fid_samples"] / cost.FID_IMG_PER_S
        note = ("not measured, the MNIST figure scaled by FLOPs (an upper bound where that "
                "figure is partly launch latency): " + ", ".join(sorted(scaled)) if scaled else "")
        out.append((name, len(cfgs), seconds / 3600, note))
    return out


# -------------------------------------------------------------------------------- main


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--iterations", type=int, default=200, help="timed iterations per mode")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--stats-every", type=int, default=100)
    ap.add_argument("--trial-iterations", type=int, default=100_000,
                    help="iterations per trial for trials/GPU-hour (Table 2: 1e5)")
    ap.add_argument("--populations", default="4,16,64")
    ap.add_argument("--modes", default=",".join(SINGLE_MODES),
                    help="step modes to run, single and pack (comma-separated)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--no-celeba", action="store_true", help="skip the CelebA config")
    ap.add_argument("--no-stats", dest="stats", action="store_false",
                    help="do not measure at stats steps (only read the divergence flags)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="write the results as markdown here")
    args = ap.parse_args(argv)
    args.populations = [int(x) for x in args.populations.split(",") if x]
    args.modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in args.modes if m not in SINGLE_MODES]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from {', '.join(SINGLE_MODES)}")
    return args


def environment(device: torch.device) -> list[str]:
    lines = [f"torch {torch.__version__}, CUDA {torch.version.cuda or '-'}, "
             f"cuDNN {torch.backends.cudnn.version() or '-'}, Python {platform.python_version()}"]
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        lines.insert(0, f"GPU: {prop.name} ({prop.total_memory / 2**30:.0f} GiB), driver CUDA "
                        f"{torch.version.cuda}")
    else:
        lines.insert(0, f"device: CPU ({platform.processor() or platform.machine()}, "
                        f"{torch.get_num_threads()} torch threads) — a smoke run, not a GPU "
                        "figure")
    return lines


def main(argv=None) -> int:
    global UNIT
    args = parse(argv)
    device = resolve_device(args.device)
    UNIT = "GPU" if device.type == "cuda" else "CPU"
    env = environment(device)
    for line in env:
        print(line)
    mnist = "mnist" if on_disk("mnist", args.data_root, 32) else "fashion_mnist_mini"
    datasets = [("MNIST Table 2", mnist, "dcgan32")]
    if not args.no_celeba and on_disk("celeba", args.data_root, 64):
        datasets.append(("CelebA 64x64", "celeba", "dcgan64"))
    notes = []
    if mnist != "mnist":
        notes.append("MNIST is not on disk: the MNIST config runs on the embedded "
                     "fashion_mnist_mini (same shapes: 1×32×32)")
    if len(datasets) == 1 and not args.no_celeba:
        notes.append("CelebA is not on disk: no CelebA 64x64 measurement")
    for n in notes:
        print(n)
    results = []
    measured: dict[tuple[str, int], float] = {}
    for label, dataset, arch in datasets:
        cfg = base_config(dataset, arch, args.width, device, args.stats_every,
                          args.trial_iterations, args.data_root)
        print(f"\n{label}: {dataset}, {arch} width {args.width:g}, batch 64, SN + NS, RMSprop "
              f"5e-5; {args.iterations} timed iterations after {args.warmup} warm-up",
              flush=True)
        rows = sweep(cfg, device, args)
        eager = next((r for r in rows if r.name == "single eager" and r.ms is not None), None)
        best = best_of(rows)
        ratio = eager.ms / best.ms_per_trial_iter if eager is not None else float("nan")
        measured[(arch, data_lib.channels(dataset))] = best.ms_per_trial_iter
        results.append((label, dataset, arch, rows, best, ratio))
    ref = ("dcgan32", 1)
    hours = preset_hours(measured, ref) if args.width == 1.0 else []
    if args.width != 1.0:
        print(f"\n(preset {UNIT}-hours only at --width 1: the presets train the paper's width)")
    for label, dataset, arch, rows, best, ratio in results:
        print(f"\n{label}: best {best.name}, {best.ms_per_trial_iter:.3f} ms per "
              f"trial-iteration; best/eager {ratio:.2f}")
    if hours:
        print(f"\nseed-000 studies at the best mode of each measured shape ({_bests(results)}; "
              f"+ FID at {_fid_rate():,.0f} img/s, modelled):")
        for name, n, h, note in hours:
            print(f"  {name:24s} {n:4d} configs  {h:8.2f} {UNIT}-hours" + (f"  ({note})" if note
                                                                         else ""))
    if args.out:
        write_markdown(Path(args.out), env, notes, results, hours, args)
        figures = Path(args.out).with_name(FIGURES_NAME)
        write_figures(figures, device, env, results, args)
        print(f"\nwrote {args.out} and {figures} (read by study/cost.py)")
    print(f"ratio: {results[0][5]:.2f}")
    return 0


def _bests(results) -> str:
    return "; ".join(f"{arch} {dataset}: {best.name}, {best.ms_per_trial_iter:.3f} ms"
                     for _, dataset, arch, _, best, _ in results)


def _fid_rate() -> float:
    from study import cost

    return cost.FID_IMG_PER_S


#: Machine-readable results beside ``--out`` (``study.cost.load_figures`` reads them).
FIGURES_NAME = "figures.json"


def write_figures(path: Path, device: torch.device, env, results, args) -> None:
    """The best mode per measured shape, as ``study.cost`` uses it (``FIGURES_VERSION`` 1)."""
    import json

    from study import cost

    shapes = []
    for label, dataset, arch, rows, best, ratio in results:
        shapes.append({
            "label": label, "dataset": dataset, "arch": arch,
            "channels": data_lib.channels(dataset), "width": args.width, "batch_size": 64,
            "regularizer": "sn", "n_dis": 1, "best_mode": best.name, "population": best.members,
            "ms_per_trial_iteration": best.ms_per_trial_iter, "best_over_eager": ratio,
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "version": cost.FIGURES_VERSION, "device_type": device.type, "environment": env,
        "command": "python bench/gpu_throughput.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "shapes": shapes}, indent=1) + "\n")


def write_markdown(path: Path, env, notes, results, hours, args) -> None:
    cmd = "python bench/gpu_throughput.py " + " ".join(sys.argv[1:])
    lines = ["# Training throughput by step mode (bench/gpu_throughput.py)", "",
             *[f"- {e}" for e in env], *[f"- {n}" for n in notes],
             f"- command: `{cmd.strip()}`",
             f"- {args.iterations} timed iterations per mode after {args.warmup}+ warm-up; "
             f"trials/{UNIT}-hour at {args.trial_iterations:,} iterations per trial, training "
             f"{'with' if args.stats else 'without'} the stats every {args.stats_every} steps, "
             "no FID", ""]
    for label, dataset, arch, rows, best, ratio in results:
        lines += [f"## {label} ({dataset}, {arch}, width {args.width:g}, batch 64)", "",
                  f"| mode | ms / iteration | ms / trial-iteration | trials / {UNIT}-hour | note |",
                  "|---|---:|---:|---:|---|"]
        for r in rows:
            if r.ms is None:
                lines.append(f"| {r.name} | – | – | – | {r.note} |")
            else:
                lines.append(f"| {r.name} | {r.ms:.3f} | {r.ms_per_trial_iter:.3f} | "
                             f"{r.per_hour(args.trial_iterations):.2f} | |")
        lines += ["", f"best: {best.name}; best/eager {ratio:.2f}", ""]
    if hours:
        lines += ["## Seed-000 studies", "",
                  "Each preset's configurations with seed 0: iterations × the best measured ms per "
                  f"trial-iteration ({_bests(results)}) + FID evaluations at "
                  f"{_fid_rate():,.0f} img/s (study/cost.py, modelled).", "",
                  f"| preset | configurations | {UNIT}-hours | note |", "|---|---:|---:|---|"]
        lines += [f"| {n} | {c} | {h:.2f} | {note} |" for n, c, h, note in hours]
        lines.append("")
    lines.append(f"ratio: {results[0][5]:.2f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
