"""A study directory is data, and resuming it must not run code its user did not write: every file
Ray Tune unpickles on ``Tuner.restore`` is authenticated first, with an HMAC whose key lives
outside the directory (as Jupyter signs notebooks; git's ``safe.directory`` likewise refuses
repositories it was not told to trust).

What ``Tuner.restore`` reads (Ray 2.60, ``ray/tune``): ``tuner.pkl`` (cloudpickle,
``impl/tuner_internal.py``); the newest ``experiment_state-*.json``, whose trial entries and
runner data carry cloudpickled fields (``CLOUDPICKLE_FALLBACK``, ``execution/tune_controller.py``
``_loads_with_cloudpickle``); then every top-level ``*.json`` / ``*.pkl`` is copied to the driver's
staging directory (``sync_down_experiment_state``), from which the newest ``searcher-state-*.pkl``
and ``callback-states-*.pkl`` are cloudpickle-loaded (``utils/util._load_newest_checkpoint``), the
searcher's own state included (``study.search``). Those top-level files are the *pickle-bearing*
files signed and verified here (our own ``lipstudy_*`` files are plain JSON, read as data).
A trial directory's ``params.pkl`` is only written by Tune, never read on restore; its
``error.pkl`` is read by the result grid only for a trial whose (signed) experiment state names
it, and a resumed errored trial has that name cleared (``resume_errored``), so trial directories
are not signed.

* The key: 32 random bytes in ``~/.config/lipstudy/signing.key`` (``$LIPSTUDY_SIGNING_KEY_FILE``),
  mode 0600, created on first use.
* The signatures: ``lipstudy_signatures.json`` in the study directory, relative path →
  HMAC-SHA256 of the path and the file's bytes, and the key's id (to say "another key").
* A running study signs its files as Tune writes them (``study.store_watch`` every few seconds,
  with intact copies of the periodically rewritten ones in ``lipstudy_intact/``), after the Tuner
  is built and when its fit ends. After a SIGKILL the newest state may have changed since it was
  signed: its signed intact copy takes its place; an unsigned newer file of a series
  (``experiment_state-<session>``, ...) is set aside when a signed one of the series remains.
* Anything else unsigned or changed refuses the resume with one line; ``lipstudy resume --trust``
  signs the directory as it is with the user's key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from pathlib import Path

from study.limits import StudyError
from study.statefile import INTACT_DIR, fs_and_path

KEY_ENV = "LIPSTUDY_SIGNING_KEY_FILE"
DEFAULT_KEY = Path("~/.config/lipstudy/signing.key")
MANIFEST = "lipstudy_signatures.json"
#: Tune's periodically rewritten state files, one per session: ``<prefix>-<session>.<ext>``.
SERIES = re.compile(r"^(experiment_state|searcher-state|callback-states|basic-variant-state|"
                    r"search_gen_state)-.*\.(json|pkl)$")
SET_ASIDE = ".unsigned"


class UntrustedStudy(StudyError):
    """A pickle-bearing file of a study directory is not signed with the user's key."""


def key_path() -> Path:
    return Path(os.environ.get(KEY_ENV) or DEFAULT_KEY).expanduser()


def load_key() -> bytes:
    """The user's signing key, created (32 random bytes, mode 0600) when there is none."""
    path = key_path()
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            return load_key()
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        return path.read_bytes()
    if len(key) < 32:
        raise StudyError(f"signing key {path} is shorter than 32 bytes; remove it to make a "
                         "new one (directories signed with it will then need --trust)")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"lipstudy key id\0" + key).hexdigest()[:16]


