"""Seed-level inference with the test images' noise added, for the report's per-config means and paired comparisons;
numpy and scipy only (the report may not import fercore.metrics, whose macro-F1 this one matches: scikit-learn's
f1_score with labels = every class and zero_division=0).

The seeds are the unit: S per-seed values (a config's test macro-F1, or a paired difference such as the uplift) give
a t interval and test with S - 1 degrees of freedom, as scipy.stats.ttest_1samp does. Their spread misses one source
of noise: every seed is scored on the same test images, so what a different test set would change moves all seeds
alike. That part (image_var) is measured by a bootstrap over the test images with the seeds held fixed, one draw
serving every seed (Owen's "pigeonhole" bootstrap for a crossed design), and added to the seeds' variance of the
mean: SE^2 = s^2 / S + image_var. With no image level (image_var 0) the interval and p are scipy's one-sample t.
With one seed there is no seed level: the test images alone, read as a normal, and the report claims nothing.

    seed_t                  t interval and p over seeds, the image level added
    image_variance          the test images' variance of the mean over seeds, from predictions
    bootstrap_predictions   resamples of the mean over seeds of macro-F1 (or of macro-F1(b) - macro-F1(a), paired),
                            the seeds drawn too or held fixed
    interval, holm          a percentile interval of resamples; the multiple-comparison correction
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

RESAMPLES = 2000  # percentile intervals' ends move by well under 0.01 between runs of this many
CHUNK_VALUES = 2_000_000  # image draws held at once (memory bound: a few tens of MB)
Z95 = 1.959964  # a 95 % normal interval is the point +- Z95 standard deviations


def macro_f1_from_counts(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 of confusion counts (..., K, K), rows true, columns predicted, over the classes with a true image:
    a class absent from the (resampled) test images is left out, as the trial's own figures leave it out
    (fercore.metrics.classification); scikit-learn's zero_division=0 with labels = the classes present."""
    k = cm.shape[-1]
    tp = cm[..., np.arange(k), np.arange(k)]
    support = cm.sum(-1)
    f1 = 2 * tp / np.maximum(support + cm.sum(-2), 1)
    present = support > 0
    return np.where(present, f1, 0.0).sum(-1) / np.maximum(present.sum(-1), 1)


def _codes(true: np.ndarray, pred_b: np.ndarray, pred_a: np.ndarray | None, k: int) -> np.ndarray:
    """One integer per image for (true, a, b), or (true, b) unpaired: a resample's bincount gives the confusions."""
    true, pred_b = np.asarray(true, dtype=np.int64), np.asarray(pred_b, dtype=np.int64)
    if pred_a is None:
        return true * k + pred_b
    return (true * k + np.asarray(pred_a, dtype=np.int64)) * k + pred_b


def _statistic(counts: np.ndarray, k: int, paired: bool) -> np.ndarray:
    """counts (r, k**3) or (r, k**2) -> macro-F1(b) - macro-F1(a), or macro-F1(b)."""
    if not paired:
        return macro_f1_from_counts(counts.reshape(-1, k, k))
    cube = counts.reshape(-1, k, k, k)  # (true, a, b)
    return macro_f1_from_counts(cube.sum(2)) - macro_f1_from_counts(cube.sum(3))


@dataclass(frozen=True)
class SeedLevel:
    """A mean over seeds with its interval and two-sided p of "the mean is 0" (NaN where there is no test)."""
    mean: float
    low: float
    high: float
    p: float
    df: float  # S - 1; inf for one seed (the image level alone, a normal); NaN: neither level
    se: float


