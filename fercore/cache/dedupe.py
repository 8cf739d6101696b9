"""data.dedupe: a data set's own cross-split near-copies handled before anything trains. FER2013's splits share
faces (the same photograph flipped, cropped, rotated or re-toned: 1297 training faces nearly copy a test face, 1296
a validation face, 164 validation faces a test face), and a classifier that saw a test face's copy in training is
judged partly on memory. `drop` removes every training face that nearly copies a validation or test face and every
validation face that copies a test face; the test split is never touched, so figures with and without dedupe are on
the same test faces. The copies are the copy audit's (fercore.cache.split_copies: found once per data set, kept in
the store)."""
from __future__ import annotations

import numpy as np

from fercore.cache.split_copies import split_copies
from fercore.cache.store import CacheStore
from fercore.data.faceset import SPLIT_INDEX, FaceSet

CHOICES = ("none", "drop")


def dedupe(data: FaceSet, how: str, store: CacheStore | None = None) -> tuple[FaceSet, dict[str, int]]:
    """DATA with its cross-split near-copies dropped (HOW 'drop') or kept ('none'), and the faces removed per split:
    {"dedupe_removed_train": n, "dedupe_removed_val": m}, the keys a trial's row carries (0 with 'none')."""
    if how not in CHOICES:
        raise ValueError(f"data.dedupe: expected one of {', '.join(CHOICES)}, got {how!r}")
    if how == "none":
        return data, {"dedupe_removed_train": 0, "dedupe_removed_val": 0}
    found = split_copies(data, store)
    train = found["train_test"] | found["train_val"]
    drop = np.zeros(len(data.images), bool)
    drop[data.splits == SPLIT_INDEX["train"]] = train
    drop[data.splits == SPLIT_INDEX["val"]] = found["val_test"]
    removed = {"dedupe_removed_train": int(train.sum()), "dedupe_removed_val": int(found["val_test"].sum())}
    return (data.without(drop, "dedupe drop") if drop.any() else data), removed
