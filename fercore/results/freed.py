"""Giving freed memory back to the operating system after a commit. A commit reads and writes a few hundred MB at a
time (the staged trials' predictions, the parts a merge streams); the allocators keep what was freed for reuse, so a
driver that lives for days would keep its largest commit's worth resident, and a little more after each larger one.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa


def give_back() -> None:
    """Return the free memory of Arrow's pool and of the C library's heap (glibc's malloc_trim; elsewhere nothing)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator gives memory back by itself
        return None
