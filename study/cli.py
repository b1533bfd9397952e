"""The ``lipstudy`` command.

    lipstudy run [STUDY]          run a study file or preset (no argument: the default study)
    lipstudy resume STUDY_DIR     finish a study whose driver was killed (Tuner.restore: finished
                                  trials stay, the others continue from their last checkpoint)
    lipstudy validate STUDY...    check study files without running anything
    lipstudy presets              list the presets shipped with the package
    lipstudy report --experiment NAME --out DIR [--tracking-uri URI]
                                  hypothesis verdicts, the papers' tables and figures from runs
    lipstudy ui [--store URI]     the MLflow UI on the study's store, bound to 127.0.0.1

A bad study file gets exit status 2 and one line naming the key and the problem, before Ray or
MLflow start and without writing anything. A study stopped by SIGINT (Ctrl-C) or SIGTERM saves its
state, marks its runs interrupted and exits with 130 / 143; a crashed trial makes the exit status 1.
``--help`` imports nothing heavy (Ray, torch and MLflow load only when a command needs them).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap

DEFAULT_STUDY = "default"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lipstudy", epilog="Each command's options: lipstudy COMMAND --help.",
        description="Run, resume and check studies of Lipschitz regularization in GANs (Ray "
        "Tune trials, MLflow runs), report on them and open them in the MLflow UI.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study (default: the built-in default study)")
    run.add_argument("study", nargs="?", default=DEFAULT_STUDY, help="study YAML file or preset name")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
                     "or sqlite:///./mlflow.db)")
    run.add_argument("--storage-path", help="Ray Tune storage path (default: the study's)")
    _add_cluster_options(run)
    res = sub.add_parser("resume", help="finish an interrupted study from its study directory")
    res.add_argument("study_dir", help="the 'Study directory' that `lipstudy run` printed")
    res.add_argument("--trust", action="store_true", help="sign the study directory's pickled "
                     "state with your key and resume (only for a directory whose contents you "
                     "trust: resuming unpickles them, which can run code)")
    _add_cluster_options(res)
    val = sub.add_parser("validate", help="validate study files (each one); exit 2 if any fails")
    val.add_argument("studies", nargs="+")
    sub.add_parser("presets", help="list the presets")
    rep = sub.add_parser("report", add_help=False,
                         help="write report.md/.html + figures from MLflow runs (see report --help)")
    rep.add_argument("rest", nargs=argparse.REMAINDER)
    ui = sub.add_parser("ui", help="start the MLflow UI on the study's store (127.0.0.1)")
    ui.add_argument("--store", "--tracking-uri", dest="store",
                    help="tracking URI or SQLite file (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    ui.add_argument("--port", type=int, default=5000)
    return p


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``resume`` share: where Ray runs, whether its nodes share this
    machine's files, how much of the libraries' output to show."""
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    parser.add_argument("--shared-fs", action="store_true", default=None,
                        help="every Ray node sees this machine's files at the same paths (one "
                        "machine, an NFS mount): allow a local storage path / tracking store on "
                        "a multi-node cluster (default: $LIPSTUDY_SHARED_FS)")
    parser.add_argument("--verbose", action="store_true", help="also show Ray's, Optuna's and "
                        "MLflow's own messages")


def _fail(message: str) -> int:
    for line in message.splitlines() or [""]:  # several problems: one line each
        print(f"lipstudy: error: {line}", file=sys.stderr)
    return 2


def cmd_validate(paths: list[str]) -> int:
    """Check every file given; one line each (ok, with what it runs and on which FID extractor, or
    the problem); exit 2 when any failed."""
    from study.limits import plural
    from study.spec import StudyError, check_study, describe_fid, load_study

    failed = 0
    for path in paths:
        try:
            spec, _ = load_study(path)
            configs = check_study(spec)
            fid = describe_fid(spec, configs)
        except StudyError as err:
            print(f"lipstudy: error: {err}", file=sys.stderr)
            failed += 1
            continue
        kind = plural(len(configs), "trial" if spec.search == "grid" else "representative config")
        checked = "" if spec.search == "grid" else " checked"
        print(f"{path}: ok ({spec.search}, {kind}{checked}; {fid})")
        for note in _population_notes(spec):
            print(f"{path}: {note}")
    return 2 if failed else 0


