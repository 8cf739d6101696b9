"""Classification metrics from labels and predicted probabilities, named for result rows: `<split>_<metric>`
(test_macro_f1, test_recall_disgust, ...). Computed in NumPy from the confusion matrix (and ranks for AUROC), to
scikit-learn's definitions (tests/test_metrics.py checks them against it): importing scikit-learn took a trial's
worker process over a second on 2 CPU cores, paid by every trial.

Macro figures are over the classes PRESENT in the split (at least one true image): a class with no image in it has
no recall or F1 (NaN), is listed in `<split>_absent_classes`, and is left out of macro-F1 and its intervals, rather
than counted as an F1 of 0 that would say nothing about the classifier.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fercore.labels import CLASSES


def present_classes(y_true: np.ndarray, num_classes: int) -> np.ndarray:
    """Boolean mask of the classes with at least one true image in Y_TRUE: the ones macro figures average over."""
    return np.bincount(np.asarray(y_true, dtype=np.int64), minlength=num_classes)[:num_classes] > 0


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, split: str,
                           class_names: tuple[str, ...] = CLASSES, proba: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro- and weighted-F1, per-class precision / recall / F1 and, given
    probabilities, macro one-vs-rest AUROC (004). A class with no image in Y_TRUE has NaN per-class figures, is
    named in `<split>_absent_classes` (comma-separated, '' when none) and is left out of the macro mean."""
    cm = confusion(y_true, y_pred, len(class_names))
    present = present_classes(y_true, len(class_names))
    precision, recall, f1 = _per_class(cm)
    support = cm.sum(1)
    nan = float("nan")
    out = {
        f"{split}_accuracy": float(np.trace(cm) / cm.sum()) if len(y_true) else nan,
        f"{split}_balanced_accuracy": float(recall[present].mean()) if len(y_true) else nan,  # over true classes
        f"{split}_macro_f1": float(f1[present].mean()) if present.any() else nan,
        f"{split}_weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
    }
    if proba is not None:
        out[f"{split}_auroc"] = macro_auroc(y_true, proba)
    for i, name in enumerate(class_names):
        out[f"{split}_precision_{name}"] = float(precision[i]) if present[i] else nan
        out[f"{split}_recall_{name}"] = float(recall[i]) if present[i] else nan
        out[f"{split}_f1_{name}"] = float(f1[i]) if present[i] else nan
    out[f"{split}_absent_classes"] = ",".join(n for n, p in zip(class_names, present) if not p)
    return out


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 of confusion matrices (..., K, K), rows true, 0 where undefined
    (scikit-learn's zero_division=0)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    predicted, true = cm.sum(-2), cm.sum(-1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    f1 = np.divide(2 * tp, predicted + true, out=np.zeros_like(tp), where=(predicted + true) > 0)
    return precision, recall, f1


def mean_cross_entropy(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean cross-entropy of predicted class probabilities (nan for no images); fercore.train's loss of a split."""
    eps = 1e-12  # A probability of exactly 0 for the true class would make the loss infinite.
    return float(-np.mean(np.log(proba[np.arange(len(y_true)), y_true] + eps))) if len(y_true) else float("nan")


def macro_auroc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present in y_true (a class absent from the split has no AUROC)."""
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    aucs = [_binary_auroc(y_true == c, proba[:, c]) for c in present]
    return float(np.mean(aucs))


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """The area under the ROC curve of SCORE for the boolean labels POSITIVE (both present): the Mann-Whitney U over
    the scores' ranks, tied scores sharing their mean rank (scikit-learn's roc_auc_score, ties counted half)."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based mean rank of each score among its ties
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    """Rows: true class, columns: predicted class (labels outside 0..NUM_CLASSES-1 are left out)."""
    t, p = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    return np.bincount(t[keep] * num_classes + p[keep], minlength=num_classes ** 2).reshape(num_classes, num_classes)


def macro_f1_from_confusion(cm: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Macro-F1 of confusion matrices (..., K, K), rows true, columns predicted, averaged over the classes of the
    boolean mask PRESENT (default: all K); a class with no true and no predicted image scores 0, as scikit-learn's
    f1_score(labels=<those classes>, zero_division=0). Resamples pass the whole split's present classes, so each
    resample averages over the same classes as the point figure."""
    f1 = _per_class(cm)[2]
    if present is None:
        return f1.mean(-1)
    return f1[..., present].mean(-1) if present.any() else np.full(f1.shape[:-1], np.nan)


def bootstrap_intervals(y_true: np.ndarray, y_pred: np.ndarray, split: str, num_classes: int = len(CLASSES),
                        resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Percentile bootstrap intervals for accuracy and macro-F1: the test images are resampled with replacement.

    Macro-F1 per resample is computed from a confusion matrix built with bincount, so 1,000 resamples of a few
    thousand images take well under a second.
    """
    rng = np.random.default_rng(seed)
    n = len(y_true)
    if n == 0:
        return {}
    idx = rng.integers(0, n, size=(resamples, n))
    t, p = y_true[idx], y_pred[idx]
    acc = (t == p).mean(1)
    k = num_classes
    flat = (t * k + p) + (np.arange(resamples)[:, None] * k * k)
    macro = macro_f1_from_confusion(np.bincount(flat.ravel(), minlength=resamples * k * k).reshape(resamples, k, k),
                                    present_classes(y_true, k))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {f"{split}_accuracy_ci_low": float(np.percentile(acc, lo)), f"{split}_accuracy_ci_high": float(np.percentile(acc, hi)),
            f"{split}_macro_f1_ci_low": float(np.percentile(macro, lo)),
            f"{split}_macro_f1_ci_high": float(np.percentile(macro, hi))}


def class_weights(labels: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    """w_c = (1/n_c) / sum_k(1/n_k) * K (003's formula); a class with no image gets weight 0."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return inv / inv.sum() * num_classes
