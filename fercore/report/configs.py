"""Trials grouped into configs (every config key but the seed), each config's figures over its seeds, and the pairs of
configs that differ in one key: the figures of the report's sections 2.1 and 2.2, with the seed-level t intervals
(the test images' noise added) of fercore.report.resample and Holm's correction over every test they make.

pandas and numpy only, no wording. A key null in a row (it does not apply to that trial, e.g. generator.type of a
real-only trial) is part of its config as "absent"; two configs are compared on a key only where both have it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fercore.labels import CLASSES
from fercore.report import resample
from fercore.report.tables import COMPARISONS, Results, config_keys, distinct, fmt_value, num
from fercore.results.rows import REPEAT_KEYS

MAX_PAIRS = 40  # paired comparisons computed and listed (each a bootstrap over predictions)
LEVEL = 0.05  # family-wise error rate of Holm's correction
MIN_SEEDS_CLAIM = 5  # a difference is claimed (survives) only from this many seeds: below, the seed level is weak,
#                      whatever its p (3 seeds give a t with 2 degrees of freedom: an interval of +-4.3 standard errors)


@dataclass
class Estimate:
    """A mean over seeds with its t interval (S - 1 degrees of freedom, the test images' noise added) and, for a
    difference, its p-values."""
    mean: float
    low: float
    high: float
    seeds: int
    source: str  # where the test images' level came from: "predictions" (a bootstrap over them), "intervals" (each
    #              trial's own interval), "unpaired intervals" (a pair's two trials' intervals, combined), "seeds"
    #              (none: the seeds alone)
    p: float = math.nan  # two-sided p of "the mean is 0" (resample.seed_t); NaN where nothing is tested
    holm: float = math.nan  # p after Holm's correction over the report's tests
    df: float = math.nan  # the t's degrees of freedom: seeds - 1 (inf: one seed, the test images alone)

    @property
    def weak(self) -> bool:
        """Fewer seeds than a claim needs: the seed-level evidence is weak whatever the p."""
        return self.seeds < MIN_SEEDS_CLAIM

    @property
    def survives(self) -> bool:
        return self.holm < LEVEL and not self.weak


@dataclass
class Config:
    id: int
    values: dict[str, Any]  # config key -> value, keys absent from this config left out
    trials: pd.DataFrame  # its completed rows, one per seed (the first row of a seed that ran twice)
    objective: float = math.nan  # mean over seeds of the selection metric
    f1: Estimate | None = None  # test macro-F1
    comparisons: dict[str, Estimate] = field(default_factory=dict)  # "uplift" / "control" / "subset" -> estimate


@dataclass
class Pair:
    key: str
    a: Config  # the reference value of KEY (none, off, the smaller number)
    b: Config
    seeds: list[Any]
    estimate: Estimate | None = None  # test macro-F1 of b minus a, paired by seed and test image


# The model of predictions.parquet each comparison column is measured against (fercore.results.store.predictions_table)
PAIRED_MODELS = {"uplift_test_macro_f1": "baseline", "gain_control_test_macro_f1": "control",
                 "gain_subset_test_macro_f1": "subset"}
TRIAL_MODEL = "trial"  # a trial's own rows; rows of a folder written before the model column are these


class Predictions:
    """predictions.parquet as arrays per trial: each image's key, true class id, predicted class id (sorted by key);
    and the predicted class ids of the models each trial was compared against (its real-only baseline and
    controls), on the same test images, where the folder has them (its model column). An image's key is its
    data-set-wide face_id, the same face's in every fold and trial; in a folder written before that column, its index
    in its trial's test split (which names different faces in different folds)."""

    def __init__(self, frame: pd.DataFrame):
        probs = [c.removeprefix("p_") for c in frame.columns if c.startswith("p_")]
        names = set(frame["true"].astype(str)) | set(frame["predicted"].astype(str)) if not frame.empty else set()
        if probs and names <= set(probs):
            self.classes = probs
        elif names <= set(CLASSES):
            self.classes = list(CLASSES)
        else:
            self.classes = sorted(names)
        ids = {c: i for i, c in enumerate(self.classes)}
        models = frame["model"].fillna(TRIAL_MODEL).astype(str) if "model" in frame else \
            pd.Series(TRIAL_MODEL, index=frame.index, dtype=object)
        self._by_trial: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._paired: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for (trial, model), part in frame.groupby([frame["trial_id"].astype(str), models], sort=False):
            keyed = "face_id" in part and part["face_id"].notna().all()
            part = part.assign(_key=part["face_id"] if keyed else part["index"]).sort_values("_key")
            arrays = (part["_key"].to_numpy(np.int64), part["true"].astype(str).map(ids).to_numpy(np.int64),
                      part["predicted"].astype(str).map(ids).to_numpy(np.int64))
            if model == TRIAL_MODEL:
                self._by_trial[trial] = arrays
            else:
                self._paired[trial, model] = arrays

    def __contains__(self, trial_id: str) -> bool:
        return str(trial_id) in self._by_trial

    def __getitem__(self, trial_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._by_trial[str(trial_id)]

    def paired(self, trial_id: str, model: str) -> np.ndarray | None:
        """The predicted class ids of MODEL ("baseline", "control", "subset") that TRIAL_ID was compared against,
        aligned with the trial's own (self[trial_id]); None when they are not stored or not on the same images."""
        trial_id = str(trial_id)
        if trial_id not in self._by_trial or (trial_id, model) not in self._paired:
            return None
        (index, true, _), (other_index, other_true, predicted) = self._by_trial[trial_id], self._paired[trial_id, model]
        if not (np.array_equal(index, other_index) and np.array_equal(true, other_true)):
            return None
        return predicted

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def config_columns(df: pd.DataFrame) -> list[str]:
    return [k for k in config_keys(df) if k not in REPEAT_KEYS]


def _value(v: Any) -> Any:
    """A config value as a hashable key, None where the key does not apply."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def group_configs(done: pd.DataFrame, objective: tuple[str, str]) -> list[Config]:
    """DONE's rows grouped by every config key but the seed, best mean OBJECTIVE (validation) first."""
    cols = config_columns(done)
    keys = [tuple(_value(v) for v in row) for row in done[cols].itertuples(index=False, name=None)] if cols \
        else [()] * len(done)
    groups: dict[tuple, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    configs = []
    for i, (key, positions) in enumerate(groups.items()):
        part = done.iloc[positions]
        units = pd.Series(_units(part), index=part.index, dtype=object)
        part = part[~units.duplicated()]  # a (seed, fold) that ran twice counts once
        values = {c: v for c, v in zip(cols, key) if v is not None}
        configs.append(Config(i, values, part, _fold_mean(part, objective[0])))
    sign = -1 if objective[1] == "max" else 1
    configs.sort(key=lambda c: (sign * c.objective if math.isfinite(c.objective) else math.inf, c.id))
    return configs


def seed_of(row: pd.Series) -> Any:
    """The repeat a trial is of its config: its seed, or (seed, fold) in a k-fold sweep (data.folds > 0)."""
    seed, fold = (_value(row[k]) if k in row else None for k in REPEAT_KEYS)
    if fold is not None and _value(row.get("data.folds")) not in (None, 0):
        return (seed if seed is not None else 0, fold)
    return seed if seed is not None else 0  # a table without seeds: each config ran once


def _units(part: pd.DataFrame) -> list[Any]:
    """The repeat (seed_of) of each of PART's trials, in row order."""
    return [seed_of(r) for _, r in part.iterrows()]


def _per_fold(units: list[Any], values) -> pd.Series | None:
    """Each fold's mean over its seeds of VALUES (one per repeat in UNITS); None outside a k-fold sweep."""
    if not units or not isinstance(units[0], tuple):
        return None
    return pd.Series(np.asarray(values, dtype=float)).groupby([u[1] for u in units]).mean()


def _mean_over_folds(units: list[Any], values) -> float:
    """The mean of VALUES (one per repeat in UNITS, NaN skipped): in a k-fold sweep the mean over folds of each fold's
    mean over seeds, so a fold that ran more seeds weighs no more than the others (the k-fold estimate is the mean
    of the folds)."""
    per_fold = _per_fold(units, values)
    return float(pd.Series(np.asarray(values, dtype=float)).mean() if per_fold is None else per_fold.mean())


def _fold_mean(part: pd.DataFrame, column: str) -> float:
    """COLUMN's mean over a config's trials (PART), as _mean_over_folds takes it."""
    return _mean_over_folds(_units(part), num(part, column).to_numpy())


def fold_spread(config: "Config", column: str = "test_macro_f1") -> tuple[int, float]:
    """(folds, standard deviation over folds of each fold's mean COLUMN): the spread a k-fold result is published
    with; (0, nan) outside a k-fold sweep, (1, nan) with one fold."""
    per_fold = _per_fold(_units(config.trials), num(config.trials, column).to_numpy())
    if per_fold is None:
        return 0, math.nan
    means = per_fold.dropna()
    return len(means), float(means.std(ddof=1)) if len(means) > 1 else math.nan


def _aligned(arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bool:
    """Whether every seed's predictions cover the same test images (keys: one image draw then serves all)."""
    first = arrays[0][0]
    return all(len(a[0]) == len(first) and np.array_equal(a[0], first) for a in arrays)


def image_variance(units: list[Any], arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int,
                   pred_a: list[np.ndarray] | None = None, seed: int = 0) -> float:
    """The test images' variance of a config's mean (of macro-F1 of ARRAYS' predictions, minus PRED_A's, paired),
    one entry per repeat in UNITS. Outside k-fold, one bootstrap of the test images, one draw serving every seed
    scored on the same images. In a k-fold sweep the mean is the mean over the F folds of each fold's mean over its
    seeds, and the folds' test faces are disjoint: each fold is resampled within its own faces (shared by its seeds)
    and independently of the others, and the variances combine as that mean does: sum over folds / F^2."""
    folds: dict[Any, list[int]] = {}
    for i, unit in enumerate(units):
        folds.setdefault(unit[1] if isinstance(unit, tuple) else None, []).append(i)
    total = 0.0
    for positions in folds.values():
        part = [arrays[i] for i in positions]
        total += resample.image_variance([a[1] for a in part], [a[2] for a in part], num_classes,
                                         pred_a=[pred_a[i] for i in positions] if pred_a is not None else None,
                                         shared_images=_aligned(part), seed=seed)
    return total / len(folds) ** 2


def _estimate(values, mean: float, image_var: float, source: str, test: bool) -> Estimate:
    """The t estimate over the per-seed VALUES (MEAN: their mean, over folds in a k-fold sweep) with the test
    images' variance IMAGE_VAR added; a p only for a difference (TEST)."""
    t = resample.seed_t(values, image_var, mean)
    return Estimate(mean, t.low, t.high, len(values), source, t.p if test else math.nan, df=t.df)


def _shared_variance(sd: np.ndarray) -> float:
    """The test images' variance of a mean over seeds from each seed's standard deviation over them (SD). The seeds
    were scored on the same test images, whose noise then moves them alike: the standard deviations are averaged,
    not the variances (perfectly correlated: the larger, conservative figure)."""
    return float(np.mean(sd)) ** 2


def _from_intervals(values: np.ndarray, mean: float, lows: np.ndarray, highs: np.ndarray, test: bool) -> Estimate:
    """The estimate of per-seed VALUES whose test-image level is each seed's own 95 % interval (LOWS, HIGHS); the
    seeds alone where any seed lacks one."""
    if np.isfinite(lows).all() and np.isfinite(highs).all():
        return _estimate(values, mean, _shared_variance((highs - lows) / (2 * resample.Z95)), "intervals", test)
    return _estimate(values, mean, 0.0, "seeds", test)


def f1_estimate(config: Config, predictions: Predictions | None, seed: int = 0) -> Estimate | None:
    """Mean test macro-F1 over the config's seeds with its t interval; the test images' level from a bootstrap over
    the predictions when every seed has them, else from each trial's own interval."""
    part = config.trials[num(config.trials, "test_macro_f1").notna()]
    if part.empty:
        return None
    mean = _fold_mean(part, "test_macro_f1")
    values = num(part, "test_macro_f1").to_numpy()
    ids = part["trial_id"].astype(str).tolist()
    if predictions is not None and all(t in predictions for t in ids):
        var = image_variance(_units(part), [predictions[t] for t in ids], predictions.num_classes, seed=seed)
        return _estimate(values, mean, var, "predictions", test=False)
    return _from_intervals(values, mean, num(part, "test_macro_f1_ci_low").to_numpy(),
                           num(part, "test_macro_f1_ci_high").to_numpy(), test=False)


def comparison_estimate(config: Config, col: str, predictions: Predictions | None = None,
                        seed: int = 0) -> Estimate | None:
    """Mean over seeds of a paired difference the trial measured (uplift_*, gain_control_*, gain_subset_*), from the
    rows' figures, with its t interval and test over seeds. The test images' level: a bootstrap over the predictions
    when every seed's trial and the model it was compared against (the real-only baseline, the control, the real
    subset) have them, each image drawn for both; else (older folders store the trials' own predictions only) each
    seed's paired interval."""
    values = num(config.trials, col)
    part = config.trials[values.notna()]
    if part.empty:
        return None
    mean = _fold_mean(part, col)
    diffs = num(part, col).to_numpy()
    model = PAIRED_MODELS.get(col)
    if predictions is not None and model is not None:
        ids = part["trial_id"].astype(str).tolist()
        others = [predictions.paired(t, model) for t in ids]
        if all(o is not None for o in others):
            var = image_variance(_units(part), [predictions[t] for t in ids], predictions.num_classes, pred_a=others,
                                 seed=seed)
            return _estimate(diffs, mean, var, "predictions", test=True)
    return _from_intervals(diffs, mean, num(part, f"{col}_low").to_numpy(), num(part, f"{col}_high").to_numpy(),
                           test=True)


def _order(values: list[Any]) -> list[Any]:
    """A key's values, the reference first: none / off / false, then numbers ascending, then names."""
    def rank(v: Any) -> tuple:
        if v in ("none", False, "off") or v is None:
            return (0, 0.0, "")
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            return (1, float(v), "")
        return (2, 0.0, str(v))
    return sorted(values, key=rank)


def find_pairs(configs: list[Config]) -> list[Pair]:
    """Pairs of configs that differ in exactly one key both have and share at least one seed, at most MAX_PAIRS,
    grouped by that key."""
    pairs = []
    for i, a in enumerate(configs):
        for b in configs[i + 1:]:
            common = a.values.keys() & b.values.keys()
            differ = [k for k in common if a.values[k] != b.values[k]]
            if len(differ) != 1:
                continue
            key = differ[0]
            first, second = (a, b) if _order([a.values[key], b.values[key]])[0] == a.values[key] else (b, a)
            seeds_a = {seed_of(r): r for _, r in first.trials.iterrows()}
            seeds_b = {seed_of(r): r for _, r in second.trials.iterrows()}
            seeds = sorted(seeds_a.keys() & seeds_b.keys(), key=str)
            if seeds:
                pairs.append(Pair(key, first, second, seeds))
    pairs.sort(key=lambda p: (p.key, str(p.a.values[p.key]), str(p.b.values[p.key]), p.a.id, p.b.id))
    return pairs[:MAX_PAIRS]


def pair_estimate(pair: Pair, predictions: Predictions | None, seed: int = 0) -> Estimate | None:
    """Test macro-F1 of B minus A over their common seeds, each seed's two trials scored on the same test images:
    the t interval and test over the seeds' differences, the test images' level from the predictions when both
    trials of every seed have them (each image drawn for both), else from the two trials' own 95 % intervals;
    without either, the seeds alone."""
    rows_a = {seed_of(r): r for _, r in pair.a.trials.iterrows()}
    rows_b = {seed_of(r): r for _, r in pair.b.trials.iterrows()}
    ids = [(str(rows_a[s]["trial_id"]), str(rows_b[s]["trial_id"])) for s in pair.seeds]
    figure = lambda row, col: float(pd.to_numeric(row.get(col), errors="coerce"))
    diffs = np.array([figure(rows_b[s], "test_macro_f1") - figure(rows_a[s], "test_macro_f1") for s in pair.seeds])
    if not np.isfinite(diffs).all():
        return None
    mean = _mean_over_folds(pair.seeds, diffs)
    if predictions is not None and all(a in predictions and b in predictions for a, b in ids):
        arrays = [(predictions[a], predictions[b]) for a, b in ids]
        if all(np.array_equal(ia, ib) and np.array_equal(ta, tb) for (ia, ta, _), (ib, tb, _) in arrays):
            var = image_variance(list(pair.seeds), [b for _, b in arrays], predictions.num_classes,
                                 pred_a=[a[2] for a, _ in arrays], seed=seed)
            return _estimate(diffs, mean, var, "predictions", test=True)
    # Each seed's difference's standard deviation over its test images, from the two trials' own 95 % intervals
    # combined as if independent (wider than the paired truth, as the two models share their test images' noise).
    sd = np.array([[(figure(r[s], "test_macro_f1_ci_high") - figure(r[s], "test_macro_f1_ci_low")) / (2 * resample.Z95)
                    for s in pair.seeds] for r in (rows_a, rows_b)])
    if np.isfinite(sd).all():
        return _estimate(diffs, mean, _shared_variance(np.sqrt((sd ** 2).sum(0))), "unpaired intervals", test=True)
    return _estimate(diffs, mean, 0.0, "seeds", test=True)


@dataclass
class Comparisons:
    configs: list[Config]  # best mean validation first
    pairs: list[Pair]
    predictions: bool  # whether predictions.parquet was read
    tests: int  # how many tests Holm's correction covered


def compare(res: Results, max_configs: int) -> Comparisons:
    """Configs with their estimates (test macro-F1 for the first MAX_CONFIGS, the comparisons for all: every one of
    them is a test), the pairs with theirs, and Holm's correction over all those tests."""
    done = res.completed
    configs = group_configs(done, res.selection)
    predictions = Predictions(res.predictions) if not res.predictions.empty else None
    for n, config in enumerate(configs):
        if n < max_configs:
            config.f1 = f1_estimate(config, predictions, seed=n)
        for name, col in COMPARISONS:  # measured by augmented trials only: NaN (no estimate) elsewhere
            estimate = comparison_estimate(config, col, predictions, seed=n)
            if estimate is not None:
                config.comparisons[name] = estimate
    pairs = find_pairs(configs)
    for n, pair in enumerate(pairs):
        pair.estimate = pair_estimate(pair, predictions, seed=len(configs) + n)
    estimates = [e for c in configs for e in c.comparisons.values()] + [p.estimate for p in pairs if p.estimate]
    tests = [e for e in estimates if math.isfinite(e.p)]
    for e, adjusted in zip(tests, resample.holm([e.p for e in tests])):
        e.holm = adjusted
    return Comparisons(configs, pairs, predictions is not None, len(tests))


SELECTORS = ("generator.type", "augment.policy", "classifier.backbone")  # the keys that decide which others apply


def describe(values: dict[str, Any], keys: list[str]) -> str:
    """KEYS of a config as 'key=value, ...' (keys it does not have left out)."""
    return ", ".join(f"{k}={fmt_value(values[k])}" for k in keys if k in values) or "(one config)"


def varying_config_keys(configs: list[Config]) -> list[str]:
    """The config keys whose value differs between the configs that have them, and the selectors of a section some
    configs lack (generator.type: which configs used a generator). A key only some configs have but that never
    differs (generator.lr_g of the one generator of a none-vs-balance sweep) says nothing its selector does not."""
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c.values if k not in keys]

    def differs(k: str) -> bool:
        return len(distinct(pd.Series([c.values[k] for c in configs if k in c.values], dtype=object))) > 1

    return [k for k in keys if differs(k) or (k in SELECTORS and any(k not in c.values for c in configs))]

