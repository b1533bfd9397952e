"""Provenance of the code a run imported (``trainables.tracking.provenance``): git commit + dirty state
with a hash of the sources, or package version + source hash outside a checkout; computed from the
imported package's directory (not the working directory), once per process, and a process whose
files changed on disk after its import says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainables import names
from trainables.tracking import provenance

ROOT = Path(__file__).resolve().parents[3]


def _tree(tmp_path: Path) -> Path:
    """A tiny project: the three packages with one module each."""
    root = tmp_path / "proj"
    for pkg in provenance.PACKAGES:
        (root / pkg / "__pycache__").mkdir(parents=True)
        (root / pkg / "__init__.py").write_text(f'"""{pkg}"""\n')
        (root / pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0cache")
    (root / "trainables" / "toys.py").write_text("X = 1\n")
    (root / "README.md").write_text("not code\n")
    return root


def _git(root: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=env)


def test_source_hash_covers_the_package_sources_only(tmp_path):
    root = _tree(tmp_path)
    h0 = provenance.source_hash(root)
    (root / "README.md").write_text("changed\n")
    (root / "trainables" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"other")
    assert provenance.source_hash(root) == h0
    (root / "trainables" / "toys.py").write_text("X = 2\n")
    h1 = provenance.source_hash(root)
    assert h1 != h0
    (root / "trainables" / "toys.py").rename(root / "trainables" / "toys2.py")  # same bytes
    assert provenance.source_hash(root) not in (h0, h1)


def test_outside_a_checkout_version_is_package_version_and_source_hash(tmp_path):
    root = _tree(tmp_path)
    p = provenance.provenance(root)
    assert p.git_commit is None and p.version.startswith("pkg:")
    assert p.version.endswith(f"+src:{p.source_hash[:12]}")
    assert p.tags()[names.CODE_VERSION_TAG] == p.version
    assert names.GIT_COMMIT_TAG not in p.tags()
    assert p.tags()[names.LIBRARY_VERSIONS_TAG].startswith("ray 2.")
    assert ", mlflow 3." in p.tags()[names.LIBRARY_VERSIONS_TAG]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_checkout_clean_and_every_dirty_state_distinct(tmp_path):
    root = _tree(tmp_path)
    (root / ".gitignore").write_text("__pycache__/\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "one")
    clean = provenance.provenance(root)
    assert clean.git_dirty is False and clean.version == f"git:{clean.git_commit[:12]}"
    assert clean.tags()[names.GIT_DIRTY_TAG] == "false"
    toys = root / "trainables" / "toys.py"
    toys.write_text("X = 1\n# one edit\n")
    dirty1 = provenance.provenance(root)
    toys.write_text("X = 1\n# another edit\n")
    dirty2 = provenance.provenance(root)
    assert dirty1.git_dirty and dirty2.git_dirty and dirty1.git_commit == clean.git_commit
    assert len({clean.version, dirty1.version, dirty2.version}) == 3
    assert dirty1.version.startswith(f"git:{clean.git_commit[:12]}+dirty:")
    toys.write_text("X = 1\n")
    (root / "analysis" / "new.py").write_text("Y = 1\n")  # an untracked module is code too
    assert provenance.provenance(root).git_dirty
    (root / "analysis" / "new.py").unlink()
    assert provenance.provenance(root).version == clean.version


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_copy_inside_another_checkout_is_not_that_checkout(tmp_path):
    """The packages copied into a subdirectory of some git repository (site-packages inside a
    project's .venv): that repository's commit says nothing about them."""
    outer = tmp_path / "outer"
    outer.mkdir()
    _git(outer, "init", "-q")
    root = _tree(outer)
    p = provenance.provenance(root)
    assert p.git_commit is None and p.version.startswith("pkg:")


def test_root_is_the_imported_package_not_the_working_directory(tmp_path):
    code = "from trainables.tracking import provenance as p; print(p.current().root)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == ROOT


def test_computed_once_and_a_changed_tree_marks_the_process(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    calls = []
    real = provenance.provenance
    monkeypatch.setattr(provenance, "package_root", lambda: root)
    monkeypatch.setattr(provenance, "provenance", lambda r: calls.append(r) or real(r))
    provenance._imported.cache_clear()
    try:
        first = provenance.current()
        assert provenance.current() == first and len(calls) == 1  # cached: one computation
        (root / "trainables" / "toys.py").write_text("X = 3\n")
        later = provenance.current()
        on_disk = real(root).version
        assert later.version == f"{first.version}~{on_disk}" and on_disk != first.version
    finally:
        provenance._imported.cache_clear()


def test_merged_version_of_a_continued_run():
    assert provenance.merged_version(None, "b") == "b"
    assert provenance.merged_version("a", "a") == "a"
    assert provenance.merged_version("a", "b") == "a~b"
    assert provenance.merged_version("a~b", "b") == "a~b"
    assert provenance.merged_version("a~b", "c") == "a~b~c"


def test_every_run_carries_the_version_and_a_continued_run_every_version(tmp_path, monkeypatch):
    """``open_trial_run`` (one-config trials and pack members): a new run is tagged with the code
    that opened it; the same run continued by other code records both, in order."""
    import torch
    from mlflow.tracking import MlflowClient

    from trainables.config import validate_trial
    from trainables.ray.trainable import TrialContext, open_trial_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("prov", artifact_location=str(tmp_path / "art"))
    ctx = TrialContext(uri, exp, None, "prov")
    cfg = validate_trial({"dataset": "ring8", "arch": "mlp", "iterations": 4, "eval_every": 2})

    def version(v):
        monkeypatch.setattr(provenance, "current",
                            lambda: provenance.Provenance(v, "f" * 64, str(ROOT)))

    version("git:aaaaaaaaaaaa")
    logger, _ = open_trial_run(cfg, torch.device("cpu"), ctx, "t1", None)
    logger.finish()
    tags = client.get_run(logger.run_id).data.tags
    assert tags[names.CODE_VERSION_TAG] == "git:aaaaaaaaaaaa"
    assert tags[names.SOURCE_HASH_TAG] == "f" * 64
    version("git:bbbbbbbbbbbb")
    again, _ = open_trial_run(cfg, torch.device("cpu"), ctx, "t1", logger.run_id)
    again.finish()
    assert again.run_id == logger.run_id
    tags = client.get_run(logger.run_id).data.tags
    assert tags[names.CODE_VERSION_TAG] == "git:aaaaaaaaaaaa~git:bbbbbbbbbbbb"
