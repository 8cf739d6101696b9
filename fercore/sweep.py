"""The sweep layer, the only code that imports Ray: a validated SweepSpec becomes a Ray Tune run in which
OptunaSearch samples the define-by-run space (TPE, random, NSGA-II, or every point of a grid), ASHA stops weak trials
on the validation metric, and a driver-side callback writes the Parquet tables and TensorBoard events as trials
report and finish. A crashed trial is retried (max_failures); one that diverged or whose config cannot run reports
that as its result and ends, since a retry would end the same way."""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
from optuna.samplers import GridSampler, NSGAIISampler, RandomSampler, TPESampler

from fercore import config as cfg
from fercore import pareto, tune_state
from fercore.atomic import atomic_write
from fercore.cache import CacheStore
from fercore.data import FaceSet, load
from fercore.errors import UserError
from fercore.sweepfile import FixedSpace, SweepSpec, flat_config, smoke_spec

# We write our own tables and event files; Ray's JSON/CSV/TensorBoard loggers would duplicate them per trial.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.result import AUTO_RESULT_KEYS  # noqa: E402
from ray.tune.search import Repeater  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402
from ray.tune.search.repeater import TRIAL_INDEX  # noqa: E402

from fercore.results import SWEEP_RECORD, ResultsStore, TensorBoardWriter  # noqa: E402
from fercore.storage import SweepFolder  # noqa: E402

RAY_KEYS = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint", "artifacts",
                                    "time_this_iter_s", "timesteps_total", "episodes_total"}
TUNE_DIR = "tune"  # Ray Tune's experiment state, under the sweep's results folder
RESUMED = "resumed"  # result key of a finished trial that a resumed sweep re-reports instead of running
# Ray saves its experiment state (trials, searcher) at most this often. At Ray's default (10 s or more) a trial can
# start and finish unseen by the last save, and a resumed sweep then runs one trial too many; 0 saves at every step
# of Ray's loop (benchmarks/sweep_overhead.py measures what that costs).
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Search(OptunaSearch):
    """Ray's OptunaSearch, closing every Optuna trial: a trial without a finite value of every objective (it
    diverged, failed, was cut off, or never reported one) is told FAIL. Ray's would tell None or NaN as a COMPLETE
    value, which Optuna refuses, leaving the trial RUNNING in the study (and in optuna-dashboard)."""

    def on_trial_result(self, trial_id: str, result: dict):
        if isinstance(self.metric, str) and not _finite(result.get(self.metric)):
            return  # An objective measured only at the end, or a trial's report that it failed.
        if result.get(RESUMED):
            return  # A finished trial's recorded values, re-reported after a resume: told on completion.
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if trial_id in self._ot_trials and self._already_told(self._ot_trials[trial_id]):
            # Resumed with a persistent study (optuna_storage): it was told before the driver stopped.
            self._completed_trials.add(trial_id)
            return
        if trial_id in self._completed_trials or all(_finite((result or {}).get(m)) for m in metrics):
            return super().on_trial_complete(trial_id, result, error)
        self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.FAIL)
        self._completed_trials.add(trial_id)


    def _already_told(self, ot_trial) -> bool:
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()


