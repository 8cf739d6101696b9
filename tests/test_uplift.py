"""Paired uplift: exact differences of classification_metrics figures and a paired bootstrap interval."""
import numpy as np
import pytest
from sklearn.metrics import f1_score

from fercore.labels import CLASSES
from fercore.metrics.classification import classification_metrics
from fercore.metrics import uplift
from fercore.metrics.classification import macro_f1_from_confusion
from fercore.metrics.uplift import paired_bootstrap_macro_f1, uplift_metrics

LABELS = np.arange(len(CLASSES))
PRESENT = np.array([0, 2, 3, 4, 5, 6])  # every class but disgust
PRESENT_BUT_SAD = np.array([0, 1, 2, 3, 5, 6])


def noisy(y: np.ndarray, correct: float, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(len(y)) < correct, y, rng.integers(0, 7, len(y)))


def test_identical_predictions_have_no_uplift():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    pred = noisy(y, 0.6, rng)
    m = uplift_metrics(y, pred, pred.copy())
    assert set(m) == {"uplift_test_accuracy", "uplift_test_macro_f1", "uplift_test_macro_f1_low",
                      "uplift_test_macro_f1_high"} | {f"uplift_test_recall_{c}" for c in CLASSES}
    assert all(v == 0 for v in m.values())


def test_fixing_known_errors_gives_the_exact_uplift():
    rng = np.random.default_rng(1)
    y = np.repeat(LABELS, 100)  # 700 test images
    base = y.copy()
    wrong = rng.choice(700, size=280, replace=False)
    base[wrong] = (y[wrong] + rng.integers(1, 7, 280)) % 7  # 280 errors, each to another class
    aug = base.copy()
    fixed = wrong[:70]
    aug[fixed] = y[fixed]  # the augmented model fixes 70 of them and breaks nothing
    m = uplift_metrics(y, base, aug)
    assert m["uplift_test_accuracy"] == pytest.approx(70 / 700, abs=1e-12)
    per_class = np.bincount(y[fixed], minlength=7) / 100
    for c, name in enumerate(CLASSES):
        assert m[f"uplift_test_recall_{name}"] == pytest.approx(per_class[c], abs=1e-12)
    # Fixing errors only raises every class's F1, so every resample's difference is positive.
    assert 0 < m["uplift_test_macro_f1_low"] <= m["uplift_test_macro_f1"] <= m["uplift_test_macro_f1_high"]
    # Swapping the roles flips the signs.
    back = uplift_metrics(y, aug, base)
    assert back["uplift_test_macro_f1"] == pytest.approx(-m["uplift_test_macro_f1"])
    assert back["uplift_test_macro_f1_high"] == pytest.approx(-m["uplift_test_macro_f1_low"])


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_point_figures_are_differences_of_classification_metrics_rows():
    rng = np.random.default_rng(2)
    y = rng.choice([0, 2, 3, 4, 5, 6], size=400)  # no disgust in the test labels
    base, aug = noisy(y, 0.5, rng), noisy(y, 0.6, rng)
    assert (base == 1).any()  # ... but disgust is predicted: absent from the test split, it has no F1 and is left
    m = uplift_metrics(y, base, aug)  # out of the macro mean (its false positives still cost the other classes)
    b, a = classification_metrics(y, base, "test"), classification_metrics(y, aug, "test")
    assert m["uplift_test_macro_f1"] == a["test_macro_f1"] - b["test_macro_f1"]
    sk = (f1_score(y, aug, labels=PRESENT, average="macro", zero_division=0)
          - f1_score(y, base, labels=PRESENT, average="macro", zero_division=0))
    assert m["uplift_test_macro_f1"] == pytest.approx(sk, abs=1e-12)
    assert np.isnan(m["uplift_test_recall_disgust"])  # absent from y_true: no recall for either, no evidence
    assert a["test_absent_classes"] == "disgust" and np.isnan(a["test_f1_disgust"])
    assert m["uplift_test_macro_f1_low"] <= m["uplift_test_macro_f1"] <= m["uplift_test_macro_f1_high"]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_bootstrap_matches_a_slow_reference_on_the_same_resamples(monkeypatch):
    rng = np.random.default_rng(3)
    y = rng.choice([0, 1, 2, 3, 5, 6], size=150)  # sad absent from y_true, others rare in some resamples
    base, aug = noisy(y, 0.5, rng), noisy(y, 0.55, rng)
    monkeypatch.setattr(uplift, "RESAMPLES_PER_CHUNK", 25)  # 25 + 25 + a ragged 10
    diffs = paired_bootstrap_macro_f1(y, base, aug, 7, resamples=60, seed=9)
    draw = np.random.default_rng(9)
    idx = np.concatenate([draw.integers(0, 150, size=(r, 150)) for r in (25, 25, 10)])  # the same draws
    # Macro over the classes present in the whole test split (sad left out), in every resample.
    slow = [f1_score(y[i], aug[i], labels=PRESENT_BUT_SAD, average="macro", zero_division=0)
            - f1_score(y[i], base[i], labels=PRESENT_BUT_SAD, average="macro", zero_division=0) for i in idx]
    assert diffs == pytest.approx(slow, abs=1e-12)
    m = uplift_metrics(y, base, aug, resamples=60, seed=9)
    assert m["uplift_test_macro_f1_low"] == pytest.approx(np.percentile(slow, 2.5))
    assert m["uplift_test_macro_f1_high"] == pytest.approx(np.percentile(slow, 97.5))


def test_seeded_and_named_by_split():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 7, 300)
    base, aug = noisy(y, 0.5, rng), noisy(y, 0.6, rng)
    assert uplift_metrics(y, base, aug, seed=5) == uplift_metrics(y, base, aug, seed=5)
    assert uplift_metrics(y, base, aug, split="val")["uplift_val_macro_f1"] == pytest.approx(
        uplift_metrics(y, base, aug)["uplift_test_macro_f1"])


def test_macro_f1_from_confusion_by_hand():
    cm = np.array([[2, 1, 0], [0, 1, 0], [0, 1, 0]])  # class 2 never predicted correctly
    # F1: 2*2/(3+2) = 0.8, 2*1/(1+3) = 0.5, 0 -> mean 1.3/3
    assert macro_f1_from_confusion(cm) == pytest.approx(1.3 / 3)
    assert macro_f1_from_confusion(np.zeros((3, 3))) == 0.0


def test_mismatched_lengths_and_unknown_classes_are_refused():
    with pytest.raises(AssertionError, match="one length"):
        uplift_metrics(np.zeros(3, int), np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(AssertionError, match="outside 0..6"):
        uplift_metrics(np.zeros(3, int), np.zeros(3, int), np.array([0, 7, 1]))


def test_a_control_names_its_figures_and_they_equal_the_uplifts():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 7, 300)
    a, b = rng.integers(0, 7, 300), np.where(rng.random(300) < 0.5, y, rng.integers(0, 7, 300))
    uplift = uplift_metrics(y, a, b, seed=5)
    gain = uplift_metrics(y, a, b, seed=5, prefix="gain_control")
    assert gain == {k.replace("uplift_", "gain_control_", 1): v for k, v in uplift.items()}
    assert set(gain) >= {"gain_control_test_macro_f1_low", "gain_control_test_macro_f1_high",
                         "gain_control_test_recall_disgust", "gain_control_test_accuracy"}
