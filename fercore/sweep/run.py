"""run_sweep: a validated SweepSpec becomes a Ray Tune run in which OptunaSearch samples the define-by-run space
(fercore.sweep.searchers), ASHA stops weak trials on the validation metric, workers run fercore.trial
(fercore.sweep.trainable), and a driver-side callback writes the Parquet tables and TensorBoard events as trials
report and finish (fercore.sweep.callback). A crashed trial is retried (max_failures); one that diverged or whose
config cannot run reports that as its result and ends, since a retry would end the same way. `--resume` finishes a
sweep whose driver stopped, from Ray's saved state (fercore.sweep.state).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

# We write our own tables and event files; Ray's JSON/CSV/TensorBoard loggers would duplicate them per trial.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Ray saves its experiment state at its own pace (TUNE_GLOBAL_CHECKPOINT_S, "auto": 10 s apart or more); the results
# callback commits rows with those saves (fercore.sweep.state says why).

import ray  # noqa: E402
from ray import tune  # noqa: E402

from fercore import pareto  # noqa: E402
from fercore.atomic import atomic_write  # noqa: E402
from fercore.cache import CacheStore  # noqa: E402
from fercore.config import resolve  # noqa: E402
from fercore.data import FaceSet, load_configured  # noqa: E402
from fercore.metrics.reported import check_class_objectives  # noqa: E402
from fercore.errors import UserError  # noqa: E402
from fercore.results import SWEEP_RECORD, ResultsStore, count_rows  # noqa: E402
from fercore.redact import redact  # noqa: E402
from fercore.results.rows import TRIALS  # noqa: E402
from fercore.sections import DESCRIBED  # noqa: E402
from fercore.sweep import confirm, internals, state  # noqa: E402
from fercore.sweep.callback import TUNE_DIR, ResultsCallback  # noqa: E402
from fercore.sweep.confirm_search import ConfirmSearcher  # noqa: E402
from fercore.sweep.guards import Guard, GuardStopper, space_problem  # noqa: E402
from fercore.sweep.inbox import start_inbox  # noqa: E402
from fercore.results.rows import FAILED  # noqa: E402
from fercore.sweep.progress import mark_ended  # noqa: E402
from fercore.sweep.searchers import make_searcher  # noqa: E402
from fercore.sweep.smoke import smoke_spec  # noqa: E402
from fercore.sweep.spec import SweepSpec  # noqa: E402
from fercore.sweep.storage import SweepFolder, is_uri  # noqa: E402
from fercore.sweep.study import fail_running, open_storage  # noqa: E402
from fercore.sweep.summary import print_summary  # noqa: E402
from fercore.sweep.trainable import trainable as run_trial  # noqa: E402

MAX_T_WITHOUT_EPOCHS = 100  # ASHA's last rung when neither scheduler.max_t nor classifier.epochs is fixed


def run_sweep(spec: SweepSpec, storage: str | Path = "results", *, address: str | None = None,
              num_samples: int | None = None, max_concurrent: int | None = None, smoke: bool = False,
              resume: bool = False, trainable: Callable | None = None, reuse_actors: bool = True,
              trust_storage: bool = False, verbose: bool = False, confirm: tuple[int, int] | None = None) -> Path:
    """Run SPEC with Ray Tune; returns the results folder storage/<sweep name>/. STORAGE may be a URI
    (s3://bucket/prefix ...): results are then uploaded to URI/<sweep name>/ and the folder returned is the driver's
    working copy of it (fercore.sweep.storage).

    resume: finish the sweep whose driver stopped (even by SIGKILL): Ray restores its trials and the searcher's
    state from storage/<name>/tune; trials already in trials.parquet are not run again.
    trust_storage: resuming from a URI unpickles Ray Tune's state as downloaded from it (the searcher, the trials,
    the callbacks): code from whoever can write there would run on the driver. Refused unless this is True
    (`--trust-storage`). A local folder is this machine's own.
    trainable: a stand-in for the trial function with fercore.sweep.trainable.trainable's signature (benchmarks of
    the sweep layer).
    reuse_actors: run a trial in a finished trial's worker process when it needs the same resources; False starts
    a fresh process per trial (~1.5 s each on 2 CPU cores; benchmarks/sweep_overhead.py compares).
    verbose: Ray Tune's own banners and tables too (`--verbose`); without, fercore's progress view alone.
    confirm: (top, seeds) in place of the sweep file's `confirm`, --smoke's too (`--confirm TOP,SEEDS`).
    """
    started = time.time()
    _quiet_libraries(verbose)
    if resume and is_uri(storage) and not trust_storage:
        raise UserError(f"--resume from {redact(str(storage))}: resuming unpickles Ray Tune's state as stored there, "
                        f"and whoever can write to it could run code on this machine; add --trust-storage if only you "
                        f"and your cluster write to it")
    location = SweepFolder(storage, spec.name)  # a URI that cannot be opened or written fails here, before Ray starts
    lease = location.lease()
    lease.acquire()  # one driver per sweep, before anything in its folder is read or changed
    try:
        return _run_holding_the_lease(spec, location, lease, started, address=address, num_samples=num_samples,
                                      max_concurrent=max_concurrent, smoke=smoke, resume=resume,
                                      trainable=trainable, reuse_actors=reuse_actors, verbose=verbose,
                                      confirm=confirm)
    finally:
        location.stop_uploader()
        lease.release()


def _run_holding_the_lease(spec: SweepSpec, location: SweepFolder, lease, started: float, *, address, num_samples,
                           max_concurrent, smoke, resume, trainable, reuse_actors, verbose=False,
                           confirm=None) -> Path:
    out = location.local
    location.pull()  # A URI's tables, optuna.db and Ray state, into the working copy the driver writes.
    if resume and not tune.Tuner.can_restore(str(out / TUNE_DIR)):
        raise UserError(f"--resume: {location.where(TUNE_DIR)} holds no sweep to resume; run without --resume to "
                        f"start it")
    if not resume:
        _refuse_an_earlier_run(location)
    problem = space_problem(spec.min_free_gb, out)
    if problem:
        raise UserError(f"min_free_gb: {problem}; free some space or lower min_free_gb in the sweep file")
    out.mkdir(parents=True, exist_ok=True)
    if smoke:
        spec = smoke_spec(spec, num_samples)
    if confirm is not None:  # after --smoke's own: a smoke run can confirm at the sweep's size of confirmation
        spec = dataclasses.replace(spec, confirm={"top": confirm[0], "seeds": confirm[1]})
    fixed = spec.base_config()
    _write_sweep_record(out, spec, fixed, smoke)
    n = _trial_count(spec, num_samples)
    study_storage = open_storage(spec, out)  # a database that cannot be reached fails here, before Ray starts
    resources = _start_ray(spec, address, verbose)
    data = _load_data(fixed)
    folds = [data.for_fold(i) for i in range(data.n_folds)] or [data]
    check_class_objectives(spec.metrics, data.class_names, [f.counts()["val"] for f in folds])
    cache = CacheStore(out / "cache", enabled=spec.cache,
                       max_bytes=spec.cache_max_gb * 1e9 if spec.cache_max_gb else None)
    # Resumed: Ray may not know these finished (a driver killed between our row and Ray's next save of its state).
    finished = _recorded_objectives(spec, out) if resume else {}
    inbox = start_inbox(out)
    fn = tune.with_resources(tune.with_parameters(trainable or run_trial, data=data, cache=cache,
                                                  objectives=tuple(spec.metrics), finished=finished, inbox=inbox),
                             resources)
    try:
        callback = _run_phases(fn, spec, fixed, n, study_storage, location, max_concurrent or spec.max_concurrent,
                               reuse_actors, lease, resume, len(finished))
    finally:
        ray.kill(inbox)  # its process, in a Ray instance that may run more sweeps
    return _finish_sweep(spec, out, callback.store, study_storage, cache, started, location, callback.guard)


def _trial_count(spec: SweepSpec, num_samples: int | None) -> int:
    n = num_samples or spec.num_samples  # --smoke --num-samples N: N tiny trials
    if spec.sampler == "grid" and n > spec.grid_size:
        print(f"The grid has {spec.grid_size} points: running {spec.grid_size} trials, not {n}.", flush=True)
        n = spec.grid_size
    return n


def _start_ray(spec: SweepSpec, address: str | None, verbose: bool = False) -> dict[str, float]:
    """Start or join Ray; the resources each trial asks for."""
    for line in internals.untested_versions():
        print(f"Warning: {line}: the private Ray and Optuna attributes fercore/sweep/internals.py lists were "
              f"checked on those versions only", flush=True)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=True,
                 logging_level="WARNING" if verbose else "ERROR")  # its start-up notes only with --verbose
    resources = {"cpu": spec.setting("resources.cpu"), "gpu": spec.setting("resources.gpu")}
    # Only a local instance started here is known to lack GPUs; a cluster (--address, or a Ray job's RAY_ADDRESS)
    # may add GPU nodes once trials ask for them.
    if resources["gpu"] and address is None and not os.environ.get("RAY_ADDRESS") \
            and not ray.cluster_resources().get("GPU"):
        raise UserError(f"resources.gpu: each trial asks for {resources['gpu']} GPU but this Ray instance has none; "
                        f"set resources.gpu: 0 (or --gpus-per-trial) or run where CUDA is present")
    return resources


def _load_data(fixed: dict[str, Any]) -> FaceSet:
    """The sweep's data set, loaded once on the driver and handed to every trial through Ray's object store."""
    data_cfg = resolve(fixed, drop_inapplicable=True).data
    print(f"Loading data: {data_cfg.source}", flush=True)
    data = load_configured(data_cfg)
    counts = data.counts()
    print(f"  {len(data.images)} images: train {sum(counts['train'])}, val {sum(counts['val'])}, "
          f"test {sum(counts['test'])}", flush=True)
    if data.n_folds:  # k-fold: the counts above are fold 0's; each trial takes the fold its data.fold names
        print(f"  {data.n_folds} folds{' by subject' if data.groups is not None else ''}: each trial tests on its "
              f"data.fold", flush=True)
    return data


def _refuse_an_earlier_run(location: SweepFolder) -> None:
    """A new run into a folder that holds an earlier run's trials would add to that run's Optuna study and tables
    (a --smoke run's tiny trials mixed into the real ones' report, a grid's points sampled again): refused."""
    rows = count_rows(location.local, TRIALS)
    if rows:
        raise UserError(f"{location.where(TRIALS)}: already holds {rows} trial{'s' if rows != 1 else ''} of an earlier "
                        f"run of this sweep; --resume finishes that run; to start a new one, remove "
                        f"{location.where('')} or give another --storage")


def _recorded_objectives(spec: SweepSpec, out: Path) -> dict[str, dict[str, Any]]:
    return {row["trial_id"]: {**{m: row.get(m) for m in spec.metrics}, "status": row.get("status")}
            for row in ResultsStore(out).trial_rows(columns=("status", *spec.metrics))}


def _run_phases(fn, spec: SweepSpec, fixed: dict[str, Any], n: int, study_storage, location: SweepFolder,
                max_concurrent: int, reuse_actors: bool, lease, resume: bool, recorded: int) -> ResultsCallback:
    """The search, then the confirmation phase when the sweep has one; a resumed sweep picks up in the phase its
    driver stopped in (the confirmation phase's Ray state exists once it has started). The last phase's callback."""
    if resume and tune.Tuner.can_restore(str(location.local / confirm.TUNE_DIR)):
        return _resume(fn, spec, location, recorded, lease, phase=confirm.CONFIRM)
    if resume:
        callback = _resume(fn, spec, location, recorded, lease)
    else:
        callback = _start(fn, spec, fixed, n, study_storage, location, max_concurrent, reuse_actors, lease)
    if not spec.confirm_trials or callback.guard.reason is not None:
        return callback  # a stopped search is finished by --resume first
    return _confirm(fn, spec, location, max_concurrent, reuse_actors, lease, callback)


def _start(fn, spec: SweepSpec, fixed: dict[str, Any], n: int, study_storage, location: SweepFolder,
           max_concurrent: int, reuse_actors: bool, lease) -> ResultsCallback:
    """Run a new sweep of N sampled configs (times seeds); its results callback, whose store holds every row."""
    searcher = make_searcher(spec, fixed, study_storage)
    n *= spec.seeds
    guard = Guard(spec.min_free_gb, spec.max_consecutive_errors)
    callback = ResultsCallback(location.local, n, spec.time_budget_s, after_flush=location.push_soon, guard=guard,
                               view=_view(spec, max_concurrent))
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=_scheduler(spec, fixed), num_samples=n,
                                    max_concurrent_trials=max_concurrent, time_budget_s=spec.time_budget_s,
                                    trial_dirname_creator=_trial_dirname, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(location.local), callbacks=[callback], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                  stop=GuardStopper(guard)),
    )
    guard.lease = lease  # after the Tuner pickled its RunConfig: the lease's thread is the driver's alone
    objectives = ", ".join(f"{m} ({d})" for m, d in zip(spec.metrics, spec.modes))
    print(f"Running {n} trials of sweep {spec.name!r} ({f'space {spec.space}' if spec.space else 'a grid'}, sampler "
          f"{spec.sampler}, scheduler {spec.scheduler.get('type', 'asha')}, objectives {objectives}) ...", flush=True)
    tuner.fit()
    return callback


