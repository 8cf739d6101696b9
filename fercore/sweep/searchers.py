"""The sweep's searcher: Ray's OptunaSearch over the define-by-run space (TPE, random, NSGA-II, or every point of a
grid), repeated over `seeds`, each adapted where Ray's own falls short. Their private Ray and Optuna state is reached
through fercore.sweep.internals only.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import optuna
from optuna.samplers import GridSampler, NSGAIISampler, RandomSampler, TPESampler
from ray.tune.search import Repeater, Searcher
from ray.tune.search.optuna import OptunaSearch

from fercore.numbers import finite
from fercore.sweep import internals
from fercore.sweep.spaces import FixedSpace
from fercore.sweep.spec import SweepSpec

RESUMED = "resumed"  # result key of a finished trial that a resumed sweep re-reports instead of running


def _objectives(metric: str | list[str]) -> list[str]:
    return metric if isinstance(metric, list) else [metric]


class _Search(OptunaSearch):
    """Ray's OptunaSearch, closing every Optuna trial: a trial without a finite value of every objective (it
    diverged, failed, was cut off, or never reported one) is told FAIL. Ray's would tell None or NaN as a COMPLETE
    value, which Optuna refuses, leaving the trial RUNNING in the study (and in optuna-dashboard)."""

    def on_trial_result(self, trial_id: str, result: dict):
        if isinstance(self.metric, str) and not finite(result.get(self.metric)):
            return  # An objective measured only at the end, or a trial's report that it failed.
        if result.get(RESUMED):
            return  # A finished trial's recorded values, re-reported after a resume: told on completion.
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if internals.told_before(self, trial_id):
            # Resumed with a persistent study (optuna_storage): it was told before the driver stopped.
            internals.mark_completed(self, trial_id)
            return
        if internals.search_completed(self, trial_id) or all(finite((result or {}).get(m))
                                                             for m in _objectives(self.metric)):
            return super().on_trial_complete(trial_id, result, error)
        internals.tell_failed(self, trial_id)


class _Repeater(Repeater):
    """Ray's Repeater (sweep key `seeds`), averaging each of several objectives over a config's seeds; a seed
    without a value is left out of the mean (Ray's takes one metric and fails on a missing value)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs):
        metrics = _objectives(self.searcher.metric)
        scores = [float(v) if finite(v := (result or {}).get(m)) else math.nan for m in metrics]
        group = internals.report_repeat(self, trial_id, scores)
        if group is None:
            return
        primary, every_seed = group
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # every seed failed: the mean is NaN, told as FAIL
            means = np.nanmean(np.array(every_seed, dtype=float), axis=0)
        self.searcher.on_trial_complete(primary, result=dict(zip(metrics, means.tolist())), **kwargs)


class _Grid(GridSampler):
    """Optuna's GridSampler without its own stop: it calls study.stop() after the last point, which raises outside
    study.optimize(); Ray runs exactly as many trials as the grid has points."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_searcher(spec: SweepSpec, fixed: dict[str, Any], storage: optuna.storages.BaseStorage | None) -> Searcher:
    """The searcher of a new sweep: Optuna over FIXED laid on the space (or the grid), its study in STORAGE (None:
    in memory), repeated `seeds` times per sampled config."""
    searcher = _Search(space=FixedSpace(spec.space, spec.path, fixed, spec.grid), sampler=_sampler(spec),
                       metric=spec.metrics if spec.multi_objective else spec.metric,
                       mode=spec.modes if spec.multi_objective else spec.mode,
                       study_name=spec.name, storage=storage)
    if spec.seeds > 1:  # Optuna sees one trial per sampled config, scored by the mean over its seeds.
        return _Repeater(searcher, repeat=spec.seeds)
    return searcher


def _sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "grid":
        return _Grid(spec.grid, seed=spec.seed)
    if spec.sampler == "nsga2":
        return NSGAIISampler(seed=spec.seed)
    if spec.sampler == "random":
        return RandomSampler(seed=spec.seed)
    return TPESampler(seed=spec.seed)
