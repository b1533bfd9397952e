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
# provenance of the code a run (or the study's driver) imported: trainables.tracking.provenance
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

# The trial keys (the MLflow param names), one constant each.
# data
DATASET, DATA_ROOT, DOWNLOAD, RESOLUTION = "dataset", "data_root", "download", "resolution"
# model
ARCH, WIDTH, D_BIAS, D_NORM, Z_DIM = "arch", "width", "d_bias", "d_norm", "z_dim"
# loss
LOSS, ALPHA = "loss", "alpha"
# regularizer and its own keys
REGULARIZER, K_SN, K_GP, GP_LAMBDA, GP_MODE = "regularizer", "k_sn", "k_gp", "gp_lambda", "gp_mode"
R1_GAMMA, GRAN_K, GRAN_EPS, ALR_K = "r1_gamma", "gran_k", "gran_eps", "alr_k"
ALR_LAMBDA, ALR_XI, ALR_EPS_MIN, ALR_EPS_MAX = "alr_lambda", "alr_xi", "alr_eps_min", "alr_eps_max"
ALR_ITERS, JS_GAMMA0, JS_DECAY, CLIP_C = "alr_iters", "js_gamma0", "js_decay", "clip_c"
# optimizer
OPTIMIZER, LR_D, LR_G, EPS, N_DIS, BETA1 = "optimizer", "lr_d", "lr_g", "eps", "n_dis", "beta1"
BETA2, RMSPROP_DECAY = "beta2", "rmsprop_decay"
# run
ITERATIONS, BATCH_SIZE, SEED, STATS_EVERY = "iterations", "batch_size", "seed", "stats_every"
EVAL_EVERY, FID_SAMPLES, FID_FINAL_SAMPLES = "eval_every", "fid_samples", "fid_final_samples"
FID_INF, FID_EXTRACTOR, FID_REF_SPLIT = "fid_inf", "fid_extractor", "fid_ref_split"
DEVICE, STEP_MODE, PRECISION = "device", "step_mode", "precision"

# The params a trial derives (below), one constant each.
LIPSCHITZ_K, N_D_LAYERS, OMEGA_BOUND = "lipschitz_k", "n_d_layers", "omega_bound"
G_PARAMS, D_PARAMS = "g_params", "d_params"

#: Every trial key (the MLflow param names) and its type. Optional keys (``data_root``,
#: ``resolution``, ``fid_final_samples``) are typed by their value when present.
TRIAL_PARAM_TYPES: dict[str, type] = {
    # data
    DATASET: str, DATA_ROOT: str, DOWNLOAD: bool, RESOLUTION: int,
    # model
    ARCH: str, WIDTH: float, D_BIAS: bool, D_NORM: str, Z_DIM: int,
    # loss
    LOSS: str, ALPHA: float,
    # regularizer and its own keys
    REGULARIZER: str, K_SN: float, K_GP: float, GP_LAMBDA: float, GP_MODE: str,
    R1_GAMMA: float, GRAN_K: float, GRAN_EPS: float, ALR_K: float, ALR_LAMBDA: float,
    ALR_XI: float, ALR_EPS_MIN: float, ALR_EPS_MAX: float, ALR_ITERS: int,
    JS_GAMMA0: float, JS_DECAY: float, CLIP_C: float,
    # optimizer
    OPTIMIZER: str, LR_D: float, LR_G: float, EPS: float, N_DIS: int,
    BETA1: float, BETA2: float, RMSPROP_DECAY: float,
    # run
    ITERATIONS: int, BATCH_SIZE: int, SEED: int, STATS_EVERY: int, EVAL_EVERY: int,
    FID_SAMPLES: int, FID_FINAL_SAMPLES: int, FID_INF: bool, FID_EXTRACTOR: str,
    FID_REF_SPLIT: str, DEVICE: str, STEP_MODE: str, PRECISION: str,
}

