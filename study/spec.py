"""Study files: their schema, loading, validation, and expansion into trial configs.

A study is a YAML mapping::

    name: default                 # MLflow experiment name and Ray Tune run name
    description: ...
    hypotheses: [H1, domain]      # which hypotheses (analysis.hypotheses) it feeds
    search: grid                  # grid | random | optuna
    fixed: {dataset: fashion_mnist_mini, arch: dcgan32, width: 0.125, iterations: 600}
    grid:                         # search: grid — the product of the lists (or a list of such
      loss: [ns, ls, wgan]        #   blocks, whose products are concatenated: conditional grids)
      k_sn: [0.5, 1.0, 10.0]
    space:                        # search: optuna / random — define-by-run, in order
      loss: {choice: [ns, ls, wgan]}
      regularizer: {choice: [sn, none]}
      k_sn: {loguniform: [0.1, 100], when: {regularizer: sn}}
      alpha: {loguniform: [1.0e-25, 1.0e11]}
    num_samples: 20               # optuna / random: configurations to sample
    sampler: tpe                  # optuna: tpe (default) | random | qmc
    points_to_evaluate:           # optuna / random: configurations tried first (the papers'
      - {loss: ns, regularizer: sn, k_sn: 1.0, alpha: 1.0}   #   defaults), then the sampler's
    optuna_storage: null          # default: <study dir>/optuna.journal (JournalStorage); or an
                                  #   RDB URL (sqlite:///..., postgresql://...) or a .journal path
    seeds: 3                      # replicates per configuration: a count (0..n-1) or a list
    scheduler: fifo               # fifo (reproductions) | asha (searches, on intermediate FID)
    resources: {cpu: 1, gpu: auto, custom: {}}   # auto: 0.25 if the cluster has/can start GPUs
    max_concurrent: null
    max_failures: 2               # a crashed trial is retried from its last checkpoint
    checkpoints_to_keep: 2
    storage_path: ./lipstudy_results
    tracking_uri: null            # default: sqlite:///<cwd>/mlflow.db, or $MLFLOW_TRACKING_URI

Every problem is reported as one :class:`StudyError` line naming the key, before Ray or MLflow start.
That includes YAML traps (a key repeated in one mapping, yes/no/on/off read as booleans where a
number or a word is meant, alias bombs, deep nesting) and absurd sizes, refused before anything
is expanded: see the ``MAX_*`` limits in :mod:`study.limits` (at most MAX_TRIALS = 10,000 trials
per study).

This module reads study files (:func:`load_study`, :func:`parse_study`) and is where the rest of
the repo imports the study API from; the parts live in :mod:`study.limits` (limits, StudyError,
trial counting), :mod:`study.yaml_loader` (the strict YAML reader), :mod:`study.schema` (the
pydantic models) and :mod:`study.validation` (check_study, expand_grid, fid_plans).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from study.limits import (MAX_FILE_BYTES, MAX_INT, MAX_MESSAGE, MAX_SEED, MAX_TRIALS,  # noqa: F401
                          MAX_YAML_DEPTH, MAX_YAML_WEIGHT, StudyError)
from study.schema import (AshaConfig, Resources, SpaceEntry, StudySpec,  # noqa: F401
                          pydantic_message)
from study.validation import (check_study, describe_fid, expand_grid, fid_plans,  # noqa: F401
                              representative_configs)
from study.yaml_loader import load_yaml

PRESETS_DIR = Path(__file__).parent / "presets"


def load_study(source: str | Path) -> tuple[StudySpec, str]:
    """Read a study file (or a preset name such as ``default``); return (spec, file text).

    Raises :class:`StudyError` for unreadable, empty, non-YAML or schema-violating files.
    """
    path = Path(source)
    try:
        if not path.exists() and not str(source).endswith((".yaml", ".yml")):
            preset = PRESETS_DIR / f"{source}.yaml"
            if preset.exists():
                path = preset
        exists = path.exists()
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        raise StudyError(f"{source}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    if not exists:
        presets = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise StudyError(f"{source}: no such study file or preset (presets: {presets})")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # bounded: /dev/zero or a huge file reads no more
    except OSError as err:
        raise StudyError(f"{path}: cannot read ({err.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise StudyError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes; a study file is a few "
                         "KB (MAX_FILE_BYTES)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise StudyError(f"{path}: not UTF-8 text (byte {data[err.start]:#04x} at offset "
                         f"{err.start})") from None
    return parse_study(text, str(path)), text


def parse_study(text: str, label: str = "study") -> StudySpec:
    """Parse and validate study-file text (``label`` prefixes error messages).

    Raises :class:`StudyError` (one line) for anything wrong, including the YAML traps listed in
    :class:`_StudyLoader` and the size limits (MAX_FILE_BYTES, MAX_TRIALS, ...)."""
    raw = load_yaml(text, label)
    if raw is None:
        raise StudyError(f"{label}: the file is empty")
    if not isinstance(raw, dict):
        raise StudyError(f"{label}: a study file must be a YAML mapping, got {type(raw).__name__}")
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise StudyError(f"{label}: {pydantic_message(err)}") from None
    try:
        check_study(spec)
    except StudyError as err:
        raise StudyError(f"{label}: {err}") from None
    return spec


def parse_study_unchecked(text: str) -> StudySpec | None:
    """The study's schema-level content without checking its trials (data may be absent), or
    None when even that fails; for listings such as ``lipstudy presets``."""
    try:
        raw = load_yaml(text, "study")
        return StudySpec.model_validate(raw) if isinstance(raw, dict) else None
    except (StudyError, ValidationError):
        return None
