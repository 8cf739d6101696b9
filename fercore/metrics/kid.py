"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs") in any feature space: the unbiased
estimate of the squared maximum mean discrepancy under the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, its
mean and standard deviation over random subsets of both sets.

Unlike FID it has an unbiased estimator, so a small class (a few hundred images) is not penalised for its size; the
subsets' spread says how far the figure can be trusted. Same defaults as the paper and torchmetrics' KID: subsets of
min(1000, n) images, 100 of them.
"""
from __future__ import annotations

import numpy as np

SUBSET_SIZE = 1000
SUBSETS = 100


def polynomial_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 between feature sets A and B (rows are samples) under k(x, y) = (x.y / d + 1)^3."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a.shape[1]
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    m, n = len(a), len(b)
    # Diagonal terms k(x, x) left out: that is what makes the estimate unbiased.
    same_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    same_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(same_a + same_b - 2 * k_ab.mean())


def kernel_inception_distance(real: np.ndarray, synthetic: np.ndarray, subsets: int = SUBSETS,
                              subset_size: int = SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of polynomial_mmd2 over SUBSETS random subsets of min(SUBSET_SIZE, n) images of
    each set, n the smaller set's size; NaN for both when either set has fewer than 2 rows. When one subset is the
    whole of both sets (both no larger than SUBSET_SIZE, the same size) every subset is the same: one estimate, and
    the spread is NaN (not measured) rather than a 0 that would claim certainty."""
    size = min(subset_size, len(real), len(synthetic))
    if size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if size == len(real) == len(synthetic):  # Every subset is the whole of both sets.
        return polynomial_mmd2(real, synthetic), float("nan")
    values = [polynomial_mmd2(real[rng.choice(len(real), size, replace=False)],
                              synthetic[rng.choice(len(synthetic), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