def mac(key: bytes, name: str, data: bytes) -> str:
    """HMAC-SHA256 over the file's path in the study directory and its bytes (a signed file
    cannot be passed off under another name)."""
    return hmac.new(key, name.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def pickle_bearing(name: str) -> bool:
    """A top-level file that ``Tuner.restore`` reads or stages (see the module docstring)."""
    return not name.startswith((".", "lipstudy_")) and name.endswith((".pkl", ".json"))


class _Dir:
    """The study directory through pyarrow (a local path or a storage URI)."""

    def __init__(self, study_dir: str):
        self.fs, self.base = fs_and_path(study_dir)

    def names(self, sub: str = "") -> list[str]:
        import pyarrow.fs

        where = f"{self.base}/{sub}" if sub else self.base
        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(where, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.File)

    def read(self, rel: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(f"{self.base}/{rel}") as fh:
                return fh.read()
        except OSError:  # absent (pyarrow: FileNotFoundError) or unreadable
            return None

    def write(self, rel: str, data: bytes) -> None:
        from trainables.atomic import write_atomic

        if self.fs.type_name == "local":
            path = Path(self.base, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda fh: fh.write(data))
            return
        with self.fs.open_output_stream(f"{self.base}/{rel}") as fh:
            fh.write(data)

    def set_aside(self, rel: str) -> None:
        self.fs.move(f"{self.base}/{rel}", f"{self.base}/{rel}{SET_ASIDE}")


def _manifest(d: _Dir) -> dict:
    try:
        data = json.loads(d.read(MANIFEST) or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else {}


def sign(study_dir: str, contents: dict[str, bytes]) -> None:
    """Record the signatures of ``contents`` (relative path → the bytes signed) in the study's
    manifest, beside those it holds; written (atomically) only when something changed. A path
    keeps its previous signature beside the new one: a copy whose rewrite fails after the
    manifest was written (a full disk) still verifies as the version it is."""
    key, d = load_key(), _Dir(study_dir)
    old = _manifest(d)
    files = dict(old.get("files", {})) if old.get("key_id") == key_id(key) else {}
    for name, data in contents.items():
        new = mac(key, name, data)
        files[name] = [new, *[m for m in files.get(name, []) if m != new][:1]]
    manifest = {"key_id": key_id(key), "files": files}
    if manifest != old:
        d.write(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def _readable_state(name: str, data: bytes) -> bool:
    """Whether an experiment state parses as JSON (one being written or truncated does not)."""
    if not name.startswith("experiment_state"):
        return True
    try:
        json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def sign_study(study_dir: str, *, keep_copies: bool = True) -> int:
    """Sign the study's pickle-bearing files as they are now (an experiment state only when it
    reads as whole JSON), and with ``keep_copies`` keep an intact copy of each periodically
    rewritten one (``SERIES``) in ``lipstudy_intact/``, signed too (local directories). Without
    it (``--trust``), the existing intact copies are signed as they are. Returns the count."""
    from study.statefile import is_remote

    d = _Dir(study_dir)
    contents: dict[str, bytes] = {}
    copies = keep_copies and not is_remote(study_dir)
    for name in filter(pickle_bearing, d.names()):
        data = d.read(name)
        if data is None or (keep_copies and not _readable_state(name, data)):
            continue
        contents[name] = data
        if copies and SERIES.match(name):
            contents[f"{INTACT_DIR}/{name}"] = data
    if not keep_copies:
        for name in filter(pickle_bearing, d.names(INTACT_DIR)):
            data = d.read(f"{INTACT_DIR}/{name}")
            if data is not None:
                contents[f"{INTACT_DIR}/{name}"] = data
    if contents:
        sign(study_dir, contents)  # first: a copy is written only once its signature is
    for rel, data in contents.items():
        if copies and rel.startswith(f"{INTACT_DIR}/") and d.read(rel) != data:
            try:
                d.write(rel, data)
            except OSError:
                pass  # no space: the previous copy stays, its signature too
    return len(contents)


def _refusal(study_dir: str, name: str, reason: str) -> UntrustedStudy:
    return UntrustedStudy(
        f"{study_dir}: {name} {reason}; resuming unpickles it, which runs any code in it. "
        f"If you trust this directory: lipstudy resume --trust {study_dir}")


def verify_study(study_dir: str) -> list[str]:
    """Check every pickle-bearing file of the study directory against the user's key before
    anything reads it (see the module docstring); put a signed intact copy in place of a file
    changed since it was signed, set aside an unsigned newer file of a signed series. Returns the
    lines saying what was replaced or set aside; raises :class:`UntrustedStudy` (one line, the
    directory unchanged) when a file is neither signed nor replaceable."""
    key, d = load_key(), _Dir(study_dir)
    manifest = _manifest(d)
    foreign = bool(manifest) and manifest.get("key_id") != key_id(key)
    files = {} if foreign else manifest.get("files", {})

    def good(rel: str, data: bytes | None) -> bool:
        return data is not None and any(hmac.compare_digest(m, mac(key, rel, data))
                                        for m in files.get(rel, []) if isinstance(m, str))

    trusted, restore, unsigned = set(), {}, []
    for name in filter(pickle_bearing, d.names()):
        copy = f"{INTACT_DIR}/{name}"
        if good(name, d.read(name)):
            trusted.add(name)
        elif SERIES.match(name) and good(copy, data := d.read(copy)):
            restore[name] = data
        elif name in files:
            raise _refusal(study_dir, name, "does not match its signature (changed since this "
                                            "user's study wrote it)")
        else:
            unsigned.append(name)
    series = {SERIES.match(n).group(1) for n in [*trusted, *restore] if SERIES.match(n)}
    for name in unsigned:
        if not (SERIES.match(name) and SERIES.match(name).group(1) in series):
            reason = ("is signed with another key, not yours" if foreign else
                      f"is not signed with your key ({key_path()})")
            raise _refusal(study_dir, name, reason)
    lines = []
    for name, data in restore.items():
        d.set_aside(name)
        d.write(name, data)
        sign(study_dir, {name: data})
        lines.append(f"lipstudy: {name} changed after it was last signed (set aside as "
                     f"{name}{SET_ASIDE}): resuming from its signed copy ({INTACT_DIR}/{name})")
    for name in unsigned:
        d.set_aside(name)
        lines.append(f"lipstudy: {name} is not signed (written after the last signature; set "
                     f"aside as {name}{SET_ASIDE}): resuming from the newest signed state")
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    return lines


def trust_study(study_dir: str) -> str:
    """``lipstudy resume --trust``: sign the directory as it is with the user's key; the line
    saying so."""
    n = sign_study(study_dir, keep_copies=False)
    return f"lipstudy: trusted {study_dir}: {n} file(s) signed with {key_path()}"
