"""fercore.report.resample: the seed-level t (the test images' variance added) against scipy.stats and its coverage at
3 seeds; the bootstrap (seeds, then test images) against a slow reference that reads the same random stream and
scores each resample with scikit-learn, its coverage on synthetic data with a known effect; Holm's correction against
a hand count."""
import numpy as np
import pytest
from scipy import stats
from scipy.stats import norm
from sklearn.metrics import f1_score

from fercore.report.resample import (bootstrap_predictions, holm, image_variance, interval, macro_f1_from_counts,
                                     seed_t)


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


def test_holm():
    # Holm by hand: sorted 0.01, 0.02, 0.04, 0.3 times 4, 3, 2, 1 = 0.04, 0.06, 0.08, 0.3 (already increasing).
    assert holm([0.04, 0.01, 0.3, 0.02]) == pytest.approx([0.08, 0.04, 0.3, 0.06])
    # Monotone: a larger raw p never gets a smaller adjusted p.
    assert holm([0.01, 0.011, 0.5]) == pytest.approx([0.03, 0.03, 0.5])
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []


@pytest.mark.parametrize("values", [[0.01, 0.03], [0.01, 0.03, -0.005], [0.02, 0.01, 0.04, -0.01, 0.03],
                                    list(np.random.default_rng(4).normal(0.01, 0.02, 12))])
def test_the_seed_level_is_scipys_one_sample_t(values):
    t = seed_t(values)
    ref = stats.ttest_1samp(values, 0.0)
    ci = ref.confidence_interval(0.95)
    assert (t.low, t.high, t.p, t.df) == pytest.approx((ci.low, ci.high, ref.pvalue, len(values) - 1), rel=1e-10)


def test_the_test_images_variance_widens_the_t_and_one_seed_is_a_normal():
    values, var = np.array([0.02, 0.035, 0.01]), 0.01 ** 2
    t = seed_t(values, var)
    se = np.sqrt(values.var(ddof=1) / 3 + var)
    assert t.se == pytest.approx(se) and t.df == 2
    assert (t.low, t.high) == pytest.approx(values.mean() + np.array([-1, 1]) * stats.t.ppf(0.975, 2) * se)
    assert t.p == pytest.approx(2 * stats.t.sf(values.mean() / se, 2))
    assert t.p > seed_t(values).p  # the images' noise, which the seeds share, weakens the evidence
    one = seed_t([0.03], var)  # one seed: no seed level, the test images alone
    assert one.df == np.inf and one.p == pytest.approx(2 * norm.sf(3.0)) and one.low == pytest.approx(0.03 - 0.0196, abs=1e-4)
    bare = seed_t([0.03])
    assert np.isnan(bare.low) and np.isnan(bare.p)
    assert seed_t([0.0, 0.0, 0.0]).p == 1.0 and seed_t([0.1, 0.1]).p == 0.0


def test_image_variance_holds_the_seeds_and_draws_the_images():
    rng = np.random.default_rng(6)
    true, pred = seeds_of_predictions(rng, 3, (90, 90, 90), 4, 0.6)
    var = image_variance(true, pred, 4, resamples=300, seed=1)
    draws = bootstrap_predictions(true, pred, 4, resamples=300, seed=1, resample_seeds=False)
    assert var == pytest.approx(np.var(draws, ddof=1)) and var > 0
    # The seeds held: the draws' mean is the seeds' mean macro-F1 (up to the images' noise), not a resampled one.
    assert np.mean(draws) == pytest.approx(np.mean([f1_score(t, p, labels=range(4), average="macro", zero_division=0)
                                                    for t, p in zip(true, pred)]), abs=3 * np.sqrt(var / 300) + 1e-3)
    # Seeds that agree image for image: the images' variance is the one seed's.
    one = image_variance(true[:1], pred[:1], 4, resamples=300, seed=1)
    assert image_variance([true[0]] * 3, [pred[0]] * 3, 4, resamples=300, seed=1) == pytest.approx(one)


def t_coverage(sims: int, n_seeds: int, effect: float = 0.05, **sweep) -> tuple[float, float]:
    """Coverage of the seed-level t with the test images' variance, and of the two-level bootstrap's percentile
    interval, over simulated sweeps of N_SEEDS seeds."""
    rng = np.random.default_rng(12)
    hits_t = hits_boot = 0
    for i in range(sims):
        true, a, b = simulated_sweep(rng, n_seeds=n_seeds, n_images=280, k=4, effect=effect, **sweep)
        diffs = [f1_score(tr, pb, labels=range(4), average="macro", zero_division=0)
                 - f1_score(tr, pa, labels=range(4), average="macro", zero_division=0) for tr, pa, pb in zip(true, a, b)]
        t = seed_t(diffs, image_variance(true, b, 4, pred_a=a, resamples=200, seed=i))
        hits_t += t.low <= effect <= t.high
        lo, hi = interval(bootstrap_predictions(true, b, 4, pred_a=a, resamples=200, seed=i))
        hits_boot += lo <= effect <= hi
    return hits_t / sims, hits_boot / sims


def test_at_three_seeds_the_t_keeps_its_coverage_where_resampling_the_seeds_does_not():
    """Seeds that differ (seed_sd 0.03, larger than the test images' noise): resampling 3 seeds understates their
    variance (a bootstrap over 3 values is too narrow by about sqrt(2/3) and reads a normal's quantiles, not a t's
    with 2 degrees of freedom); the t keeps about 95 %."""
    t, boot = t_coverage(120, n_seeds=3, seed_sd=0.03, image_corr=0.8)
    assert t >= 0.88, t
    assert boot <= t - 0.08, (t, boot)