def _confirm(fn, spec: SweepSpec, location: SweepFolder, max_concurrent: int, reuse_actors: bool, lease,
             search: ResultsCallback) -> ResultsCallback:
    """The confirmation phase (fercore.sweep.confirm): the search's best configs by validation again, on fresh
    seeds, run to completion: no scheduler, no time budget. Its callback (the search's when nothing is confirmed)."""
    out = location.local
    rows = search.store.trial_rows()
    top, seeds = spec.setting("confirm.top"), spec.setting("confirm.seeds")
    ranked = confirm.ranked_configs(rows, spec.metric, spec.mode)[:top]
    configs = confirm.plan(rows, ranked, seeds)
    if not configs:
        print(f"Confirmation: no config of the search completed every seed with a value of {spec.metric}; nothing "
              f"to confirm", flush=True)
        return search
    guard = Guard(spec.min_free_gb, spec.max_consecutive_errors)
    callback = ResultsCallback(out, len(rows) + len(configs), after_flush=location.push_soon, guard=guard,
                               phase=confirm.CONFIRM, samples=len(configs), view=_view(spec, max_concurrent))
    searcher = ConfirmSearcher(configs, spec.metrics, spec.modes, spec.name, spec.storage_url(out))
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=None, num_samples=len(configs),
                                    max_concurrent_trials=max_concurrent, trial_dirname_creator=_trial_dirname,
                                    reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=confirm.TUNE_DIR, storage_path=str(out), callbacks=[callback], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                  stop=GuardStopper(guard)),
    )
    guard.lease = lease
    fresh = sorted({c["seed"] for c in configs})
    seeds_text = f"{fresh[0]}-{fresh[-1]}" if len(fresh) > 1 else f"{fresh[0]}"
    print(f"Confirming the {len(ranked)} best config{'s' if len(ranked) != 1 else ''} of the search by "
          f"{spec.metric} on {len(fresh)} fresh seed{'s' if len(fresh) != 1 else ''} ({seeds_text}): "
          f"{len(configs)} trial{'s' if len(configs) != 1 else ''} run to completion", flush=True)
    shown = confirm.shown_keys(rows, DESCRIBED)
    for rank, (config, mean, n) in enumerate(ranked, 1):
        print(f"  {rank}. {spec.metric}={mean:.4f} (search, mean of {n} trial{'s' if n != 1 else ''}): "
              f"{', '.join(f'{k}={config.get(k)}' for k in shown)}", flush=True)
    tuner.fit()
    return callback


