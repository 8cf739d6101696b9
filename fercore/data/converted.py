"""Data sets converted once from their files (CSV, image trees) and kept on disk as arrays (not to be confused with
fercore.cache, which keeps what trials train), keyed by the source's identity; written atomically so a failed or
interrupted conversion leaves nothing behind."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from fercore.atomic import atomic_write
from fercore.data.faceset import FaceSet

# Bump when a reader's output for the same file changes, so old cache entries are not reused.
CACHE_FORMAT = 2  # 2: subjects (data.group) and folds (data.folds) are stored


def default_cache_dir() -> Path:
    return Path(os.environ.get("FERCORE_CACHE", Path.home() / ".cache" / "fercore")) / "data"


def cache_key(**identity) -> str:
    """A short key from a JSON-able description of the source (path, size, mtime, reader options)."""
    blob = json.dumps({"format": CACHE_FORMAT, **identity}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def load_or_build(key: str, build: Callable[[], FaceSet], cache_dir: Path | None = None) -> FaceSet:
    """Return the cached FaceSet for `key`, or build it, store it atomically and return it."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{key}.npz"
    if path.exists():
        try:
            return _read(path)
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # A damaged entry is rebuilt, never trusted.
    faceset = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, faceset)
    return faceset


def _read(path: Path) -> FaceSet:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return FaceSet(
            images=z["images"], labels=z["labels"], splits=z["splits"],
            source=meta["source"], fingerprint=meta["fingerprint"], class_names=tuple(meta["class_names"]),
            groups=z["groups"] if "groups" in z.files else None, group_names=tuple(meta.get("group_names", ())),
            folds=z["folds"] if "folds" in z.files else None,
        )


def _write_atomic(path: Path, faceset: FaceSet) -> None:
    meta = json.dumps({"source": faceset.source, "fingerprint": faceset.fingerprint,
                       "class_names": list(faceset.class_names), "group_names": list(faceset.group_names)})
    # Subjects and folds only when the data set has them.
    extra = {name: arr for name, arr in (("groups", faceset.groups), ("folds", faceset.folds)) if arr is not None}
    # Uncompressed, so a warm load is a plain read of ~80 MB at FER2013 size.
    atomic_write(path, lambda f: np.savez(f, images=faceset.images, labels=faceset.labels, splits=faceset.splits,
                                          meta=np.array(meta), **extra))