def _population_notes(spec) -> list[str]:
    """The configs of a ``population`` > 1 study that run one per trial, one line per kind."""
    if spec.population <= 1:
        return []
    from study.packs import population_notes

    return population_notes(spec)


def cmd_presets() -> int:
    """Every preset, one line each; a preset whose data is not on this machine is listed with
    the reason (it still validates once the data is there)."""
    from study.spec import PRESETS_DIR, StudyError, load_study, parse_study_unchecked

    for p in sorted(PRESETS_DIR.glob("*.yaml")):
        note = ""
        try:
            spec, _ = load_study(p)
        except StudyError as err:
            spec = parse_study_unchecked(p.read_text())
            parts = str(err).split(": ")  # "<file>: <key>: <problem>[: <details>]"
            note = f"  [not runnable here: {parts[2] if len(parts) > 2 else parts[-1]}]"
        first = _first_sentence(spec.description) if spec else ""
        print(textwrap.fill(first, width=100, initial_indent=f"{p.stem:30s} ",
                            subsequent_indent=" " * 31, break_on_hyphens=False)
              if first else p.stem)
        if note:
            print(" " * 31 + note.strip())
    return 0


#: Abbreviations whose full stop ends no sentence.
_ABBREVIATIONS = ("Eq", "Eqs", "Sec", "Fig", "App", "al", "cf", "vs", "e.g", "i.e", "etc")


def _first_sentence(text: str) -> str:
    """The first sentence of ``text`` (whitespace joined): up to the first ``.``, ``!`` or ``?``
    that ends a word other than an abbreviation and is followed by a capital, a digit or the end."""
    text = " ".join(text.split())
    for m in re.finditer(r"[.!?](?=\s+[A-Z0-9\"'(]|$)", text):
        if text[:m.start()].rsplit(" ", 1)[-1].lstrip("(\"'") not in _ABBREVIATIONS:
            return text[:m.end()]
    return text


def _announce_signal(name: str) -> None:
    print(f"\nlipstudy: {name} received: stopping the trials and saving the study state "
          "(send it again to stop at once) ...", file=sys.stderr, flush=True)


def _exit_status(outcome) -> int:
    if outcome.interrupted_by:
        import signal

        return 128 + int(getattr(signal, outcome.interrupted_by))
    if not outcome.complete:
        return 1
    return 0 if all(t.status != "crashed" for t in outcome.trials) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from study.spec import StudyError, load_study

    try:
        spec, text = load_study(args.study)
    except StudyError as err:
        return _fail(str(err))
    from study.summary import print_summary
    from study.tuner import run_study

    from study.spec import describe_fid, check_study

    print(f"lipstudy: study {spec.name!r} ({spec.search}); {describe_fid(spec, check_study(spec))}",
          flush=True)
    for note in _population_notes(spec):
        print(f"lipstudy: {note}", flush=True)
    print("lipstudy: starting Ray and MLflow ...", flush=True)
    try:
        outcome = run_study(spec, text, tracking_uri=args.tracking_uri,
                            storage_path=args.storage_path, address=args.address,
                            verbose=args.verbose, on_start=_announce, on_signal=_announce_signal,
                            shared_fs=args.shared_fs)
    except StudyError as err:  # the cluster refused it (study.cluster), before any trial
        return _fail(str(err))
    print_summary(outcome)
    return _exit_status(outcome)


def _announce(study_dir: str) -> None:
    from study.shell import lipstudy_command

    print(f"lipstudy: study directory {study_dir}\n"
          f"          (if this driver dies: {lipstudy_command('resume', study_dir)})", flush=True)