def _view(spec: SweepSpec, max_concurrent: int) -> dict[str, Any]:
    """What the results callback's progress view shows (fercore.sweep.progress)."""
    return {"name": spec.name, "metric": spec.metric, "mode": spec.mode, "concurrency": max_concurrent}


def _scheduler(spec: SweepSpec, fixed: dict[str, Any]):
    """ASHA on the first objective, reported every epoch (load_sweep checked that it is), or None."""
    from ray.tune.schedulers import ASHAScheduler

    if spec.setting("scheduler.type") != "asha":
        return None
    max_t = spec.setting("scheduler.max_t") or int(fixed.get("classifier.epochs", MAX_T_WITHOUT_EPOCHS))
    max_t = max(1, int(max_t))
    return ASHAScheduler(time_attr="epoch", max_t=max_t, metric=spec.metric, mode=spec.mode,
                         grace_period=min(max_t, int(spec.setting("scheduler.grace_period"))),
                         reduction_factor=spec.setting("scheduler.reduction_factor"))


def _resume(fn, spec: SweepSpec, location: SweepFolder, recorded: int, lease,
            phase: str = confirm.SEARCH) -> ResultsCallback:
    """Finish PHASE of a stopped sweep: the searcher, scheduler and results callback come back from Ray's saved
    state."""
    out = location.local
    tune_dir = out / (TUNE_DIR if phase == confirm.SEARCH else confirm.TUNE_DIR)
    # Ray's copy in tune/ may be half written (a kill during its copy thread's write) or newer than the rows: put
    # back the snapshot committed with them.
    snapshot = state.committed(out, phase)
    if snapshot is not None:
        state.restore(snapshot, tune_dir)
    state.check(tune_dir)
    tuner = tune.Tuner.restore(str(tune_dir), fn, resume_unfinished=True, resume_errored=False,
                               restart_errored=False)
    callback = _repoint_callback(tuner, location, spec)
    callback.guard.lease = lease
    print(f"Resuming sweep {spec.name!r}{' in its confirmation phase' if phase != confirm.SEARCH else ''}: "
          f"{recorded} trials already recorded", flush=True)
    tuner.fit()
    return callback