class _Repeater(Repeater):
    """Ray's Repeater (sweep key `seeds`), averaging each of several objectives over a config's seeds; a seed
    without a value is left out of the mean (Ray's takes one metric and fails on a missing value)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs):
        metrics = self.searcher.metric if isinstance(self.searcher.metric, list) else [self.searcher.metric]
        group = self._trial_id_to_group[trial_id]
        group.report(trial_id, [float(v) if _finite(v := (result or {}).get(m)) else math.nan for m in metrics])
        if group.finished_reporting():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # every seed failed: the mean is NaN, told as FAIL
                means = np.nanmean(np.array(group.scores(), dtype=float), axis=0)
            self.searcher.on_trial_complete(group.primary_trial_id, result=dict(zip(metrics, means.tolist())),
                                            **kwargs)


class _Grid(GridSampler):
    """Optuna's GridSampler without its own stop: it calls study.stop() after the last point, which raises outside
    study.optimize(); Ray runs exactly as many trials as the grid has points."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's flat config as Ray hands it over, without Ray's own keys and with suggestion names as config keys
    (`augment.filter@no_discriminator` sets augment.filter); a repeat of a sampled config (sweep key `seeds`) gets
    its own seed: the config's seed plus the repeat's index."""
    flat = flat_config({k: v for k, v in config.items() if k != TRIAL_INDEX})
    if config.get(TRIAL_INDEX):
        flat["seed"] = int(flat.get("seed", 0)) + int(config[TRIAL_INDEX])
    return flat


def _trainable(config: dict[str, Any], data: FaceSet | None = None, cache: CacheStore | None = None,
               objectives: tuple[str, ...] = (), finished: dict[str, dict] | None = None) -> None:
    import torch

    from fercore import trial
    from fercore.generators import Diverged

    # Several nodes of one machine share an IP address (a local test cluster); the node id tells them apart.
    node_id = ray.get_runtime_context().get_node_id()
    # Ray wants the searcher's metrics in every result: an objective measured only at the end (train_seconds) is
    # None until then.
    unmeasured = dict.fromkeys(objectives)
    recorded = (finished or {}).get(tune.get_context().get_trial_id())
    if recorded is not None:
        # Resumed: this trial finished (its row is in trials.parquet) after Ray's last experiment checkpoint, so Ray
        # restarts it. It is not run again: its recorded objectives go back to the searcher.
        tune.report({**unmeasured, **{m: recorded.get(m) for m in objectives}, RESUMED: True})
        return

    def report(epoch: int, metrics: dict[str, float], artifacts: dict | None) -> None:
        metrics = {**unmeasured, **metrics, "node_id": node_id}
        tune.report({**metrics, "artifacts": artifacts} if artifacts else metrics)

    try:
        resolved = cfg.resolve(trial_config(config), drop_inapplicable=True)
        if not resolved.train.threads:
            # Each trial gets its share of the node's cores, not torch's default of all of them.
            cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
            torch.set_num_threads(max(1, int(cpus)))
        trial.run(resolved, data, report, cache)
    except (Diverged, UserError) as e:
        # An outcome of this config and seed, not a crash: a retry would end the same way. Reported as the trial's
        # last result (without an epoch), so the trial ends normally and FailureConfig does not retry it.
        reason = str(e) if isinstance(e, Diverged) else f"{type(e).__name__}: {e}"
        tune.report({**unmeasured, "status": "diverged" if isinstance(e, Diverged) else "error", "reason": reason,
                     "node_id": node_id})


class ResultsCallback(tune.Callback):
    """Driver side: each reported epoch -> epochs.parquet and TensorBoard; each finished trial -> trials.parquet."""

    def __init__(self, folder: Path, total: int, time_budget_s: float | None = None,
                 after_flush: Callable[[], None] | None = None):
        self.folder = folder
        self.after_flush = after_flush  # ResultsStore's hook: SweepFolder.push uploads the tables to a URI
        self.total = total
        self.time_budget_s = time_budget_s
        self._last: dict[str, dict[str, Any]] = {}
        self._artifacts: dict[str, dict] = {}
        self._outcome: dict[str, tuple[str, str]] = {}  # trial id -> (status, reason) the trial reported itself
        self._running: set[str] = set()  # started and not yet recorded

    def setup(self, **info):
        # Ray calls this before the first trial, in a new run and in a restored one (which unpickles this callback
        # as it was when the sweep started): the tables are read here, as they are now, earlier runs' rows included.
        if getattr(self, "resuming", False) and info.get("total_num_samples") not in (None, self.total):
            # Ray failed to restore its state (it logs why) and carries on as a new experiment of this many trials,
            # which would end with the sweep's missing trials never run: stop before any trial starts.
            raise UserError(f"--resume: Ray Tune could not restore the sweep from {self.folder / TUNE_DIR} (its "
                            f"message is above) and would start a new experiment of "
                            f"{info.get('total_num_samples')} trials instead of finishing these {self.total}; "
                            f"nothing was run")
        self.store = ResultsStore(self.folder, after_flush=self.after_flush)
        self.tb = TensorBoardWriter(self.folder / "tb")
        self.finished = len(self.store.trials)
        self._recorded = set(self.store.trials)
        self._saved_trials = 0  # how many trials Ray's state held when it was last kept whole

    def on_step_end(self, iteration, trials, **info):
        # Ray saved its state earlier in this step (TUNE_GLOBAL_CHECKPOINT_S=0). Kept whole once per new trial,
        # before that trial can finish, so every row in trials.parquet names a trial the kept state knows (a trial
        # it holds as running whose row exists is re-reported on resume, not run; fercore/tune_state.py says why).
        if len(trials) != self._saved_trials and trials:
            if tune_state.save(trials[0].storage.experiment_driver_staging_path, self.folder / tune_state.TUNE_STATE):
                self._saved_trials = len(trials)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("store", "tb")}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._running.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id in self._recorded:  # a resumed sweep's finished trial, re-reporting to the searcher
            return
        where = {"node_ip": result.get("node_ip", ""), "node_id": result.get("node_id", "")}
        if "epoch" not in result:  # The trial's own account of its end: it diverged, or its config cannot run.
            self._outcome[trial.trial_id] = (result.get("status", "error"), result.get("reason", ""))
            self._last.setdefault(trial.trial_id, where)
            return
        metrics = {k: v for k, v in result.items() if k not in RAY_KEYS and v is not None}
        if result.get("artifacts"):
            self._artifacts[trial.trial_id] = result["artifacts"]
        metrics["node_ip"] = where["node_ip"]
        metrics["time_total_s"] = result.get("time_total_s")
        self._last[trial.trial_id] = metrics
        self.store.add_epoch(trial.trial_id, {k: v for k, v in metrics.items() if k != "time_total_s"})
        self.tb.epoch(trial.trial_id, int(metrics.get("epoch", result.get("training_iteration", 0))), metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self._outcome:
            status, reason = self._outcome.pop(trial.trial_id)
        elif "row" in self._artifacts.get(trial.trial_id, {}):
            status, reason = "completed", ""
        else:
            epoch = self._last.get(trial.trial_id, {}).get("epoch", 0)
            status, reason = "stopped", f"stopped early by the scheduler after epoch {epoch}"
        self._finish(trial, status, reason)

    def on_trial_recover(self, iteration, trials, trial, **info):
        print(f"[retry] trial {trial.trial_id} crashed ({_error_line(trial)}); starting attempt "
              f"{trial.num_failures + 1}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        line = _error_line(trial)
        attempts = f" (after {trial.num_failures} attempts)" if trial.num_failures > 1 else ""
        self._finish(trial, _failure_status(line), line + attempts, attempts=trial.num_failures)

    def _finish(self, trial, status: str, reason: str, attempts: int | None = None) -> None:
        if trial.trial_id in self._recorded:  # recorded before the sweep was resumed: exactly once
            self._running.discard(trial.trial_id)
            return
        try:
            config = cfg.resolve(trial_config(trial.config), drop_inapplicable=True).flat()
        except UserError:
            config = trial_config(trial.config)
        last = self._last.pop(trial.trial_id, {})
        artifacts = self._artifacts.pop(trial.trial_id, {})
        self._running.discard(trial.trial_id)
        # A completed trial sent its whole row; a stopped or failed one has only its last epoch's metrics.
        summary = artifacts.get("row") or {k: v for k, v in last.items() if k.startswith(("val_", "train_loss"))}
        row = {"trial_id": trial.trial_id, **config, **summary, "status": status, "reason": reason,
               "epochs_run": last.get("epoch", 0), "node_ip": last.get("node_ip", ""),
               "node_id": last.get("node_id", ""),
               # Runs of this trial: a crash (not a divergence) is retried up to the sweep's max_failures times.
               "attempts": attempts if attempts is not None else trial.num_failures + 1,
               "train_seconds": summary.get("train_seconds", last.get("time_total_s"))}
        self.store.add_trial(row)
        self.store.add_artifacts(trial.trial_id, artifacts)
        self.store.flush()
        self.tb.finish(trial.trial_id, config, row, artifacts)
        self.finished += 1
        metric = ", ".join(f"{k}={row[k]:.3f}" for k in ("val_macro_f1", "test_macro_f1") if row.get(k) is not None)
        print(f"[{self.finished}/{self.total}] trial {trial.trial_id} {status} {metric} {reason}".rstrip(), flush=True)

    def on_experiment_end(self, trials, **info):
        # Trials still running when the sweep ends (its time budget ran out) get no completion call from Ray.
        for trial in trials:
            if trial.trial_id in self._running:
                epoch = self._last.get(trial.trial_id, {}).get("epoch", 0)
                why = (f"the sweep's time budget (time_budget_s={self.time_budget_s}) ran out"
                       if self.time_budget_s else "the sweep ended")
                self._finish(trial, "stopped", f"{why} after epoch {epoch}")
        self.store.flush()
        self.tb.close()


def _failure_status(line: str) -> str:
    """What a failed trial's last error line says it was: diverged, oom (torch's or Ray's out-of-memory error,
    recorded after the retries), or error."""
    exception = line.split(":")[0]
    if "Diverged" in exception:
        return "diverged"
    if "OutOfMemoryError" in exception or "out of memory" in line.lower():
        return "oom"
    return "error"


def _error_line(trial) -> str:
    """The last line of the trial's traceback: the exception and its message."""
    path = trial.error_file
    if path and Path(path).exists():
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:500]
    return "the trial failed without an error message"


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"  # Ray's default packs the config into the name and runs past path limits.


