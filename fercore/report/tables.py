"""Load one sweep's results folder and compute the figures the report shows: trials.parquet (one wide row per
trial: config, metrics, per-class figures), confusion.parquet, embeddings.parquet, predictions.parquet (each trial's
test predictions, image by image) and sweep.json. epochs.parquet,
per_class.parquet and generators.parquet hold nothing the sections need beyond those. Tables are read through the
folder's manifest (fercore.results.read_table): a report on a running sweep sees each trial once, and writes nothing.

pandas only: no plotting and no wording here. Every table may be missing or empty and every column may be absent
(a real-only sweep has no gen_* or uplift_* columns); the helpers answer with empty frames or NaN then.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fercore.errors import UserError
from fercore.labels import CLASSES
from fercore.numbers import finite
from fercore.results import CONFUSION, EMBEDDINGS, SWEEP_RECORD, TRIALS, read_table
from fercore.results.rows import CONFIRM, PHASE, SEARCH
from fercore.sections import AUGMENT

DEFAULT_OBJECTIVE = ("val_macro_f1", "max")
PREDICTIONS = "predictions.parquet"  # the name fercore.results writes it under (issue 15's contract)
PREDICTION_COLUMNS = ("trial_id", "index", "true", "predicted")  # and p_<class> per class
DASH = "–"  # a value that does not apply or was not measured
REAL_ONLY = "real only"
PAIRED_BASELINE = "real-only baseline (paired)"  # a column derived from the uplift, when no trial is real only
MAX_SETTINGS = 12  # more augmentation settings than this are merged per policy
MAX_SHARES = 8  # more distinct real shares than this are binned to 0.1


@dataclass
class Results:
    folder: Path
    trials: pd.DataFrame  # per-class figures are read from its wide columns (per_class.parquet repeats them)
    confusion: pd.DataFrame = field(default_factory=pd.DataFrame)
    embeddings: pd.DataFrame = field(default_factory=pd.DataFrame)
    record: dict[str, Any] = field(default_factory=dict)  # sweep.json, {} when absent
    integer_keys: frozenset[str] = frozenset()  # trials.parquet's integer columns (pandas makes them floats with nulls)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)  # empty when absent or of another shape

    @property
    def name(self) -> str:
        return self.record.get("name") or self.folder.name

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, mode) pairs from sweep.json; val_macro_f1 (max) when it does not say."""
        metrics, modes = self.record.get("metrics") or [], self.record.get("modes") or []
        pairs = [(m, d) for m, d in zip(metrics, modes) if d in ("max", "min")]
        return pairs or [DEFAULT_OBJECTIVE]

    @property
    def selection(self) -> tuple[str, str]:
        """The (metric, mode) trials are ranked and picked by: the sweep's first objective that trials report before
        the test split is read and that the table holds (what its searcher chose on), else val_macro_f1 (max).
        Never a test figure: a trial picked by its test score overstates what it would score on new images."""
        for metric, mode in self.objectives:
            if "test" not in metric and metric.startswith("val_") and num(self.trials, metric).notna().any():
                return metric, mode
        return DEFAULT_OBJECTIVE

    @property
    def selection_note(self) -> str:
        """Why the selection metric is not the sweep's first objective, or ''."""
        first = self.objectives[0][0]
        if self.selection[0] == first:
            return ""
        return (f" The sweep's first objective, {first}, is not a validation figure the table holds, so trials are "
                f"ranked by {self.selection[0]} instead.")

    @property
    def completed(self) -> pd.DataFrame:
        return completed(self.trials)

    @property
    def confirmed(self) -> bool:
        """Whether the sweep ran a confirmation phase that recorded trials (fercore.sweep.confirm)."""
        return bool((self.trials[PHASE] == CONFIRM).any())

    def of_phase(self, phase: str) -> Results:
        """These results restricted to the trials of PHASE (search or confirm), every table."""
        ids = set(self.trials.loc[self.trials[PHASE] == phase, "trial_id"])

        def kept(df: pd.DataFrame) -> pd.DataFrame:
            return df[df["trial_id"].isin(ids)].reset_index(drop=True) if "trial_id" in df else df

        return replace(self, trials=kept(self.trials), confusion=kept(self.confusion),
                       embeddings=kept(self.embeddings), predictions=kept(self.predictions))


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of completed trials (every row when the table has no status column)."""
    return df[df["status"] == "completed"] if "status" in df else df


def _read_table(path: Path) -> pa.Table | None:
    """The table at PATH (results/<sweep>/<table>) as its folder's manifest commits it now, also while the sweep
    writes it; None when absent."""
    try:
        return read_table(path.parent, path.name)
    except UserError:
        raise
    except Exception as e:  # a truncated or foreign file: say which, as the user's problem
        raise UserError(f"{path}: not a readable Parquet table ({e})") from e


def _read(path: Path) -> pd.DataFrame:
    table = _read_table(path)
    return table.to_pandas() if table is not None else pd.DataFrame()


def load(folder: str | Path) -> Results:
    """The tables of FOLDER; UserError when it is not a sweep's results folder."""
    folder = Path(folder)
    if not (folder / TRIALS).exists():
        what = "does not exist" if not folder.exists() else f"has no {TRIALS}"
        raise UserError(f"{folder} {what}: expected a sweep's results folder holding {TRIALS} "
                        f"(e.g. results/quickstart, written by `fersweep run`)")
    table = _read_table(folder / TRIALS)
    trials = table.to_pandas()
    integer_keys = frozenset(f.name for f in table.schema if pa.types.is_integer(f.type))
    if "trial_id" not in trials:
        trials["trial_id"] = [f"row_{i}" for i in range(len(trials))]
    if "status" not in trials:
        trials["status"] = "completed"
    # Rows from before the confirmation phase existed were all the search's.
    trials[PHASE] = trials[PHASE].fillna(SEARCH) if PHASE in trials else SEARCH
    trials = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)
    record: dict[str, Any] = {}
    if (folder / SWEEP_RECORD).exists():
        try:
            record = json.loads((folder / SWEEP_RECORD).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{folder / SWEEP_RECORD}: not readable as JSON ({e})") from e
    predictions = _read(folder / PREDICTIONS)
    if not all(c in predictions for c in PREDICTION_COLUMNS):
        predictions = pd.DataFrame()  # absent, empty, or not the table this report reads: the sections say so
    return Results(folder, trials, _read(folder / CONFUSION), _read(folder / EMBEDDINGS),
                   record if isinstance(record, dict) else {}, integer_keys, predictions)


# Formatting: three decimals everywhere, intervals as `0.412 [0.380, 0.445]`, a dash for what is missing.

def fmt(x: Any, digits: int = 3, signed: bool = False) -> str:
    if not finite(x):
        return DASH
    return f"{float(x):+.{digits}f}" if signed else f"{float(x):.{digits}f}"


def fmt_ci(x: Any, low: Any, high: Any, signed: bool = False) -> str:
    if not finite(x):
        return DASH
    if not (finite(low) and finite(high)):
        return fmt(x, signed=signed)
    return f"{fmt(x, signed=signed)} [{fmt(low, signed=signed)}, {fmt(high, signed=signed)}]"


def fmt_count(x: Any) -> str:
    return f"{int(x)}" if finite(x) else DASH


def fmt_value(v: Any) -> str:
    """A config value as a person writes it: 0.3, 1000, 0.0012, cnn3, True."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


# Columns.

def num(df: pd.DataFrame, col: str) -> pd.Series:
    """Column COL as floats (NaN where null or absent)."""
    if col not in df:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def config_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if "." in c or c == "seed"]


def distinct(values: pd.Series) -> list[Any]:
    out = []
    for v in values.dropna().tolist():
        if v not in out:
            out.append(v)
    return out


def varying_keys(df: pd.DataFrame) -> list[str]:
    """Config keys with more than one value among the trials (null where a key does not apply is not a value)."""
    return [k for k in config_keys(df) if len(distinct(df[k])) > 1]


def group_labels(df: pd.DataFrame, key: str, missing: str = "?") -> pd.Series:
    """Column KEY as labels to group by, MISSING where null or absent."""
    return df.get(key, pd.Series(missing, index=df.index)).fillna(missing)


def augmented(df: pd.DataFrame) -> pd.Series:
    """Whether each trial trained on synthetic images."""
    return num(df, "n_train_synthetic").fillna(0) > 0


def used_synthetic(row: pd.Series) -> bool:
    """augmented() for one row."""
    return finite(row.get("n_train_synthetic")) and row["n_train_synthetic"] > 0


def repeated_real(row: pd.Series) -> bool:
    """Whether a trial drew real training images again (an oversample_* policy: no synthetic image, but not the
    real-only set either)."""
    return finite(row.get("n_train_duplicate")) and row["n_train_duplicate"] > 0


def real_share(df: pd.DataFrame) -> pd.Series:
    """n_train_real / (n_train_real + n_train_synthetic): the real share of the training set, whatever the policy."""
    real, syn = num(df, "n_train_real"), num(df, "n_train_synthetic").fillna(0)
    total = real + syn
    return (real / total).where(total > 0)


def applies(key: str, row: pd.Series) -> bool:
    """Generator and filter keys mean nothing for a trial that used no synthetic image."""
    if key.startswith(("generator.", "augment.filter")):
        return used_synthetic(row)
    return True


def setting_label(row: pd.Series) -> str:
    """The augmentation setting of a trial: 'real only', or its policy with the policy's own values and the filter,
    e.g. 'per_class 1000', 'real_ratio 0.3', 'balance, filter classifier_confidence', 'oversample_balance' (real
    images drawn again, no synthetic one)."""
    if not used_synthetic(row) and not repeated_real(row):
        return REAL_ONLY
    policy = row.get("augment.policy")
    if not isinstance(policy, str):
        return "synthetic"
    values = []
    for name in _policy_params(row):
        v = row.get(f"augment.{name}")
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if name.endswith("_target") and v == 0:  # 0 means "the largest class's count", the policy's default
            continue
        values.append(fmt_value(v))
    label = " ".join([policy, *values])
    flt = row.get("augment.filter")
    if isinstance(flt, str) and flt != "none":
        label += f", filter {flt}"
    return label


def _policy_params(row: pd.Series) -> list[str]:
    """The names of the policy's own values in ROW, in column order: its augment.* keys but the policy and the keys
    every policy has (fercore.sections.AUGMENT). A row holds only the keys that apply to its config (rows are
    resolved with drop_inapplicable), so another policy's keys are null in it; the report needs no registry."""
    common = {"policy", *(p.name for p in AUGMENT)}
    return [k.removeprefix("augment.") for k, v in row.items()
            if k.startswith("augment.") and k.removeprefix("augment.") not in common and v is not None
            and not (isinstance(v, float) and math.isnan(v))]


def setting_sort_key(label: str) -> tuple:
    """'real only' first, then by policy and by the number in the label."""
    if label == REAL_ONLY:
        return (0, "", 0.0, label)
    words = label.replace(",", " ").split()
    number = next((float(w) for w in words[1:] if _is_float(w)), 0.0)
    return (1, words[0], number, label)


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# Figures of the sections.

def ranked(df: pd.DataFrame, objective: tuple[str, str]) -> pd.DataFrame:
    """DF's rows with a value of the objective, best first (ties by trial id)."""
    metric, mode = objective
    values = num(df, metric)
    part = df[values.notna()].assign(_v=values[values.notna()])
    return part.sort_values(["_v", "trial_id"], ascending=[mode == "min", True], kind="stable").drop(columns="_v")


def best_trials(df: pd.DataFrame, objective: tuple[str, str] = DEFAULT_OBJECTIVE, k: int = 5) -> pd.DataFrame:
    """The K completed trials with a test macro-F1 that are best by OBJECTIVE (the sweep's validation metric)."""
    done = completed(df)
    return ranked(done[num(done, "test_macro_f1").notna()], objective).head(k)


def best_by(df: pd.DataFrame, objective: tuple[str, str] = DEFAULT_OBJECTIVE) -> pd.Series | None:
    """The row of DF that OBJECTIVE ranks first, or None when no row has a value of it."""
    order = ranked(df, objective)
    return None if order.empty else order.iloc[0]


def uplift_trials(df: pd.DataFrame) -> pd.DataFrame:
    """Completed trials with synthetic images and a measured uplift over their paired real-only baseline."""
    done = completed(df)
    return done[augmented(done) & num(done, "uplift_test_macro_f1").notna()]


COMPARISONS = (("uplift", "uplift_test_macro_f1"), ("control", "gain_control_test_macro_f1"),
               ("subset", "gain_subset_test_macro_f1"))  # over real-only, over the oversampling control, the r share


def has_column(df: pd.DataFrame, col: str) -> bool:
    return num(df, col).notna().any()


def uplift_groups(aug: pd.DataFrame, key: str, objective: tuple[str, str] = DEFAULT_OBJECTIVE) -> pd.DataFrame:
    """Per value of KEY: trials; per comparison (uplift over real-only, gain over the oversampling control, gain over
    the real subset) the mean, how many trials' intervals lie wholly above / below 0, and the figure of the trial
    OBJECTIVE (validation) picks in the group, with its interval. NaN where a comparison was not measured."""
    rows = []
    values = aug[key].fillna(DASH) if key in aug else pd.Series(DASH, index=aug.index)
    for group, part in aug.groupby(values, sort=True):
        pick = best_by(part, objective)
        row = {"group": str(group), "trials": len(part), "chosen_trial": None if pick is None else pick["trial_id"],
               "chosen_value": np.nan if pick is None else num(part, objective[0])[pick.name]}
        for name, col in COMPARISONS:
            v, lo, hi = num(part, col), num(part, f"{col}_low"), num(part, f"{col}_high")
            row |= {f"{name}_mean": v.mean(), f"{name}_above": int((lo > 0).sum()),
                    f"{name}_below": int((hi < 0).sum()), f"{name}_n": int(v.notna().sum()),
                    **({f"{name}_chosen": v[pick.name], f"{name}_low": lo[pick.name], f"{name}_high": hi[pick.name]}
                       if pick is not None else {f"{name}_chosen": np.nan, f"{name}_low": np.nan,
                                                 f"{name}_high": np.nan})}
        rows.append(row)
    return pd.DataFrame(rows)


def data_classes(df: pd.DataFrame) -> tuple[str, ...]:
    """The data set's classes of a trials table: its `classes` column (comma-separated, per trial; several data sets'
    classes in order of first appearance), else FER2013's for a table written before trials recorded them."""
    if "classes" not in df:
        return CLASSES
    names: dict[str, None] = {}
    for text in df["classes"].dropna().unique():
        names.update(dict.fromkeys(c for c in str(text).split(",") if c))
    return tuple(names) or CLASSES


def class_uplift(aug: pd.DataFrame) -> pd.DataFrame:
    """Per class: mean uplift of test recall across AUG's trials, how many gained / lost, the mean gain of test
    recall over the oversampling control (NaN when not measured), and the mean real and synthetic training images
    of the class."""
    rows = []
    for c in data_classes(aug):
        up = num(aug, f"uplift_test_recall_{c}")
        rows.append({"class": c, "trials": int(up.notna().sum()), "mean": up.mean(), "gained": int((up > 0).sum()),
                     "lost": int((up < 0).sum()), "control": num(aug, f"gain_control_test_recall_{c}").mean(),
                     "real": num(aug, f"n_train_real_{c}").mean(),
                     "synthetic": num(aug, f"n_train_synthetic_{c}").mean()})
    return pd.DataFrame(rows)


def recall_by_setting(done: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int], bool]:
    """Mean test recall per class (rows) and augmentation setting (columns), each setting's trial count, and whether
    settings were merged per policy (a sampled real_ratio or target makes nearly every trial its own setting)."""
    classes = data_classes(done)
    if done.empty or not any(f"test_recall_{c}" in done for c in classes):
        return pd.DataFrame(), {}, False
    labels = done.apply(setting_label, axis=1)
    merged = labels.nunique() > MAX_SETTINGS
    if merged:
        labels = labels.where(labels == REAL_ONLY, group_labels(done, "augment.policy", "synthetic"))
    order = sorted(labels.unique(), key=setting_sort_key)
    table = pd.DataFrame({s: [num(done[labels == s], f"test_recall_{c}").mean() for c in classes] for s in order},
                         index=list(classes))
    counts = {s: int((labels == s).sum()) for s in order}
    if REAL_ONLY not in counts:
        baseline, n = paired_baseline_recall(done)
        if n:
            table.insert(0, PAIRED_BASELINE, baseline)
            counts = {PAIRED_BASELINE: n, **counts}
    return table, counts, merged