def _not_a_study_dir(study_dir: str) -> str | None:
    """The one line for a local directory without a study state file (answered before Ray,
    torch or MLflow load), naming the study directories just below it when there are some (the
    storage path given instead of a study's directory); None when the state file is there or the
    path is remote (then the full reader decides)."""
    from study.statefile import STATE_FILE, is_remote, local_path

    if is_remote(study_dir):
        return None
    path = local_path(study_dir)
    if (path / STATE_FILE).is_file():
        return None
    try:
        below = sorted(str(p.parent) for p in path.glob(f"*/{STATE_FILE}"))
    except OSError:
        below = []
    hint = (f"; did you mean {' or '.join(below[:3])}{' or ...' if len(below) > 3 else ''}?"
            if below else "; give the directory `lipstudy run` printed as 'study directory'")
    what = "no such directory" if not path.exists() else f"no {STATE_FILE}"
    return f"{study_dir}: not a lipstudy study directory ({what}){hint}"


def cmd_resume(args: argparse.Namespace) -> int:
    wrong = _not_a_study_dir(args.study_dir)
    if wrong:
        return _fail(wrong)
    from study.spec import StudyError
    from study.statefile import read_state

    try:
        read_state(args.study_dir)
    except StudyError as err:
        return _fail(str(err))
    from study.summary import print_summary
    from study.tuner import resume_study

    print(f"lipstudy: resuming {args.study_dir} ...", flush=True)
    try:
        outcome = resume_study(args.study_dir, address=args.address, verbose=args.verbose,
                               on_signal=_announce_signal, shared_fs=args.shared_fs,
                               trust=args.trust)
    except StudyError as err:
        return _fail(str(err))
    rec = outcome.reconciliation
    if rec.get("superseded") or rec.get("deleted") or rec.get("restored"):
        print(f"lipstudy: MLflow runs reconciled: {len(rec.get('superseded', []))} superseded "
              f"(kept, KILLED: their trials started after the last saved state and restart), "
              f"{len(rec.get('deleted', []))} empty run(s) removed, "
              f"{len(rec.get('restored', []))} restored")
    print_summary(outcome)
    return _exit_status(outcome)


# ``lipstudy ui``: the MLflow server is a child of ours that must never outlive us

STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")
UI_GRACE_S = 5.0  # SIGTERM → SIGKILL of the server's process group (uvicorn's own limit is 3 s)