def _quiet_libraries() -> None:
    import logging

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # With Ray's own loggers off, the result grid warns that it finds no result.json; our tables are the results.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def run_sweep(spec: SweepSpec, storage: str | Path = "results", *, address: str | None = None,
              num_samples: int | None = None, max_concurrent: int | None = None, smoke: bool = False,
              resume: bool = False, trainable: Callable | None = None, reuse_actors: bool = True) -> Path:
    """Run SPEC with Ray Tune; returns the results folder storage/<sweep name>/. STORAGE may be a URI
    (s3://bucket/prefix ...): results are then uploaded to URI/<sweep name>/ and the folder returned is the driver's
    working copy of it (fercore.storage).

    resume: finish the sweep whose driver stopped (even by SIGKILL): Ray restores its trials and the searcher's
    state from storage/<name>/tune; trials already in trials.parquet are not run again.
    trainable: a stand-in for the trial function with _trainable's signature (benchmarks of the sweep layer).
    reuse_actors: run a trial in a finished trial's worker process when it needs the same resources; False starts
    a fresh process per trial (~1.5 s each on 2 CPU cores; benchmarks/sweep_overhead.py compares).
    """
    from ray.tune.schedulers import ASHAScheduler

    started = time.time()
    _quiet_libraries()
    location = SweepFolder(storage, spec.name)  # a URI that cannot be opened or written fails here, before Ray starts
    out = location.local
    location.pull()  # A URI's tables, optuna.db and Ray state, into the working copy the driver writes.
    if resume and not tune.Tuner.can_restore(str(out / TUNE_DIR)):
        raise UserError(f"--resume: {location.where(TUNE_DIR)} holds no sweep to resume; run without --resume to "
                        f"start it")
    out.mkdir(parents=True, exist_ok=True)
    if smoke:
        spec = smoke_spec(spec, num_samples)
    fixed = spec.base_config()
    n = num_samples or spec.num_samples  # --smoke --num-samples N: N tiny trials
    _write_sweep_record(out, spec, fixed, smoke)
    if spec.sampler == "grid" and n > spec.grid_size:
        print(f"The grid has {spec.grid_size} points: running {spec.grid_size} trials, not {n}.", flush=True)
        n = spec.grid_size
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=True,
                 logging_level="WARNING")
    resources = {"cpu": spec.resources.get("cpu", 1), "gpu": spec.resources.get("gpu", 0)}
    # Only a local instance started here is known to lack GPUs; a cluster (--address, or a Ray job's RAY_ADDRESS)
    # may add GPU nodes once trials ask for them.
    if resources["gpu"] and address is None and not os.environ.get("RAY_ADDRESS") \
            and not ray.cluster_resources().get("GPU"):
        raise UserError(f"resources.gpu: each trial asks for {resources['gpu']} GPU but this Ray instance has none; "
                        f"set resources.gpu: 0 (or --gpus-per-trial) or run where CUDA is present")
    data_cfg = cfg.resolve(fixed, drop_inapplicable=True).data
    print(f"Loading data: {data_cfg.source}", flush=True)
    data = load(data_cfg.source, image_size=data_cfg.image_size, scale=data_cfg.scale, seed=data_cfg.seed,
                val_fraction=data_cfg.val_fraction)
    counts = data.counts()
    print(f"  {len(data.images)} images: train {sum(counts['train'])}, val {sum(counts['val'])}, "
          f"test {sum(counts['test'])}", flush=True)

    study_storage = _optuna_storage(spec, out)
    cache = CacheStore(out / "cache", enabled=spec.cache)
    finished = {}
    if resume:  # Ray may not know these finished: a driver killed between our row and Ray's next save of its state.
        finished = {tid: {m: row.get(m) for m in spec.metrics} for tid, row in ResultsStore(out).trials.items()}
    trainable = tune.with_resources(
        tune.with_parameters(trainable or _trainable, data=data, cache=cache, objectives=tuple(spec.metrics),
                             finished=finished), resources)
    if resume:  # The searcher, scheduler and results callback come back from Ray's saved state.
        # Ray's copy in tune/ may be half written (a kill during its copy thread's write): put back the whole one.
        tune_state.restore(out / tune_state.TUNE_STATE, out / TUNE_DIR)
        tune_state.check(out / TUNE_DIR)
        tuner = tune.Tuner.restore(str(out / TUNE_DIR), trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
        callback = _repoint_callback(tuner, location, spec)
        print(f"Resuming sweep {spec.name!r}: {len(finished)} trials already recorded", flush=True)
        tuner.fit()
        return _finish_sweep(spec, out, callback.store, study_storage, cache, started, location)

    searcher = _Search(space=FixedSpace(spec.space, spec.path, fixed, spec.grid), sampler=_sampler(spec),
                       metric=spec.metrics if spec.multi_objective else spec.metric,
                       mode=spec.modes if spec.multi_objective else spec.mode,
                       study_name=spec.name, storage=study_storage)
    if spec.seeds > 1:  # Optuna sees one trial per sampled config, scored by the mean over its seeds.
        searcher = _Repeater(searcher, repeat=spec.seeds)
        n *= spec.seeds
    scheduler = None
    if spec.scheduler.get("type", "asha") == "asha":  # One objective, reported every epoch (validated in sweepfile).
        max_t = max(1, int(spec.scheduler.get("max_t", int(fixed.get("classifier.epochs", 100)))))
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max_t, metric=spec.metric, mode=spec.mode,
                                  grace_period=min(max_t, int(spec.scheduler.get("grace_period", 1))),
                                  reduction_factor=spec.scheduler.get("reduction_factor", 2))
    callback = ResultsCallback(out, n, spec.time_budget_s, after_flush=location.push)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=n, max_concurrent_trials=max_concurrent or spec.max_concurrent,
                                    time_budget_s=spec.time_budget_s, trial_dirname_creator=_trial_dirname,
                                    reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(out), callbacks=[callback], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=spec.max_failures)),
    )
    objectives = ", ".join(f"{m} ({d})" for m, d in zip(spec.metrics, spec.modes))
    print(f"Running {n} trials of sweep {spec.name!r} ({f'space {spec.space}' if spec.space else 'a grid'}, sampler "
          f"{spec.sampler}, scheduler {spec.scheduler.get('type', 'asha')}, objectives {objectives}) ...", flush=True)
    tuner.fit()
    return _finish_sweep(spec, out, callback.store, study_storage, cache, started, location)


