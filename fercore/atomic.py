"""Write a file so that readers see the old content or the new, never half of it: a temporary file, then rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def fsync_file(path: str | Path) -> None:
    """Make PATH's data durable (a file; or a folder's entries, where the file system allows)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in folder PATH durable (its entry is on disk, not only the file's data)."""
    try:
        fsync_file(path)
    except OSError:
        pass  # a file system that cannot sync a folder (some network mounts): the rename is as durable as it gets


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(f) on a temporary file beside PATH, then rename it over PATH; on any failure PATH is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
