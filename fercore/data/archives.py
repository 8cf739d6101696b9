"""A data set as the user has it: the Kaggle release's archive (.zip, .tar.gz, .tgz) read directly as data.source.
It is unpacked once into the converted-data cache, keyed by the archive's path, size and modification time, and read
from there by the folder (or RAF-DB) reader; the unpacked copy is never edited. Unpacking refuses members that would
land outside its folder (absolute paths, '..', links): an archive is not trusted to write where it likes."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from fercore.errors import DataError

SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SUFFIXES)


def unpacked(archive: Path, cache_dir: Path, key: str) -> Path:
    """The folder ARCHIVE was unpacked into under CACHE_DIR (done now, atomically, on the first call for KEY): the
    folder that holds its data set, the first one down a chain of single folders (fer2013.zip -> fer2013/)."""
    target = cache_dir / "archives" / key
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{key}-"))
        try:
            _extract(archive, tmp)
            os.replace(tmp, target)  # a concurrent unpacker that won leaves its copy; ours is removed below
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    root = target
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        root = entries[0]


def _extract(archive: Path, into: Path) -> None:
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    if Path(name).is_absolute() or ".." in Path(name).parts:
                        raise DataError(f"{archive}: member {name!r} would land outside the folder it is unpacked "
                                        "into; refused")
                z.extractall(into)
        else:
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")  # refuses absolute paths, '..' and links leaving the folder
    except tarfile.FilterError as e:
        raise DataError(f"{archive}: a member would land outside the folder it is unpacked into ({e}); "
                        "refused") from e
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{archive}: not a readable archive ({type(e).__name__}: {e}); expected the data set as "
                        ".zip, .tar.gz or .tgz") from e
