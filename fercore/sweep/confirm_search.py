"""The confirmation phase's Ray searcher (fercore.sweep.confirm plans the phase) and its record in Optuna: a
persistent study gets a sibling study `<name>.confirm` holding the confirmation trials."""
from __future__ import annotations

import pickle
from typing import Any

import optuna
from ray.tune.search import Searcher

from fercore.numbers import finite
from fercore.sweep.confirm import CONFIRM, PHASE, SEARCH, STUDY_SUFFIX, differing
from fercore.sweep.searchers import TESTED
from fercore.sweep.study import open_url


class ConfirmSearcher(Searcher):
    """Ray's searcher of the confirmation phase: hands out CONFIGS in order, then FINISHED. With a persistent Optuna
    study (STORAGE_URL), each trial's outcome is added to the study `<name>.confirm`, its params the keys the
    confirmed configs differ in and the seed, its user attributes the phase and its Ray trial id."""

    def __init__(self, configs: list[dict[str, Any]], metrics: list[str], modes: list[str], study_name: str,
                 storage_url: str | None):
        super().__init__(metric=metrics[0], mode=modes[0])
        self.configs = configs
        self.metrics, self.modes = metrics, modes
        self.study_name, self.storage_url = study_name, storage_url
        self.handed: dict[str, int] = {}  # Ray trial id -> index in configs

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self.handed:  # a restored trial asks again
            return dict(self.configs[self.handed[trial_id]])
        if len(self.handed) >= len(self.configs):
            return Searcher.FINISHED
        self.handed[trial_id] = len(self.handed)
        return dict(self.configs[self.handed[trial_id]])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self.storage_url is None or trial_id not in self.handed:
            return
        record_confirmed(self.storage_url, f"{self.study_name}{STUDY_SUFFIX}", self.study_name, trial_id,
                         self.configs, self.handed[trial_id], self.metrics, self.modes,
                         None if error else result)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def record_confirmed(storage_url: str, name: str, search_name: str, trial_id: str, configs: list[dict[str, Any]],
                     index: int, metrics: list[str], modes: list[str], result: dict | None) -> None:
    """Add confirmation trial TRIAL_ID (CONFIGS[INDEX]) to study NAME, once: COMPLETE with its row's values of
    METRICS, else FAIL (it failed, or a value is missing: it stopped or diverged)."""
    storage = open_url(storage_url)
    directions = ["maximize" if m == "max" else "minimize" for m in modes]
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
    if not study.user_attrs:
        study.set_user_attr(PHASE, CONFIRM)
        study.set_user_attr("search_study", search_name)
        optuna.load_study(study_name=search_name, storage=storage).set_user_attr(PHASE, SEARCH)
    if any(t.user_attrs.get("ray_trial_id") == trial_id for t in study.get_trials(deepcopy=False)):
        return  # told before the driver stopped; a resumed sweep reports it again
    params, distributions = _params(configs, index)
    values = [result.get(m) for m in metrics] if result and result.get(TESTED) else None
    complete = values is not None and all(finite(v) for v in values)
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions=distributions,
        values=[float(v) for v in values] if complete else None,
        state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL,
        user_attrs={PHASE: CONFIRM, "ray_trial_id": trial_id}))


def _params(configs: list[dict[str, Any]], index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """CONFIGS[INDEX]'s values of the keys the configs differ in (the seed among them), each a categorical over the
    values the configs take."""
    keys = sorted(set(differing(configs)) | {"seed"})
    params, distributions = {}, {}
    for k in keys:
        choices = tuple(dict.fromkeys(c.get(k) for c in configs))
        params[k] = configs[index].get(k)
        distributions[k] = optuna.distributions.CategoricalDistribution(choices)
    return params, distributions
