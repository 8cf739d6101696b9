"""fercore.sweep.internals against the Ray and Optuna installed. Written against Ray 2.60.x and Optuna 5.0.x and
5.1.x: on other versions the first test fails, listing each private attribute to re-check in the new source; the
others check, on real Ray and Optuna objects, that every private attribute fercore reaches still exists and means
what fercore takes it to mean. No Ray instance is started but in the last test."""
import math
import pickle
from pathlib import Path

import optuna
import pytest

from fercore.sweep import internals, state
from fercore.sweep.searchers import TESTED

optuna.logging.set_verbosity(optuna.logging.WARNING)

RAY, OPTUNA = ("2.60.",), ("5.0.", "5.1.")  # the minor releases this test (and internals.py) were written against


def recheck(attribute: str) -> str:
    """The failure message naming ATTRIBUTE (an entry of internals.PRIVATE) and why fercore needs it."""
    import ray

    why = next(w for owner, attr, w in internals.PRIVATE if f"{owner}.{attr}".endswith(attribute))
    return (f"Ray {ray.__version__} / Optuna {optuna.__version__}: re-check the private {attribute} "
            f"(fercore/sweep/internals.py; needed for: {why})")


def test_ray_and_optuna_are_the_versions_the_private_attributes_were_read_in():
    assert internals.WRITTEN_AGAINST == {"ray": RAY, "optuna": OPTUNA}
    untested = internals.untested_versions()
    assert not untested, (
        f"fercore/sweep/internals.py reaches private attributes read in Ray {RAY}x and Optuna {OPTUNA}x, but "
        f"{'; '.join(untested)} is installed. Re-check each of these in the new version's source, then update "
        f"WRITTEN_AGAINST and this test:\n{internals.recheck_list()}")


def admitted_minors(requirement: str, package: str) -> set[str]:
    """The minor releases ('5.1.') of PACKAGE that REQUIREMENT (a pyproject dependency) admits, of those from two
    majors below its lowest bound to one above, each minor up to 99."""
    from packaging.requirements import Requirement

    spec = Requirement(requirement).specifier
    low = min(int(s.version.split(".")[0]) for s in spec)
    return {f"{major}.{minor}." for major in range(max(low - 2, 0), low + 2) for minor in range(100)
            if spec.contains(f"{major}.{minor}.0")}


def test_the_project_admits_exactly_the_releases_the_private_attributes_were_read_in():
    """A wider range would let a fresh install take a release no one checked (as Optuna 5.1 broke NSGA-II sweeps
    while pyproject admitted <6); a narrower one would leave a checked release untested."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    for package, prefixes in internals.WRITTEN_AGAINST.items():
        (requirement,) = [r for r in project["dependencies"] if Requirement(r).name == package]
        assert admitted_minors(requirement, package) == set(prefixes), (
            f"pyproject.toml's {requirement!r} admits other minor releases than those "
            f"fercore/sweep/internals.py was read in ({', '.join(prefixes)})")


def test_every_sampler_fercore_makes_survives_pickling_as_ray_pickles_the_searcher():
    """Ray's Tuner pickles the search algorithm with its sampler, at start and in each saved state a resume reads:
    each sampler a sweep file can name is pickled, unpickled and then samples a study to completion."""
    import cloudpickle

    from fercore.sweep.searchers import _sampler

    class Spec:
        seed, grid = 0, {"x": [0.25, 0.75]}

    for name in ("tpe", "random", "grid", "nsga2"):
        Spec.sampler = name
        sampler = cloudpickle.loads(cloudpickle.dumps(_sampler(Spec)))
        study = optuna.create_study(sampler=sampler, directions=["maximize", "minimize"])
        study.optimize(lambda t: (t.suggest_float("x", 0.0, 1.0), 1.0), n_trials=2)
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], name


def test_the_only_attribute_of_optunas_nsga2_that_cannot_be_pickled_is_the_one_fercore_drops():
    """Optuna 5.1's BaseGASampler holds a thread lock (5.0's did not): fercore's NSGA-II leaves out exactly that.
    Another attribute that cannot be pickled, or the lock under another name, fails here, naming it."""
    import threading

    from fercore.sweep.searchers import _NSGAII

    unpicklable = []
    for name, value in vars(optuna.samplers.NSGAIISampler(seed=0)).items():
        try:
            pickle.dumps(value)
        except (TypeError, pickle.PicklingError):
            unpicklable.append(name)
    assert set(unpicklable) <= {"_thread_lock"}, recheck("BaseGASampler._thread_lock") + f": {unpicklable}"
    sampler = pickle.loads(pickle.dumps(_NSGAII(seed=0)))
    if unpicklable:  # a release that holds the lock gets a working one back
        assert isinstance(sampler._thread_lock, type(threading.Lock())), recheck("BaseGASampler._thread_lock")
    assert "_thread_lock" not in vars(sampler) or not sampler._thread_lock.locked()


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)


def searcher(metric="m", mode="max"):
    """A real OptunaSearch whose study lives in a storage the test can read through Optuna's public API."""
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.InMemoryStorage()
    return OptunaSearch(space=space, metric=metric, mode=mode, study_name="s", storage=storage, seed=0), storage


