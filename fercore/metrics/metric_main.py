"""The figures a trial measures, registered by name (as stylegan2-ada-pytorch's metrics/metric_main.py): each metric
is a function that takes the evidence it names as keyword arguments and returns a dict whose keys are its result-row
figures. The functions here only pick the evidence apart; the measuring lives in the modules beside this one.

- On one read of a split (`Read`: labels and a classifier's class probabilities): classification, bootstrap.
- Comparisons: leakage (training images against the test images), uplift (this classifier against a baseline
  read of the same images).

`calc_metrics(names, **evidence)` runs metrics in the order named and merges their figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from fercore.labels import CLASSES
from fercore.metrics.classification import bootstrap_intervals, classification_metrics, mean_cross_entropy
from fercore.metrics.copies import copy_rows
from fercore.metrics.uplift import uplift_metrics
from fercore.registry import Entry, Registry

METRICS: Registry[Entry] = Registry("metric", "metrics")


@dataclass(frozen=True)
class Read:
    """One read of a split by a trained classifier: its class probabilities for each image, and the true labels."""

    split: str  # names the figures: test_macro_f1, ...
    labels: np.ndarray  # n true class ids
    proba: np.ndarray  # n x classes predicted probabilities
    class_names: tuple[str, ...] = CLASSES
    seed: int = 0  # seeds the resampling of the bootstrap figures

    @property
    def predicted(self) -> np.ndarray:
        return self.proba.argmax(1)


def calc_metric(name: str, **evidence: Any) -> dict[str, Any]:
    """The figures of metric NAME (an unknown name is a ConfigError listing the registered ones)."""
    figures = METRICS.get(name).target(**evidence)
    if not isinstance(figures, dict) or not all(isinstance(k, str) for k in figures):
        raise TypeError(f"metric {name!r} must return a dict of figures named by strings, got {type(figures).__name__}")
    return figures


def calc_metrics(names: Iterable[str], **evidence: Any) -> dict[str, Any]:
    """The figures of every metric in NAMES, in that order, from the same EVIDENCE."""
    out: dict[str, Any] = {}
    for name in names:
        out.update(calc_metric(name, **evidence))
    return out


@METRICS.register("classification", help="cross-entropy loss, accuracy, balanced accuracy, macro/weighted F1, "
                                         "macro AUROC, per-class precision/recall/F1: `<split>_<metric>`")
def classification(read: Read) -> dict[str, float]:
    return {f"{read.split}_loss": mean_cross_entropy(read.labels, read.proba),
            **classification_metrics(read.labels, read.predicted, read.split, read.class_names, proba=read.proba)}


@METRICS.register("bootstrap", help="percentile bootstrap intervals of accuracy and macro-F1: "
                                    "`<split>_accuracy_ci_low`, ...")
def bootstrap(read: Read) -> dict[str, float]:
    return bootstrap_intervals(read.labels, read.predicted, read.split, len(read.class_names), seed=read.seed)


@METRICS.register("leakage", help="training images that copy a test (validation) image under flips, shifts up to 2 "
                                  "pixels, brightness and contrast, small rotations and crops: `leak_synthetic_test`, "
                                  "`leak_real_test`, `leak_*_val` with val, `leak_feature_*` with features, "
                                  "`gen_memorised_share` with train (fercore.metrics.copies.copy_rows)")
def leakage(synthetic: np.ndarray, real: np.ndarray, test, val=None, train=None, features=None,
            test_images=None, val_images=None, real_copies=None) -> dict[str, float]:
    return copy_rows(synthetic, real, test, val=val, train=train, features=features, test_images=test_images,
                     val_images=val_images, real_copies=real_copies)


@METRICS.register("uplift", help="this classifier minus a baseline on the same read, with a paired bootstrap "
                                 "interval for macro-F1: `uplift_<split>_...` (`<prefix>_<split>_...` for a control)")
def uplift(read: Read, baseline: np.ndarray, prefix: str = "uplift") -> dict[str, float]:
    """BASELINE: the baseline classifier's class probabilities for the images of READ; PREFIX names the figures."""
    return uplift_metrics(read.labels, baseline.argmax(1), read.predicted, read.split, read.class_names,
                          seed=read.seed, prefix=prefix)
