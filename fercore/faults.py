"""Named points where a test kills this process or makes a write fail, to prove durability with real processes
rather than mocks.

`FERCORE_KILL_AT=NAME` (a name in POINTS) makes the process SIGKILL itself the first time it reaches point NAME; with
`FERCORE_KILL_AT=NAME@N`, the N-th time. `FERCORE_FAIL_AT=NAME@N` (a name in FAILURES) makes the N-th write there and
every later one fail with the OSError a full disk or an unwritable store gives. Nothing happens when the variables
are unset, which is always, outside tests.
"""
from __future__ import annotations

import errno
import os
import signal

POINTS = {
    "flush-between-tables": "a flush has written the new parts of some tables, not all, and committed nothing",
    "flush-before-commit": "a flush has written every table's new parts, and not the manifest that names them",
    "flush-after-commit": "a flush has committed its manifest, and not removed the parts it no longer names",
    "compact-before-commit": "the end-of-sweep merge has written the merged parts, and not committed them",
    "compact-after-commit": "the end-of-sweep merge has committed, and not removed the merged parts' inputs",
    "upload-midway": "an upload to a URI has sent some of the changed files, not all",
    "upload-after-commit": "an upload to a URI has sent a new manifest: the trials it commits are in the store",
}
FAILURES = {
    "write-part": (errno.ENOSPC, "No space left on device"),  # a results part written to a full disk
    "upload": (errno.EACCES, "Permission denied"),  # a file uploaded to a store that stopped taking writes
}
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Die here if FERCORE_KILL_AT names this point (and this is the time it asks for)."""
    reached = _reached("FERCORE_KILL_AT", name, POINTS)
    if reached is not None and reached[0] == reached[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def fail(name: str) -> None:
    """Raise the OSError of FAILURES[NAME] if FERCORE_FAIL_AT names this point and its count has been reached."""
    reached = _reached("FERCORE_FAIL_AT", name, FAILURES)
    if reached is not None and reached[0] >= reached[1]:
        code, message = FAILURES[name]
        raise OSError(code, f"{message} (FERCORE_FAIL_AT={os.environ['FERCORE_FAIL_AT']})")


def _reached(variable: str, name: str, known: dict) -> tuple[int, int] | None:
    """(how many times point NAME has been reached, counting this one; the N of VARIABLE=NAME@N) when VARIABLE
    names this point, else None."""
    wanted = os.environ.get(variable)
    if not wanted:
        return None
    assert name in known, name
    where, _, nth = wanted.partition("@")
    if where != name:
        return None
    key = f"{variable}:{name}"
    _seen[key] = _seen.get(key, 0) + 1
    return _seen[key], int(nth or 1)
