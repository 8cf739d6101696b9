"""Data sources: files (FER2013 CSV, class-per-folder trees, RAF-DB) or the built-in procedural faces -> one FaceSet.

`load(source, ...)` picks the reader from what SOURCE is and caches the converted result on disk.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fercore.data.converted import cache_key, load_or_build
from fercore.data.faceset import SPLITS, FaceSet, make_faceset
from fercore.data.options import DataOptions
from fercore.errors import DataError

__all__ = ["DataOptions", "FaceSet", "SPLITS", "load", "load_configured", "make_faceset", "describe_source"]

PROCEDURAL = "procedural"


def describe_source(source: str) -> str:
    """Which reader handles SOURCE: 'procedural', 'fer2013_csv', 'rafdb' or 'folders'."""
    if source == PROCEDURAL:
        return "procedural"
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such file or folder (expected 'procedural', a FER2013 .csv file or an image folder)")
    if path.is_file():
        from fercore.data.archives import is_archive

        if is_archive(path):
            return "archive"
        if path.suffix.lower() == ".csv":
            return "fer2013_csv"
        if path.name == "list_patition_label.txt":
            return "rafdb"
        raise DataError(f"{source}: unknown file type (expected a FER2013 .csv, RAF-DB list_patition_label.txt, or "
                        "an archive of a data set: .zip, .tar.gz, .tgz)")
    from fercore.data.rafdb import find_label_file

    return "rafdb" if find_label_file(path) is not None else "folders"


def load(source: str = PROCEDURAL, *, image_size: int = 48, scale: float = 0.1, seed: int = 0,
         val_fraction: float = 0.1, cache_dir: Path | None = None, use_cache: bool = True,
         options: DataOptions | None = None) -> FaceSet:
    """Read SOURCE into a FaceSet of uint8 image_size x image_size faces, using the on-disk cache when allowed.

    scale and seed shape the procedural set; seed and val_fraction shape the validation split carved from
    the training part where a layout has none. OPTIONS (fercore.data.options.DataOptions) carries every data.* key
    that shapes the reading; when given, its image_size, seed and val_fraction are the ones used.
    """
    options = options or DataOptions(image_size=image_size, seed=seed, val_fraction=val_fraction)
    kind = describe_source(source)
    if kind == "procedural":
        if options.group or options.folds:
            key = "data.group" if options.group else "data.folds"
            raise DataError(f"{key}: the procedural source has no files to name subjects from and fixed splits of its "
                            "own; data.group and data.folds need a folder tree, a CSV or RAF-DB")
        from fercore.data.procedural import draw_procedural

        identity = dict(kind=kind, scale=scale, **options.identity())
        build = lambda: draw_procedural(scale=scale, seed=options.seed, image_size=options.image_size,  # noqa: E731
                                        options=options)
    else:
        path = Path(source).resolve()
        stat = path.stat()
        identity = dict(kind=kind, path=str(path), size=stat.st_size, mtime=stat.st_mtime_ns, **options.identity())
        if path.is_dir():
            # A folder's identity is its listing: any added, removed or rewritten file changes the key.
            identity["listing"] = _listing_signature(path)
        elif kind == "archive":
            pass  # an archive's path, size and modification time are its identity: rewriting it changes them
        elif kind == "rafdb":
            # The images live around the label file, so a rewritten image must change the key as well.
            from fercore.data.rafdb import dataset_root

            identity["listing"] = _listing_signature(dataset_root(path))
        build = lambda: _read_files(kind, path, options, cache_dir)  # noqa: E731
    if not use_cache:
        return build()
    return load_or_build(cache_key(**identity), build, cache_dir)


def load_configured(data: Any, *, cache_dir: Path | None = None, use_cache: bool = True) -> FaceSet:
    """The data set a resolved config's data section (fercore.params.Section) describes."""
    return load(data.source, scale=data.scale, cache_dir=cache_dir, use_cache=use_cache,
                options=DataOptions.from_section(data))


def _read_files(kind: str, path: Path, options: DataOptions, cache_dir: Path | None = None) -> FaceSet:
    if kind == "archive":
        from dataclasses import replace

        from fercore.data.archives import unpacked
        from fercore.data.converted import default_cache_dir

        stat = path.stat()
        root = unpacked(path, Path(cache_dir) if cache_dir else default_cache_dir(),
                        cache_key(archive=str(path), size=stat.st_size, mtime=stat.st_mtime_ns))
        return replace(_read_files(describe_source(str(root)), root, options), source=str(path))
    if kind == "fer2013_csv":
        from fercore.data.fer2013 import read_fer2013_csv

        return read_fer2013_csv(path, image_size=options.image_size, options=options)
    if kind == "rafdb":
        from fercore.data.rafdb import read_rafdb

        return read_rafdb(path, image_size=options.image_size, seed=options.seed, val_fraction=options.val_fraction,
                          options=options)
    from fercore.data.folders import read_image_folders

    return read_image_folders(path, image_size=options.image_size, seed=options.seed,
                              val_fraction=options.val_fraction, options=options)


def _listing_signature(root: Path) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