def _write_sweep_record(out: Path, spec: SweepSpec, fixed: dict[str, Any], smoke: bool) -> None:
    """What the sweep asked for, beside its tables: a report names the objectives and the grid from it."""
    record = {"name": spec.name, "description": spec.description, "sweep_file": str(spec.path),
              "metrics": spec.metrics, "modes": spec.modes, "sampler": spec.sampler, "space": spec.space,
              "grid": spec.grid, "fixed": fixed, "scheduler": spec.scheduler, "seeds": spec.seeds, "smoke": smoke}
    atomic_write(out / SWEEP_RECORD, lambda f: f.write(json.dumps(record, indent=1, default=str).encode()))


def _repoint_callback(tuner, location: SweepFolder, spec: SweepSpec) -> ResultsCallback:
    """Give the restored results callback this run's folder and upload hook, and return it (its store holds every
    row once the sweep ends). Ray restores it as pickled when the sweep started, with that driver's folder, which
    for a URI is a working copy that may lie elsewhere here."""
    for callback in tuner._local_tuner.get_run_config().callbacks or []:  # the restored RunConfig
        if not isinstance(callback, ResultsCallback):
            continue
        before = Path(callback.folder)
        callback.folder, callback.after_flush = location.local, location.push
        callback.resuming = True  # setup() checks that Ray restored the sweep rather than starting a new one
        # The restored searcher also holds its Optuna storage as pickled: a study file in the old folder.
        if spec.storage_url(before) != spec.storage_url(location.local):
            raise UserError(f"--resume: the sweep's Optuna study is restored as {spec.storage_url(before)}, in the "
                            f"results folder of the driver that started it; resume with that folder "
                            f"({before}{', set through FERCORE_CACHE' if location.uri else ''})")
        return callback
    raise UserError(f"--resume: the Ray Tune run in {location.where(TUNE_DIR)} has no fercore results callback: it "
                    f"was not started by `fersweep run`")