def seed_t(values, image_var: float = 0.0, mean: float | None = None, level: float = 0.95) -> SeedLevel:
    """The t interval and test over the per-seed VALUES with IMAGE_VAR (the test images' variance of the mean, which
    the seeds share) added: SE^2 = s^2 / S + image_var, S - 1 degrees of freedom. MEAN: the estimate when it is not
    the plain mean (a k-fold sweep's mean over folds). One seed: the image level alone, a normal."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if mean is None else float(mean)
    image_var = float(image_var) if math.isfinite(image_var) else 0.0
    if n >= 2:
        se, df = math.sqrt(float(v.var(ddof=1)) / n + image_var), float(n - 1)
    elif image_var > 0:
        se, df = math.sqrt(image_var), math.inf
    else:
        return SeedLevel(mean, math.nan, math.nan, math.nan, math.nan, math.nan)
    q = float(stats.norm.ppf(0.5 + level / 2) if math.isinf(df) else stats.t.ppf(0.5 + level / 2, df))
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        z = abs(mean) / se
        p = float(2 * (stats.norm.sf(z) if math.isinf(df) else stats.t.sf(z, df)))
    return SeedLevel(mean, mean - q * se, mean + q * se, p, df, se)


def image_variance(true: list[np.ndarray], pred_b: list[np.ndarray], num_classes: int,
                   pred_a: list[np.ndarray] | None = None, shared_images: bool | None = None,
                   resamples: int = RESAMPLES, seed: int = 0) -> float:
    """The variance, over resamples of the test images with the seeds held fixed, of the mean over seeds of
    macro-F1(pred_b) (minus macro-F1(pred_a), paired): what a different test set would change."""
    draws = bootstrap_predictions(true, pred_b, num_classes, pred_a=pred_a, shared_images=shared_images,
                                  resamples=resamples, seed=seed, resample_seeds=False)
    return float(np.var(draws, ddof=1))


def bootstrap_predictions(true: list[np.ndarray], pred_b: list[np.ndarray], num_classes: int,
                          pred_a: list[np.ndarray] | None = None, shared_images: bool | None = None,
                          resamples: int = RESAMPLES, seed: int = 0, resample_seeds: bool = True) -> np.ndarray:
    """RESAMPLES draws of the mean over seeds of macro-F1(pred_b), or of macro-F1(pred_b) - macro-F1(pred_a) when
    PRED_A is given (the two models of a seed scored on the same images, so each image is drawn for both).

    One list entry per seed: that seed's test labels and predictions, aligned image by image (and across seeds by
    test index when SHARED_IMAGES). shared_images None: shared when every seed has as many images.

    Random stream, in this order (tests/test_report_resample.py's reference reads it the same way): the chosen seeds
    of every resample, rng.integers(0, S, (R, S)); then per resample the uniform draws of its images, rng.random(N)
    when shared, rng.random((S, N_max)) otherwise (position i of the resample uses row i, its first N_s values);
    an image is floor(u * N_s). Without RESAMPLE_SEEDS every resample keeps the seeds as they are (no draw of
    them): the test images' level alone.
    """
    k, paired = num_classes, pred_a is not None
    codes = [_codes(t, b, a, k) for t, b, a in zip(true, pred_b, pred_a if paired else [None] * len(true))]
    sizes = np.array([len(c) for c in codes])
    n_seeds = len(codes)
    if n_seeds == 0 or sizes.min() == 0:
        raise ValueError("every seed needs at least one test image")
    if shared_images is None:
        shared_images = bool((sizes == sizes[0]).all())
    if shared_images and not (sizes == sizes[0]).all():
        raise ValueError("shared_images needs every seed scored on as many images")
    bins = k ** 3 if paired else k ** 2
    n_max = int(sizes.max())
    padded = np.full((n_seeds, n_max), bins, dtype=np.int64)  # bin `bins`: a dump for draws past a seed's images
    for s, c in enumerate(codes):
        padded[s, :len(c)] = c
    rng = np.random.default_rng(seed)
    if resample_seeds:
        picks = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    else:
        picks = np.broadcast_to(np.arange(n_seeds), (resamples, n_seeds))
    out = np.empty(resamples)
    chunk = max(1, CHUNK_VALUES // (n_seeds * n_max))
    safe = np.concatenate([padded, np.full((n_seeds, 1), bins, dtype=np.int64)], axis=1)
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        chosen = picks[start:start + r]  # (r, S)
        if shared_images:
            images = (rng.random((r, 1, n_max)) * n_max).astype(np.int64)  # one draw for every position
            images = np.broadcast_to(images, (r, n_seeds, n_max))
        else:
            u = rng.random((r, n_seeds, n_max))
            images = (u * sizes[chosen][:, :, None]).astype(np.int64)
            images = np.where(np.arange(n_max) < sizes[chosen][:, :, None], images, n_max)  # past N_s: the dump
        drawn = safe[chosen[:, :, None], images]  # (r, S, N_max) codes
        flat = drawn + np.arange(r * n_seeds).reshape(r, n_seeds, 1) * (bins + 1)
        counts = np.bincount(flat.ravel(), minlength=r * n_seeds * (bins + 1)).reshape(r * n_seeds, bins + 1)
        stats = _statistic(counts[:, :bins], k, paired).reshape(r, n_seeds)
        out[start:start + r] = stats.mean(1)
    return out


def interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the resamples."""
    lo, hi = np.percentile(draws, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order: the i-th smallest p times (m - i + 1), made
    non-decreasing, capped at 1. A test survives at level a when its adjusted p is below a (family-wise)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()
