"""Rows of ``bench/gpu_throughput.py``: timing a step loop, and running one row so that whatever
it raises (a refusal, out of memory, any error, its time limit) becomes a note and the sweep goes
on."""

from __future__ import annotations

import gc
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from trainables.config import ConfigError

#: "GPU", or "CPU" on a smoke run without CUDA (the hours are the device's)
UNIT = "GPU"
#: A row does not start with less than this many seconds of the time budget left.
MIN_ROW_S = 5.0


class Refused(Exception):
    """The mode cannot run here (the device or the pack runs something else); the row says why."""


class RowTimeout(Exception):
    """The row overran its time limit."""


class ForcedFailure(RuntimeError):
    """``--fail-mode``: the row raises on purpose."""


def auto_trials_per_gpu() -> int:
    """One-config trials ``gpu: auto`` puts on one GPU (``study.cluster.AUTO_GPU_SHARE``)."""
    from study.cluster import AUTO_GPU_SHARE

    return max(1, round(1 / AUTO_GPU_SHARE))


class Row:
    """One measured mode: ``ms`` per iteration of the whole row (all ``members`` together), or
    None with a ``note`` saying why there is no figure."""

    def __init__(self, name: str, members: int, ms: float | None = None, note: str = ""):
        self.name, self.members, self.ms, self.note = name, members, ms, note

    @property
    def ms_per_trial_iter(self) -> float | None:
        return None if self.ms is None else self.ms / self.members

    def per_hour(self, trial_iterations: int) -> float | None:
        if self.ms is None:
            return None
        return self.members * 3600e3 / (self.ms * trial_iterations)


@dataclass
class Result:
    """One config's rows: ``baseline`` is the gpu: auto row, ``best`` the fastest timed row."""

    label: str
    cfg: dict  # the trial config every row trains (a pack's members vary loss, k_SN, seed)
    rows: list[Row]

    @property
    def dataset(self) -> str:
        return self.cfg["dataset"]

    @property
    def arch(self) -> str:
        return self.cfg["arch"]

    @property
    def baseline(self) -> Row:
        return self.rows[0]

    @property
    def best(self) -> Row | None:
        timed = [r for r in self.rows if r.ms is not None]
        return min(timed, key=lambda r: r.ms_per_trial_iter) if timed else None

    @property
    def ratio(self) -> float | None:
        if self.baseline.ms is None:
            return None
        return self.baseline.ms_per_trial_iter / self.best.ms_per_trial_iter

    def ratio_line(self) -> str:
        if self.ratio is None:
            return f"ratio: n/a ({self.baseline.name}: {self.baseline.note})"
        return f"ratio: {self.ratio:.2f}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, stats_every: int, read, warmup: int, iterations: int, device: torch.device,
          barrier=None) -> tuple[float, float]:
    """(start, end) in ``time.perf_counter`` seconds (CLOCK_MONOTONIC: comparable across the
    processes of one machine) of ``iterations`` calls of ``out = step()``, ``read(out)`` after
    every ``stats_every``-th, after ``warmup`` untimed ones; ``barrier``: wait for the other
    processes of a shared-device row before starting the clock."""
    for i in range(warmup):
        out = step()
        if (i + 1) % stats_every == 0:
            read(out)
    sync(device)
    if barrier is not None:
        barrier.wait()
    t0 = time.perf_counter()
    for i in range(iterations):
        out = step()
        if (i + 1) % stats_every == 0:
            read(out)
    sync(device)
    return t0, time.perf_counter()


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextmanager
def time_limit(seconds: float):
    """Raise :class:`RowTimeout` in the main thread after ``seconds`` (SIGALRM); the previous
    handler and timer (e.g. pytest-timeout's) are restored afterwards."""
    def on_alarm(signum, frame):
        raise RowTimeout(f"over its time limit ({seconds:.0f} s)")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    t0 = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - t0), 1e-3))


def run_row(name: str, members: int, mode: str, fn, device: torch.device, args,
            deadline: float) -> Row:
    """``fn()`` → (ms per iteration, note) as a :class:`Row`; anything it raises is the row's
    note. Limited to ``--row-limit-s`` and what is left before ``deadline`` (monotonic)."""
    budget_left = deadline - time.monotonic()
    if budget_left < MIN_ROW_S:
        return Row(name, members, note="skipped: the time budget (--budget-s) is spent")
    try:
        with time_limit(min(args.row_limit_s, budget_left)):
            if mode == args.fail_mode:
                raise ForcedFailure(f"forced failure (--fail-mode {mode})")
            ms, note = fn()
        return Row(name, members, ms, note)
    except (Refused, ConfigError) as err:
        return Row(name, members, note=f"refused: {err}")
    except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
        return Row(name, members, note="out of memory")
    except Exception as err:  # noqa: BLE001 - every failure becomes a note; the sweep goes on
        return Row(name, members, note=f"failed: {one_line(err)}")
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def line(row: Row, trial_iterations: int) -> str:
    """The row as printed: ms per iteration and trials per device-hour, or its note."""
    if row.ms is None:
        return f"{row.name:40s} {'-':>10s} ms/iter  {'-':>10s} trials/{UNIT}-hour  {row.note}"
    return (f"{row.name:40s} {row.ms:10.3f} ms/iter  {row.per_hour(trial_iterations):10.2f} "
            f"trials/{UNIT}-hour" + (f"  ({row.note})" if row.note else ""))
