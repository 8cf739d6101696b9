"""fercore.report.resample: the two-level bootstrap (seeds, then test images) against a slow reference that reads the
same random stream and scores each resample with scikit-learn, its coverage on synthetic data with a known effect,
and Holm's correction against a hand count."""
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import f1_score

from fercore.report.resample import (bootstrap_figures, bootstrap_predictions, holm, interval, macro_f1_from_counts,
                                     p_value)


def reference(true, pred_b, k, pred_a=None, shared=None, resamples=100, seed=0):
    """The two-level bootstrap written plainly: one resample, one chosen seed at a time, scikit-learn's macro-F1."""
    rng = np.random.default_rng(seed)
    sizes = [len(t) for t in true]
    n_seeds, n_max = len(true), max(sizes)
    shared = len(set(sizes)) == 1 if shared is None else shared
    picks = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    f1 = lambda t, p: f1_score(t, p, labels=list(range(k)), average="macro", zero_division=0)
    out = []
    for b in range(resamples):
        u = rng.random(n_max) if shared else rng.random((n_seeds, n_max))
        values = []
        for i, s in enumerate(picks[b]):
            draw = u if shared else u[i, :sizes[s]]
            idx = (draw * sizes[s]).astype(np.int64)
            value = f1(true[s][idx], pred_b[s][idx])
            if pred_a is not None:
                value -= f1(true[s][idx], pred_a[s][idx])
            values.append(value)
        out.append(np.mean(values))
    return np.array(out)


def seeds_of_predictions(rng, n_seeds, sizes, k, accuracy):
    true = [rng.integers(0, k, n) for n in sizes]
    pred = [np.where(rng.random(len(t)) < accuracy, t, rng.integers(0, k, len(t))) for t in true]
    return true, pred


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("sizes", [(60, 60, 60), (50, 73, 41)])
def test_fast_bootstrap_equals_the_slow_reference(paired, sizes):
    rng = np.random.default_rng(1)
    k = 5
    true, pred_b = seeds_of_predictions(rng, len(sizes), sizes, k, 0.6)
    pred_a = [np.where(rng.random(len(t)) < 0.4, t, rng.integers(0, k, len(t))) for t in true] if paired else None
    fast = bootstrap_predictions(true, pred_b, k, pred_a=pred_a, resamples=120, seed=7)
    slow = reference(true, pred_b, k, pred_a=pred_a, resamples=120, seed=7)
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    # Different seeds or images give different resamples: the comparison above could fail.
    assert not np.allclose(fast, bootstrap_predictions(true, pred_b, k, pred_a=pred_a, resamples=120, seed=8))


def test_fast_bootstrap_equals_the_reference_with_a_draw_per_seed_on_one_test_set():
    rng = np.random.default_rng(2)
    true, pred = seeds_of_predictions(rng, 3, (40, 40, 40), 4, 0.5)
    fast = bootstrap_predictions(true, pred, 4, shared_images=False, resamples=80, seed=3)
    np.testing.assert_allclose(fast, reference(true, pred, 4, shared=False, resamples=80, seed=3), atol=1e-12)


