"""FaceSet: one in-memory data set of uint8 faces with labels, a split per image and a content fingerprint.

Images are gray N x H x W, or colour N x H x W x 3 (RGB, channel last) when read with data.channels 3: the layout
of fercore.images, which converts them to the N x C x H x W tensors networks see."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fercore.images import channels_of
from fercore.labels import CLASSES

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_INDEX = {name: i for i, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class FaceSet:
    images: np.ndarray  # uint8, N x H x W (gray) or N x H x W x 3 (colour)
    labels: np.ndarray  # int64, N, canonical class ids 0-6
    splits: np.ndarray  # uint8, N, index into SPLITS
    source: str  # what it was read from, for messages and result rows
    fingerprint: str  # content hash of images, labels and splits
    class_names: tuple[str, ...] = CLASSES

    def __post_init__(self):
        n = len(self.images)
        colour = self.images.ndim == 4 and self.images.shape[3] == 3
        if self.images.dtype != np.uint8 or not (self.images.ndim == 3 or colour):
            raise ValueError(f"{self.source}: images must be uint8 N x H x W (gray) or N x H x W x 3 (colour), "
                             f"got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n,) or self.splits.shape != (n,):
            raise ValueError(f"{self.source}: labels and splits must have one entry per image ({n})")

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

    def counts(self) -> dict[str, list[int]]:
        """Image count per class for each split: {"train": [n_angry, ...], ...}."""
        out = {}
        for name, idx in SPLIT_INDEX.items():
            labels = self.labels[self.splits == idx]
            out[name] = np.bincount(labels, minlength=len(self.class_names)).tolist()
        return out


def fingerprint_arrays(images: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> str:
    """Content hash of a data set: equal arrays give equal fingerprints, whatever file they came from."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (images, labels.astype(np.int64), splits.astype(np.uint8)):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def make_faceset(images: np.ndarray, labels: np.ndarray, splits: np.ndarray, source: str) -> FaceSet:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    splits = np.asarray(splits, dtype=np.uint8)
    return FaceSet(images, labels, splits, source, fingerprint_arrays(images, labels, splits))
