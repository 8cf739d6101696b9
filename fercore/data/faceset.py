"""FaceSet: one in-memory data set of uint8 faces with labels, a split per image and a content fingerprint.

Images are gray N x H x W, or colour N x H x W x 3 (RGB, channel last) when read with data.channels 3: the layout
of fercore.images, which converts them to the N x C x H x W tensors networks see."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from fercore.images import channels_of
from fercore.labels import CLASSES

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_INDEX = {name: i for i, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class FaceSet:
    images: np.ndarray  # uint8, N x H x W (gray) or N x H x W x 3 (colour)
    labels: np.ndarray  # int64, N, class ids: indices into class_names
    splits: np.ndarray  # uint8, N, index into SPLITS
    source: str  # what it was read from, for messages and result rows
    fingerprint: str  # content hash of images, labels, splits and class names
    class_names: tuple[str, ...] = CLASSES
    # Subjects (data.group): int64 subject id per image, indexing group_names; None when not known.
    groups: np.ndarray | None = None
    group_names: tuple[str, ...] = ()
    # k-fold (data.folds): uint8 N x K, column i the split of each image when fold i is the test split (splits is
    # then fold 0's); None without folds. for_fold(i) gives the data set of one fold.
    folds: np.ndarray | None = None
    fold: int | None = None  # the fold this data set is (for_fold's result), else None
    # Each image's id in the data set as loaded (int64, N): its position there, kept by every fold and by without(),
    # so predictions of any fold or trial name the same face by the same id. None: the positions themselves.
    ids: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.images)
        colour = self.images.ndim == 4 and self.images.shape[3] == 3
        if self.images.dtype != np.uint8 or not (self.images.ndim == 3 or colour):
            raise ValueError(f"{self.source}: images must be uint8 N x H x W (gray) or N x H x W x 3 (colour), "
                             f"got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n,) or self.splits.shape != (n,):
            raise ValueError(f"{self.source}: labels and splits must have one entry per image ({n})")
        if self.groups is not None and self.groups.shape != (n,):
            raise ValueError(f"{self.source}: groups must have one entry per image ({n})")
        if self.folds is not None and (self.folds.ndim != 2 or len(self.folds) != n):
            raise ValueError(f"{self.source}: folds must be N x K, one row per image ({n})")
        if self.ids is not None and self.ids.shape != (n,):
            raise ValueError(f"{self.source}: ids must have one entry per image ({n})")

    @property
    def face_ids(self) -> np.ndarray:
        """Each image's data-set-wide id (see ids)."""
        return np.arange(len(self.images), dtype=np.int64) if self.ids is None else self.ids

    @property
    def n_folds(self) -> int:
        """K of k-fold, 0 without folds."""
        return 0 if self.folds is None else int(self.folds.shape[1])

    def for_fold(self, i: int) -> "FaceSet":
        """The data set of fold i: fold i is the test split, the other folds train and validation (carved when the
        folds were made). Its fingerprint differs per fold, so no two folds share a cache entry."""
        if self.folds is None:
            raise ValueError(f"{self.source}: has no folds (data.folds is 0)")
        if not 0 <= i < self.n_folds:
            raise ValueError(f"{self.source}: fold {i} is out of range 0..{self.n_folds - 1}")
        splits = np.ascontiguousarray(self.folds[:, i])
        # The whole set's fingerprint already covers the images, labels, classes, subjects and the fold table, so it
        # and the fold's number decide this fold: no second hash of every image for each trial that selects a fold.
        fold = hashlib.blake2b(f"{self.fingerprint}|fold {i} of {self.n_folds}".encode(), digest_size=16)
        return replace(self, splits=splits, folds=None, fold=i, fingerprint=fold.hexdigest())

    def without(self, drop: np.ndarray, why: str) -> "FaceSet":
        """This data set less the images DROP (bool per image) marks, for the reason WHY (part of the fingerprint,
        so cache entries of the two never mix; the whole set's fingerprint and the mask decide the result)."""
        keep = ~np.asarray(drop, dtype=bool)
        h = hashlib.blake2b(f"{self.fingerprint}|without|{why}|".encode(), digest_size=16)
        h.update(np.packbits(keep).tobytes())
        pick = lambda arr: None if arr is None else np.ascontiguousarray(arr[keep])  # noqa: E731
        return replace(self, images=pick(self.images), labels=pick(self.labels), splits=pick(self.splits),
                       groups=pick(self.groups), folds=pick(self.folds), ids=pick(self.face_ids),
                       fingerprint=h.hexdigest())

    def subjects(self) -> dict[str, int] | None:
        """Distinct subjects per split ({"train": n, ...}), or None when subjects are not known."""
        if self.groups is None:
            return None
        return {name: int(len(np.unique(self.groups[self.splits == i]))) for name, i in SPLIT_INDEX.items()}

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        """1 for gray images, 3 for colour."""
        return channels_of(self.images)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one split ("train", "val" or "test")."""
        mask = self.splits == SPLIT_INDEX[name]
        return self.images[mask], self.labels[mask]

    def split_ids(self, name: str) -> np.ndarray:
        """The data-set-wide ids (face_ids) of one split's images, in split()'s order."""
        return self.face_ids[self.splits == SPLIT_INDEX[name]]

    def counts(self) -> dict[str, list[int]]:
        """Image count per class for each split: {"train": [n_angry, ...], ...}."""
        out = {}
        for name, idx in SPLIT_INDEX.items():
            labels = self.labels[self.splits == idx]
            out[name] = np.bincount(labels, minlength=len(self.class_names)).tolist()
        return out


def fingerprint_arrays(images: np.ndarray, labels: np.ndarray, splits: np.ndarray, groups: np.ndarray | None = None,
                       folds: np.ndarray | None = None, class_names: tuple[str, ...] = CLASSES) -> str:
    """Content hash of a data set: equal arrays and class names give equal fingerprints, whatever file they came
    from. Subjects and folds count when present, and the class names (label 6 means neutral in one data set and
    contempt in another); FER2013's seven and no subjects or folds hash as nothing, so data sets (and the
    generators, pools and baselines cached under their fingerprint) from before keep their keys. A fold's own
    fingerprint is FaceSet.for_fold's."""
    h = hashlib.blake2b(digest_size=16)
    if tuple(class_names) != CLASSES:
        h.update(("classes:" + ",".join(class_names) + "\n").encode())
    for arr in (images, labels.astype(np.int64), splits.astype(np.uint8)):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).data)
    for name, arr in (("groups", groups), ("folds", folds)):
        if arr is not None:
            h.update(f"{name}{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def make_faceset(images: np.ndarray, labels: np.ndarray, splits: np.ndarray, source: str,
                 class_names: tuple[str, ...] = CLASSES, *, groups: np.ndarray | None = None,
                 group_names: tuple[str, ...] = (), folds: np.ndarray | None = None) -> FaceSet:
    """A FaceSet with its fingerprint. With FOLDS (N x K), SPLITS is taken from fold 0 when not the same already."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if folds is not None:
        folds = np.ascontiguousarray(folds, dtype=np.uint8)
        splits = folds[:, 0]
    splits = np.ascontiguousarray(splits, dtype=np.uint8)
    if groups is not None:
        groups = np.ascontiguousarray(groups, dtype=np.int64)
    class_names = tuple(class_names)
    return FaceSet(images, labels, splits, source,
                   fingerprint_arrays(images, labels, splits, groups, folds, class_names=class_names),
                   class_names, groups=groups, group_names=tuple(group_names), folds=folds)
