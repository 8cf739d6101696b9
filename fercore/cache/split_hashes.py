"""A data set's splits hashed once for the copy audit (fercore.metrics.copies.CopyIndex): every window, mirror and
tone of every image of a split, and its gray images (which the audit's geometric stage aligns), kept in the cache
store under the split's content and in a per-process memo, so trials of one data set do not hash the test and
validation splits again (~12 ms an image on one busy core of two: 43 s for FER2013's 3589 test images). Keyed by the
split's images, not the data set's fingerprint: a data set that differs elsewhere (data.dedupe's, which drops
training faces) shares its test split's hashes. Without a store, or with a disabled one (`fersweep trial` without
--storage), they are kept in the data-level store beside converted data sets (data_store), so they are still paid
once per data set, not once per trial."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fercore.cache.store import CacheStore, content_key
from fercore.metrics import copies

# Bump when copies.build_index's output changes for the same images. v3: keyed by the split's images, and the index
# keeps the gray images too (the audit's geometric stage aligns them).
KIND = "split-hashes-v3"
_MEMO: dict[str, copies.CopyIndex] = {}
_DIGESTS: dict[tuple[str, str], str] = {}  # (data fingerprint, split) -> split_digest: hashed once per process


def data_store() -> CacheStore:
    """The store of what belongs to a data set rather than a sweep: beside the converted data sets."""
    from fercore.data.converted import default_cache_dir

    return CacheStore(default_cache_dir().parent / "split-hashes")


def store_for(store: CacheStore | None) -> CacheStore:
    """STORE when it keeps entries, else the data-level store."""
    return store if store is not None and store.enabled else data_store()


def split_digest(data, split: str) -> str:
    """A content hash of one split's images (what a copy is judged on), the same in every data set holding them."""
    known = _DIGESTS.get((data.fingerprint, split))
    if known is None:
        images = data.split(split)[0]
        digest = hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16).hexdigest()
        known = _DIGESTS[(data.fingerprint, split)] = f"{digest}|{'x'.join(map(str, images.shape))}"
    return known


def split_hashes_key(data, split: str) -> tuple[str, dict]:
    parts = {"images": split_digest(data, split), "shift": copies.SHIFT, "thumb": copies.THUMB,
             "thumb_offsets": list(copies.THUMB_OFFSETS), "tones": len(copies.TONES)}
    return content_key(KIND, parts), parts


def split_index(data, split: str, store: CacheStore | None = None) -> copies.CopyIndex:
    """The CopyIndex of one split ("train", "val" or "test") of a FaceSet: from this process's memo, else STORE (or
    the data-level store, see store_for), built and saved there on a miss."""
    key, parts = split_hashes_key(data, split)
    if key in _MEMO:
        return _MEMO[key]

    def build(folder: Path) -> None:
        np.savez(folder / "index.npz", **copies.build_index(data.split(split)[0]).arrays())

    folder, _ = store_for(store).get_or_create(key, build, parts)
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
    _DIGESTS.clear()
