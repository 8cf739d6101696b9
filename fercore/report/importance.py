"""Which hyperparameters mattered, and what the best trials cost.

Importance: Optuna's fANOVA evaluator (seeded) on an in-memory study rebuilt from trials.parquet's completed rows.
Each config key that varies becomes a parameter: categorical for strings and bools, an int or float range otherwise,
on a log scale where the range is positive and spans more than 10x (learning rates). A key that is null in some
rows (it applies to some trials only, e.g. augment.real_ratio) is left out: Optuna's evaluators only weigh
parameters every trial has. The keys that repeat a config rather than change it (seed, data.fold) are not
hyperparameters and are never ranked.

Pareto front: over the sweep's first two objectives when it has several, otherwise over validation macro-F1 (max)
and train_seconds (min), the cost trade-off; computed with fercore.pareto over the rows shown (not read from the
sweep's `pareto` column, which is over all its objectives).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fercore import pareto
from fercore.report.tables import Results, distinct, num, varying_keys
from fercore.results.rows import REPEAT_KEYS
from fercore.sections import DESCRIBED

MIN_TRIALS = 3  # fewer completed trials than this say nothing about importance
LOG_SPAN = 10.0  # a positive range wider than this factor gets a log scale
COST_OBJECTIVES = (("val_macro_f1", "max"), ("train_seconds", "min"))


@dataclass
class Importance:
    objective: str
    mode: str
    trials: int = 0
    values: dict[str, float] = field(default_factory=dict)  # key -> importance (sums to 1), largest first
    left_out: list[str] = field(default_factory=list)  # varying keys that not every trial has
    reason: str = ""  # why values is empty


def _python(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _distribution(key: str, values: list[Any], integer: bool):
    import optuna.distributions as od

    if any(isinstance(v, (str, bool, np.bool_)) for v in values):
        choices = sorted({str(v) if not isinstance(v, (bool, np.bool_)) else bool(v) for v in values}, key=str)
        return od.CategoricalDistribution(choices)
    low, high = float(min(values)), float(max(values))
    log = low > 0 and high > LOG_SPAN * low
    if integer:
        return od.IntDistribution(int(low), int(high), log=log and low >= 1)
    return od.FloatDistribution(low, high, log=log)


def _value_for(dist, v: Any) -> Any:
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return bool(v) if isinstance(v, (bool, np.bool_)) else str(v)
    return int(v) if isinstance(dist, od.IntDistribution) else float(v)


def param_importances(res: Results, seed: int = 0) -> Importance:
    import optuna

    objective, mode = res.objectives[0]
    out = Importance(objective, mode)
    done = res.completed
    done = done[num(done, objective).notna()]
    out.trials = len(done)
    if len(done) < MIN_TRIALS:
        have = {0: "No completed trial has", 1: "Only 1 completed trial has"}.get(
            len(done), f"Only {len(done)} completed trials have")
        out.reason = (f"{have} a value of {objective}; at least {MIN_TRIALS} are needed to say which "
                      f"hyperparameters mattered.")
        return out
    keys = [k for k in varying_keys(done) if k not in REPEAT_KEYS]  # seeds and folds: noise, not a choice
    everywhere = [k for k in keys if done[k].notna().all()]
    out.left_out = [k for k in keys if k not in everywhere]
    if not everywhere:
        out.reason = ("No hyperparameter that every completed trial has took more than one value, so there is "
                      "nothing to rank." + (f" Left out (set in some trials only): {', '.join(out.left_out)}."
                                            if out.left_out else ""))
        return out
    if num(done, objective).nunique() < 2:
        out.reason = f"Every completed trial scored the same {objective}, so no hyperparameter made a difference."
        return out
    dists = {k: _distribution(k, [_python(v) for v in distinct(done[k])], k in res.integer_keys) for k in everywhere}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in done.iterrows():
        params = {k: _value_for(dists[k], _python(row[k])) for k in everywhere}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=float(row[objective])))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        values = optuna.importance.get_param_importances(study, evaluator=evaluator, params=everywhere)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        out.reason = f"Optuna could not rank the hyperparameters: {e}"
        return out
    out.values = {k: float(v) for k, v in sorted(values.items(), key=lambda kv: -kv[1])}
    return out


@dataclass
class Front:
    x: tuple[str, str]  # (metric, mode) on the horizontal axis
    y: tuple[str, str]
    points: pd.DataFrame  # trial_id, x, y, on_front, plus the descriptive config keys
    sweep_objectives: bool  # True: the sweep's own objectives; False: the cost trade-off
    reason: str = ""


def pareto_front(res: Results) -> Front:
    """The front over the sweep's first two objectives (multi-objective sweeps) or over the cost trade-off."""
    multi = len(res.objectives) > 1
    (ym, yd), (xm, xd) = res.objectives[:2] if multi else COST_OBJECTIVES
    done = res.completed
    keep = num(done, xm).notna() & num(done, ym).notna()
    done = done[keep]
    front = Front((xm, xd), (ym, yd), pd.DataFrame(), multi)
    if done.empty:
        front.reason = f"No completed trial has both {ym} and {xm}, so there is no front to draw."
        return front
    # Computed over the rows shown rather than read from the sweep's `pareto` column: the same front for a whole
    # two-objective sweep, and the right one for a table that holds part of it (or more than two objectives).
    rows = [{"status": "completed", xm: float(a), ym: float(b)} for a, b in zip(num(done, xm), num(done, ym))]
    flags = pareto.front(rows, [ym, xm], [yd, xd])
    cols = [c for c in DESCRIBED if c in done]
    front.points = pd.DataFrame({"trial_id": done["trial_id"].values, "x": num(done, xm).values,
                                 "y": num(done, ym).values, "on_front": flags,
                                 "n_train_synthetic": num(done, "n_train_synthetic").values,
                                 **{c: done[c].values for c in cols}})
    return front

