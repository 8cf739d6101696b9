"""Seeded, stratified hold-out splits, for readers whose layout lacks a validation (or test) split."""
from __future__ import annotations

import numpy as np


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A bool mask over `labels`, True for the images held out: round(fraction * n) of each class's n images.

    A class with at least 2 images gives at least 1 and keeps at least 1; a class with a single image keeps it.
    The same labels, fraction and seed always give the same mask, whatever else is in the data set.
    """
    labels = np.asarray(labels)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in [0, 1), got {fraction}")
    mask = np.zeros(len(labels), dtype=bool)
    if fraction == 0.0:
        return mask
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n = len(members)
        if n < 2:
            continue
        k = min(max(1, int(round(fraction * n))), n - 1)
        # One generator per class, keyed by the class: adding or removing images of one class leaves the
        # draw of every other class unchanged.
        rng = np.random.default_rng([int(seed) % 2**63, int(cls)])
        mask[rng.choice(members, size=k, replace=False)] = True
    return mask