def states(storage) -> list[str]:
    return [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials]


def test_optuna_search_trials_study_and_completed_set():
    search, storage = searcher()
    search.suggest("a")
    search.suggest("b")
    for name in ("_ot_trials", "_ot_study", "_completed_trials"):
        assert hasattr(search, name), recheck(f"OptunaSearch.{name}")
    assert not internals.search_completed(search, "a") and not internals.told_before(search, "a"), \
        recheck("OptunaSearch._completed_trials")
    assert not internals.told_before(search, "never suggested"), recheck("OptunaSearch._ot_trials")
    internals.tell_failed(search, "a")
    assert states(storage) == ["FAIL", "RUNNING"], recheck("OptunaSearch._ot_study")
    assert internals.search_completed(search, "a"), recheck("OptunaSearch._completed_trials")
    # Study._storage and Trial._trial_id: the finished state is read back from the study's storage.
    assert internals.told_before(search, "a") and not internals.told_before(search, "b"), recheck("Trial._trial_id")
    # Ray's own completion marks a trial completed the same way tell_failed does.
    search.on_trial_complete("b", {"m": 0.5})
    assert internals.search_completed(search, "b") and states(storage) == ["FAIL", "COMPLETE"], \
        recheck("OptunaSearch._completed_trials")


def test_fercore_search_tells_fail_where_ray_would_leave_a_trial_running():
    from fercore.sweep.searchers import _Search

    storage = optuna.storages.InMemoryStorage()
    search = _Search(space=space, metric="m", mode="max", study_name="s", storage=storage, seed=0)
    for trial_id in ("nan", "none", "ok"):
        search.suggest(trial_id)
    search.on_trial_complete("nan", {"m": math.nan, TESTED: True})
    search.on_trial_complete("none", None)
    search.on_trial_complete("ok", {"m": 0.5, TESTED: True})
    assert states(storage) == ["FAIL", "FAIL", "COMPLETE"]
    assert search._ot_trials == {}, "a told trial's Optuna trial is not kept (the study has it)"
    search.on_trial_complete("ok", {"m": 0.5, TESTED: True})  # told before (a resumed sweep's persistent study)
    assert states(storage) == ["FAIL", "FAIL", "COMPLETE"]