def _finish_sweep(spec: SweepSpec, out: Path, store: ResultsStore, study_storage, cache: CacheStore,
                  started: float, location: SweepFolder | None = None) -> Path:
    if study_storage is not None and spec.time_budget_s:  # Trials the budget cut off are still RUNNING there.
        study = optuna.load_study(study_name=spec.name, storage=study_storage)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    if spec.multi_objective:  # The front, over every completed row (a resumed sweep's earlier ones too).
        rows = list(store.trials.values())
        for row, on in zip(rows, pareto.front(rows, spec.metrics, spec.modes)):
            store.add_trial({**row, "pareto": on})
        store.flush()
    if location is not None:  # What was written after the last flush (the last TensorBoard events), to a URI.
        location.push()
    _summary(out, store, spec, time.time() - started, cache, spec.storage_url(out), location)
    return out


def _sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "grid":
        return _Grid(spec.grid, seed=spec.seed)
    if spec.sampler == "nsga2":
        return NSGAIISampler(seed=spec.seed)
    if spec.sampler == "random":
        return RandomSampler(seed=spec.seed)
    return TPESampler(seed=spec.seed)


def _optuna_storage(spec: SweepSpec, out: Path) -> optuna.storages.BaseStorage | None:
    """The sweep's `optuna_storage` opened; a study of the sweep's name already there continues, so it must have the
    same objectives."""
    url = spec.storage_url(out)
    if url is None:
        return None
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(url)
    try:
        study_id = storage.get_study_id_from_name(spec.name)
    except KeyError:
        return storage
    wanted = [optuna.study.StudyDirection.MAXIMIZE if m == "max" else optuna.study.StudyDirection.MINIMIZE
              for m in spec.modes]
    if storage.get_study_directions(study_id) != wanted:
        raise UserError(f"optuna_storage: {url} holds a study {spec.name!r} with other objectives than this sweep's "
                        f"{', '.join(spec.metrics)} ({', '.join(spec.modes)}); give this sweep another file")
    return storage