def _repoint_callback(tuner, location: SweepFolder, spec: SweepSpec) -> ResultsCallback:
    """Give the restored results callback this run's folder and upload hook, and return it (its store holds every
    row once the sweep ends). Ray restores it as pickled when the sweep started, with that driver's folder, which
    for a URI is a working copy that may lie elsewhere here."""
    for callback in internals.restored_callbacks(tuner):
        if not isinstance(callback, ResultsCallback):
            continue
        before = Path(callback.folder)
        callback.folder, callback.after_flush = location.local, location.push_soon
        callback.resuming = True  # setup() checks that Ray restored the sweep rather than starting a new one
        guard = getattr(callback, "guard", None) or Guard()  # (a sweep started before guards has none)
        guard.__init__(spec.min_free_gb, spec.max_consecutive_errors)  # the stop that ended the last run is over
        callback.guard = guard
        # The restored searcher also holds its Optuna storage as pickled: a study file in the old folder.
        if spec.storage_url(before) != spec.storage_url(location.local):
            raise UserError(f"--resume: the sweep's Optuna study is restored as {redact(spec.storage_url(before))}, "
                            f"in the results folder of the driver that started it; resume with that folder "
                            f"({before}{', set through FERCORE_CACHE' if location.uri else ''})")
        return callback
    raise UserError(f"--resume: the Ray Tune run in {location.where(TUNE_DIR)} has no fercore results callback: it "
                    f"was not started by `fersweep run`")