def paired_baseline_recall(done: pd.DataFrame) -> tuple[list[float], int]:
    """Mean test recall per class of the real-only baselines the augmented trials were paired with, and how many
    distinct baselines there were: a trial's baseline recall is its test_recall minus its uplift_test_recall
    (exactly, on the same test images), each baseline (baseline_key) counted once. A sweep of augmented trials
    only thus still has report 002's "Original" column."""
    classes = data_classes(done)
    needed = [f"uplift_test_recall_{c}" for c in classes] + [f"test_recall_{c}" for c in classes]
    if "baseline_key" not in done or not all(c in done for c in needed):
        return [], 0
    # A baseline was paired when the trial has its accuracy uplift (a class's recall uplift is NaN when absent).
    paired = num(done, "uplift_test_accuracy").notna() if "uplift_test_accuracy" in done else \
        done[f"uplift_test_recall_{classes[0]}"].notna()
    rows = done[done["baseline_key"].notna() & paired]
    rows = rows.drop_duplicates("baseline_key")
    return [(num(rows, f"test_recall_{c}") - num(rows, f"uplift_test_recall_{c}")).mean() for c in classes], len(rows)


def share_curves(done: pd.DataFrame, objective: tuple[str, str] = DEFAULT_OBJECTIVE) -> tuple[pd.DataFrame, float]:
    """Per backbone and real share: mean test macro-F1, mean OBJECTIVE (the validation figure a best is chosen by)
    and the trial count, and the step shares were rounded to.

    Shares are rounded to 0.01 (a real_ratio of 0.5 keeps 0.498 of a set whose class counts are odd), or to 0.1
    when that leaves more than MAX_SHARES of them (top-up policies and sampled ratios make a share per trial)."""
    share = real_share(done)
    step = 0.01 if share.round(2).nunique() <= MAX_SHARES else 0.1
    df = pd.DataFrame({"backbone": group_labels(done, "classifier.backbone"),
                       "share": (share / step).round() * step, "f1": num(done, "test_macro_f1"),
                       "objective": num(done, objective[0])}).dropna(subset=["backbone", "share", "f1"])
    df["share"] = df["share"].round(2)
    if df.empty:
        return pd.DataFrame(columns=["backbone", "share", "f1", "objective", "trials"]), step
    return df.groupby(["backbone", "share"]).agg(f1=("f1", "mean"), objective=("objective", "mean"),
                                                 trials=("f1", "size")).reset_index(), step


def confusion_matrix(conf: pd.DataFrame, trial_id: str, classes: tuple[str, ...] = CLASSES) -> np.ndarray | None:
    """The K x K test confusion counts (rows true, columns predicted, in the order of CLASSES, the trial's data
    set's classes) of a trial, or None when absent."""
    if conf.empty or "trial_id" not in conf:
        return None
    part = conf[conf["trial_id"] == trial_id]
    if part.empty:
        return None
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p, n in zip(part["true"], part["predicted"], part["count"]):
        if t in index and p in index:
            matrix[index[t], index[p]] += int(n)
    return matrix


def leak_trials(df: pd.DataFrame) -> pd.DataFrame:
    """Trials whose synthetic training images nearly copy a test image."""
    return df[num(df, "leak_synthetic_test") > 0]
