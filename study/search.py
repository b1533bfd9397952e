"""The Optuna side of a searched study: define-by-run space, sampler, persistent storage.

* ``DefineByRun``: the study's ``space`` in file order; a conditional key (``when``) is suggested
  only when its condition holds, so inactive keys (k_SN without SN, β's without Adam) are absent
  from the trial and from Optuna's record. A top-level class, not a closure: Tune pickles the
  searcher into its experiment checkpoint so a resumed study keeps its state.
* ``make_sampler``: TPE by default, ``random`` / ``qmc`` selectable, seeded by ``sampler_seed``.
* ``optuna_storage``: a ``JournalStorage`` file (``optuna.journal``) in the study directory next to
  the Ray results, or an RDB URL. ``optuna-dashboard <file or URL>`` opens it; Tune pickles the
  storage object with the searcher, and on restore Optuna replays the journal, so the resumed
  searcher sees every trial told before the driver died.
* ``PackedOptunaSearch``: a searched study with ``population: P``: one Tune trial is a
  pack of ``⌊P / n_seeds⌋`` configurations asked from the same persistent Optuna study, each run
  with every seed in that pack; each configuration's Optuna trial is told the mean final FID of its
  seeds (inf when any diverged), as ``Repeater`` tells a one-config study.
* ``objective``: what a search optimises. Image datasets: the final ``fid``, minimised. 2-D toys:
  ``toy_quality`` (``trainables.metrics.toy_quality``: modes covered × high-quality share, in [0, 1]),
  maximised — the toys' data-space Fréchet distance compares two moments only and ranks a
  generator with 2 of 8 modes and no sample near a mode best. The parent run says which
  (tag ``lipstudy.objective``); a diverged trial reports the objective's worst value.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Any

from study.spec import StudySpec
from trainables.names import DATASET, DIVERGED, FID, REGULARIZER, SEED

JOURNAL_FILE = "optuna.journal"
METRIC, MODE = FID, "min"


def study_datasets(spec: StudySpec) -> list[str]:
    """The datasets a study's trials use: the searched choices, else the fixed (or default) one."""
    from trainables.config import BaseTrial

    entry = spec.space.get(DATASET)
    if entry is not None and entry.choice is not None:
        return [str(d) for d in entry.choice]
    return [str(spec.fixed.get(DATASET, BaseTrial.model_fields[DATASET].default))]


def objective(spec: StudySpec) -> tuple[str, str]:
    """(metric, mode) a study's searcher and scheduler optimise: ``toy_quality``/max when every
    dataset of the study is a 2-D toy, else ``fid``/min (see the module docstring)."""
    from trainables.data.datasets import is_toy
    from trainables.metrics.toy_quality import TOY_QUALITY

    if all(is_toy(d) for d in study_datasets(spec)):
        return TOY_QUALITY, "max"
    return METRIC, MODE


def objective_text(spec: StudySpec) -> str:
    """One line naming what a search optimises (the parent run's ``lipstudy.objective`` tag)."""
    from trainables.metrics.toy_quality import describe_objective

    return describe_objective(objective(spec)[0])


def name_metric(study, metric: str) -> None:
    """Record the objective's name in the Optuna study (what ``analysis.optuna_figures`` and
    optuna-dashboard label the value with), once."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    if study.metric_names != [metric]:
        with warnings.catch_warnings():  # set_metric_names is marked experimental
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names([metric])


class DefineByRun:
    """Optuna define-by-run space of a study (see the module docstring)."""

    def __init__(self, spec: StudySpec):
        self.space = spec.space

    def __call__(self, trial) -> None:
        chosen: dict[str, Any] = {}
        for key, entry in self.space.items():
            if not entry.active(chosen):
                continue
            if entry.choice is not None:
                chosen[key] = trial.suggest_categorical(key, entry.choice)
            elif entry.loguniform is not None:
                chosen[key] = trial.suggest_float(key, *entry.loguniform, log=True)
            elif entry.uniform is not None:
                chosen[key] = trial.suggest_float(key, *entry.uniform)
            else:
                chosen[key] = trial.suggest_int(key, *entry.int_)


def make_sampler(spec: StudySpec):
    """``search: random`` → RandomSampler; ``search: optuna`` → the study's ``sampler``."""
    import optuna

    name = "random" if spec.search == "random" else spec.sampler
    if name == "tpe":
        # multivariate + group: TPE models the conditional (define-by-run) space jointly;
        # constant_liar (Optuna 5's default, explicit for older ones): a trial asked but not told
        # yet counts as a bad one, so concurrent asks (a pack's members, concurrent trials) spread
        return optuna.samplers.TPESampler(seed=spec.sampler_seed, multivariate=True, group=True,
                                          constant_liar=True)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=spec.sampler_seed, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=spec.sampler_seed)


