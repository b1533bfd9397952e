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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from study.spec import StudySpec

JOURNAL_FILE = "optuna.journal"
METRIC, MODE = "fid", "min"


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
        # multivariate + group: TPE models the conditional (define-by-run) space jointly
        return optuna.samplers.TPESampler(seed=spec.sampler_seed, multivariate=True, group=True)
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


def dashboard_command(location: str) -> str:
    return f"optuna-dashboard {location}"


def _persistent_optuna_search():
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch


class PersistentOptunaSearch(_persistent_optuna_search()):
    """``OptunaSearch`` whose Optuna study lives in a persistent storage, reconciled on restore.

    Tune saves the searcher (pickled ``__dict__``, with the Optuna study and its storage object)
    in its periodic experiment checkpoint; ``Tuner.restore`` brings that searcher back (the
    Ray #30861 fix), but the storage has moved on since that checkpoint: trials told COMPLETE
    after it, and trials asked after it that Tune will never run. Measured with Ray 2.60 /
    Optuna 5 after a SIGKILLed driver: the restored searcher re-reports a trial the journal
    already holds as finished and ``UpdateFinishedTrialError`` fails the resume. So: results for
    trials the storage already finished are skipped (they were recorded), and on restore the
    trials still RUNNING in the storage that the restored searcher does not know are marked
    FAIL (stale asks; Tune suggests new ones in their place).
    """

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


def build_searcher(spec: StudySpec, storage_loc: str, study_name: str):
    """``OptunaSearch`` (define-by-run, persistent storage, the papers' defaults first) wrapped in
    Tune's ``Repeater`` when each configuration runs several seeds."""
    from ray.tune.search import Repeater

    # metric/mode on the searcher itself: Repeater does not forward them from TuneConfig
    searcher = PersistentOptunaSearch(
        DefineByRun(spec), metric=METRIC, mode=MODE, sampler=make_sampler(spec),
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
        storage=open_storage(storage_loc), study_name=study_name,
    )
    if len(spec.seed_list) > 1:
        # Repeater tells Optuna the mean FID of the replicates (inf if any diverged: worst)
        searcher = Repeater(searcher, repeat=len(spec.seed_list), set_index=True)
    return searcher


def load_optuna_study(location: str, study_name: str):
    """The persisted Optuna study (what ``optuna-dashboard`` shows)."""
    import optuna

    return optuna.load_study(study_name=study_name, storage=open_storage(location))