#: Params a trial derives and logs beside its keys.
DERIVED_PARAM_TYPES: dict[str, type] = {
    LIPSCHITZ_K: float, N_D_LAYERS: int, OMEGA_BOUND: float, G_PARAMS: int,
    D_PARAMS: int,
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

_STRATA = (DATASET, RESOLUTION, ARCH, FID_SAMPLES, FID_FINAL_SAMPLES, FID_EXTRACTOR,
           FID_REF_SPLIT)
_FACTORS = (WIDTH, D_BIAS, D_NORM, Z_DIM, LOSS, ALPHA, REGULARIZER, K_SN, K_GP,
            GP_LAMBDA, GP_MODE, R1_GAMMA, GRAN_K, GRAN_EPS, ALR_K, ALR_LAMBDA,
            ALR_XI, ALR_EPS_MIN, ALR_EPS_MAX, ALR_ITERS, JS_GAMMA0, JS_DECAY,
            CLIP_C, OPTIMIZER, LR_D, LR_G, EPS, N_DIS, BETA1, BETA2,
            RMSPROP_DECAY, ITERATIONS, BATCH_SIZE)
_EXECUTION = (DEVICE, STEP_MODE, PRECISION, DATA_ROOT, DOWNLOAD, STATS_EVERY,
              EVAL_EVERY)

#: The role of every trial key and derived param, declared once. A trial key without a role fails
#: ``tests/analysis/test_key_roles.py``; ``analysis.outcome`` builds configurations and strata from
#: the science keys only (:data:`SCIENCE_ROLES`).
KEY_ROLES: dict[str, str] = {
    **{k: "stratum" for k in _STRATA}, **{k: "factor" for k in _FACTORS},
    **{k: "execution" for k in _EXECUTION}, SEED: "replicate", FID_INF: "measurement",
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

# What a run executed on (below), one constant each.
ENV_PYTHON, ENV_PLATFORM, ENV_TORCH = "env_python", "env_platform", "env_torch"
ENV_CUDA, ENV_CUDNN, ENV_DEVICE_TYPE = "env_cuda", "env_cudnn", "env_device_type"
ENV_DEVICE_NAME, ENV_TF32_MATMUL = "env_device_name", "env_tf32_matmul"
ENV_TF32_CUDNN, ENV_FLOAT32_MATMUL_PRECISION = "env_tf32_cudnn", "env_float32_matmul_precision"
ENV_CUDNN_BENCHMARK = "env_cudnn_benchmark"

#: What a run executed on (``trainables.tracking.environment.environment_params``), logged as params when
#: the run is created: execution facts, never strata of an analysis.
ENVIRONMENT_PARAM_TYPES: dict[str, type] = {
    ENV_PYTHON: str, ENV_PLATFORM: str, ENV_TORCH: str, ENV_CUDA: str, ENV_CUDNN: str,
    ENV_DEVICE_TYPE: str, ENV_DEVICE_NAME: str, ENV_TF32_MATMUL: str, ENV_TF32_CUDNN: str,
    ENV_FLOAT32_MATMUL_PRECISION: str, ENV_CUDNN_BENCHMARK: str,
}

# --- metrics ----------------------------------------------------------------------------------

# The metric names, one constant each (``FID_INF`` and ``DIVERGED`` are params/tag values too).
FID, KID, FID_REF_SAMPLES, LOSS_D, LOSS_G = "fid", "kid", "fid_ref_samples", "loss_d", "loss_g"
PENALTY, OMEGA_REAL_MIN, OMEGA_REAL_MAX = "penalty", "omega_real_min", "omega_real_max"
OMEGA_FAKE_MIN, OMEGA_FAKE_MAX = "omega_fake_min", "omega_fake_max"
OMEGA_UNION_MIN, OMEGA_UNION_MAX = "omega_union_min", "omega_union_max"
OMEGA_WITHIN_BOUND, PSI_MIN, PSI_MAX = "omega_within_bound", "psi_min", "psi_max"
PSI_ATTAINED_MIN, PSI_ATTAINED_MAX = "psi_attained_min", "psi_attained_max"
PSI_ATTAINED_MEAN, GRAD_NORM_REAL = "psi_attained_mean", "grad_norm_real"
GRAD_NORM_FAKE, SN_SIGMA_PRODUCT = "grad_norm_fake", "sn_sigma_product"
SN_K_PRODUCT, MODES_COVERED, HQ_SHARE = "sn_k_product", "modes_covered", "hq_share"
STEP_TIME_MEDIAN_MS, DIVERGED, FID_FINAL = "step_time_median_ms", "diverged", "fid_final"
KID_FINAL, FID_FLOOR, FID_INIT, FID_QUALITY = "kid_final", "fid_floor", "fid_init", "fid_quality"
FID_QUALITY_FINAL, FID_FLOOR_FINAL = "fid_quality_final", "fid_floor_final"
FID_INIT_FINAL, MODES_COVERED_FINAL = "fid_init_final", "modes_covered_final"
HQ_SHARE_FINAL, STEP_TIME_MEAN_MS = "hq_share_final", "step_time_mean_ms"

#: Per-step metrics a trial logs (an analysis frame keeps each one's value at the last step).
METRICS: tuple[str, ...] = (
    FID, KID, FID_REF_SAMPLES, LOSS_D, LOSS_G, PENALTY,
    OMEGA_REAL_MIN, OMEGA_REAL_MAX, OMEGA_FAKE_MIN, OMEGA_FAKE_MAX,
    OMEGA_UNION_MIN, OMEGA_UNION_MAX, OMEGA_WITHIN_BOUND,
    PSI_MIN, PSI_MAX, PSI_ATTAINED_MIN, PSI_ATTAINED_MAX, PSI_ATTAINED_MEAN,
    GRAD_NORM_REAL, GRAD_NORM_FAKE, SN_SIGMA_PRODUCT, SN_K_PRODUCT,
    MODES_COVERED, HQ_SHARE, STEP_TIME_MEDIAN_MS, DIVERGED,
    # the end-of-training evaluation and the FID scale
    FID_FINAL, KID_FINAL, FID_INF, FID_FLOOR, FID_INIT, FID_QUALITY,
    FID_QUALITY_FINAL, FID_FLOOR_FINAL, FID_INIT_FINAL, MODES_COVERED_FINAL,
    HQ_SHARE_FINAL, STEP_TIME_MEAN_MS,
)

#: Metrics some trials log beside :data:`METRICS`, read by name by the analysis.
LIPSCHITZ_CERTIFIED = "lipschitz_certified"  # SN trials, at the end (trainables.metrics.lipschitz_bound)
GRAD_NORM_REAL_MAX = "grad_norm_real_max"    # the largest ‖∇ₓf‖ over a real batch
GRAD_NORM_FAKE_MAX = "grad_norm_fake_max"    # the same over a generated batch
OTHER_METRICS: tuple[str, ...] = (LIPSCHITZ_CERTIFIED, GRAD_NORM_REAL_MAX, GRAD_NORM_FAKE_MAX)

#: The parent run's summary metric (best ``fid`` over its finished trials).
BEST_FID_METRIC = "best_fid"
