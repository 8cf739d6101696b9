"""Bootstrap across seeds and test images, for the report's per-config means and paired comparisons; numpy only
(the report may not import fercore.metrics, whose macro-F1 this one matches: scikit-learn's f1_score with
labels = every class and zero_division=0).

Two levels, drawn together in each resample: the seeds with replacement, then the test images with replacement.
Every seed of one config is scored on the same test images, so when their index sets agree one draw of images serves
every chosen seed (Owen's "pigeonhole" bootstrap for a crossed design): drawing the images afresh per seed would
treat the test set as if each seed had its own and understate what a different test set would change. Seeds scored
on different images (a split that moves with the seed) get a draw each.

    bootstrap_predictions   resamples of the mean over seeds of macro-F1 (or of macro-F1(b) - macro-F1(a), paired)
    bootstrap_figures       resamples of the mean over seeds of per-trial figures (no predictions stored), the image
                            level drawn from each trial's own interval when it has one
    interval, p_value, holm summaries of the resamples and the multiple-comparison correction
"""
from __future__ import annotations

import math

import numpy as np

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


def bootstrap_predictions(true: list[np.ndarray], pred_b: list[np.ndarray], num_classes: int,
                          pred_a: list[np.ndarray] | None = None, shared_images: bool | None = None,
                          resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """RESAMPLES draws of the mean over seeds of macro-F1(pred_b), or of macro-F1(pred_b) - macro-F1(pred_a) when
    PRED_A is given (the two models of a seed scored on the same images, so each image is drawn for both).

    One list entry per seed: that seed's test labels and predictions, aligned image by image (and across seeds by
    test index when SHARED_IMAGES). shared_images None: shared when every seed has as many images.

    Random stream, in this order (tests/test_report_resample.py's reference reads it the same way): the chosen seeds
    of every resample, rng.integers(0, S, (R, S)); then per resample the uniform draws of its images, rng.random(N)
    when shared, rng.random((S, N_max)) otherwise (position i of the resample uses row i, its first N_s values);
    an image is floor(u * N_s).
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
    picks = rng.integers(0, n_seeds, size=(resamples, n_seeds))
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


def bootstrap_figures(values: np.ndarray, lows: np.ndarray | None = None, highs: np.ndarray | None = None,
                      resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """RESAMPLES draws of the mean over seeds of one figure per seed (VALUES), when no predictions are stored.

    The seeds are drawn with replacement; where a seed's figure has a 95 % interval (LOWS, HIGHS: the trial's own
    paired bootstrap over the test images), its image level is drawn too, as a normal of that interval's width.
    Random stream: rng.integers(0, S, (R, S)), then rng.standard_normal((R, S)).
    """
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    drawn = values[picks]
    if lows is not None and highs is not None:
        sd = (np.asarray(highs, dtype=float) - np.asarray(lows, dtype=float)) / (2 * Z95)
        sd = np.where(np.isfinite(sd), sd, 0.0)
        drawn = drawn + rng.standard_normal((resamples, len(values))) * sd[picks]
    return drawn.mean(1)


def interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the resamples."""
    lo, hi = np.percentile(draws, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def p_value(draws: np.ndarray, estimate: float | None = None) -> float:
    """Two-sided p of "the mean is 0": the estimate (the draws' mean when not given) over the draws' standard
    deviation, the bootstrap's standard error, read as a normal z. A count of draws beyond 0 could not go below
    2 / (resamples + 1), which after Holm over tens of tests would leave nothing able to pass."""
    estimate = float(np.mean(draws)) if estimate is None else float(estimate)
    se = float(np.std(draws, ddof=1)) if len(draws) > 1 else 0.0
    if se == 0:
        return 1.0 if estimate == 0 else 0.0
    return float(math.erfc(abs(estimate) / se / math.sqrt(2)))


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
