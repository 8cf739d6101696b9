"""What the result tables hold, row by row: their names, the per-class figures of a trial row, the generators table
derived from the trial rows (whole, or kept up to date one trial at a time), and which row keys are result figures
or learning curves.

Per-class figures are found by name, not by a list: a row key that contains exactly one class of the data set's
classes (the row's `classes` key, comma-separated; fercore.labels.CLASSES for a row without it) as whole
`_`-separated words, after at least one other word, is that class's figure, and
its column in per_class.parquet is the key without the class: test_recall_disgust -> test_recall,
gen_fid_disgust -> gen_fid, n_train_synthetic_disgust -> n_train_synthetic, and a per-class interval such as
test_recall_disgust_ci_low -> test_recall_ci_low. So a new per-class metric appears without a change here. Config
keys (dotted) are never figures; a key naming two classes (a pairwise figure) is not a per-class figure either.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import re

import numpy as np

from fercore.labels import CLASSES
from fercore.numbers import is_number

TRIALS = "trials.parquet"
EPOCHS = "epochs.parquet"
PER_CLASS = "per_class.parquet"
GENERATORS = "generators.parquet"
CONFUSION = "confusion.parquet"
EMBEDDINGS = "embeddings.parquet"
PREDICTIONS = "predictions.parquet"
SWEEP_RECORD = "sweep.json"  # what the sweep asked for, written by fercore.sweep, read by fercore.report
SOURCES = ("real", "synthetic")  # embeddings.parquet's source column, by embedding_sample's source index
PHASE = "phase"  # trials.parquet's column: the sweep phase that ran the trial (fercore.sweep.confirm)
SEARCH, CONFIRM = "search", "confirm"
# What repeats a config rather than changing it: its seeds and, k-fold, its folds. A config is ranked, confirmed
# and reported over all of them (fercore.sweep.confirm, fercore.report.configs, fercore.report.importance).
REPEAT_KEYS = ("seed", "data.fold")
FAILED = ("diverged", "error", "oom")  # the statuses of a trial that failed (trials.parquet's status column)


def phase_of(row: dict[str, Any]) -> str:
    """A row's phase; rows from before the confirmation phase existed were all the search's."""
    return row.get(PHASE) or SEARCH


# A split's per-class classification figure (val_recall_<class>, uplift_test_f1_<class>, ...), whatever the class:
# known as one even where the data set's classes are not at hand (an epoch's report).
_CLASS_FIGURE = re.compile(r"(^|_)(train|val|test)_(precision|recall|f1)_[a-z0-9]")


def row_classes(row: dict[str, Any]) -> tuple[str, ...]:
    """The classes a result row's per-class figures are named by: its `classes` key, else FER2013's."""
    text = row.get("classes")
    return tuple(c for c in text.split(",") if c) if isinstance(text, str) and text else CLASSES


def class_figure(key: str, classes: tuple[str, ...] = CLASSES) -> tuple[str, str] | None:
    """('test_recall', 'disgust') for test_recall_disgust; None for an overall figure, a config key, or a key that
    names no class of CLASSES or two of them."""
    if "." in key:
        return None
    padded = f"_{key}_"
    found = [c for c in classes if f"_{c}_" in padded[1:] and not key.startswith(f"{c}_")]
    # A class whose name is part of another's found there (happy in very_happy) is that other class.
    found = [c for c in found if not any(c != o and f"_{c}_" in f"_{o}_" for o in found)]
    if len(found) != 1:
        return None
    c = found[0]
    i = padded.index(f"_{c}_", 1)
    return (padded[1:i] + padded[i + len(c) + 1:-1]).strip("_").replace("__", "_"), c


def names_a_class(key: str, classes: tuple[str, ...] = CLASSES) -> bool:
    words = f"_{key}_"
    return any(f"_{c}_" in words for c in classes) or bool(_CLASS_FIGURE.search(key))


def per_class_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The per_class.parquet rows of one trial row: one per class that has at least one figure, in the order of
    the row's classes."""
    classes = row_classes(row)
    figures: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        if not is_number(value):
            continue
        found = class_figure(key, classes)
        if found:
            figures.setdefault(found[1], {})[found[0]] = value
    return [{"trial_id": row["trial_id"], "class": c, **figures[c]} for c in classes if c in figures]


