import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support, roc_auc_score)

from fercore.errors import ConfigError
from fercore.labels import CLASSES
from fercore.metrics import Read, calc_metric, calc_metrics
from fercore.metrics.classification import (bootstrap_intervals, class_weights, classification_metrics, confusion,
                                            macro_auroc)
from fercore.metrics.uplift import uplift_metrics
from fercore.train import metrics_from_proba


def test_class_weights_follow_003s_formula_by_hand():
    labels = np.repeat(np.arange(3), [1, 2, 4])  # n = 1, 2, 4 -> 1/n = 1, .5, .25, sum 1.75
    w = class_weights(labels, num_classes=3)
    assert w == pytest.approx([1 / 1.75 * 3, 0.5 / 1.75 * 3, 0.25 / 1.75 * 3])
    # 003's FER2013 table (angry 4,593 ... neutral 6,198) is proportional to the formula.
    counts = np.array([4593, 547, 5121, 8989, 6077, 4002, 6198])
    w = class_weights(np.repeat(np.arange(7), counts))
    table = np.array([0.39, 3.29, 0.35, 0.20, 0.30, 0.45, 0.29])
    assert np.allclose(w / w.sum(), table / table.sum(), atol=0.01)
    assert w.sum() == pytest.approx(7)


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    proba = rng.dirichlet(np.ones(7), 300)
    proba[np.arange(300), y] += 0.3  # better than chance
    proba /= proba.sum(1, keepdims=True)
    pred = proba.argmax(1)
    m = classification_metrics(y, pred, "test", proba=proba)
    assert m["test_accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["test_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["test_macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["test_weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["test_auroc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert m["test_recall_disgust"] == pytest.approx(((pred == 1) & (y == 1)).sum() / (y == 1).sum())


@pytest.mark.parametrize("case", range(12))
def test_numpy_figures_equal_scikit_learns_with_absent_classes_and_tied_scores(case):
    """fercore computes its figures in NumPy (a worker need not import scikit-learn); scikit-learn is the oracle, on
    splits where some classes have no true image, some are never predicted, one class is predicted but absent, and
    probabilities rounded so that scores tie."""
    rng = np.random.default_rng(case)
    n, k = int(rng.integers(5, 120)), 7
    classes = rng.choice(k, size=int(rng.integers(2, k + 1)), replace=False)  # the classes with true images
    y = rng.choice(classes, n)
    pred = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, n))
    proba = np.round(rng.dirichlet(np.ones(k), n), 1)  # ties
    m = classification_metrics(y, pred, "val", proba=proba)
    labels = np.arange(k)
    present = np.isin(labels, y)
    assert (confusion(y, pred) == confusion_matrix(y, pred, labels=labels)).all()
    assert m["val_accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["val_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["val_macro_f1"] == pytest.approx(f1_score(y, pred, labels=labels[present], average="macro",
                                                       zero_division=0))
    assert m["val_weighted_f1"] == pytest.approx(f1_score(y, pred, labels=labels, average="weighted", zero_division=0))
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i, name in enumerate(CLASSES):
        got = [m[f"val_{f}_{name}"] for f in ("precision", "recall", "f1")]
        assert got == pytest.approx([precision[i], recall[i], f1[i]]) if present[i] else all(np.isnan(got))
    expected = np.mean([roc_auc_score(y == c, proba[:, c]) for c in np.unique(y)])
    assert m["val_auroc"] == pytest.approx(expected)


def test_per_class_figures_by_hand():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    m = classification_metrics(y, pred, "val", class_names=("a", "b"))
    assert m["val_precision_b"] == pytest.approx(2 / 3) and m["val_recall_a"] == 0.5 and m["val_f1_a"] == pytest.approx(2 / 3)
    assert np.isnan(macro_auroc(np.zeros(3, int), np.ones((3, 2)) / 2))


def test_bootstrap_interval_matches_a_slow_reference():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 7, 200))
    ci = bootstrap_intervals(y, pred, "test", resamples=300, seed=5)
    # The same resamples, scored one by one with scikit-learn.
    idx = np.random.default_rng(5).integers(0, 200, size=(300, 200))
    accs = [accuracy_score(y[i], pred[i]) for i in idx]
    f1s = [f1_score(y[i], pred[i], labels=np.arange(7), average="macro", zero_division=0) for i in idx]
    assert ci["test_accuracy_ci_low"] == pytest.approx(np.percentile(accs, 2.5))
    assert ci["test_accuracy_ci_high"] == pytest.approx(np.percentile(accs, 97.5))
    assert ci["test_macro_f1_ci_low"] == pytest.approx(np.percentile(f1s, 2.5))
    assert ci["test_macro_f1_ci_high"] == pytest.approx(np.percentile(f1s, 97.5))
    point = f1_score(y, pred, average="macro")
    assert ci["test_macro_f1_ci_low"] < point < ci["test_macro_f1_ci_high"]


def test_registered_metrics_give_their_functions_figures_in_the_order_named():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    proba = rng.dirichlet(np.ones(7), 300)
    base = rng.dirichlet(np.ones(7), 300)
    read = Read("test", y, proba, CLASSES, seed=3)
    figures = calc_metrics(("classification", "bootstrap"), read=read)
    # The trainer's own figures of a split (loss first), then the intervals: the keys and order of a result row.
    expected = {**metrics_from_proba(proba, y, "test"), **bootstrap_intervals(y, proba.argmax(1), "test", 7, seed=3)}
    assert list(figures.items()) == list(expected.items())
    assert calc_metric("uplift", read=read, baseline=base) == uplift_metrics(y, base.argmax(1), proba.argmax(1),
                                                                             "test", CLASSES, seed=3)
    with pytest.raises(ConfigError, match="unknown metric 'fid'; valid: bootstrap, classification, leakage, uplift"):
        calc_metric("fid", read=read)
