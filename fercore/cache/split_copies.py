"""Near-copies between a data set's own splits, found once per data set: for each training image whether it nearly
copies a test (validation) image, for each validation image whether it copies a test image, under the copy audit's
alterations (fercore.metrics.copies). Kept in the cache store beside the split hashes and in a per-process memo, so
a trial counts its kept real images' copies (leak_real_*) by lookup, `fersweep data info` warns and data.dedupe
drops them, without auditing every training face again: on FER2013 that audit was ~45 s of every trial."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fercore.cache.split_hashes import split_digest, split_hashes_key, split_index, store_for
from fercore.cache.store import CacheStore, content_key
from fercore.metrics import copies

# Bump when what counts as a copy changes without the split hashes' key changing (v2: the geometric refinement no
# longer fails on a flat image, where v1 raised).
KIND = "split-copies-v2"
_MEMO: dict[str, dict[str, np.ndarray]] = {}


def split_copies(data, store: CacheStore | None = None) -> dict[str, np.ndarray]:
    """{"train_test": bool per training image (in data.split("train") order): it nearly copies a test image,
    "train_val": ... a validation image, "val_test": bool per validation image: it copies a test image}. From this
    process's memo, else the store (computed and saved there on a miss); an empty split copies nothing."""
    store = store_for(store)
    digests = {split: split_digest(data, split) for split in ("train", "val")}
    parts = {"threshold": copies.COPY_THRESHOLD,
             **{f"{cand}_{ref}": [digests[cand], split_hashes_key(data, ref)[0]] for cand, ref in copies.SPLIT_PAIRS}}
    key = content_key(KIND, parts)
    if key in _MEMO:
        return _MEMO[key]

    def build(folder: Path) -> None:
        np.savez(folder / "copies.npz", **_find(data, store))

    folder, _ = store.get_or_create(key, build, parts)
    with np.load(folder / "copies.npz") as arrays:
        found = {name: arrays[name].astype(bool) for name in arrays.files}
    _MEMO[key] = found
    return found


def _find(data, store: CacheStore) -> dict[str, np.ndarray]:
    indexes = {ref: split_index(data, ref, store) for ref in ("test", "val") if len(data.split(ref)[0])}
    return copies.split_copy_flags(data, indexes)


def counts(found: dict[str, np.ndarray]) -> dict[str, int]:
    """{"train_test": images of train that copy a test image, ...}: fercore.metrics.copies.split_leakage's figures."""
    return {pair: int(flags.sum()) for pair, flags in found.items()}


def forget() -> None:
    """Empty this process's memo (tests: make the next call read the store)."""
    _MEMO.clear()
