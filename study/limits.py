"""Limits on what a study file may ask for, the one-line :class:`StudyError`, and the trial count
checked against MAX_TRIALS before anything is expanded."""

from __future__ import annotations

import math
from typing import Any, Protocol


#: Limits on what a study file may ask for. Each one turns a typo or a hostile file into one
#: StudyError line (exit 2) within a second or so, instead of a traceback, a hang or an
#: out-of-memory kill; each is far above anything a real study needs.
#: The file itself: the largest preset is ~4 KB; pure-Python YAML parses ~0.3 MB/s of dense
#: flow lists on one core, so 256 KiB is read in about a second.
MAX_FILE_BYTES = 256 * 1024
#: The document after expanding aliases, in nodes plus scalar characters: anchors and merge keys
#: (``&toy``, ``<<: *sn_img``) keep working, an alias bomb ("billion laughs": nine aliases of nine
#: aliases of ...) is refused before anything walks, copies or prints the expanded tree. A file
#: within MAX_FILE_BYTES and without aliases weighs at most ~2 x its size, well below this.
MAX_YAML_WEIGHT = 1_000_000
#: Nesting depth, the document's mapping being 1: a study needs 6 (``grid[1].k_sn[0]``,
#: ``space.k_sn.when.regularizer[0]``); the YAML composer is recursive and would hit Python's
#: recursion limit near 300.
MAX_YAML_DEPTH = 32
#: Integer literals: nothing in a study needs more than int64 (seeds, counts, iterations); larger
#: ones overflow in torch/numpy and past 4,300 digits Python cannot even print them.
MAX_INT = 2**63 - 1
#: Trials one study may declare: grid points x seeds, or num_samples x seeds; also the
#: categorical combinations a searched space expands into for validation. Every trial is a Ray
#: Tune trial held by the driver and an MLflow run; the largest shipped preset has 300. Checking
#: a study of this size takes about a second; beyond it, split the study into several.
MAX_TRIALS = 10_000
#: Seeds (replicate seeds and sampler_seed): numpy's RandomState takes seeds below 2**32.
MAX_SEED = 2**32 - 1
#: A message longer than this is cut (a 100 KB key name echoed back helps nobody).
MAX_MESSAGE = 2_000


def one_line(message: str) -> str:
    """``message`` as one printable line: line breaks and other control characters escaped (a
    quoted YAML key may hold ``\\n``), cut to MAX_MESSAGE characters."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                  for c in message)
    return out if len(out) <= MAX_MESSAGE else out[: MAX_MESSAGE - 1] + "…"


class StudyError(ValueError):
    """A study file is wrong; ``str(err)`` is one line naming where and what."""

    def __init__(self, message: object = ""):
        super().__init__(one_line(str(message)))


def did_you_mean(word: object, choices) -> str:
    """`` (did you mean 'x'?)`` naming the choice closest to a misspelt ``word`` (the same word
    in another case first, then :func:`difflib.get_close_matches`), or "" when none is close."""
    import difflib

    if not isinstance(word, str):
        return ""
    choices = [c for c in choices if isinstance(c, str)]
    by_case = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_case), n=1, cutoff=0.6)
    return f" (did you mean {by_case[close[0]]!r}?)" if close else ""


def plural(n: int, word: str) -> str:
    """``1 trial``, ``2 trials``: a count and its noun (plural by an added s), thousands grouped."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def duration_text(seconds: float) -> str:
    """A duration for a person: ``45s``, ``4m10s``, ``2h05m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


BOOL_HINT = ("a YAML boolean (the unquoted words yes/no/on/off/true/false are booleans; quote "
             "the word if you mean it)")


def bool_word(value: bool) -> str:
    """``true`` / ``false``: a YAML boolean as the study file spelt it (in :data:`BOOL_HINT`)."""
    return "true" if value else "false"


class StudyShape(Protocol):
    """What :func:`check_size` reads of a study (``study.schema.StudySpec`` has all of it)."""

    search: str
    num_samples: int
    grid: Any

    @property
    def n_seeds(self) -> int: ...

    @property
    def grid_blocks(self) -> list[dict[str, list[Any]]]: ...


def check_size(spec: StudyShape) -> None:
    """Refuse a study of more than MAX_TRIALS trials, counted from the list lengths before
    anything is expanded (a grid of 1e12 points is refused in microseconds)."""
    seeds = spec.n_seeds
    per_seed = f" x {seeds:,} seeds" if seeds != 1 else ""
    cap = f"a study runs at most {MAX_TRIALS:,} trials (MAX_TRIALS); split it into several studies"
    if spec.search != "grid":
        trials = spec.num_samples * seeds
        if trials > MAX_TRIALS:
            total = f" = {trials:,} trials" if seeds != 1 else " trials"
            raise StudyError(f"num_samples: {spec.num_samples:,}{per_seed}{total}; {cap}")
        return
    listed = isinstance(spec.grid, list)
    total = 0
    for i, block in enumerate(spec.grid_blocks):
        points = math.prod(len(values) for values in block.values())
        total += points * seeds
        if points * seeds > MAX_TRIALS:
            sizes = " x ".join(f"{len(v):,} {k}" for k, v in block.items())
            trials = f"{per_seed} = {points * seeds:,} trials" if seeds != 1 else " (trials)"
            raise StudyError(f"{f'grid[{i}]' if listed else 'grid'}: {sizes} = {points:,} "
                             f"configurations{trials}; {cap}")
    if total > MAX_TRIALS:
        raise StudyError(f"grid: its {len(spec.grid_blocks)} blocks make {total:,} trials; {cap}")

