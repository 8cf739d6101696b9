"""Every private Ray Tune or Optuna attribute the sweep layer reaches, each behind a small named function, so a new
Ray or Optuna release is checked in one place. Written against Ray 2.60.x and Optuna 5.0.x, 5.1.x (WRITTEN_AGAINST):
tests/test_sweep_internals.py fails on other versions, naming each attribute to re-check, and checks that every one
still exists on real objects. run_sweep prints a warning line when it runs on other versions (untested_versions).

No import of Ray or Optuna at module level: the functions take the objects they reach into. The private attributes
and why each is needed are PRIVATE, listed at the end of this docstring.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

# The releases the private attributes below were read in, as version prefixes: each one named here was read and
# passed tests/test_sweep_internals.py. pyproject.toml admits exactly these; a release outside them may rename or
# change any attribute below, so the guard is per minor release, not per major.
WRITTEN_AGAINST = {"ray": ("2.60.",), "optuna": ("5.0.", "5.1.")}

# (owner, attribute, why fercore needs it). Each function below names the entries it uses.
PRIVATE = (
    ("ray.tune.search.optuna.OptunaSearch", "_ot_trials",
     "Ray trial id -> Optuna trial: a trial without a finite value of every objective is told FAIL (Ray's "
     "on_trial_complete tells None or NaN as COMPLETE, which Optuna refuses, leaving the trial RUNNING), and one "
     "the scheduler stopped PRUNED (Ray's tells its last epoch's value as COMPLETE); a told trial's entry is "
     "dropped (Ray keeps every one, with a copy of its FrozenTrial, and pickles them with each save)"),
    ("ray.tune.search.optuna.OptunaSearch", "_ot_study", "the study that such a trial is told to"),
    ("ray.tune.search.optuna.OptunaSearch", "_completed_trials",
     "the Ray trial ids told so far: a trial told here is added, as Ray's on_trial_complete adds its own"),
    ("optuna.study.Study", "_storage",
     "whether a resumed sweep's trial was already told to its persistent study (optuna_storage) before the driver "
     "stopped; Study.trials would copy every trial at each completion"),
    ("optuna.trial.Trial", "_trial_id", "the trial's id in that storage (Trial.number counts within the study)"),
    ("ray.tune.search.Repeater", "_trial_id_to_group",
     "Ray trial id -> its seed group (ray.tune.search.repeater._TrialGroup: report, finished_reporting, scores, "
     "primary_trial_id), to average several objectives over a config's seeds (Ray's Repeater averages one)"),
    ("ray.tune.Tuner", "_local_tuner",
     "TunerInternal.get_run_config(): a restored sweep's RunConfig, whose results callback is pointed at this "
     "run's folder; Tuner has no public getter for it"),
    ("ray.tune.experiment.Trial", "storage.experiment_driver_staging_path",
     "StorageContext (ray.train._internal.storage): the driver's staging folder of Ray's experiment state, "
     "consistent between two steps of Ray's loop, which fercore.sweep.state keeps whole for --resume"),
    ("ray.tune.experiment.Trial", "_default_result_or_future",
     "an ObjectRef to the trial actor's auto-filled metrics, which Ray resolves only for a trial that never "
     "reported: kept by every finished trial for the whole sweep otherwise (and with it its object), so dropped"),
    ("ray.tune.experiment.Trial", "run_metadata.metric_n_steps, metric_analysis, last_result",
     "_TrainingRunMetadata: the running statistics (a dict and two deques for every number of a result, Ray's "
     "own included) and the last result of a finished trial, which Ray keeps and saves with its state at every "
     "save for the whole sweep; nothing reads them once its scheduler, searcher and callbacks were told it ended "
     "(fercore records its own results)"),
    ("ray.tune.result", "AUTO_RESULT_KEYS",
     "the keys Ray adds to every result (an undocumented module): left out of the epochs table"),
    ("optuna.samplers._ga._base.BaseGASampler", "_thread_lock",
     "a threading.Lock (Optuna 5.1; absent in 5.0) held by NSGA-II, which Ray's Tuner cannot pickle with the "
     "searcher: dropped when the sampler is pickled and made anew when it is unpickled"),
    # Not reached through a function here: names that fercore.sweep.state.STATE_PATTERNS spells out.
    ("ray.tune.execution.tune_controller.TuneController", "CKPT_FILE_TMPL",
     "experiment_state-*.json, the trials' state: one of the files fercore.sweep.state keeps whole"),
    ("ray.tune.search.search_generator.SearchGenerator", "CKPT_FILE_TMPL",
     "search_gen_state-*.json, the search generator's state, kept with it"),
    ("ray.tune.search.Searcher", "CKPT_FILE_TMPL", "searcher-state-*.pkl, the searcher's state, kept with it"),
)


def untested_versions() -> list[str]:
    """'ray 2.61.0 (written against 2.60.x)' for each of Ray and Optuna installed at another version than
    WRITTEN_AGAINST; empty when both match."""
    out = []
    for package, prefixes in WRITTEN_AGAINST.items():
        try:
            found = version(package)
        except PackageNotFoundError:
            found = "not installed"
        if not found.startswith(prefixes):
            out.append(f"{package} {found} (written against {' or '.join(p + 'x' for p in prefixes)})")
    return out


def recheck_list() -> str:
    """The private attributes to re-check after a version change, one per line."""
    return "\n".join(f"  {owner}.{attribute}: {why}" for owner, attribute, why in PRIVATE)


# OptunaSearch (_ot_trials, _ot_study, _completed_trials) and Optuna's Study._storage, Trial._trial_id.

def search_completed(search, trial_id: str) -> bool:
    """Whether SEARCH (an OptunaSearch) has told Optuna the outcome of Ray trial TRIAL_ID."""
    return trial_id in search._completed_trials


def mark_completed(search, trial_id: str) -> None:
    search._completed_trials.add(trial_id)


def told_before(search, trial_id: str) -> bool:
    """Whether the Optuna trial of Ray trial TRIAL_ID is already finished in SEARCH's study: told by the driver that
    ran it before this one resumed the sweep with the same persistent study."""
    ot_trial = search._ot_trials.get(trial_id)
    return ot_trial is not None and search._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()


def forget_told(search, trial_id: str) -> None:
    """Drop SEARCH's Optuna trial object of Ray trial TRIAL_ID once it is told (it stays in the study); its id stays
    in the set of those told."""
    if search_completed(search, trial_id):
        search._ot_trials.pop(trial_id, None)


def tell_failed(search, trial_id: str) -> None:
    """Tell SEARCH's study that Ray trial TRIAL_ID failed, and mark it told."""
    import optuna

    search._ot_study.tell(search._ot_trials[trial_id], state=optuna.trial.TrialState.FAIL)
    mark_completed(search, trial_id)


