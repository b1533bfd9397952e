"""Every name a trial or a study writes to MLflow, and the types of its params: one home for both
sides (the writers in ``trainables``/``study``, the reader in ``analysis``).

No torch, Ray or MLflow import here: ``analysis`` reads these without loading the trainer.
``tests/trainables/test_names.py`` checks that :data:`TRIAL_PARAM_TYPES` matches the trial schema
(``trainables.config`` with every registered regularizer's and optimizer's keys).
"""

from __future__ import annotations

# --- tags -------------------------------------------------------------------------------------

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own (mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's UI: which landing page an experiment gets

STUDY_TAG = "lipstudy.study"              # the study's name, on the parent and every child run
KIND_TAG = "lipstudy.kind"                # "study" on a parent run
TRIAL_ID_TAG = "lipstudy.trial_id"        # the Ray trial id of a child run (stable across retries)
STATUS_TAG = "lipstudy.status"            # see TRIAL_STATES / STUDY_STATES
DIVERGED_STEP_TAG = "lipstudy.diverged_step"
DIVERGED_REASON_TAG = "lipstudy.diverged_reason"
INTERRUPTED_STEP_TAG = "lipstudy.interrupted_step"
INTERRUPTED_BY_TAG = "lipstudy.interrupted_by"
STOPPED_STEP_TAG = "lipstudy.stopped_step"  # ASHA stopped the trial at this step
SUPERSEDED_REASON_TAG = "lipstudy.superseded_reason"
TRACKING_ERROR_TAG = "lipstudy.tracking_error"  # which tracking write a trial gave up on, why
CREATE_TOKEN_TAG = "lipstudy.create_token"  # random, per create_run: a retried create finds its run
CRASH_REASON_TAG = "lipstudy.crash_reason"  # the cause's own line when a run ends crashed
CHECKPOINT_FALLBACK_TAG = "lipstudy.checkpoint_fallback"  # damaged checkpoints skipped
RESUMED_TAG = "lipstudy.resumed"          # how many times the study was resumed
RESUMED_PARAMS_TAG = "lipstudy.resumed_params"  # child: params that differ on the latest attempt
SEARCH_TAG = "lipstudy.search"
STUDY_DIR_TAG = "lipstudy.study_dir"
OPTUNA_STORAGE_TAG = "lipstudy.optuna_storage"
GIT_COMMIT_TAG = "lipstudy.git_commit"
# provenance of the code a run (or the study's driver) imported: trainables.provenance
CODE_VERSION_TAG = "lipstudy.code_version"    # one comparable string per code state
SOURCE_HASH_TAG = "lipstudy.source_hash"      # SHA-256 of the package sources
CODE_ROOT_TAG = "lipstudy.code_root"          # where the imported packages live
GIT_DIRTY_TAG = "lipstudy.git_dirty"          # "true"/"false" (in a git checkout only)
PACKAGE_VERSION_TAG = "lipstudy.package_version"  # outside a git checkout
LIBRARY_VERSIONS_TAG = "lipstudy.library_versions"  # "ray 2.60.0, mlflow 3.17.2"
RESUMED_CODE_VERSIONS_TAG = "lipstudy.resumed_code_versions"  # parent: versions, run then resumes
UNKNOWN_CODE_VERSION = "unknown"  # the version of a run without the tag (made before it existed)
HYPOTHESES_TAG = "lipstudy.hypotheses"
TRIALS_TAG = "lipstudy.trials"
ERRORED_TRIALS_TAG = "lipstudy.errored_trials"
PACK_SIZE_TAG = "lipstudy.pack_size"
PACK_MEMBER_TAG = "lipstudy.pack_member"
OBJECTIVE_TAG = "lipstudy.objective"      # parent of a searched study: the objective optimised
# parent run: the best finished trial (study.summary); "<tag>_<dataset>_<extractor>" per group
# when a study holds several datasets or feature extractors
BEST_TRIAL_TAG = "lipstudy.best_trial"    # its run name
BEST_RUN_TAG = "lipstudy.best_run_id"
BEST_FID_EXTRACTOR_TAG = "lipstudy.best_fid_extractor"
BEST_KEY_PREFIX = "lipstudy.best."        # + each trial key the study varies

#: ``lipstudy.status`` of a child run. "crashed" is written by the trial itself; "interrupted",
#: "superseded" and "stopped_early" by the driver (``study.summary`` / ``study.recovery``).
TRIAL_STATES = ("finished", "diverged", "crashed", "interrupted", "stopped_early", "superseded",
                "restored")
#: ``lipstudy.status`` of a parent run.
STUDY_STATES = ("running", "finished", "interrupted", "crashed")


def count_tag(state: str) -> str:
    """The parent run's tag counting the trials in ``state`` (e.g. ``lipstudy.trials_not_started``)."""
    return f"{TRIALS_TAG}_{state.replace(' ', '_')}"


def reconciled_tag(kind: str) -> str:
    """The parent run's count of runs a resume ``kind`` = superseded / deleted / restored."""
    return f"lipstudy.{kind}_runs"


# --- params -----------------------------------------------------------------------------------

#: Every trial key (the MLflow param names) and its type. Optional keys (``data_root``,
#: ``resolution``, ``fid_final_samples``) are typed by their value when present.
TRIAL_PARAM_TYPES: dict[str, type] = {
    # data
    "dataset": str, "data_root": str, "download": bool, "resolution": int,
    # model
    "arch": str, "width": float, "d_bias": bool, "d_norm": str, "z_dim": int,
    # loss
    "loss": str, "alpha": float,
    # regularizer and its own keys
    "regularizer": str, "k_sn": float, "k_gp": float, "gp_lambda": float, "gp_mode": str,
    "r1_gamma": float, "gran_k": float, "gran_eps": float, "alr_k": float, "alr_lambda": float,
    "alr_xi": float, "alr_eps_min": float, "alr_eps_max": float, "alr_iters": int,
    "js_gamma0": float, "js_decay": float, "clip_c": float,
    # optimizer
    "optimizer": str, "lr_d": float, "lr_g": float, "eps": float, "n_dis": int,
    "beta1": float, "beta2": float, "rmsprop_decay": float,
    # run
    "iterations": int, "batch_size": int, "seed": int, "stats_every": int, "eval_every": int,
    "fid_samples": int, "fid_final_samples": int, "fid_inf": bool, "fid_extractor": str,
    "fid_ref_split": str, "device": str, "step_mode": str, "precision": str,
}

#: Params a trial derives and logs beside its keys.
DERIVED_PARAM_TYPES: dict[str, type] = {
    "lipschitz_k": float, "n_d_layers": int, "omega_bound": float, "g_params": int,
    "d_params": int,
}

# --- roles of the trial keys ------------------------------------------------------------------

#: The roles a key can have (docs/design.md, "The analysis": only science keys form strata):
#:
#: * ``stratum`` (science) — fixes what a number *means*: runs that differ in it are never compared
#:   (other data, architecture, feature extractor, FID sample size or reference split);
#: * ``factor`` (science) — a treatment: a paper's hypothesis may vary it, and a configuration is
#:   defined by it (loss, regularizer and its scalars, α, optimizer and ε, training length, batch);
#: * ``replicate`` — the seed: runs equal in every science key are replicates of one configuration;
#: * ``execution`` — how a trial runs, not what it computes (same arithmetic up to float rounding:
#:   device, step mode, precision, where data lives, statistics/evaluation cadence). Never a
#:   stratum, never part of a configuration's identity;
#: * ``measurement`` — adds records without changing any other (FID∞ on the final features);
#: * ``derived`` — a function of the science keys (K = k_SN^n, Ω's bound, parameter counts),
#:   redundant in a configuration's identity.
ROLES: tuple[str, ...] = ("stratum", "factor", "replicate", "execution", "measurement", "derived")
SCIENCE_ROLES: frozenset[str] = frozenset({"stratum", "factor"})

_STRATA = ("dataset", "resolution", "arch", "fid_samples", "fid_final_samples", "fid_extractor",
           "fid_ref_split")
_FACTORS = ("width", "d_bias", "d_norm", "z_dim", "loss", "alpha", "regularizer", "k_sn", "k_gp",
            "gp_lambda", "gp_mode", "r1_gamma", "gran_k", "gran_eps", "alr_k", "alr_lambda",
            "alr_xi", "alr_eps_min", "alr_eps_max", "alr_iters", "js_gamma0", "js_decay",
            "clip_c", "optimizer", "lr_d", "lr_g", "eps", "n_dis", "beta1", "beta2",
            "rmsprop_decay", "iterations", "batch_size")
_EXECUTION = ("device", "step_mode", "precision", "data_root", "download", "stats_every",
              "eval_every")

#: The role of every trial key and derived param, declared once. A trial key without a role fails
#: ``tests/analysis/test_key_roles.py``; ``analysis.outcome`` builds configurations and strata from
#: the science keys only (:data:`SCIENCE_ROLES`).
KEY_ROLES: dict[str, str] = {
    **{k: "stratum" for k in _STRATA}, **{k: "factor" for k in _FACTORS},
    **{k: "execution" for k in _EXECUTION}, "seed": "replicate", "fid_inf": "measurement",
    **{k: "derived" for k in DERIVED_PARAM_TYPES},
}


def keys_with_role(*roles: str) -> tuple[str, ...]:
    """The declared keys whose role is one of ``roles`` (in declaration order)."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown key role {unknown[0]!r}; roles: {', '.join(ROLES)}")
    return tuple(k for k, r in KEY_ROLES.items() if r in roles)


#: The science keys (strata and factors): the only keys that identify a configuration.
SCIENCE_KEYS: tuple[str, ...] = keys_with_role(*sorted(SCIENCE_ROLES))
#: The execution keys: never a stratum, never part of a configuration.
EXECUTION_KEYS: tuple[str, ...] = keys_with_role("execution")

#: What a run executed on (``trainables.environment.environment_params``), logged as params when
#: the run is created: execution facts, never strata of an analysis.
ENVIRONMENT_PARAM_TYPES: dict[str, type] = {
    "env_python": str, "env_platform": str, "env_torch": str, "env_cuda": str, "env_cudnn": str,
    "env_device_type": str, "env_device_name": str, "env_tf32_matmul": str, "env_tf32_cudnn": str,
    "env_float32_matmul_precision": str, "env_cudnn_benchmark": str,
}

# --- metrics ----------------------------------------------------------------------------------

#: Per-step metrics a trial logs (an analysis frame keeps each one's value at the last step).
METRICS: tuple[str, ...] = (
    "fid", "kid", "fid_ref_samples", "loss_d", "loss_g", "penalty",
    "omega_real_min", "omega_real_max", "omega_fake_min", "omega_fake_max",
    "omega_union_min", "omega_union_max", "omega_within_bound",
    "psi_min", "psi_max", "psi_attained_min", "psi_attained_max", "psi_attained_mean",
    "grad_norm_real", "grad_norm_fake", "sn_sigma_product", "sn_k_product",
    "modes_covered", "hq_share", "step_time_median_ms", "diverged",
    # the end-of-training evaluation and the FID scale (issue #10)
    "fid_final", "kid_final", "fid_inf", "fid_floor", "fid_init", "fid_quality",
    "fid_quality_final", "fid_floor_final", "fid_init_final", "modes_covered_final",
    "hq_share_final", "step_time_mean_ms",
)

#: The parent run's summary metric (best ``fid`` over its finished trials).
BEST_FID_METRIC = "best_fid"
