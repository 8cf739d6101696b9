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


def group_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A bool mask over `labels`, True for the images held out, holding out whole subjects (GROUPS: one id per
    image): all of a subject's images go together, and subjects are picked so that each class gets roughly
    `fraction` of its images, as far as the subjects allow.

    Subjects are visited in a seeded order, the larger first; a subject is held out when that brings the held-out
    counts per class closer to their targets and leaves every class at least one kept image. When none was picked
    (every subject is larger than the shares), the smallest subject that keeps every class is held out, so a split
    asked for is never empty while two subjects or more exist. The same labels, groups, fraction and seed always
    give the same mask.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in [0, 1), got {fraction}")
    mask = np.zeros(len(labels), dtype=bool)
    if fraction == 0.0 or len(labels) == 0:
        return mask
    classes, label_ids = np.unique(labels, return_inverse=True)
    subjects, subject_ids = np.unique(groups, return_inverse=True)
    if len(subjects) < 2:
        return mask
    # counts[s, c]: images of class c that subject s has.
    counts = np.zeros((len(subjects), len(classes)), dtype=np.int64)
    np.add.at(counts, (subject_ids.reshape(-1), label_ids.reshape(-1)), 1)
    total = counts.sum(axis=0)
    target = fraction * total
    rng = np.random.default_rng([int(seed) % 2**63, 0x9E0])
    order = rng.permutation(len(subjects))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    held = np.zeros(len(classes), dtype=np.int64)
    chosen = np.zeros(len(subjects), dtype=bool)
    for s in order:
        after = held + counts[s]
        if ((total - after)[total > 0] < 1).any():
            continue  # would take a class's last kept image
        if ((after - target) ** 2).sum() < ((held - target) ** 2).sum():
            held, chosen[s] = after, True
    if not chosen.any():
        for s in np.argsort(counts.sum(axis=1), kind="stable"):
            if not ((total - counts[s])[total > 0] < 1).any():
                chosen[s] = True
                break
    return chosen[subject_ids.reshape(-1)]


def holdout(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """group_holdout when subjects are known, else stratified_holdout (today's split, unchanged). With subjects, a
    ValueError when no subject can be held out (the split would be empty)."""
    if groups is None:
        return stratified_holdout(labels, fraction, seed)
    mask = group_holdout(labels, groups, fraction, seed)
    if fraction > 0 and len(labels) and not mask.any():
        # An empty split asked for would fail later, in training, far from its cause.
        raise ValueError(f"no subject of {len(np.unique(groups))} can be held out without taking every remaining "
                         "image of a class (each subject holds all of some class, or there is only one subject)")
    return mask


def fold_assignment(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of every image: stratified by class, and subject-aware when GROUPS is given (every
    subject in one fold; scikit-learn's StratifiedGroupKFold, else StratifiedKFold, shuffled with `seed`).
    A ValueError says why the images cannot make that many folds."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {folds}")
    if groups is not None and len(np.unique(groups)) < folds:
        raise ValueError(f"{folds} folds need at least {folds} subjects; the data set has {len(np.unique(groups))}")
    if groups is None and len(labels) < folds:
        raise ValueError(f"{folds} folds need at least {folds} images; the data set has {len(labels)}")
    seed = int(seed) % 2**32
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    assignment = np.full(len(labels), -1, dtype=np.int64)
    import warnings

    with warnings.catch_warnings():
        # "The least populated class has only n members": a small class then misses some folds; that is allowed.
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            assignment[test] = i
    return assignment


def fold_splits(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int,
                val_fraction: float) -> np.ndarray:
    """uint8 N x folds: column i is every image's split (0 train, 1 val, 2 test; fercore.data.faceset.SPLITS) when
    fold i is tested on: fold i is the test split, and the validation split is carved from the other folds with
    `holdout` (whole subjects when GROUPS is given), val_fraction of each class, drawn with `seed`."""
    assignment = fold_assignment(labels, groups, folds, seed)
    out = np.zeros((len(labels), folds), dtype=np.uint8)
    for i in range(folds):
        column = out[:, i]
        column[assignment == i] = 2
        rest = np.flatnonzero(assignment != i)
        held = holdout(labels[rest], None if groups is None else groups[rest], val_fraction, seed)
        column[rest[held]] = 1
    return out
