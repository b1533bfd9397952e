"""Does ``lipstudy report`` on a study's runs reproduce a committed report, byte for byte?

    python bench/report_reproduces.py COMMITTED_DIR STORE --experiment NAME [--commit SHA]

COMMITTED_DIR: a committed results folder (``docs/results/<study>/``) holding report.md,
report.html and runs.csv. STORE: the study's MLflow tracking URI or a path to its ``mlflow.db``.
The script runs this checkout's ``lipstudy report`` on the experiment into a temporary folder and
compares, one line per file:

- ``report.md`` and ``report.html`` byte for byte, apart from the report's one timestamp (the
  ISO date-time after "Generated "), which is masked in both before comparing;
- ``runs.csv`` byte for byte;
- every run's code version in the committed ``runs.csv``: one version, a clean commit (no
  ``+dirty``), equal to ``--commit`` when given (a prefix of the full id is enough).

Exit 0 when every check passes, 1 otherwise. What it is for (issue #22): the committed results
are what a reader quotes; this shows they are what the code at the named commit makes of the
named runs, and that no run of another code version slipped in. Run it from a clean checkout of
the commit named in the folder's RUN.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

COMPARED = ("report.md", "report.html", "runs.csv")
_STAMP = re.compile(rb"(Generated )\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def tracking_uri(store: str) -> str:
    """``sqlite:///<abs path>`` for a path to an existing file, the argument itself otherwise."""
    if os.path.isfile(store):
        return "sqlite:///" + os.path.abspath(store)
    return store


def masked(data: bytes) -> bytes:
    """``data`` with the report's timestamp replaced by a fixed token (every occurrence)."""
    return _STAMP.sub(rb"\1<timestamp>", data)


def same_file(committed: Path, made: Path) -> tuple[str, bool]:
    """One line ``name  same|DIFFERENT (first differing line N)|missing`` and whether it agrees."""
    name = committed.name
    if not committed.is_file() or not made.is_file():
        where = "committed" if not committed.is_file() else "regenerated"
        return f"{name:12s} missing ({where})", False
    a, b = masked(committed.read_bytes()), masked(made.read_bytes())
    if a == b:
        return f"{name:12s} same (timestamp masked)" if name != "runs.csv" else f"{name:12s} same", True
    la, lb = a.splitlines(), b.splitlines()
    first = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
    return f"{name:12s} DIFFERENT (first differing line {first + 1})", False


def versions_check(runs_csv: Path, commit: str | None) -> tuple[str, bool]:
    """One line naming the runs' code versions and whether they are one clean commit that matches
    ``commit`` (a prefix either way: the tag holds 12 hex digits)."""
    if not runs_csv.is_file():
        return "versions     missing runs.csv", False
    with runs_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    found = sorted({r.get("code_version") or "unknown" for r in rows})
    ok = len(found) == 1 and found[0].startswith("git:") and "+dirty" not in found[0]
    if ok and commit:
        tag = found[0][len("git:"):]
        ok = commit.startswith(tag) or tag.startswith(commit)
    want = f", expected {commit}" if commit else ""
    return f"versions     {len(rows)} runs, {', '.join(found) or 'none'}{want}: " \
           f"{'one clean version' if ok else 'NOT one clean matching version'}", ok


def regenerate(store: str, experiment: str, out: Path) -> None:
    """Run this checkout's ``lipstudy report`` (same interpreter) into ``out``."""
    cmd = [sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())",
           "report", "--experiment", experiment, "--tracking-uri", tracking_uri(store),
           "--out", str(out), "--no-attach"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"lipstudy report failed ({done.returncode}):\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("committed", type=Path)
    ap.add_argument("store")
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--commit", default=None)
    args = ap.parse_args(argv)
    lines, ok = [], True
    line, good = versions_check(args.committed / "runs.csv", args.commit)
    lines.append(line)
    ok &= good
    with tempfile.TemporaryDirectory(prefix="lipstudy-report-") as tmp:
        regenerate(args.store, args.experiment, Path(tmp))
        for name in COMPARED:
            line, good = same_file(args.committed / name, Path(tmp) / name)
            lines.append(line)
            ok &= good
    print("\n".join(lines))
    print("reproduced" if ok else "NOT reproduced")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
