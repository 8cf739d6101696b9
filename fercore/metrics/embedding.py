"""How far synthetic images sit from real ones in the reference classifier's feature space: a Jensen-Shannon
distance between 2-D histograms of the two embeddings, overall and per class, named `gen_embedding_jsd[_<class>]`.

Report 004 compared the embeddings with t-SNE. t-SNE is fitted anew on every joint sample, so its axes, scale and
neighbourhoods change with the synthetic set being judged: two generators would not be measured on the same ruler.
Here the ruler is fixed by the real data alone:

1. Projection: PCA fitted on the REAL features only (centred on the real mean, the two leading right singular
   vectors). Real and synthetic features go through the same affine map, so the same projection judges every
   synthetic set of a data set.
2. Grid: `bins` x `bins` cells spanning, per axis, the 0.5th to 99.5th percentile of the projected REAL points.
   Points outside (real outliers, or a synthetic set that drifted away) are clipped into the edge cells, so every
   point counts and a set that lands entirely off the grid piles up at the border rather than vanishing.
3. Histograms: cell counts divided by the number of points, plus `smoothing` probability mass per cell and then
   renormalised. The Jensen-Shannon divergence stays finite with empty cells (unlike KL: the mixture is non-zero
   wherever either histogram is), so the smoothing is deliberately tiny (1e-7 per cell): it gives both histograms
   full support and moves no figure by more than about 2e-4 (measured: disjoint sets 0.99778 -> 0.99764).
4. Distance: scipy.spatial.distance.jensenshannon(p, q, base=2), the square root of the base-2 JS divergence,
   so 0 for identical histograms and 1 for histograms on disjoint cells. Disjoint sets score a little under 1
   (about 0.998): the real outliers clipped into the border cells share them with an off-grid synthetic set.

Finite samples put a floor under the figure: two samples of ONE distribution still give different histograms,
and the square root magnifies small divergences. Measured on two halves of a 16-D standard Gaussian sample
(mean of 5 draws), n points per side:

    n          200    500    1,000   5,000   20,000
    20 x 20    0.67   0.50   0.38    0.17    0.088
    10 x 10    0.44   0.28   0.20    0.09    0.045

Two dimensions see what dominates the real variation: a synthetic set that differs from the real one only along
other directions goes unseen here (the Frechet distance in quality.py covers the full feature space).

So compare generators at equal pool sizes on the same data (the ruler is then the same), and read per-class
figures, a few hundred images per class, with that floor in mind: they use 10 x 10 bins by default.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import jensenshannon

from fercore.labels import CLASSES

SMOOTHING = 1e-7  # probability mass added to every cell before renormalising
PERCENTILES = (0.5, 99.5)  # the real range the grid spans, per projected axis


def real_projection(real_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and the two leading principal axes (F x 2) of the real features."""
    real = np.asarray(real_features, dtype=np.float64)
    assert real.ndim == 2 and len(real) >= 2, f"need at least 2 real feature rows, got shape {real.shape}"
    mean = real.mean(0)
    _, _, vt = np.linalg.svd(real - mean, full_matrices=False)
    axes = np.zeros((real.shape[1], 2))
    k = min(2, len(vt))
    axes[:, :k] = vt[:k].T  # a rank-1 real set keeps a zero second axis: every point on one line
    return mean, axes


def grid_histogram(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int,
                   smoothing: float = SMOOTHING) -> np.ndarray:
    """Smoothed probabilities of 2-D POINTS in a bins x bins grid over [lo, hi] per axis, out-of-range clipped."""
    width = np.where(hi > lo, hi - lo, 1.0)  # a degenerate axis: one cell holds everything
    cell = np.clip(np.floor((points - lo) / width * bins), 0, bins - 1).astype(np.int64)
    counts = np.bincount(cell[:, 0] * bins + cell[:, 1], minlength=bins * bins).astype(np.float64)
    p = counts / max(len(points), 1) + smoothing
    return p / p.sum()


Projection = tuple[np.ndarray, np.ndarray]  # real_projection's (mean, axes)


def embedding_jsd(real_features: np.ndarray, synthetic_features: np.ndarray, bins: int = 20,
                  smoothing: float = SMOOTHING, projection: Projection | None = None) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between real and synthetic features on the real data's 2-D
    PCA grid (PROJECTION: real_projection of these real features, when already fitted); nan when either set has
    too few rows."""
    real = np.asarray(real_features, dtype=np.float64)
    syn = np.asarray(synthetic_features, dtype=np.float64)
    if len(real) < 2 or len(syn) < 1:
        return float("nan")
    assert real.shape[1] == syn.shape[1], f"feature widths differ: real {real.shape[1]}, synthetic {syn.shape[1]}"
    mean, axes = projection if projection is not None else real_projection(real)
    r2, s2 = (real - mean) @ axes, (syn - mean) @ axes
    lo, hi = np.percentile(r2, PERCENTILES, axis=0)
    p = grid_histogram(r2, lo, hi, bins, smoothing)
    q = grid_histogram(s2, lo, hi, bins, smoothing)
    return float(jensenshannon(p, q, base=2))


def embedding_jsd_rows(real: tuple[np.ndarray, np.ndarray], synthetic: tuple[np.ndarray, np.ndarray],
                       class_names: tuple[str, ...] = CLASSES, bins: int = 20,
                       class_bins: int = 10, projection: Projection | None = None) -> dict[str, float]:
    """`gen_embedding_jsd` over all images and `gen_embedding_jsd_<class>` per class, from (features, labels) pairs.

    A class gets its own projection and grid, fitted on that class's real features (within-class variation is
    what a class-conditional generator should reproduce) and `class_bins` per axis, as classes have few images;
    nan where a side has too few images of the class. PROJECTION: the overall one, when already fitted.
    """
    (real_f, real_y), (syn_f, syn_y) = real, synthetic
    out = {"gen_embedding_jsd": embedding_jsd(real_f, syn_f, bins, projection=projection)}
    for c, name in enumerate(class_names):
        out[f"gen_embedding_jsd_{name}"] = embedding_jsd(real_f[real_y == c], syn_f[syn_y == c], class_bins)
    return out


def embedding_sample(real: tuple[np.ndarray, np.ndarray], synthetic: tuple[np.ndarray, np.ndarray],
                     per_class: int = 100, seed: int = 0,
                     projection: Projection | None = None) -> dict[str, np.ndarray]:
    """Points to draw: up to PER_CLASS images of each class from each source, projected on the overall figure's
    ruler (the 2-D PCA of all real features), so a plot of them shows what gen_embedding_jsd measured.

    Returns equal-length columns: source (0 real, 1 synthetic), label (class index), x, y."""
    (real_f, real_y), (syn_f, syn_y) = real, synthetic
    real_f, syn_f = np.asarray(real_f, dtype=np.float64), np.asarray(syn_f, dtype=np.float64)
    mean, axes = projection if projection is not None else real_projection(real_f)
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"source": [], "label": [], "x": [], "y": []}
    for source, (f, y) in enumerate(((real_f, np.asarray(real_y)), (syn_f, np.asarray(syn_y)))):
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            idx = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
            xy = (f[idx] - mean) @ axes
            columns["source"].append(np.full(len(idx), source))
            columns["label"].append(np.full(len(idx), int(c)))
            columns["x"].append(xy[:, 0])
            columns["y"].append(xy[:, 1])
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in columns.items()}
