"""A data set's splits hashed once for the copy audit (fercore.metrics.copies.CopyIndex): every window, mirror and
tone of every image of a split, and its gray images (which the audit's geometric stage aligns), kept in the cache
store under the data fingerprint and in a per-process memo, so trials of one data set do not hash the test and
validation splits again (~12 ms an image on one busy core of two: 43 s for FER2013's 3589 test images)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fercore.cache.store import CacheStore, content_key
from fercore.metrics import copies

KIND = "split-hashes-v2"  # bump when copies.build_index's output changes for the same images (v2: the images too)
_MEMO: dict[str, copies.CopyIndex] = {}


def split_hashes_key(data, split: str) -> tuple[str, dict]:
    parts = {"data": data.fingerprint, "split": split, "shift": copies.SHIFT, "thumb": copies.THUMB,
             "thumb_offsets": list(copies.THUMB_OFFSETS), "tones": len(copies.TONES)}
    return content_key(KIND, parts), parts


def split_index(data, split: str, store: CacheStore | None = None) -> copies.CopyIndex:
    """The CopyIndex of one split ("train", "val" or "test") of a FaceSet: from this process's memo, else the store
    (built and saved there on a miss), else built (no store)."""
    key, parts = split_hashes_key(data, split)
    if key in _MEMO:
        return _MEMO[key]
    if store is None:
        index = copies.build_index(data.split(split)[0])
    else:
        def build(folder: Path) -> None:
            np.savez(folder / "index.npz", **copies.build_index(data.split(split)[0]).arrays())

        folder, _ = store.get_or_create(key, build, parts)
        with np.load(folder / "index.npz") as arrays:
            index = copies.CopyIndex.from_arrays(arrays)
    _MEMO[key] = index
    return index


def split_indexes(data, store: CacheStore | None = None, splits=("test", "val")) -> dict[str, copies.CopyIndex]:
    """CopyIndex per split name, for copies.copy_rows and copies.split_leakage."""
    return {s: split_index(data, s, store) for s in splits}


def forget() -> None:
    """Empty this process's memo (tests: make the next call read the store)."""
    _MEMO.clear()
