"""Improved precision and recall of a generative model (Kynkaanniemi et al. 2019) in any feature space.

Each set's manifold is the union of balls around its points, each ball reaching the point's K-th nearest neighbour
in its own set (K = 3, the paper's choice). Precision: the share of synthetic points inside the real manifold (are
the images realistic?). Recall: the share of real points inside the synthetic manifold (does the generator cover
what is real?). A generator that makes few good faces has high precision and low recall; one that makes many poor
faces the reverse - FID alone mixes the two.
"""
from __future__ import annotations

import numpy as np

NEIGHBOURS = 3


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0)


def _radii(points: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each point to its K-th nearest neighbour in POINTS (itself not counted)."""
    d = _squared_distances(points, points)
    return np.partition(d, k, axis=1)[:, k]  # column 0 of the sorted row is the point itself (distance 0)


def _coverage(manifold: np.ndarray, radii: np.ndarray, probes: np.ndarray) -> float:
    """The share of PROBES inside at least one ball of MANIFOLD (squared RADII)."""
    inside = _squared_distances(probes, manifold) <= radii[None, :]
    return float(inside.any(1).mean())


def precision_recall(real: np.ndarray, synthetic: np.ndarray, k: int = NEIGHBOURS) -> tuple[float, float]:
    """(precision, recall) of SYNTHETIC against REAL feature rows; NaN for both when either set has K points or
    fewer (no K-th neighbour to set a radius)."""
    real, synthetic = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    if len(real) <= k or len(synthetic) <= k:
        return float("nan"), float("nan")
    precision = _coverage(real, _radii(real, k), synthetic)
    recall = _coverage(synthetic, _radii(synthetic, k), real)
    return precision, recall