def _die_with_parent(parent_pid: int):
    """A ``preexec_fn``: ask Linux to send the child SIGTERM when we die, however we die
    (``prctl(PR_SET_PDEATHSIG)``; SIGKILL of ``lipstudy`` included). ``mlflow ui`` forwards a
    SIGTERM to its uvicorn server, which then stops. Elsewhere (no libc prctl) it does nothing."""
    import ctypes
    import signal

    try:  # looked up here, before the fork: the child only makes the call
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(1, sigterm, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # we died before prctl took effect
            os._exit(1)
    return preexec


def _group_members(pgid: int) -> set[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc; without /proc, the
    group's existence as far as ``killpg(pgid, 0)`` tells (a zombie leader counts)."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
            return {pgid}
        except (ProcessLookupError, PermissionError):
            return set()
    members = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            members.add(int(name))
    return members


def _leader_exited(pid: int) -> bool:
    """Has our child ``pid`` exited? Without reaping it: while its zombie stays, its pid (= the
    group id) cannot be reused, so ``killpg`` never reaches a stranger."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_group(proc, until: float, hurry=None) -> bool:
    """Wait (until the monotonic time ``until``, or ``hurry()`` says so) for every process of
    ``proc``'s group to end."""
    import time

    while True:
        if _leader_exited(proc.pid) and not _group_members(proc.pid):
            return True
        if time.monotonic() >= until or (hurry is not None and hurry()):
            return False
        time.sleep(0.05)


def stop_process_group(proc, sig: int, grace: float = UI_GRACE_S, hurry=None) -> None:
    """Stop a child started with ``start_new_session=True`` and everything it started: ``sig`` to
    the whole group, at most ``grace`` seconds (less when ``hurry()`` turns true) to exit, then
    SIGKILL to the group; reaps ``proc``."""
    import signal
    import time

    for s, wait in ((sig, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, s)
        except (ProcessLookupError, PermissionError):
            pass
        if _wait_group(proc, time.monotonic() + wait, hurry if s != signal.SIGKILL else None):
            break
    proc.wait()


def _port_taken(port: int, host: str = "127.0.0.1") -> str | None:
    """One line when ``host:port`` cannot be bound (another program listens there), else None.
    The probe binds as uvicorn does (``SO_REUSEADDR``: a port in TIME_WAIT counts as free) and
    names a port that is free now."""
    import socket

    def bind(p: int) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, p))
            return sock.getsockname()[1]

    try:
        bind(port)
        return None
    except OSError as err:
        reason = err.strerror or str(err)
    try:
        free = f" (for example --port {bind(0)}, free now)"
    except OSError:
        free = ""
    return f"--port {port}: cannot serve on {host}:{port}: {reason}; choose another port{free}"


def _ui_store(store: str | None) -> str:
    """The tracking URI ``lipstudy ui`` serves: ``--store`` (a path or a URI; a ``.db`` path is
    a SQLite store), else the default one."""
    from study.tracking import absolute_uri, default_tracking_uri

    uri = absolute_uri(store) if store else default_tracking_uri()
    return f"sqlite:///{uri}" if uri.endswith(".db") and "://" not in uri else uri


def cmd_ui(store: str | None, port: int) -> int:
    """Run ``mlflow ui`` on the store (loopback only) and print its URL and a link per experiment
    that opens it on its runs; blocks until the server ends or a signal arrives.

    The server runs in its own session (process group). SIGTERM, SIGINT (Ctrl-C) or SIGHUP to
    ``lipstudy ui`` is forwarded to that whole group; what is still running after ``UI_GRACE_S``
    (or at a second signal) gets SIGKILL; the exit status is then 128 + the signal's number (143,
    130, 129). Should ``lipstudy ui`` itself die without a chance to clean up (SIGKILL), Linux
    sends the server SIGTERM (``PR_SET_PDEATHSIG``), which ``mlflow ui`` forwards to uvicorn.
    A port another program holds is refused with one line before anything starts (exit 2); a
    server that ends by itself is a failure (exit 2), never a silent 0."""
    import signal
    import subprocess
    import time

    from study.ui_view import experiment_links, server_command

    uri = _ui_store(store)
    db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if db is not None and not os.path.exists(db):
        return _fail(f"--store: no MLflow store at {db} (run a study first: lipstudy run)")
    taken = _port_taken(port)
    if taken:
        return _fail(taken)
    cmd, env = server_command(uri, port)
    url = f"http://127.0.0.1:{port}"
    links = experiment_links(uri, url)
    received: list[int] = []
    previous = {}
    try:  # handlers first: a signal from here on is never lost and never kills us half-way
        previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                    for s in (getattr(signal, n) for n in STOP_SIGNALS if hasattr(signal, n))}
    except ValueError:  # not the main thread: Ctrl-C handling stays Python's own
        pass
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent(os.getpid()))
        try:
            print(f"MLflow UI for {uri}: {url}  (Ctrl-C to stop)", flush=True)
            if links:
                print("Each experiment, opened on its runs:\n" + "\n".join(links), flush=True)
            while not received and not _leader_exited(proc.pid):
                time.sleep(0.1)
        finally:  # a signal, the server's own end, or an exception here: nothing outlives us
            stop_process_group(proc, received[0] if received else signal.SIGTERM,
                               hurry=lambda: len(received) > 1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        return 128 + int(received[0])
    # nobody asked it to stop: the server failed (a port taken in between, a broken store)
    return _fail(f"the MLflow UI server stopped by itself (exit status {proc.returncode}); "
                 f"{url} is not served by it")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:  # everything after `report` belongs to analysis.report
        from analysis.report import main as report_main

        return report_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "ui":
        return cmd_ui(args.store, args.port)
    if args.command == "validate":
        return cmd_validate(args.studies)
    if args.command == "presets":
        return cmd_presets()
    if args.command == "resume":
        return cmd_resume(args)
    return cmd_run(args)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
