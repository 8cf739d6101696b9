"""The names a trial reports before its test split is read: what a sweep may optimise (its objectives), in one place.

Every epoch: the training loss, the learning rate and the validation split's classification figures (fercore.train
measures them with fercore.metrics.classification, per class for the data set's classes). Once, at the end: the
trial's costs in seconds. A sweep file is read before its data set: a per-class name (val_recall_<class>) is taken
for any well-formed class name then, and checked against the data set's classes once it is loaded
(check_class_objectives). tests/test_sweep_objectives.py checks EPOCH_FIGURES against what an epoch really reports.
"""
from __future__ import annotations

import re

from fercore.errors import ConfigError
from fercore.labels import CLASSES

# The validation split's figures of every epoch: val_<figure>, and val_<figure>_<class> for each class.
EPOCH_FIGURES = ("loss", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auroc")
EPOCH_CLASS_FIGURES = ("precision", "recall", "f1")
EPOCH_TRAINING = ("train_loss", "lr")
# Measured once, when the trial ends. classifier_seconds is the classifier's own training (no generator, no paired
# models); generator_seconds its generator's training or cache load; paired_seconds the baseline and controls trained
# in the trial; train_seconds the whole trial's wall time, which depends on what earlier trials left in the cache.
COSTS = ("classifier_seconds", "generator_seconds", "paired_seconds", "train_seconds")


def epoch_metrics(class_names: tuple[str, ...] = CLASSES) -> tuple[str, ...]:
    """What every epoch reports: the names ASHA can compare trials on."""
    return (EPOCH_TRAINING + tuple(f"val_{f}" for f in EPOCH_FIGURES)
            + tuple(f"val_{f}_{c}" for f in EPOCH_CLASS_FIGURES for c in class_names))


def objectives(class_names: tuple[str, ...] = CLASSES) -> tuple[str, ...]:
    """Every name a sweep's metric may be: each epoch's figures and the costs."""
    return epoch_metrics(class_names) + COSTS


_CLASS_FIGURE = re.compile(r"val_(" + "|".join(EPOCH_CLASS_FIGURES) + r")_([a-z0-9_]+)")


def is_epoch_metric(name: str) -> bool:
    """Whether every epoch reports NAME, for some data set: the overall figures, or a per-class one of any class."""
    return name in epoch_metrics() or bool(_CLASS_FIGURE.fullmatch(name))


def is_objective(name: str) -> bool:
    """Whether NAME may be a sweep's metric, for some data set (per-class names are checked once the data is known)."""
    return is_epoch_metric(name) or name in COSTS


def check_class_objectives(metrics, class_names: tuple[str, ...], val_counts: list[list[int]] = ()) -> None:
    """A ConfigError naming `metric` when a per-class objective names a class the data set lacks, or one that a
    validation split has no image of (VAL_COUNTS: each split's images per class, one list per fold with data.folds):
    its figure would be empty in every trial, and a searcher cannot rank what has no value."""
    for m in metrics:
        found = _CLASS_FIGURE.fullmatch(m)
        if not found:
            continue
        name = found.group(2)
        if name not in class_names:
            raise ConfigError(f"metric: {m}: the data set has no class {name!r}; its classes are "
                              f"{', '.join(class_names)}")
        empty = [i for i, counts in enumerate(val_counts) if not counts[class_names.index(name)]]
        if empty:
            where = "the validation split" if len(val_counts) == 1 else \
                f"the validation split of fold{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty))}"
            raise ConfigError(f"metric: {m}: {where} has no {name} image, so no trial can report it; choose "
                              f"another objective or a split with {name} images (data.val_fraction, data.group)")


def objectives_text() -> str:
    """The valid objectives in one line, the per-class ones written once with <class>."""
    per_class = ", ".join(f"val_{f}_<class>" for f in EPOCH_CLASS_FIGURES)
    return (", ".join(EPOCH_TRAINING + tuple(f"val_{f}" for f in EPOCH_FIGURES)) + f", {per_class} (<class>: a "
            f"class of the data set, e.g. {', '.join(CLASSES)}), " + ", ".join(COSTS))
