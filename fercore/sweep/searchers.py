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
# Result keys that say how a trial ended (fercore.sweep.trainable sets them):
TESTED = "tested"  # its objectives are its row's (the best epoch's, whose weights were tested): told COMPLETE
STOPPED = "stopped"  # stopped before it was tested (a resumed sweep's re-report of such a trial): told PRUNED


def outcome(result: dict | None, metrics: list[str], error: bool = False) -> str:
    """How a trial that ended with RESULT is told to Optuna: COMPLETE when it was tested and has a finite value of
    every objective (its row's); PRUNED when the scheduler stopped it (it reported epochs but was never tested, so
    its last epoch's value is not the value of a tested model); FAIL otherwise (it diverged, failed, crashed, was
    cut off, or never reported a value)."""
    result = result or {}
    if error:
        return "FAIL"
    if result.get(TESTED):
        return "COMPLETE" if all(finite(result.get(m)) for m in metrics) else "FAIL"
    if result.get(STOPPED) or "epoch" in result:
        return "PRUNED"
    return "FAIL"


def _objectives(metric: str | list[str]) -> list[str]:
    return metric if isinstance(metric, list) else [metric]


class _Search(OptunaSearch):
    """Ray's OptunaSearch, closing every Optuna trial as `outcome` says: COMPLETE with its row's values, PRUNED when
    the scheduler stopped it, else FAIL. Ray's would tell a stopped trial's last epoch as COMPLETE, and None or NaN
    as a COMPLETE value, which Optuna refuses, leaving the trial RUNNING in the study (and in optuna-dashboard)."""

    def on_trial_result(self, trial_id: str, result: dict):
        if isinstance(self.metric, str) and not finite(result.get(self.metric)):
            return  # An objective measured only at the end, or a trial's report that it failed.
        if result.get(RESUMED):
            return  # A finished trial's recorded values, re-reported after a resume: told on completion.
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Resumed with a persistent study: the killed driver told this trial's end after Ray's last save of its
            # state, so Ray runs it again; the study keeps what it was told, and on_trial_complete tells nothing.
            if not internals.told_before(self, trial_id):
                raise

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        try:
            self._tell(trial_id, result, error)
        finally:
            # Told: Ray keeps no use for its Optuna trial (the study holds the trial), yet would hold it, and pickle
            # it with every save of its state, for the whole sweep.
            internals.forget_told(self, trial_id)

    def _tell(self, trial_id: str, result: dict | None, error: bool) -> None:
        if internals.told_before(self, trial_id):
            # Resumed with a persistent study (optuna_storage): it was told before the driver stopped.
            internals.mark_completed(self, trial_id)
            return
        told = outcome(result, _objectives(self.metric), error)
        if internals.search_completed(self, trial_id) or told == "COMPLETE":
            super().on_trial_complete(trial_id, result, error)
            return
        if told == "PRUNED":
            internals.tell_pruned(self, trial_id)
        else:
            internals.tell_failed(self, trial_id)


class _Repeater(Repeater):
    """Ray's Repeater (sweep key `seeds`), averaging each of several objectives over a config's seeds, each seed's
    value its row's (the best epoch's); a seed without a value (it failed) is left out of each objective's mean, and a
    config with a seed the scheduler stopped is told PRUNED: the mean of its other seeds would flatter it (Ray's
    takes one metric and fails on a missing value)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs):
        metrics = _objectives(self.searcher.metric)
        error = kwargs.get("error", False)
        tested = not error and bool((result or {}).get(TESTED))
        scores = [float(v) if tested and finite(v := (result or {}).get(m)) else math.nan for m in metrics]
        pruned = outcome(result, metrics, error) == "PRUNED"
        group = internals.report_repeat(self, trial_id, scores + [float(pruned)])  # the last score: stopped or not
        if group is None:
            return
        primary, every_seed = group
        every_seed = np.array(every_seed, dtype=float)
        if every_seed[:, -1].any():
            self.searcher.on_trial_complete(primary, result={STOPPED: True})
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # every seed failed: the mean is NaN, told as FAIL
            means = np.nanmean(every_seed[:, :-1], axis=0)
        # The group's result says how it ended; the last seed's own error flag is not the group's.
        self.searcher.on_trial_complete(primary, result={**dict(zip(metrics, means.tolist())), TESTED: True})


class _Grid(GridSampler):
    """Optuna's GridSampler without its own stop: it calls study.stop() after the last point, which raises outside
    study.optimize(); Ray runs exactly as many trials as the grid has points."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


class _NSGAII(NSGAIISampler):
    """Optuna's NSGA-II, picklable: Ray's Tuner pickles the searcher with its sampler (at start and in every saved
    state a resume reads), and Optuna 5.1's genetic-algorithm samplers hold a thread lock, which cannot be pickled."""

    def __getstate__(self) -> dict[str, Any]:
        return internals.sampler_state(self)

    def __setstate__(self, attributes: dict[str, Any]) -> None:
        internals.restore_sampler_state(self, attributes)


def make_searcher(spec: SweepSpec, fixed: dict[str, Any], storage: optuna.storages.BaseStorage | None) -> Searcher:
    """The searcher of a new sweep: Optuna over FIXED laid on the space (or the grid), its study in STORAGE (None:
    in memory), repeated `seeds` times per sampled config."""
    space = FixedSpace(spec.space, spec.path, fixed, spec.grid, spec.space_file)
    searcher = _Search(space=space, sampler=_sampler(spec),
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
        return _NSGAII(seed=spec.seed)
    if spec.sampler == "random":
        return RandomSampler(seed=spec.seed)
    return TPESampler(seed=spec.seed)