def _summary(out: Path, store: ResultsStore, spec: SweepSpec, seconds: float, cache: CacheStore,
             study_url: str | None = None, location: SweepFolder | None = None) -> None:
    rows = list(store.trials.values())
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    print(f"\nSweep {spec.name!r} finished in {seconds:.0f} s: "
          + ", ".join(f"{v} {k}" for k, v in sorted(by_status.items())))
    done = [r for r in rows if r["status"] == "completed"]
    for m in spec.metrics:
        if done and not any(_finite(r.get(m)) for r in done):
            print(f"Note: no completed trial has a value of {m}; is the sweep's metric spelt as the rows' columns?")
    described = ("classifier.backbone", "augment.policy", "generator.type")
    if spec.multi_objective:
        front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r[spec.metric], reverse=spec.mode == "max")
        print(f"Pareto front over {', '.join(f'{m} ({d})' for m, d in zip(spec.metrics, spec.modes))}: "
              f"{len(front)} of {len(done)} completed trials (column 'pareto' in trials.parquet)")
        for r in front:
            print(f"  trial {r['trial_id']}: " + ", ".join(f"{m}={r[m]:.4g}" for m in spec.metrics) + "; "
                  + ", ".join(f"{k}={r[k]}" for k in described if k in r))
    elif any(_finite(r.get(spec.metric)) for r in done):
        best = (max if spec.mode == "max" else min)((r for r in done if _finite(r.get(spec.metric))),
                                                    key=lambda r: r[spec.metric])
        print(f"Best by {spec.metric}: trial {best['trial_id']} ({spec.metric}={best[spec.metric]:.4f}, "
              f"test_macro_f1={best.get('test_macro_f1', float('nan')):.4f}, "
              f"test_accuracy={best.get('test_accuracy', float('nan')):.4f})")
        print("  " + ", ".join(f"{k}={best[k]}" for k in described if k in best))
    # Kinds are generator-v1, pool-v1, reference-v1, baseline-v1: what the cache saved this sweep.
    counts = cache.counts_by_kind()
    kinds = sorted({kind for kind, _ in counts})
    if kinds:
        print("Cache: " + ", ".join(f"{k} built {counts[k, 'built']}, reused {counts[k, 'hit']}" for k in kinds)
              + f" ({cache.root})")
    where = location.where if location is not None else lambda name: f"{out}/{name}"
    print(f"Results: {where('trials.parquet')}, {where('epochs.parquet')}")
    if location is not None and location.uri:
        print(f"  uploaded with tb/ from the driver's working copy {out}")
    print(f"TensorBoard: tensorboard --logdir {out}/tb")
    if study_url:
        print(f"Optuna study {spec.name!r}: optuna-dashboard {study_url}")
