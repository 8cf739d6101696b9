"""FaceSet: one in-memory data set of uint8 grayscale faces with labels, a split per image and a content fingerprint."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fercore.labels import CLASSES

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_INDEX = {name: i for i, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class FaceSet:
    images: np.ndarray  # uint8, N x H x W
    labels: np.ndarray  # int64, N, class ids: indices into class_names
    splits: np.ndarray  # uint8, N, index into SPLITS
    source: str  # what it was read from, for messages and result rows
    fingerprint: str  # content hash of images, labels, splits and class names
    class_names: tuple[str, ...] = CLASSES

    def __post_init__(self):
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(f"{self.source}: images must be uint8 N x H x W, got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n,) or self.splits.shape != (n,):
            raise ValueError(f"{self.source}: labels and splits must have one entry per image ({n})")

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one split ("train", "val" or "test")."""
        mask = self.splits == SPLIT_INDEX[name]
        return self.images[mask], self.labels[mask]

    def counts(self) -> dict[str, list[int]]:
        """Image count per class for each split: {"train": [n_angry, ...], ...}."""
        out = {}
        for name, idx in SPLIT_INDEX.items():
            labels = self.labels[self.splits == idx]
            out[name] = np.bincount(labels, minlength=len(self.class_names)).tolist()
        return out


def fingerprint_arrays(images: np.ndarray, labels: np.ndarray, splits: np.ndarray,
                       class_names: tuple[str, ...] = CLASSES) -> str:
    """Content hash of a data set: equal arrays and class names give equal fingerprints, whatever file they came
    from (the class names are part of it: label 6 means neutral in one data set and contempt in another). FER2013's
    seven are hashed as nothing, so data sets (and the generators, pools and baselines cached under their
    fingerprint) from before class sets existed keep their keys."""
    h = hashlib.blake2b(digest_size=16)
    if tuple(class_names) != CLASSES:
        h.update(("classes:" + ",".join(class_names) + "\n").encode())
    for arr in (images, labels.astype(np.int64), splits.astype(np.uint8)):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def make_faceset(images: np.ndarray, labels: np.ndarray, splits: np.ndarray, source: str,
                 class_names: tuple[str, ...] = CLASSES) -> FaceSet:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    splits = np.asarray(splits, dtype=np.uint8)
    class_names = tuple(class_names)
    return FaceSet(images, labels, splits, source, fingerprint_arrays(images, labels, splits, class_names),
                   class_names)