def is_local_path(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def storage_location(spec: StudySpec, study_dir: str) -> str:
    """Where the Optuna study lives: the study's ``optuna_storage`` (RDB URL or journal path),
    else ``<study dir>/optuna.journal`` when the study dir is local, else a journal on the
    driver's disk (``~/lipstudy_state/<run name>/optuna.journal``: a journal needs file locks,
    which object stores such as S3 do not give)."""
    if spec.optuna_storage:
        loc = spec.optuna_storage
        return loc if "://" in loc else str(Path(os.path.expanduser(loc)).resolve())
    if is_local_path(study_dir):
        return str(Path(study_dir.removeprefix("file://")) / JOURNAL_FILE)
    return str(Path.home() / "lipstudy_state" / Path(study_dir.rstrip("/")).name / JOURNAL_FILE)


def open_storage(location: str):
    """An Optuna storage object for ``location`` (a journal file path or an RDB URL)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in location:
        return optuna.storages.RDBStorage(location)
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(location))


def _persistent_optuna_search():
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch


class PersistentOptunaSearch(_persistent_optuna_search()):
    """``OptunaSearch`` whose Optuna study lives in a persistent storage, reconciled on restore.

    Tune saves the searcher (pickled ``__dict__``, with the Optuna study and its storage object)
    in its periodic experiment checkpoint; ``Tuner.restore`` brings that searcher back (the
    Ray #30861 fix), but the storage has moved on since that checkpoint: trials told COMPLETE
    after it, and trials asked after it that Tune will never run. With Ray 2.60 / Optuna 5,
    after a SIGKILLed driver the restored searcher re-reports a trial the journal
    already holds as finished and ``UpdateFinishedTrialError`` fails the resume. So: results for
    trials the storage already finished are skipped (they were recorded), and on restore the
    trials still RUNNING in the storage that the restored searcher does not know are marked
    FAIL (stale asks; Tune suggests new ones in their place).
    """

    def _setup_study(self, mode) -> None:
        super()._setup_study(mode)
        name_metric(self._ot_study, self._metric)

    def _finished_in_storage(self, trial_id: str) -> bool:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
        return frozen.state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and self._finished_in_storage(trial_id):
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._ot_trials and self._finished_in_storage(trial_id):
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        import optuna

        study = getattr(self, "_ot_study", None)
        if study is None:
            return
        known = {t._trial_id for t in self._ot_trials.values()}
        for frozen in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if frozen.state == optuna.trial.TrialState.RUNNING and frozen._trial_id not in known:
                study._storage.set_trial_state_values(frozen._trial_id,
                                                      optuna.trial.TrialState.FAIL)


def fixed_regularizer(spec: StudySpec) -> str:
    """The regularizer of a searched study's trials when it is not searched (fixed or default)."""
    from trainables.config import BaseTrial

    return spec.fixed.get(REGULARIZER, BaseTrial.model_fields[REGULARIZER].default)


def configs_per_pack(spec: StudySpec) -> int:
    """How many configurations one pack of a searched study holds: ``⌊population / n_seeds⌋``
    (a pack runs every seed of its configurations), or 0 when the study does not pack (a grid,
    ``population: 1``, or a fixed regularizer the population cannot batch: one config per trial).
    Validation (``study.schema``) has refused searched shape keys and more seeds than P."""
    from trainables.pack.packing import POPULATION_REGULARIZERS

    if spec.search == "grid" or spec.population <= 1:
        return 0
    if REGULARIZER not in spec.space and fixed_regularizer(spec) not in POPULATION_REGULARIZERS:
        return 0
    return max(1, spec.population // spec.n_seeds)


def _searcher_base():
    from ray.tune.search import Searcher

    return Searcher


class PackedOptunaSearch(_searcher_base()):
    """Tune searcher of a searched study with ``population: P``: one Tune trial is one pack.

    * ``suggest`` asks the persistent Optuna study ``k = ⌊P / n_seeds⌋`` times (fewer for the last
      pack, so that ``num_samples`` configurations are asked in all) and returns
      ``{"pack": [member configs]}`` for ``trainables.ray.trainable.run_pack``: configuration j
      with seed s is member ``j·n_seeds + s`` (``spec.fixed`` + the asked params + ``seed``).
      TPE runs with ``constant_liar`` (``make_sampler``): the pack's asks, all pending together,
      spread over the space; the papers' defaults (``points_to_evaluate``, enqueued once in the
      storage) are asked first.
    * ``on_trial_result`` keeps the pack's last report and records each configuration's
      intermediate value (mean ``<metric>_m<i>`` of its seeds at ``step``, the metric being the
      study's ``objective``) for optuna-dashboard; ``on_trial_complete`` tells each
      configuration's Optuna trial the mean final value of its seeds, the objective's worst
      value when any of them diverged (``diverged_m<i>``, or the whole pack's ``diverged``),
      as Tune's ``Repeater`` does for one-config trials. A pack that errored → FAIL. A trial the
      storage already holds as finished is never told again (a resumed study re-runs packs whose
      results were told after Tune's last experiment checkpoint).
    * Tune pickles the searcher (``__getstate__``: everything but the open Optuna study, reopened
      from ``storage_loc`` when needed). ``restore`` brings back the state of Tune's last
      experiment checkpoint; asks made after it (trials still RUNNING in the storage that no
      known pack holds) are marked FAIL, and an enqueued default among them is enqueued again so
      it still runs.
    """

    CKPT_FILE_TMPL = "searcher-state-{}.pkl"

    def __init__(self, spec: StudySpec, storage_loc: str, study_name: str):
        metric, mode = objective(spec)
        super().__init__(metric=metric, mode=mode)
        self._space = DefineByRun(spec)
        self._fixed = dict(spec.fixed)
        self._seeds = list(spec.seed_list)
        self._per_pack = configs_per_pack(spec)
        if self._per_pack < 1:
            raise ValueError(f"study {spec.name!r} does not pack (population "
                             f"{spec.population}, search {spec.search})")
        self._num_samples = spec.num_samples
        self._sampler = make_sampler(spec)
        self._location, self._study_name = storage_loc, study_name
        self._packs: dict[str, list[tuple[int, int]]] = {}  # Tune trial id → (number, storage id)
        self._configs: dict[str, dict[str, Any]] = {}  # Tune trial id → its suggested config
        self._last: dict[str, dict[str, Any]] = {}  # Tune trial id → its last report
        self._done: set[str] = set()  # Tune trial ids told (or failed)
        self._asked = 0  # configurations asked so far
        self._ot_study = None
        study = self.study
        if not study.get_trials(deepcopy=False):
            for point in spec.points_to_evaluate:
                study.enqueue_trial(dict(point))
        else:  # an earlier execution's storage (no Tune state to restore): its asks are stale
            self._fail_stale_asks()

    # --- pickling and the Optuna study ----------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ot_study"] = None  # the storage is reopened, never pickled (file locks, sessions)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ot_study = None

    @property
    def study(self):
        if self._ot_study is None:
            import optuna

            self._ot_study = optuna.create_study(
                storage=open_storage(self._location), sampler=self._sampler,
                study_name=self._study_name, load_if_exists=True,
                direction="maximize" if self._mode == "max" else "minimize")
            name_metric(self._ot_study, self._metric)
        return self._ot_study

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__getstate__(), fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__setstate__(pickle.load(fh))
        self._fail_stale_asks()

    def _fail_stale_asks(self) -> None:
        import optuna

        known = {number for members in self._packs.values() for number, _ in members}
        study = self.study
        for frozen in study.get_trials(deepcopy=False,
                                       states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.number in known:
                continue
            study._storage.set_trial_state_values(frozen._trial_id,
                                                  optuna.trial.TrialState.FAIL)
            fixed = frozen.system_attrs.get("fixed_params")
            if fixed:  # a default (points_to_evaluate) that never ran: it still goes first
                study.enqueue_trial(dict(fixed))

    # --- Tune's searcher interface ---------------------------------------------------------

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space is the study's (define-by-run); metric/mode its objective()

    def suggest(self, trial_id: str):
        if trial_id in self._configs:
            return self._configs[trial_id]
        remaining = self._num_samples - self._asked
        if remaining <= 0:
            return self.FINISHED
        members, asked = [], []
        for _ in range(min(self._per_pack, remaining)):
            ot_trial = self.study.ask()
            self._space(ot_trial)
            asked.append((ot_trial.number, ot_trial._trial_id))
            members.extend({**self._fixed, **ot_trial.params, SEED: seed}
                           for seed in self._seeds)
        self._asked += len(asked)
        self._packs[trial_id] = asked
        self._configs[trial_id] = {"pack": members}
        return self._configs[trial_id]

    def config_value(self, result: dict[str, Any], j: int) -> float | None:
        """Configuration j's value in a pack report: the mean objective (``<metric>_m<i>``) of its
        seeds' members, a diverged member counting as the objective's worst value (inf for FID,
        so the mean is inf; 0 for toy quality), as ``Repeater`` averages one-config trials'
        reports; None when a member has no value in the report (nothing to tell)."""
        from trainables.metrics.toy_quality import TOY_QUALITY_WORST

        n = len(self._seeds)
        worst = math.inf if self._mode == "min" else TOY_QUALITY_WORST
        if result.get(DIVERGED) == 1:  # every member of the pack diverged
            return worst
        values = []
        for i in range(j * n, (j + 1) * n):
            if result.get(f"diverged_m{i}") == 1:
                values.append(worst)
                continue
            value = result.get(f"{self._metric}_m{i}")
            if not isinstance(value, (int, float)):
                return None
            values.append(float(value))
        value = sum(values) / n
        return value if math.isfinite(value) else worst

    def _running(self, storage_id: int) -> bool:
        return not self.study._storage.get_trial(storage_id).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._packs or trial_id in self._done:
            return
        self._last[trial_id] = {k: v for k, v in result.items()
                                if k == "step" or k.startswith((f"{self._metric}_m", DIVERGED))}
        step = result.get("step")
        if step is None:
            return
        for j, (_, storage_id) in enumerate(self._packs[trial_id]):
            value = self.config_value(result, j)
            if value is not None and math.isfinite(value) and self._running(storage_id):
                self.study._storage.set_trial_intermediate_value(storage_id, int(step), value)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        import optuna

        if trial_id not in self._packs or trial_id in self._done:
            return
        self._done.add(trial_id)
        result = result or self._last.pop(trial_id, None) or {}
        self._last.pop(trial_id, None)
        for j, (number, storage_id) in enumerate(self._packs[trial_id]):
            if not self._running(storage_id):
                continue  # told before (a resumed study re-ran this pack): never twice
            value = None if error else self.config_value(result, j)
            if value is None:
                self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(number, value)


def build_searcher(spec: StudySpec, storage_loc: str, study_name: str):
    """``OptunaSearch`` (define-by-run, persistent storage, the papers' defaults first) wrapped in
    Tune's ``Repeater`` when each configuration runs several seeds; ``PackedOptunaSearch`` when
    the study packs configurations into population trials (``configs_per_pack``)."""
    from ray.tune.search import Repeater

    if configs_per_pack(spec):
        return PackedOptunaSearch(spec, storage_loc, study_name)

    # metric/mode on the searcher itself: Repeater does not forward them from TuneConfig
    metric, mode = objective(spec)
    searcher = PersistentOptunaSearch(
        DefineByRun(spec), metric=metric, mode=mode, sampler=make_sampler(spec),
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
        storage=open_storage(storage_loc), study_name=study_name,
    )
    if len(spec.seed_list) > 1:
        # Repeater tells Optuna the mean objective of the replicates (a diverged one reports the
        # objective's worst value: trainables.metrics.toy_quality.diverged_values)
        searcher = Repeater(searcher, repeat=len(spec.seed_list), set_index=True)
    return searcher


def load_optuna_study(location: str, study_name: str):
    """The persisted Optuna study (what ``optuna-dashboard`` shows)."""
    import optuna

    return optuna.load_study(study_name=study_name, storage=open_storage(location))
