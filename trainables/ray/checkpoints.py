"""A trial's checkpoints as a chain, newest first, and the cause line of an error.

Tune keeps the last ``checkpoints_to_keep`` checkpoints of a trial (``CheckpointConfig``,
default 2) as ``checkpoint_<n>`` directories beside each other; ``tune.get_checkpoint()`` names
the newest. A newest checkpoint that cannot be loaded (a driver or worker stopped while it was
written: ``torch.load`` raises "failed finding central directory") must not end the trial: the
chain tries the next older one, and says so. The MLflow run id is read first (a small JSON file,
the same in every checkpoint of a trial), so the trial's run is open before any state is loaded
and a checkpoint that none of the chain can replace is recorded on that run as the cause.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

#: An exception's own line in a traceback: ``RuntimeError: ...``, ``ray.exceptions.X: ...``.
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\b(:|$)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cause_line(error: Any) -> str | None:
    """The root cause's own line of ``error`` (an exception or its text), without terminal
    colours: for Ray's task errors (``ray::ImplicitFunc.train() (pid=…)`` then a traceback) the
    exception line at the end of the traceback, ``RuntimeError: PytorchStreamReader …``."""
    if error is None:
        return None
    while getattr(error, "cause", None) is not None and error.cause is not error:
        error = error.cause  # RayTaskError / TuneError wrap the trial's own exception
    if isinstance(error, BaseException) and not str(error).startswith(("ray::", "Traceback")):
        text = str(error).strip()
        first = _ANSI.sub("", text.splitlines()[0]).strip() if text else ""
        return f"{type(error).__name__}: {first}" if first else type(error).__name__
    lines = [_ANSI.sub("", ln).rstrip() for ln in str(error).splitlines()]
    causes = [ln.strip() for ln in lines if ln and not ln[0].isspace() and _EXC_LINE.match(ln)]
    if causes:
        return causes[-1]
    lines = [ln.strip() for ln in lines if ln.strip()]
    return lines[0] if lines else type(error).__name__


@dataclass
class CheckpointChain:
    """A trial's checkpoints, newest first (``tune.Checkpoint`` objects, or plain directories
    in tests), and what was wrong with the ones skipped."""

    checkpoints: list[Any]
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of_trial(cls) -> "CheckpointChain":
        """The checkpoint Tune restores this trial from, then the older ones kept beside it."""
        from ray import tune

        newest = tune.get_checkpoint()
        if newest is None:
            return cls([])
        import pyarrow.fs

        fs = newest.filesystem
        parent, name = os.path.split(newest.path.rstrip("/"))
        try:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(parent))
        except OSError:
            infos = []
        older = sorted((i.path for i in infos if i.type == pyarrow.fs.FileType.Directory
                        and i.base_name.startswith("checkpoint_") and i.base_name < name),
                       reverse=True)
        return cls([newest] + [tune.Checkpoint(p, filesystem=fs) for p in older])

    def _name(self, ckpt: Any) -> str:
        return os.path.basename(str(getattr(ckpt, "path", ckpt)).rstrip("/"))

    def _read(self, ckpt: Any, filename: str, reader: Callable[[str], Any]) -> Any:
        if isinstance(ckpt, str):  # a plain directory (a tune.Checkpoint refuses __fspath__)
            return reader(os.path.join(ckpt, filename))
        with ckpt.as_directory() as d:
            return reader(os.path.join(d, filename))

    def meta(self, filename: str) -> dict[str, Any] | None:
        """The JSON ``filename`` of the newest checkpoint that has a readable one."""
        def read(path: str) -> dict[str, Any]:
            with open(path) as fh:
                return json.load(fh)

        for ckpt in self.checkpoints:
            try:
                return self._read(ckpt, filename, read)
            except Exception:  # noqa: BLE001 - a damaged checkpoint: the next older one
                continue
        return None

    def load(self, filename: str, loader: Callable[[str], Any]) -> tuple[Any, str | None]:
        """``loader(path)`` of ``filename`` in the newest checkpoint where it succeeds; returns
        (state, that checkpoint's name). Each one that failed adds a line to ``problems``; when
        none loads, raises ``CheckpointLoadError`` naming them all."""
        for ckpt in self.checkpoints:
            try:
                return self._read(ckpt, filename, loader), self._name(ckpt)
            except Exception as err:  # noqa: BLE001 - said in problems, then the older one
                self.problems.append(f"{self._name(ckpt)}/{filename}: {cause_line(err)}")
        if not self.checkpoints:
            return None, None
        raise CheckpointLoadError("no checkpoint of this trial can be loaded: "
                                  + "; ".join(self.problems))

    def fallback_note(self, used: str | None) -> str | None:
        """One line for the run when an older checkpoint stood in for damaged newer ones."""
        if not self.problems or used is None:
            return None
        return f"{'; '.join(self.problems)}; continued from {used}"


class CheckpointLoadError(RuntimeError):
    """Every kept checkpoint of a trial is damaged: the trial cannot continue."""