def _write_sweep_record(out: Path, spec: SweepSpec, fixed: dict[str, Any], smoke: bool) -> None:
    """What the sweep asked for, beside its tables: a report names the objectives and the grid from it."""
    record = {"name": spec.name, "description": spec.description, "sweep_file": str(spec.path),
              "metrics": spec.metrics, "modes": spec.modes, "sampler": spec.sampler, "space": spec.space,
              "grid": spec.grid, "fixed": fixed, "scheduler": spec.scheduler, "seeds": spec.seeds, "smoke": smoke,
              "confirm": spec.confirm}
    atomic_write(out / SWEEP_RECORD, lambda f: f.write(json.dumps(record, indent=1, default=str).encode()))


def _finish_sweep(spec: SweepSpec, out: Path, store: ResultsStore, study_storage, cache: CacheStore,
                  started: float, location: SweepFolder, guard: Guard) -> Path:
    fail_running(spec, study_storage)  # trials a time budget cut off are still RUNNING in a kept study
    if guard.reason is not None:  # what is committed stays as it is; --resume finishes the sweep
        mark_ended(out, f"stopped: {guard.reason}; --resume finishes it")
        location.finish_uploads()
        guard.raise_if_stopped(out)
    if spec.multi_objective:  # The front, over every completed row (a resumed sweep's earlier ones too).
        rows = store.trial_rows()
        for row, on in zip(rows, pareto.front(rows, spec.metrics, spec.modes)):
            store.add_trial({**row, "pareto": on})
        store.flush()
    store.compact()  # One part per table, nothing the manifest does not name: any Parquet reader takes the folder.
    mark_ended(out, f"finished in {time.time() - started:.0f} s")
    uploaded = location.finish_uploads()  # The last commits, events and the merged parts, to a URI.
    print_summary(out, store, spec, time.time() - started, cache, spec.storage_url(out), location, uploaded)
    _refuse_all_failed(out, store)
    if not uploaded:
        raise UserError(f"the sweep ended but its results are not all at {redact(location.uri or '')}: they are in "
                        f"{out}; `fersweep run {spec.path} --storage URI --resume --trust-storage` uploads them once "
                        f"the URI is writable")
    return out


def _refuse_all_failed(out: Path, store: ResultsStore) -> None:
    """A sweep whose every trial failed ends non-zero, with the first failure's line: nothing it measured stands."""
    rows = store.trial_rows()
    if not rows or any(r.get("status") not in FAILED for r in rows):
        return
    first = rows[0]
    where = "; ".join(p for p in (f"at {first['at']}" if first.get("at") else "",
                                  f"full log: {out / first['log']}" if first.get("log") else "") if p)
    raise UserError(f"every trial failed ({len(rows)}); the first, trial {first['trial_id']}: {first.get('reason')}"
                    + (f" ({where})" if where else ""))


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"  # Ray's default packs the config into the name and runs past path limits.


def _quiet_libraries(verbose: bool = False) -> None:
    import logging

    # Ray Tune's output engine prints its own banner and result tables even at verbose=0; the old one, at 0, prints
    # nothing: fercore's progress view (fercore.sweep.progress) is the sweep's.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if verbose else "0"

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # With Ray's own loggers off, the result grid warns that it finds no result.json; our tables are the results.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # A failed trial is fercore's one line (its log holds the traceback); Ray's "Trial task failed" with its traceback
    # only with --verbose.
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.INFO if verbose else logging.CRITICAL)