def test_a_trial_told_by_a_killed_driver_and_run_again_reports_epochs_without_failing():
    """The driver told the trial's end to its persistent study, then was killed before Ray saved that the trial had
    ended: the resumed sweep runs it again under the same Ray id, and its epochs reach a finished Optuna trial."""
    from fercore.sweep.searchers import _Search

    storage = optuna.storages.InMemoryStorage()
    search = _Search(space=space, metric="m", mode="max", study_name="s", storage=storage, seed=0)
    search.suggest("a")
    search.suggest("b")
    study = optuna.load_study(study_name="s", storage=storage)
    study.tell(study.trials[0].number, 0.5)  # what the killed driver told
    search.on_trial_result("a", {"m": 0.3, "training_iteration": 1})
    search.on_trial_complete("a", {"m": 0.4, TESTED: True})
    assert states(storage) == ["COMPLETE", "RUNNING"]
    assert optuna.load_study(study_name="s", storage=storage).trials[0].value == 0.5, "the first telling stands"
    study.tell(study.trials[1].number, state=optuna.trial.TrialState.FAIL)
    search.on_trial_result("b", {"m": 0.3, "training_iteration": 1})  # a failed telling stands too


def test_a_trial_the_scheduler_stopped_is_told_pruned_and_a_tested_one_its_rows_value():
    from fercore.sweep.searchers import RESUMED, STOPPED, _Search

    storage = optuna.storages.InMemoryStorage()
    search = _Search(space=space, metric="m", mode="max", study_name="s", storage=storage, seed=0)
    for trial_id in ("tested", "stopped", "crashed", "diverged", "resumed_stopped", "resumed_tested"):
        search.suggest(trial_id)
    # Ray gives on_trial_complete the trial's last result: the tested one's carries its row's (best epoch's) value.
    search.on_trial_complete("tested", {"epoch": 4, "m": 0.5, TESTED: True})
    search.on_trial_complete("stopped", {"epoch": 2, "m": 0.9})  # ASHA's STOP: an epoch, never tested
    search.on_trial_complete("crashed", {"epoch": 1, "m": 0.9}, error=True)
    search.on_trial_complete("diverged", {"status": "diverged", "m": None})  # its own report of its end
    search.on_trial_complete("resumed_stopped", {"m": 0.7, RESUMED: True, TESTED: False, STOPPED: True})
    search.on_trial_complete("resumed_tested", {"m": 0.6, RESUMED: True, TESTED: True, STOPPED: False})
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL", "FAIL", "PRUNED", "COMPLETE"]
    assert (trials[0].value, trials[5].value) == (0.5, 0.6)


def test_a_config_with_a_seed_the_scheduler_stopped_is_told_pruned():
    from fercore.sweep.searchers import _Repeater, _Search

    storage = optuna.storages.InMemoryStorage()
    search = _Search(space=space, metric="m", mode="max", study_name="s", storage=storage, seed=0)
    repeater = _Repeater(search, repeat=2)
    for trial_id in ("a1", "a2", "b1", "b2"):
        repeater.suggest(trial_id)
    repeater.on_trial_complete("a1", {"epoch": 3, "m": 0.4, TESTED: True})
    repeater.on_trial_complete("a2", {"epoch": 1, "m": 0.9})  # stopped: its partial value is no seed's result
    repeater.on_trial_complete("b1", {"epoch": 3, "m": 0.4, TESTED: True})
    repeater.on_trial_complete("b2", {"epoch": 3, "m": 0.6, TESTED: True})
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["PRUNED", "COMPLETE"] and trials[1].value == pytest.approx(0.5)


def test_repeater_groups():
    from ray.tune.search import Repeater

    search, _ = searcher()
    repeater = Repeater(search, repeat=2)
    repeater.suggest("a")
    repeater.suggest("b")
    assert hasattr(repeater, "_trial_id_to_group"), recheck("Repeater._trial_id_to_group")
    assert internals.report_repeat(repeater, "b", [0.3, 1.0]) is None, recheck("Repeater._trial_id_to_group")
    assert internals.report_repeat(repeater, "a", [0.1, 2.0]) == ("a", [[0.1, 2.0], [0.3, 1.0]]), \
        recheck("Repeater._trial_id_to_group")


