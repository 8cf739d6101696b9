"""The confirmation phase (sweep key `confirm: {top: K, seeds: S}`): once the search has ended, the K configs its
validation objective ranks best are run again to completion (no scheduler stops them) on S fresh seeds, each trial
with its own baseline and controls. The report's claims come from these trials: the search chose its configs on
the very trials it would otherwise report, so their figures carry the winner's curse and, under ASHA, the seeds it
stopped drop out of them.

Rows carry PHASE (search or confirm); a persistent Optuna study gets a sibling study `<name>.confirm` holding the
confirmation trials, and the search study's user attribute `phase` says it was the search
(fercore.sweep.confirm_search). No Ray here: which trials the phase runs.
"""
from __future__ import annotations

import math
from typing import Any, Collection, Iterable

from fercore.config import all_keys
from fercore.numbers import finite
from fercore.results.rows import CONFIRM, PHASE, REPEAT_KEYS, SEARCH, phase_of

__all__ = ["CONFIRM", "PHASE", "SEARCH", "phase_of"]  # (what the rest of the sweep layer takes from here too)
TUNE_DIR = "tune-confirm"  # the confirmation phase's Ray Tune state, beside the search's tune/
STUDY_SUFFIX = ".confirm"  # the confirmation study's name: the sweep's name and this
FOLD = "data.fold"  # k-fold: a config is ranked over its folds and confirmed on each of them


def config_of(row: dict[str, Any], known: Collection[str] | None = None) -> dict[str, Any]:
    """The config keys of a trials.parquet ROW that have a value (inapplicable keys are empty there). KNOWN: every
    config key (fercore.config.all_keys(), which walks the registries: a caller of many rows passes it once)."""
    known = all_keys() if known is None else known
    return {k: _plain(v) for k, v in row.items() if k in known and v is not None and not _nan(v)}


def config_label(config: dict[str, Any]) -> tuple:
    """What tells configs apart: every key but the seed and the fold (a config is the same config whatever its seed
    or test fold: choosing the fold whose validation happened to score best would be choosing on noise), as a
    hashable, ordered tuple."""
    return tuple(sorted((k, v) for k, v in config.items() if k not in REPEAT_KEYS))


def ranked_configs(rows: Iterable[dict[str, Any]], metric: str, mode: str) -> list[tuple[dict[str, Any], float, int]]:
    """The search's configs, best first by the mean of METRIC over their seeds and, k-fold, their folds (ties: the
    earliest trial first), each as (config without its seed and fold, mean, trials). Only configs whose every trial
    completed with a finite METRIC are ranked: a config with a seed the scheduler stopped or that failed has no
    honest mean."""
    ranked = []
    for label, members in _search_groups(rows).items():
        if all(r.get("status") == "completed" and finite(r.get(metric)) for r in members):
            ranked.append((dict(label), sum(float(r[metric]) for r in members) / len(members), len(members)))
    sign = -1 if mode == "max" else 1
    return sorted(ranked, key=lambda c: sign * c[1])  # stable: equal means keep the earliest trial first


def _search_groups(rows: Iterable[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """The search's rows of ROWS by config label, in trial-id order (the order ties are broken in)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    known = all_keys()
    for row in sorted(rows, key=lambda r: str(r.get("trial_id", ""))):
        if phase_of(row) == SEARCH:
            groups.setdefault(config_label(config_of(row, known)), []).append(row)
    return groups


def differing(configs: list[dict[str, Any]], leave_out: Iterable[str] = ()) -> list[str]:
    """The keys whose values differ among CONFIGS (a key one lacks differs), sorted, but those in LEAVE_OUT."""
    keys = {k for c in configs for k in c} - set(leave_out)
    return sorted(k for k in keys if len({repr(c.get(k)) for c in configs}) > 1)


def shown_keys(search_rows: Iterable[dict[str, Any]], described: Iterable[str]) -> list[str]:
    """The keys a printed config names: those of DESCRIBED it holds, then every key the search varied among its
    configs (so a confirmed config shows the values it was chosen for, even when it is the only one confirmed)."""
    configs = [dict(label) for label in _search_groups(search_rows)]
    keys = [k for k in described if any(k in c for c in configs)]
    return keys + [k for k in differing(configs) if k not in keys]


def repeats_text(rows: Iterable[dict[str, Any]]) -> str:
    """How many trials ROWS (one config's) are, by what repeats them: "5 seeds", or k-fold "5 seeds x 3 folds"."""
    rows = list(rows)
    seeds = len({r.get("seed") for r in rows})
    folds = len({int(r[FOLD]) for r in rows if finite(r.get(FOLD))})
    text = f"{seeds} seed{'s' if seeds != 1 else ''}"
    return text + (f" x {folds} fold{'s' if folds != 1 else ''}" if folds else "")


def fresh_seeds(rows: Iterable[dict[str, Any]], n: int) -> list[int]:
    """N seeds after every seed any trial used (the search's seeds and repeats): no confirmation trial shares a seed
    with a trial that chose it."""
    used = [int(r["seed"]) for r in rows if finite(r.get("seed"))]
    first = max(used) + 1 if used else 0
    return list(range(first, first + n))


def plan(rows: list[dict[str, Any]], chosen: list[tuple[dict[str, Any], float, int]],
         seeds: int) -> list[dict[str, Any]]:
    """The confirmation trials' configs: the CHOSEN configs (the top of ranked_configs(ROWS, ...)) times SEEDS fresh
    seeds after every seed of ROWS, seed by seed (a phase cut short leaves every config with as many seeds); k-fold,
    each config on every fold its search trials tested on, so its confirmed figures pool the same folds."""
    folds = _folds_searched(rows)
    return [{**config, **fold, "seed": seed} for seed in fresh_seeds(rows, seeds) for config, _, _ in chosen
            for fold in folds.get(config_label(config), ({},))]


def _folds_searched(rows: Iterable[dict[str, Any]]) -> dict[tuple, list[dict[str, int]]]:
    """Per config label, the folds its search trials tested on, each as {data.fold: k} (no entry: not k-fold)."""
    folds = {label: sorted({int(r[FOLD]) for r in members if finite(r.get(FOLD))})
             for label, members in _search_groups(rows).items()}
    return {label: [{FOLD: k} for k in ks] for label, ks in folds.items() if ks}


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _plain(v: Any) -> Any:
    """A Parquet value as the config holds it (numpy scalars as Python's)."""
    return v.item() if hasattr(v, "item") else v
