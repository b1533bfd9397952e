"""Which code a process runs: the provenance every run carries (MLflow tags, names in
``trainables.names``).

The code is the project the imported ``trainables`` package belongs to — the directory holding
``trainables/``, ``study/`` and ``analysis/`` (an editable install's checkout, a copy on
``PYTHONPATH``, or site-packages), never the working directory. Its identity:

* in a git checkout whose top level is that directory: the commit, and whether the package
  sources differ from it (``git status`` over the three packages, untracked files included).
  A clean tree's version is ``git:<commit12>``; a dirty one's ``git:<commit12>+dirty:<hash12>``,
  where the hash covers the source files themselves — two different dirty states never share a
  version;
* otherwise (an installed wheel, a copied tree): the installed ``lipstudy`` version and the hash
  of the source files, ``pkg:<version>+src:<hash12>``.

The source hash is SHA-256 over every ``*.py`` file of the three packages (relative path and
bytes, in path order): a few ms, computed once per process (:func:`current` is cached) — a
process keeps the code it imported, so what it imported is what its runs record.

Beside the code: the installed Ray and MLflow versions (``lipstudy.library_versions``); torch,
CUDA/cuDNN, the device and the precision flags are params of every run
(``trainables.tracking.environment.environment_params``).

A process reused for a later trial (Ray Tune's ``reuse_actors``) may import modules it had not
needed yet; if the files on disk changed since its first look (:func:`current` re-checks their
sizes and modification times on every call), it may run a mix of both versions. Its runs
then record ``<imported>~<on disk>``, a version of its own, so the analysis never pools them with
either version's runs (``analysis.load.check_versions``).
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from trainables import names

#: The project's packages: what "the code" of a run is.
PACKAGES: tuple[str, ...] = ("trainables", "study", "analysis")
#: The version of a run without a provenance tag (runs made before it existed).
UNKNOWN = names.UNKNOWN_CODE_VERSION


@dataclass(frozen=True)
class Provenance:
    version: str                 # one comparable string (see the module docstring)
    source_hash: str             # SHA-256 of the package sources
    root: str                    # the directory holding the packages
    git_commit: str | None = None
    git_dirty: bool | None = None
    package_version: str | None = None
    libraries: str = ""          # "ray 2.60.0, mlflow 3.17.2" (torch, CUDA, device: environment)

    def tags(self) -> dict[str, str]:
        """The MLflow tags of a run made by this code."""
        out = {names.CODE_VERSION_TAG: self.version, names.SOURCE_HASH_TAG: self.source_hash,
               names.CODE_ROOT_TAG: self.root}
        if self.git_commit:
            out[names.GIT_COMMIT_TAG] = self.git_commit
            out[names.GIT_DIRTY_TAG] = str(bool(self.git_dirty)).lower()
        if self.package_version:
            out[names.PACKAGE_VERSION_TAG] = self.package_version
        if self.libraries:
            out[names.LIBRARY_VERSIONS_TAG] = self.libraries
        return out


def package_root() -> Path:
    """The directory of the imported ``trainables`` package's parent."""
    import trainables

    return Path(trainables.__file__).resolve().parent.parent


def source_files(root: Path) -> list[Path]:
    """The ``*.py`` files of :data:`PACKAGES` under ``root``, in path order (caches excluded)."""
    files = [p for pkg in PACKAGES if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")
             if "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _signature(files: list[Path]) -> tuple:
    """(path, size, mtime) of every file: a cheap test of whether the sources changed."""
    out = []
    for p in files:
        try:
            st = p.stat()
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), -1, -1))
    return tuple(out)


def source_hash(root: Path) -> str:
    """SHA-256 (hex) of the package sources under ``root``: relative paths and contents."""
    h = hashlib.sha256()
    for p in source_files(root):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(b"\0")
        try:
            h.update(p.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return h.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _package_version(name: str = "lipstudy") -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> str:
    """The installed Ray and MLflow versions (read from their metadata, nothing imported); torch,
    CUDA, cuDNN, the device and the precision flags are ``trainables.tracking.environment``'s params."""
    return ", ".join(f"{lib} {_package_version(lib) or 'absent'}" for lib in ("ray", "mlflow"))


def provenance(root: Path) -> Provenance:
    """The provenance of the code under ``root`` as it is on disk now (uncached)."""
    root = root.resolve()
    digest = source_hash(root)
    top = _git(root, "rev-parse", "--show-toplevel")
    commit = _git(root, "rev-parse", "HEAD") if top and Path(top).resolve() == root else None
    if commit:
        status = _git(root, "status", "--porcelain", "--", *PACKAGES)
        dirty = status is None or bool(status)
        version = f"git:{commit[:12]}" + (f"+dirty:{digest[:12]}" if dirty else "")
        return Provenance(version, digest, str(root), git_commit=commit, git_dirty=dirty,
                          libraries=library_versions())
    pkg = _package_version()
    return Provenance(f"pkg:{pkg or '?'}+src:{digest[:12]}", digest, str(root), package_version=pkg,
                      libraries=library_versions())


@functools.lru_cache(maxsize=1)
def _imported() -> tuple[Provenance, tuple]:
    root = package_root()
    return provenance(root), _signature(source_files(root))


def current() -> Provenance:
    """The provenance of the code this process imported (computed once). When the files on disk
    changed since (a reused worker), the version is ``<imported>~<on disk>``."""
    first, signature = _imported()
    root = Path(first.root)
    if _signature(source_files(root)) == signature:
        return first
    now = provenance(root)
    if now.version == first.version:
        return first
    return Provenance(f"{first.version}~{now.version}", first.source_hash, first.root,
                      first.git_commit, first.git_dirty, first.package_version, first.libraries)


def merged_version(before: str | None, now: str) -> str:
    """The version of a run continued by code ``now`` after code ``before`` (a resumed trial):
    ``now`` when they agree (or nothing was recorded), else ``before~now``."""
    if not before:
        return now
    if before == now or before.endswith(f"~{now}"):
        return before
    return f"{before}~{now}"