def generator_row(key: str, source: dict[str, Any], built: bool, trials: int, cache_hits: int) -> dict[str, Any]:
    """The generators.parquet row of generator KEY, whose config and figures come from trial row SOURCE."""
    seconds = source.get("generator_seconds") if built else None
    return {
        "generator_key": key,
        # What its cache key holds: the generator config, the data set, the image size and the seed.
        **{k: v for k, v in source.items() if k.startswith("generator.") and v is not None},
        "data_fingerprint": source.get("data_fingerprint"),
        "data.image_size": source.get("data.image_size"),
        "seed": source.get("seed"),
        **{k: v for k, v in source.items()
           if k.startswith("gen_") and is_number(v) and not names_a_class(k, row_classes(source))},
        "generator_seconds": seconds,
        # Its cost per trial that used it: what a trial's row cannot say (generator_seconds is 0-ish on a cache hit).
        "generator_seconds_amortised": seconds / trials if seconds is not None and trials else None,
        "trials": trials,
        "cache_hits": cache_hits,
        "source_trial_id": source["trial_id"],
        "built_in_sweep": built,
    }


def generator_rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One generators.parquet row per generator_key seen in TRIALS (in trial id order of first use).

    The config, data fingerprint, seed and overall gen_* quality figures come from the trial that built the generator
    (generator_cache_hit false, the first by trial id if several did), else from the first trial that used it; that
    trial is `source_trial_id`, and `built_in_sweep` says whether it built the generator. generator_seconds is the
    builder's (generator training plus its pool and quality figures) and empty when no trial here built it;
    generator_seconds_amortised is that divided by the trials that used it (`trials`). The overall gen_* figures
    (gen_quality_n, gen_fid, gen_kid, gen_kid_std, gen_precision, gen_recall, gen_conditional_accuracy,
    gen_embedding_jsd) are the generator's own, measured once on its fixed unfiltered sample
    (fercore.synthetic.generator_quality), so every trial that used it carries the same ones; the per-class figures
    are in per_class.parquet, and what each trial's filter kept is its filter_* keys in trials.parquet.
    """
    users: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(trials, key=lambda r: r["trial_id"]):
        if row.get("generator_key"):
            users.setdefault(row["generator_key"], []).append(row)
    out = []
    for key, rows in users.items():
        builders = [r for r in rows if r.get("generator_cache_hit") is False]
        source = builders[0] if builders else rows[0]
        out.append(generator_row(key, source, bool(builders), len(rows),
                                 sum(r.get("generator_cache_hit") is True for r in rows)))
    return out


# The keys of a trial row that generator_row reads, besides the generator.* and gen_* ones.
SOURCE_KEYS = frozenset({"trial_id", "data_fingerprint", "data.image_size", "seed", "generator_seconds", "classes"})


def source_part(row: dict[str, Any]) -> dict[str, Any]:
    """What generator_row reads of a trial row: a generator's row is the same from this part as from the whole."""
    return {k: v for k, v in row.items() if k.startswith(("generator.", "gen_")) or k in SOURCE_KEYS}