def tell_pruned(search, trial_id: str) -> None:
    """Tell SEARCH's study that Ray trial TRIAL_ID was stopped by the scheduler (Optuna's PRUNED), and mark it told."""
    import optuna

    search._ot_study.tell(search._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
    mark_completed(search, trial_id)


# BaseGASampler (_thread_lock).

def sampler_state(sampler) -> dict[str, Any]:
    """SAMPLER's attributes to pickle: its thread lock, which cannot be pickled and guards nothing between processes
    (NSGA-II's generation cache is rebuilt from the study), replaced by a marker that it had one."""
    attributes = dict(vars(sampler))
    if attributes.pop("_thread_lock", None) is not None:
        attributes["_thread_lock"] = _LOCK_MARKER
    return attributes


def restore_sampler_state(sampler, attributes: dict[str, Any]) -> None:
    """Set an unpickled SAMPLER's ATTRIBUTES (from sampler_state), with a new lock where it had one."""
    import threading

    vars(sampler).update(attributes)
    if attributes.get("_thread_lock") == _LOCK_MARKER:
        sampler._thread_lock = threading.Lock()


_LOCK_MARKER = "fercore: a threading.Lock, made anew when unpickled"


# Repeater (_trial_id_to_group) and its _TrialGroup.

def report_repeat(repeater, trial_id: str, scores: list[float]) -> tuple[str, list[list[float]]] | None:
    """Record one seed's SCORES in its group of REPEATER (a ray.tune.search.Repeater); once every seed of the group
    has reported: (the group's primary trial id, which its searcher knows, and every seed's scores), else None."""
    group = repeater._trial_id_to_group[trial_id]
    group.report(trial_id, scores)
    return (group.primary_trial_id, group.scores()) if group.finished_reporting() else None


# Tuner (_local_tuner).

def restored_callbacks(tuner) -> list[Any]:
    """The callbacks of a Tuner made by Tuner.restore, as Ray unpickled them from the experiment state."""
    return tuner._local_tuner.get_run_config().callbacks or []


# Trial (storage.experiment_driver_staging_path).

def driver_staging_path(trial) -> str:
    """The folder in which the driver stages Ray's experiment state before copying it to the results folder."""
    return trial.storage.experiment_driver_staging_path


def lighten_finished(trial, drop: tuple[str, ...] = ()) -> None:
    """Drop what Ray keeps of a finished TRIAL for the rest of the sweep that nothing reads any more (its scheduler,
    searcher and callbacks were told it ended): the ObjectRef of its auto-filled metrics, the running statistics of
    every number it reported, and from its last result the copies of its config and tag and the keys DROP. Ray
    holds every trial for the whole sweep, and saves each one's state with its own at every save."""
    trial._default_result_or_future = None
    metadata = trial.run_metadata
    metadata.metric_n_steps = {}
    metadata.metric_analysis = {}
    gone = {"config", "experiment_tag", *drop}
    metadata.last_result = {k: v for k, v in metadata.last_result.items() if k not in gone}
    trial.invalidate_json_state()


# ray.tune.result (AUTO_RESULT_KEYS).

def ray_result_keys() -> set[str]:
    """The keys Ray Tune adds to every reported result (time_total_s, training_iteration, node_ip, ...)."""
    from ray.tune.result import AUTO_RESULT_KEYS

    return set(AUTO_RESULT_KEYS)


if __doc__:  # None under python -OO
    __doc__ += "\nPrivate attributes, and why each is needed:\n" + recheck_list() + "\n"