def test_fercore_repeater_averages_several_objectives_over_seeds():
    from fercore.sweep.searchers import _Repeater, _Search

    storage = optuna.storages.InMemoryStorage()
    search = _Search(space=space, metric=["m", "n"], mode=["max", "min"], study_name="s", storage=storage, seed=0)
    repeater = _Repeater(search, repeat=2)
    repeater.suggest("a")
    repeater.suggest("b")
    repeater.on_trial_complete("a", {"m": 1.0, "n": 2.0, TESTED: True})
    repeater.on_trial_complete("b", {"m": 3.0, "n": math.nan, TESTED: True})  # a seed without a value is left out
    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.values == [2.0, 2.0]


def test_tuner_run_config_callbacks(tmp_path):
    from ray import tune

    class Marker(tune.Callback):
        pass

    marker = Marker()
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="x", storage_path=str(tmp_path),
                                                                      callbacks=[marker]))
    assert hasattr(tuner, "_local_tuner"), recheck("Tuner._local_tuner")
    assert internals.restored_callbacks(tuner) == [marker], recheck("Tuner._local_tuner")


def stub_trial(tmp_path):
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="x")
    return Trial("fercore_stub", config={}, stub=True, storage=storage), storage


def test_trial_storage_context_has_the_driver_staging_path(tmp_path):
    trial, storage = stub_trial(tmp_path)
    assert isinstance(trial.storage, type(storage)), recheck("Trial.storage.experiment_driver_staging_path")
    assert isinstance(getattr(type(storage), "experiment_driver_staging_path", None), property), \
        recheck("Trial.storage.experiment_driver_staging_path")


def test_a_finished_trial_is_lightened_to_what_ray_still_reads(tmp_path):
    trial, _ = stub_trial(tmp_path)
    assert hasattr(trial, "_default_result_or_future"), recheck("Trial._default_result_or_future")
    trial._default_result_or_future = object()  # as Trial.set_ray_actor leaves it: an ObjectRef
    config = {"seed": 3, "classifier.lr": 0.01}
    for step in (1, 2):
        trial.update_last_result({"val_macro_f1": 0.1 * step, "training_iteration": step, "config": config,
                                  "epoch_metrics": (("val_loss", 1.0),), "time_total_s": float(step)})
    before = len(trial.get_json_state()[1])
    assert {"val_macro_f1", "time_total_s"} <= set(trial.run_metadata.metric_n_steps), \
        recheck("Trial.run_metadata.metric_n_steps, metric_analysis, last_result")
    internals.lighten_finished(trial, drop=("epoch_metrics",))
    assert trial._default_result_or_future is None
    kept = {k: v for k, v in trial.last_result.items() if k != "trial_id"}  # Ray's property adds the id
    assert kept == {"val_macro_f1": 0.2, "training_iteration": 2, "time_total_s": 2.0}
    assert trial.run_metadata.metric_analysis == {} and trial.run_metadata.metric_n_steps == {}
    after = len(trial.get_json_state()[1])  # Ray's cached JSON made anew, without what went
    assert after < before / 2, (before, after)


def test_ray_result_keys_and_state_file_names():
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search import Searcher
    from ray.tune.search.search_generator import SearchGenerator

    assert {"time_total_s", "training_iteration", "node_ip", "pid"} <= internals.ray_result_keys(), \
        recheck("ray.tune.result.AUTO_RESULT_KEYS")
    names = tuple(cls.CKPT_FILE_TMPL.format("*") for cls in (TuneController, SearchGenerator, Searcher))
    assert names == state.STATE_PATTERNS, recheck("TuneController.CKPT_FILE_TMPL")


@pytest.mark.slow
def test_the_driver_staging_path_is_a_folder_of_this_ray_session(tmp_path):
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        from ray._private.worker import global_worker

        trial, _ = stub_trial(tmp_path)
        path = Path(internals.driver_staging_path(trial))
        # <session dir>/artifacts/<timestamp>/<experiment>/driver_artifacts, where Ray stages its state files.
        session = Path(global_worker.node.get_session_dir_path())
        assert path.is_relative_to(session) and path.parent.name == "x", \
            recheck("Trial.storage.experiment_driver_staging_path")
    finally:
        if started:
            ray.shutdown()