class GeneratorUse:
    """generator_rows() kept up to date one trial row at a time: a new trial costs the same at the 10,000th as at the
    first (generator_rows sorts every row again). `changed` names the generators whose row a change touched.

    Memory per trial is its generator key and cache hit, not its row: of the rows, only each generator's source
    (first builder, first user) is kept, and only its generator part; a source it no longer holds (the first one's
    trial was recorded again, or the rows were loaded without it) is read with LOOKUP (trial id -> its row)."""

    def __init__(self, lookup: Callable[[str], dict[str, Any]] | None = None):
        self._lookup = lookup
        self._use: dict[str, tuple[str, bool | None]] = {}  # trial id -> (generator_key, generator_cache_hit)
        self._users: dict[str, set[str]] = {}  # generator_key -> ids of the trials that used it
        self._builders: dict[str, set[str]] = {}  # ... of those, the trials that built it (cache hit False)
        self._hits: dict[str, int] = {}  # ... how many found it in the cache (cache hit True)
        self._first: dict[str, tuple[str, str | None]] = {}  # ... the first user and the first builder by trial id
        self._lost_first: set[str] = set()  # keys whose first user or builder was replaced: found again from the sets
        self._sources: dict[str, dict[str, Any]] = {}  # trial id -> source_part of its row, for first ones
        self.changed: set[str] = set()

    def update(self, new: dict[str, Any], whole: bool = True) -> None:
        """Trial row NEW replaces the trial's earlier row, if any. WHOLE: NEW is the whole row (not only its
        trial_id, generator_key and generator_cache_hit, as a store loads them), so it may be kept as a source."""
        tid = new["trial_id"]
        old = self._use.pop(tid, None)
        if old is not None:
            key, hit = old
            self._users[key].discard(tid)
            self._builders[key].discard(tid)
            self._hits[key] -= hit is True
            if tid in self._first[key]:
                self._lost_first.add(key)
            self._sources.pop(tid, None)
            self.changed.add(key)
        key = new.get("generator_key")
        if key:
            hit = new.get("generator_cache_hit")
            self._use[tid] = (key, hit)
            builds = hit is False
            self._users.setdefault(key, set()).add(tid)
            self._builders.setdefault(key, set()).update([tid] if builds else [])
            self._hits[key] = self._hits.get(key, 0) + (hit is True)
            user, builder = self._first.get(key, (tid, None))
            if builds:
                builder = tid if builder is None else min(builder, tid)
            self._set_first(key, (min(user, tid), builder))
            if whole and tid in self._first[key]:
                self._sources[tid] = source_part(new)
            self.changed.add(key)

    def row(self, key: str) -> dict[str, Any] | None:
        """Generator KEY's row; None when no trial uses it any more."""
        users, builders = self._users.get(key), self._builders.get(key)
        if not users:
            return None
        if key in self._lost_first:
            self._set_first(key, (min(users), min(builders) if builders else None))
            self._lost_first.discard(key)
        user, builder = self._first[key]
        source = builder or user
        if source not in self._sources:
            if self._lookup is None:
                raise KeyError(f"generator {key}: the row of its source trial {source} is not at hand")
            self._sources[source] = source_part(self._lookup(source))
        return generator_row(key, self._sources[source], bool(builders), len(users), self._hits[key])

    def _set_first(self, key: str, first: tuple[str, str | None]) -> None:
        """KEY's first user and first builder are now FIRST: the sources of those that no longer are go."""
        for dropped in set(self._first.get(key, ())) - set(first) - {None}:
            self._sources.pop(dropped, None)
        self._first[key] = first

    def take_changed(self) -> list[tuple[str, dict[str, Any] | None]]:
        """(key, row or None) of every generator whose row changed since the last call, in order of first use."""
        out = sorted(((key, self.row(key)) for key in self.changed),
                     key=lambda pair: (pair[1] is None, self._first.get(pair[0], ("",))[0]))
        self.changed = set()
        return out


def scalars(values: dict[str, Any]) -> dict[str, Any]:
    """Keep the values a Parquet column can hold as a scalar; numpy scalars become Python ones."""
    out = {}
    for k, v in values.items():
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = v
    return out


def union_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every key of ROWS, in order of first appearance: the columns of a table of those rows."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


# What finish() writes as the trial's result (`result/<key>`, the HParams table's comparison columns): overall
# figures only, the per-class ones would make the table unreadable (they are in per_class.parquet).
# The HParams tab's metric columns (TensorBoard's result/ tags): gain_control_ and gain_subset_ among them, the
# comparisons that say whether the synthetic content helped.
RESULT_PREFIXES = ("val_", "test_", "uplift_", "gain_", "gen_", "filter_acceptance", "leak_")
RESULT_KEYS = ("train_seconds", "generator_seconds", "classifier_seconds")


def is_result_metric(key: str, classes: tuple[str, ...] = CLASSES) -> bool:
    return (key.startswith(RESULT_PREFIXES) or key in RESULT_KEYS) and not names_a_class(key, classes)


def is_curve(key: str, classes: tuple[str, ...] = CLASSES) -> bool:
    """Per-epoch learning curves: overall train_ and val_ figures and the learning rate. Totals reported once
    (train_seconds) and whatever the last epoch's report carries beyond its epoch (test_, gen_ ...) are not."""
    return key == "lr" or (key.startswith(("train_", "val_")) and not key.endswith("_seconds")
                           and not names_a_class(key, classes))
