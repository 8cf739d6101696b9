"""Classification metrics from labels and predictions, computed with scikit-learn, named for result rows."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from fercore.labels import CLASSES


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, split: str,
                           class_names: tuple[str, ...] = CLASSES) -> dict[str, float]:
    """Accuracy, macro-F1 and per-class precision, recall and F1, as {f"{split}_{name}": value}."""
    labels = np.arange(len(class_names))
    out = {
        f"{split}_accuracy": float(accuracy_score(y_true, y_pred)),
        f"{split}_macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, name in enumerate(class_names):
        out[f"{split}_precision_{name}"] = float(precision[i])
        out[f"{split}_recall_{name}"] = float(recall[i])
        out[f"{split}_f1_{name}"] = float(f1[i])
    return out


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))
