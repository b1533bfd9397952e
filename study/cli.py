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
MLflow start and without writing anything.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from study.spec import PRESETS_DIR, StudyError, load_study

DEFAULT_STUDY = "default"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lipstudy", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study (default: the built-in default study)")
    run.add_argument("study", nargs="?", default=DEFAULT_STUDY, help="study YAML file or preset name")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
                     "or sqlite:///./mlflow.db)")
    run.add_argument("--storage-path", help="Ray Tune storage path (default: the study's)")
    run.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    res = sub.add_parser("resume", help="finish an interrupted study from its study directory")
    res.add_argument("study_dir", help="the 'Study directory' that `lipstudy run` printed")
    res.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    val = sub.add_parser("validate", help="validate study files; exit 2 on the first problem")
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


def _fail(message: str) -> int:
    print(f"lipstudy: error: {message}", file=sys.stderr)
    return 2


def cmd_validate(paths: list[str]) -> int:
    from study.spec import check_study

    for path in paths:
        try:
            spec, _ = load_study(path)
            n = len(check_study(spec))
        except StudyError as err:
            return _fail(str(err))
        kind = "trials" if spec.search == "grid" else "representative configs checked"
        print(f"{path}: ok ({spec.search}, {n} {kind})")
    return 0


def cmd_presets() -> int:
    for p in sorted(PRESETS_DIR.glob("*.yaml")):
        spec, _ = load_study(p)
        first = (spec.description.strip().splitlines() or [""])[0]
        print(f"{p.stem:24s} {first}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        spec, text = load_study(args.study)
    except StudyError as err:
        return _fail(str(err))
    from study.tuner import run_study

    print(f"lipstudy: study {spec.name!r} ({spec.search}); starting Ray and MLflow ...", flush=True)
    outcome = run_study(spec, text, tracking_uri=args.tracking_uri,
                        storage_path=args.storage_path, address=args.address,
                        on_start=_announce)
    print_summary(outcome)
    return 0 if all(t.status != "error" for t in outcome.trials) else 1


def _announce(study_dir: str) -> None:
    print(f"lipstudy: study directory {study_dir}\n"
          f"          (if this driver dies: lipstudy resume {study_dir})", flush=True)


def cmd_resume(args: argparse.Namespace) -> int:
    from study.tuner import read_state

    try:
        read_state(args.study_dir)
    except StudyError as err:
        return _fail(str(err))
    from study.tuner import resume_study

    print(f"lipstudy: resuming {args.study_dir} ...", flush=True)
    try:
        outcome = resume_study(args.study_dir, address=args.address)
    except StudyError as err:
        return _fail(str(err))
    if outcome.dropped_runs:
        print(f"lipstudy: deleted {len(outcome.dropped_runs)} MLflow run(s) of trials that restart "
              "from scratch (killed before their first checkpoint)")
    print_summary(outcome)
    return 0 if all(t.status != "error" for t in outcome.trials) else 1


def print_summary(outcome) -> None:
    """The end-of-study table and how to open the runs."""
    rows = sorted(outcome.trials, key=lambda t: (t.status != "finished",
                                                 t.fid if t.fid is not None else math.inf))
    print()
    print(f"{'trial':32s} {'status':9s} {'fid':>9s} {'steps':>7s}")
    for t in rows:
        fid = f"{t.fid:9.2f}" if t.fid is not None else f"{'-':>9s}"
        step = f"{int(t.step):7d}" if t.step is not None else f"{'-':>7s}"
        print(f"{t.name:32s} {t.status:9s} {fid} {step}")
        if t.error:
            print(f"    {t.error}")
    extractor = next((t.config.get("fid_extractor") for t in rows if t.config), None)
    uri = outcome.tracking.tracking_uri
    print()
    print(f"{len(rows)} trials in {outcome.wall_s / 60:.1f} min; FID extractor setting: {extractor} "
          f"(the resolved extractor is the `fid_extractor` param of each run)")
    print(f"Study directory:  {outcome.storage_path}  (lipstudy resume <it> if interrupted)")
    optuna_loc = _optuna_location(outcome.storage_path)
    if optuna_loc:
        print(f"Optuna study:     optuna-dashboard {optuna_loc}")
    print(f"MLflow runs:      {uri} (experiment id {outcome.tracking.experiment_id})")
    if uri.startswith("sqlite:") or "://" not in uri:
        print(f"Open them with:   lipstudy ui --store {uri}   (MLflow UI on 127.0.0.1:5000)")
    else:
        print(f"Open them in the MLflow UI of {uri}")


def _optuna_location(study_dir: str) -> str | None:
    from study.tuner import read_state

    try:
        return read_state(study_dir).get("optuna_storage")
    except StudyError:
        return None


def cmd_ui(store: str | None, port: int) -> int:
    """Run ``mlflow ui`` on the store (loopback only) and print its URL; blocks until Ctrl-C."""
    import subprocess

    from study.tracking import absolute_uri, default_tracking_uri

    uri = absolute_uri(store) if store else default_tracking_uri()
    if uri.endswith(".db") and "://" not in uri:
        uri = f"sqlite:///{uri}"
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):]
        if not os.path.exists(db):
            return _fail(f"--store: no MLflow store at {db} (run a study first: lipstudy run)")
    # one worker and no job runner: ≈ 0.5 GiB instead of ≈ 2.5 GiB (STACK-NOTES)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    print(f"MLflow UI for {uri}: http://127.0.0.1:{port}  (Ctrl-C to stop)", flush=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


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