def test_macro_f1_from_counts_is_scikit_learns():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 7, 300), rng.integers(0, 6, 300)  # class 6 never predicted; zero_division=0
    cm = np.zeros((7, 7), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    assert macro_f1_from_counts(cm) == pytest.approx(f1_score(t, p, labels=range(7), average="macro",
                                                              zero_division=0))
    # A class with no true image (5 here, though predicted) is left out, as the trial's own figures leave it out.
    t = np.where(t == 5, 4, t)
    cm = np.zeros((7, 7), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    present = sorted(set(t))
    assert macro_f1_from_counts(cm) == pytest.approx(f1_score(t, p, labels=present, average="macro", zero_division=0))
    assert macro_f1_from_counts(cm) > f1_score(t, p, labels=range(7), average="macro", zero_division=0)


def simulated_sweep(rng, n_seeds, n_images, k, effect, seed_sd, image_corr, level_sd=0.03):
    """Two models per seed, scored on one balanced test set: image i is right for model m of seed s when
    V[s, i] < q[m, s], V uniform with correlation IMAGE_CORR between seeds (images hard for every seed), shared by the
    two models of a seed (paired). Wrong answers are spread over the other classes, so each class's expected F1 is
    its expected recall q, and the population macro-F1 difference is the mean of q_b - q_a: EFFECT."""
    true = np.tile(np.arange(k), n_images // k)
    z = rng.standard_normal(len(true))
    q_a = 0.5 + level_sd * rng.standard_normal(n_seeds)
    q_b = q_a + effect + seed_sd * rng.standard_normal(n_seeds)
    preds_a, preds_b = [], []
    for s in range(n_seeds):
        v = norm.cdf(image_corr * z + np.sqrt(1 - image_corr ** 2) * rng.standard_normal(len(true)))
        wrong = (true + rng.integers(1, k, len(true))) % k
        preds_a.append(np.where(v < q_a[s], true, wrong))
        preds_b.append(np.where(v < q_b[s], true, wrong))
    return [true] * n_seeds, preds_a, preds_b


def coverage(shared: bool, sims: int = 100, effect: float = 0.05, **sweep) -> float:
    rng = np.random.default_rng(11)
    hits = 0
    for i in range(sims):
        true, a, b = simulated_sweep(rng, n_seeds=6, n_images=280, k=4, effect=effect, **sweep)
        lo, hi = interval(bootstrap_predictions(true, b, 4, pred_a=a, shared_images=shared, resamples=400, seed=i))
        hits += lo <= effect <= hi
    return hits / sims


def test_the_two_level_interval_covers_a_known_effect():
    """About 95 % of the 95 % intervals hold the population effect, the seeds varying and the test images hard or
    easy for every seed alike."""
    assert 0.88 <= coverage(shared=True, seed_sd=0.02, image_corr=0.8) <= 1.0


def test_one_image_draw_for_every_seed_is_what_keeps_a_shared_test_set_covered():
    """Seeds that agree on every image (no seed variation): the mean over seeds is as noisy as one seed's figure.
    One draw of images for all chosen seeds keeps the coverage; a draw per seed (as if each seed had a test set of
    its own) averages the test set's noise away and misses the effect far more often."""
    same = {"seed_sd": 0.0, "image_corr": 1.0, "level_sd": 0.0}
    assert coverage(shared=True, **same) >= 0.88
    assert coverage(shared=False, **same) <= 0.75


def test_figures_bootstrap_covers_a_known_mean_and_draws_the_image_level():
    rng = np.random.default_rng(5)
    hits, sims = 0, 300
    for i in range(sims):
        seed_means = 0.02 + 0.01 * rng.standard_normal(8)
        values = seed_means + 0.015 * rng.standard_normal(8)  # each seed's figure, off by its test images
        lo, hi = interval(bootstrap_figures(values, values - 0.03, values + 0.03, resamples=400, seed=i))
        hits += lo <= 0.02 <= hi
    assert 0.86 <= hits / sims <= 1.0, hits / sims
    values = np.array([0.1, 0.1, 0.1])
    assert np.ptp(bootstrap_figures(values, resamples=50)) == 0  # seeds alone: nothing varies
    wide = bootstrap_figures(values, values - 0.05, values + 0.05, resamples=2000)
    assert np.std(wide) == pytest.approx(0.05 / 1.96 / np.sqrt(3), rel=0.1)


def test_p_value_and_holm():
    # z = estimate / bootstrap standard error, two-sided: 1.96 standard errors from 0 is p = 0.05.
    draws = np.random.default_rng(0).standard_normal(20000) * 0.01
    assert p_value(draws, 0.0196) == pytest.approx(0.05, rel=0.03)
    assert p_value(draws, -0.0196) == pytest.approx(0.05, rel=0.03)
    assert p_value(draws + 0.05) < 1e-6  # far beyond what counting resamples could show
    assert p_value(np.r_[np.full(50, -1.0), np.full(50, 1.0)]) == 1.0
    assert p_value(np.full(10, 0.2)) == 0.0 and p_value(np.zeros(10)) == 1.0
    # Holm by hand: sorted 0.01, 0.02, 0.04, 0.3 times 4, 3, 2, 1 = 0.04, 0.06, 0.08, 0.3 (already increasing).
    assert holm([0.04, 0.01, 0.3, 0.02]) == pytest.approx([0.08, 0.04, 0.3, 0.06])
    # Monotone: a larger raw p never gets a smaller adjusted p.
    assert holm([0.01, 0.011, 0.5]) == pytest.approx([0.03, 0.03, 0.5])
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []
