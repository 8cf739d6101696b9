"""The sweep layer, the only code that imports Ray: a validated SweepSpec becomes a Ray Tune run in which
OptunaSearch samples the define-by-run space, ASHA stops weak trials on the validation metric, and a driver-side
callback writes the Parquet tables and TensorBoard events as trials report and finish."""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from fercore import config as cfg
from fercore.cache import CacheStore
from fercore.data import FaceSet, load
from fercore.errors import UserError
from fercore.sweepfile import SweepSpec, load_space

# We write our own tables and event files; Ray's JSON/CSV/TensorBoard loggers would duplicate them per trial.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.result import AUTO_RESULT_KEYS  # noqa: E402
from ray.tune.search.repeater import TRIAL_INDEX  # noqa: E402

from fercore.results import ResultsStore, TensorBoardWriter  # noqa: E402

RAY_KEYS = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint", "artifacts",
                                    "time_this_iter_s", "timesteps_total", "episodes_total"}
SMOKE = {"classifier.epochs": 2, "generator.epochs": 1}


class _FixedTrial:
    """An Optuna trial whose suggest_* calls return the fixed value for fixed keys instead of asking Optuna."""

    def __init__(self, trial, fixed: dict[str, Any]):
        self._trial, self._fixed = trial, fixed

    def __getattr__(self, name):
        attr = getattr(self._trial, name)
        if not name.startswith("suggest_"):
            return attr

        def suggest(key, *args, **kwargs):
            return self._fixed[key] if key in self._fixed else attr(key, *args, **kwargs)

        return suggest


class FixedSpace:
    """The sweep's define-by-run space with its fixed values laid over it.

    A class, not a closure, because Ray pickles the searcher (and this with it) into the experiment checkpoint;
    it pickles as the space's name and file, and loads the function again where it is unpickled.
    """

    def __init__(self, space: str, sweep_path: Path | None, fixed: dict[str, Any]):
        self.space, self.sweep_path, self.fixed = space, sweep_path, dict(fixed)
        self._fn: Callable | None = None

    def __getstate__(self):
        return {**self.__dict__, "_fn": None}

    def __call__(self, trial) -> dict[str, Any]:
        if self._fn is None:
            self._fn = load_space(self.space, self.sweep_path)
        returned = self._fn(_FixedTrial(trial, self.fixed)) or {}
        return {**returned, **self.fixed}


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's flat config as Ray hands it over, without Ray's own keys; a repeat of a sampled config (sweep key
    `seeds`) gets its own seed: the config's seed plus the repeat's index."""
    flat = {k: v for k, v in config.items() if k != TRIAL_INDEX}
    if config.get(TRIAL_INDEX):
        flat["seed"] = int(flat.get("seed", 0)) + int(config[TRIAL_INDEX])
    return flat


def _trainable(config: dict[str, Any], data: FaceSet | None = None, cache: CacheStore | None = None) -> None:
    import torch

    from fercore import trial

    resolved = cfg.resolve(trial_config(config), drop_inapplicable=True)
    if not resolved.train.threads:
        # Each trial gets its share of the node's cores, not torch's default of all of them.
        cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))

    def report(epoch: int, metrics: dict[str, float], artifacts: dict | None) -> None:
        tune.report({**metrics, "artifacts": artifacts} if artifacts else dict(metrics))

    trial.run(resolved, data, report, cache)


class ResultsCallback(tune.Callback):
    """Driver side: each reported epoch -> epochs.parquet and TensorBoard; each finished trial -> trials.parquet."""

    def __init__(self, folder: Path, total: int):
        self.store = ResultsStore(folder)
        self.tb = TensorBoardWriter(folder / "tb")
        self.total = total
        self.finished = len(self.store.trials)
        self._last: dict[str, dict[str, Any]] = {}
        self._artifacts: dict[str, dict] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: v for k, v in result.items() if k not in RAY_KEYS}
        if result.get("artifacts"):
            self._artifacts[trial.trial_id] = result["artifacts"]
        metrics["node_ip"] = result.get("node_ip", "")
        metrics["time_total_s"] = result.get("time_total_s")
        self._last[trial.trial_id] = metrics
        self.store.add_epoch(trial.trial_id, {k: v for k, v in metrics.items() if k != "time_total_s"})
        self.tb.epoch(trial.trial_id, int(metrics.get("epoch", result.get("training_iteration", 0))), metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if "row" in self._artifacts.get(trial.trial_id, {}):
            status, reason = "completed", ""
        else:
            epoch = self._last.get(trial.trial_id, {}).get("epoch", 0)
            status, reason = "stopped", f"stopped early by the scheduler after epoch {epoch}"
        self._finish(trial, status, reason)

    def on_trial_error(self, iteration, trials, trial, **info):
        line = _error_line(trial)
        # A generator that diverged is a finding about its config, not a crash: record it as such.
        self._finish(trial, "diverged" if "Diverged" in line.split(":")[0] else "error", line)

    def _finish(self, trial, status: str, reason: str) -> None:
        try:
            config = cfg.resolve(trial_config(trial.config), drop_inapplicable=True).flat()
        except UserError:
            config = trial_config(trial.config)
        last = self._last.pop(trial.trial_id, {})
        artifacts = self._artifacts.pop(trial.trial_id, {})
        # A completed trial sent its whole row; a stopped or failed one has only its last epoch's metrics.
        summary = artifacts.get("row") or {k: v for k, v in last.items() if k.startswith(("val_", "train_loss"))}
        row = {"trial_id": trial.trial_id, **config, **summary, "status": status, "reason": reason,
               "epochs_run": last.get("epoch", 0), "node_ip": last.get("node_ip", ""),
               "train_seconds": summary.get("train_seconds", last.get("time_total_s"))}
        self.store.add_trial(row)
        self.store.flush()
        self.tb.finish(trial.trial_id, config, row, artifacts)
        self.finished += 1
        metric = ", ".join(f"{k}={row[k]:.3f}" for k in ("val_macro_f1", "test_macro_f1") if row.get(k) is not None)
        print(f"[{self.finished}/{self.total}] trial {trial.trial_id} {status} {metric} {reason}".rstrip(), flush=True)

    def on_experiment_end(self, trials, **info):
        self.store.flush()
        self.tb.close()


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

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # With Ray's own loggers off, the result grid warns that it finds no result.json; our tables are the results.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def run_sweep(spec: SweepSpec, storage: str | Path = "results", *, address: str | None = None,
              num_samples: int | None = None, max_concurrent: int | None = None, smoke: bool = False) -> Path:
    """Run SPEC with Ray Tune; returns the results folder storage/<sweep name>/."""
    from optuna.samplers import RandomSampler, TPESampler
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    started = time.time()
    _quiet_libraries()
    out = Path(storage).resolve() / spec.name
    out.mkdir(parents=True, exist_ok=True)
    fixed = spec.base_config()
    n = num_samples or spec.num_samples
    if smoke:
        fixed.update(SMOKE)
        if fixed.get("data.source", "procedural") == "procedural":
            fixed["data.scale"] = min(float(fixed.get("data.scale", 0.1)), 0.03)
        n = min(n, 2)
    data_cfg = cfg.resolve(fixed, drop_inapplicable=True).data
    print(f"Loading data: {data_cfg.source}", flush=True)
    data = load(data_cfg.source, image_size=data_cfg.image_size, scale=data_cfg.scale, seed=data_cfg.seed,
                val_fraction=data_cfg.val_fraction)
    counts = data.counts()
    print(f"  {len(data.images)} images: train {sum(counts['train'])}, val {sum(counts['val'])}, "
          f"test {sum(counts['test'])}", flush=True)

    sampler = TPESampler(seed=spec.seed) if spec.sampler == "tpe" else RandomSampler(seed=spec.seed)
    searcher = OptunaSearch(space=FixedSpace(spec.space, spec.path, fixed), sampler=sampler,
                            metric=spec.metric, mode=spec.mode)
    if spec.seeds > 1:  # Optuna sees one trial per sampled config, scored by the mean over its seeds.
        searcher = Repeater(searcher, repeat=spec.seeds)
        n *= spec.seeds
    scheduler = None
    if spec.scheduler.get("type", "asha") == "asha":
        max_t = max(1, spec.scheduler.get("max_t", int(fixed.get("classifier.epochs", 100))))
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max_t, metric=spec.metric, mode=spec.mode,
                                  grace_period=min(max_t, spec.scheduler.get("grace_period", 1)),
                                  reduction_factor=spec.scheduler.get("reduction_factor", 2))

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=True,
                 logging_level="WARNING")
    resources = {"cpu": spec.resources.get("cpu", 1), "gpu": spec.resources.get("gpu", 0)}
    cache = CacheStore(out / "cache", enabled=spec.cache)
    trainable = tune.with_resources(tune.with_parameters(_trainable, data=data, cache=cache), resources)
    callback = ResultsCallback(out, n)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=n, max_concurrent_trials=max_concurrent or spec.max_concurrent,
                                    trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name="tune", storage_path=str(out), callbacks=[callback], verbose=0),
    )
    print(f"Running {n} trials of sweep {spec.name!r} (space {spec.space}, sampler {spec.sampler}, "
          f"scheduler {spec.scheduler.get('type', 'asha')}) ...", flush=True)
    tuner.fit()
    _summary(out, callback.store, spec, time.time() - started, cache)
    return out


def _summary(out: Path, store: ResultsStore, spec: SweepSpec, seconds: float, cache: CacheStore) -> None:
    rows = list(store.trials.values())
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    print(f"\nSweep {spec.name!r} finished in {seconds:.0f} s: "
          + ", ".join(f"{v} {k}" for k, v in sorted(by_status.items())))
    done = [r for r in rows if r["status"] == "completed" and r.get(spec.metric) is not None]
    if done:
        best = (max if spec.mode == "max" else min)(done, key=lambda r: r[spec.metric])
        print(f"Best by {spec.metric}: trial {best['trial_id']} ({spec.metric}={best[spec.metric]:.4f}, "
              f"test_macro_f1={best.get('test_macro_f1', float('nan')):.4f}, "
              f"test_accuracy={best.get('test_accuracy', float('nan')):.4f})")
        print("  " + ", ".join(f"{k}={best[k]}" for k in ("classifier.backbone", "augment.policy", "generator.type")
                               if k in best))
    # Kinds are generator-v1, pool-v1, reference-v1, baseline-v1: what the cache saved this sweep.
    counts = Counter((e["key"].rsplit("-", 1)[0], e["event"]) for e in cache.events())
    kinds = sorted({kind for kind, _ in counts})
    if kinds:
        print("Cache: " + ", ".join(f"{k} built {counts[k, 'built']}, reused {counts[k, 'hit']}" for k in kinds)
              + f" ({cache.root})")
    print(f"Results: {out}/trials.parquet, {out}/epochs.parquet")
    print(f"TensorBoard: tensorboard --logdir {out}/tb")
