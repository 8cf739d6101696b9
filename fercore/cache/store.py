"""A content-addressed store of expensive, reusable results: trained generators with their synthetic pools, the
reference classifier, real-only baselines.

An entry is the folder `<root>/<key>/`, where the key is a hash of everything that determines its content (config
values, data fingerprint, split definition, seed, a kind/version string), so trials that need the same thing share one
copy and a change to any input gives a new key. The root is given by the caller, usually `<storage>/cache`, so a
sweep's entries live beside its results.

Several processes (Ray trials) may ask for the same missing entry at once: exactly one builds it under an exclusive
`fcntl.flock` on `<root>/<key>.lock` while the others wait, then reuse it. The OS drops the lock when its holder dies,
even by SIGKILL, so a waiter takes over. A build writes into a temporary folder that is renamed into place only when
complete, so a crashed or failed build never leaves a folder that looks like an entry.

An entry is verified before it is used: meta.json holds the size and sha256 of every file the build wrote, and an
entry whose files do not match (truncated on a full or shared disk, a copy that went wrong, an entry from before
checksums) is moved aside to `.bad-<key>-...`, counted as a `corrupt` event and built again: a miss, not a crash of
every trial that shares it. Verification is remembered per process for an unchanged entry (same files, sizes and
modification times), so a trial that looks an entry up again does not hash it again.

Layout of a root:
    <key>/                      an entry: what the build wrote, plus meta.json (parts, created, built_by, build_seconds)
    <key>.lock                  the lock file; left in place (removing a lock file others may hold is racy)
    .tmp-<key>-<pid>-<random>/  a build in progress, or the remains of a crashed one (removed by the next builder)
    .uncached/                  builds made with enabled=False, one fresh folder per call, never reused
    .bad-<key>-<pid>-<random>/  an entry that failed verification, kept for inspection (safe to delete)
    events.jsonl                one line per hit / built / waited / failed / corrupt, for counting (tests, benchmarks)

While a process uses an entry it holds a shared flock on its lock file (from get_or_create until release(), which a
trial calls when it ends); a builder holds it exclusively and writes who it is into it (host, pid, since), so a
process that waits longer than the lock timeout (FERCORE_LOCK_TIMEOUT_S, default 6 hours) fails with a message naming
the lock and its holder instead of waiting forever. With max_bytes (a sweep's cache_max_gb) the store evicts the
least recently used entries no process holds once it is over that size. A build is synced to disk (its files, then
its folder) before it is renamed into place.

Scope: processes on one machine, or on several machines only where the root is on a shared file system whose
`flock` is honoured across hosts (local disks are not shared; NFS locking depends on the mount). A build that forks
long-lived children hands them the lock too (flock belongs to the open file, which fork shares), so a child that
outlives a killed builder keeps others waiting until it exits.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from fercore.atomic import fsync_dir

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
META = "meta.json"
_HASH_CHUNK = 1 << 20
LOCK_TIMEOUT_S = float(os.environ.get("FERCORE_LOCK_TIMEOUT_S", 6 * 3600))
_POLL_S = 0.2


class LockTimeout(OSError):
    """A cache lock was not granted within the lock timeout (its holder is named in the message)."""


def canonical_json(value: Any) -> str:
    """JSON that is the same for equal values in any process: sorted keys, no spaces, floats by repr (shortest
    round-trip, so 1e-3 and 0.001 agree), tuples as lists; anything without a stable text form is an error."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=True)


def content_key(kind: str, parts: Mapping[str, Any]) -> str:
    """`<kind>-<16 hex>`: sha256 of the canonical JSON of kind and parts. Put a version in `kind` (or in parts) and
    bump it when the builder's output for the same parts changes, so old entries are not reused."""
    if not _NAME.fullmatch(kind):
        raise ValueError(f"cache kind {kind!r} must be letters, digits, '_', '-', '.'")
    digest = hashlib.sha256(canonical_json({"kind": kind, "parts": parts}).encode()).hexdigest()
    return f"{kind}-{digest[:16]}"


def _plain(value: Any) -> Any:
    # Only types whose JSON form is exact; str() of an arbitrary object may hold a memory address or lose digits.
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:  # json would turn 1 into "1" and make {1: x} and {"1": x} collide.
            raise TypeError(f"cache key parts need string keys, got {bad[0]!r}")
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=canonical_json)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # numpy scalars and arrays, without importing it
        return _plain(value.tolist())
    raise TypeError(f"cache key parts cannot hold {type(value).__name__} ({value!r}); use plain JSON values")


class CacheStore:
    """Entries under `root`; `enabled=False` builds every time into a fresh private folder (for benchmarks)."""

    def __init__(self, root: str | Path, enabled: bool = True, max_bytes: float | None = None,
                 lock_timeout_s: float | None = None):
        self.root = Path(root)
        self.enabled = enabled
        self.max_bytes = max_bytes  # evict least recently used entries beyond this size (None: never)
        self.lock_timeout_s = LOCK_TIMEOUT_S if lock_timeout_s is None else lock_timeout_s
        self._held: dict[str, int] = {}  # key -> the descriptor of its lock file, held shared while in use
        self._uncached: list[Path] = []
        # Keys whose wait this get_or_create has recorded: a waiter may wait twice (for the builder's exclusive lock,
        # then, the entry built, for the builder to make it shared), and counts once.
        self._wait_recorded: set[str] = set()
        self.root.mkdir(parents=True, exist_ok=True)

    def __getstate__(self):  # sent to every trial's worker: its locks are its own
        return {**self.__dict__, "_held": {}, "_uncached": [], "_wait_recorded": set()}

    def release(self) -> None:
        """Let go of every entry this process holds (a trial ends) and remove its uncached builds."""
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()
        for folder in self._uncached:
            shutil.rmtree(folder, ignore_errors=True)
        self._uncached.clear()

    def _lock(self, key: str, mode: int, unless_built: bool = False) -> int | None:
        """A descriptor of KEY's lock file holding MODE (LOCK_SH or LOCK_EX), waiting at most lock_timeout_s; with
        UNLESS_BUILT, None as soon as the entry exists (its builder keeps it shared while its trial uses it: a
        waiter for the exclusive lock would wait for that whole trial, and two trials each waiting for an entry the
        other uses would wait for ever)."""
        path = self.root / f"{key}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if key not in self._wait_recorded:
                    self._record(key, "waited")
                    self._wait_recorded.add(key)
                if unless_built and (self.root / key).is_dir():
                    os.close(fd)
                    return None
                if time.monotonic() >= deadline:
                    holder = _holder(path)
                    os.close(fd)
                    raise LockTimeout(errno.ETIMEDOUT, f"{path}: waited {self.lock_timeout_s:.0f} s for the lock of "
                                      f"{key} (held by {holder}); its holder may be stuck: stop it, or raise "
                                      f"FERCORE_LOCK_TIMEOUT_S if its build takes longer")
                time.sleep(_POLL_S)
        if mode == fcntl.LOCK_EX:  # the builder says who it is, for whoever waits
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                      "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode(), 0)
        return fd

    def _hold(self, key: str, fd: int | None = None) -> None:
        """Hold KEY shared while this process uses it (FD: a lock on it already held, downgraded to shared), and
        mark it as used now (what eviction orders by)."""
        if key not in self._held:
            if fd is None:
                fd = self._lock(key, fcntl.LOCK_SH)
            else:
                fcntl.flock(fd, fcntl.LOCK_SH)
            self._held[key] = fd
        elif fd is not None:
            os.close(fd)
        try:
            os.utime(self.root / key)
        except FileNotFoundError:
            pass

    def lookup(self, key: str) -> Path | None:
        """The entry's folder if complete and intact, else None; the folder only ever appears by rename of a finished
        build. An entry whose files do not match the checksums written with it is moved aside (see the module)."""
        path = self.root / _check_key(key)
        if not path.is_dir():
            return None
        problem = verify_entry(path)
        if problem is None:
            return path
        self._set_aside(key, path, problem)
        return None

    def _set_aside(self, key: str, path: Path, problem: str) -> None:
        bad = Path(tempfile.mkdtemp(prefix=f".bad-{key}-{os.getpid()}-", dir=self.root))
        try:
            os.rename(path, bad / key)  # atomic: other processes see the entry or no entry, never half of it
        except FileNotFoundError:  # another process set it aside (or replaced it) first
            shutil.rmtree(bad, ignore_errors=True)
            return
        self._record(key, "corrupt", problem)

    def get_or_create(self, key: str, build: Callable[[Path], None],
                      parts: Mapping[str, Any] | None = None) -> tuple[Path, bool]:
        """Return (entry folder, hit). On a miss, call build(folder) with an empty folder to fill; `parts` (the
        key's inputs) are saved in meta.json for whoever wonders later what the entry is. A build that raises
        leaves no entry and the exception propagates; the next caller builds again."""
        _check_key(key)
        self._wait_recorded.discard(key)
        if not self.enabled:
            uncached = self.root / ".uncached"
            uncached.mkdir(exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f"{key}-{os.getpid()}-", dir=uncached))
            self._uncached.append(folder)
            self._build(key, build, parts, folder)
            self._record(key, "built")
            return folder, False
        while True:
            if key in self._held or (self.root / key).is_dir():
                # Held shared while it is checked and used, so that no eviction removes it under this process.
                self._hold(key)
                if (entry := self.lookup(key)) is not None:
                    self._record(key, "hit")
                    return entry, True
                os.close(self._held.pop(key))  # set aside as corrupt: let go, to build it (exclusively) below
            fd = self._lock(key, fcntl.LOCK_EX, unless_built=True)
            if fd is not None:
                break  # ours to build (or, if another finished it meanwhile, found below)
        try:
            # Another process may have finished it while we waited for the lock.
            if (entry := self.lookup(key)) is not None:
                self._record(key, "hit")
                self._hold(key, fd)
                fd = None
                return entry, True
            self._remove_stale_temps(key)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-{os.getpid()}-", dir=self.root))
            self._build(key, build, parts, tmp)
            try:
                os.rename(tmp, self.root / key)
                fsync_dir(self.root)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                self._record(key, "failed")
                raise
            self._record(key, "built")
            self._hold(key, fd)
            fd = None
            self.evict()
            return self.root / key, False
        finally:
            if fd is not None:
                os.close(fd)  # Closing the last descriptor releases the lock.

    def evict(self) -> list[str]:
        """Remove least recently used entries no process holds until the store is within max_bytes (entries set aside
        as corrupt first: kept for inspection only while there is room); the keys removed."""
        if self.max_bytes is None:
            return []
        for bad in self.root.glob(".bad-*"):
            shutil.rmtree(bad, ignore_errors=True)
        entries = []
        for folder in self.root.iterdir():
            if folder.is_dir() and not folder.name.startswith(".") and (folder / META).exists():
                entries.append((folder.stat().st_mtime, folder.name, _size(folder)))
        total = sum(size for _, _, size in entries)
        removed = []
        for _, key, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if key in self._held:
                continue
            fd = os.open(self.root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a running trial holds it
            try:
                gone = Path(tempfile.mkdtemp(prefix=f".evicted-{key}-", dir=self.root))
                os.rename(self.root / key, gone / key)  # whole or not at all, for any reader
                shutil.rmtree(gone, ignore_errors=True)
                self._record(key, "evicted")
                removed.append(key)
                total -= size
            finally:
                os.close(fd)
        return removed

    def _build(self, key: str, build: Callable[[Path], None], parts: Mapping[str, Any] | None, folder: Path) -> None:
        start = time.time()
        try:
            build(folder)
            if (folder / META).exists():
                raise ValueError(f"the build for {key} wrote meta.json, which the cache reserves for itself")
            meta = {"key": key, "parts": _plain(parts) if parts is not None else None,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "built_by": {"host": socket.gethostname(), "pid": os.getpid()},
                    "build_seconds": round(time.time() - start, 3),
                    "files": {rel: {"size": size, "sha256": digest} for rel, size, digest in _checksums(folder)}}
            (folder / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            for path in [*folder.rglob("*"), folder]:  # on disk before the rename makes it an entry
                if path.is_file() or path == folder:
                    fsync_dir(path)  # (a file or the folder; where the file system cannot sync, as durable as it gets)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            self._record(key, "failed")
            raise

    def _remove_stale_temps(self, key: str) -> None:
        # Only the lock holder builds a key, so every other temp folder of this key belongs to a dead builder.
        for tmp in self.root.glob(f".tmp-{key}-*"):
            if tmp.name.rsplit("-", 2)[0] == f".tmp-{key}":  # Not a longer key that shares this prefix.
                shutil.rmtree(tmp, ignore_errors=True)

    def _record(self, key: str, event: str, detail: str = "") -> None:
        record = {"key": key, "event": event, "pid": os.getpid(), "time": time.time()}
        if detail:
            record["detail"] = detail
        # A leading newline too: after a line torn short (no newline), the next one still starts on its own line.
        line = "\n" + json.dumps(record) + "\n"
        # One small write to an O_APPEND file lands whole at the end, so concurrent processes never interleave lines.
        fd = os.open(self.root / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def events(self) -> list[dict]:
        """Every recorded event, oldest first: {"key", "event", "pid", "time"}."""
        try:
            text = (self.root / "events.jsonl").read_text()
        except FileNotFoundError:
            return []
        # O_APPEND is not atomic on every shared file system: a torn line is skipped, not fatal to the summary.
        events = []
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and "key" in event and "event" in event:
                events.append(event)
        return events

    def counts_by_kind(self) -> Counter:
        """(kind, event) -> count, kind being a key without its hash: ("generator-v1", "built") -> 1."""
        return Counter((kind_of(e["key"]), e["event"]) for e in self.events())

    def stats(self) -> dict[str, dict]:
        """{"total": {event: n}, "by_key": {key: {event: n}}}."""
        total: Counter = Counter()
        by_key: dict[str, Counter] = {}
        for e in self.events():
            total[e["event"]] += 1
            by_key.setdefault(e["key"], Counter())[e["event"]] += 1
        return {"total": dict(total), "by_key": {k: dict(c) for k, c in by_key.items()}}


def _checksums(folder: Path) -> list[tuple[str, int, str]]:
    """(path relative to FOLDER, size, sha256) of every file under FOLDER but meta.json, sorted by path."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != META):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        out.append((path.relative_to(folder).as_posix(), path.stat().st_size, digest.hexdigest()))
    return out


# entry folder -> the (name, size, mtime) of its files when it last verified: an unchanged entry is not hashed again.
_verified: dict[Path, tuple] = {}


def _listing(folder: Path) -> tuple:
    return tuple(sorted((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in folder.rglob("*") if p.is_file()))


def verify_entry(folder: Path) -> str | None:
    """None if every file of the entry FOLDER matches the size and sha256 its meta.json recorded (and no file was
    added or lost), else what is wrong, in a few words."""
    try:
        listing = _listing(folder)
        if _verified.get(folder) == listing:
            return None
        recorded = json.loads((folder / META).read_text()).get("files")
    except (OSError, ValueError) as e:
        return f"{META} unreadable ({type(e).__name__})"
    if not isinstance(recorded, dict):
        return f"{META} holds no checksums (an entry from before they were written)"
    try:
        found = {rel: {"size": size, "sha256": digest} for rel, size, digest in _checksums(folder)}
    except OSError as e:
        return f"a file cannot be read ({type(e).__name__}: {e})"
    if found != recorded:
        differing = sorted(set(found) ^ set(recorded) | {k for k in set(found) & set(recorded) if found[k] != recorded[k]})
        return f"files differ from their checksums: {', '.join(differing[:3])}"
    _verified[folder] = listing
    return None


def _size(folder: Path) -> int:
    try:
        return sum(f["size"] for f in json.loads((folder / META).read_text())["files"].values())
    except (OSError, ValueError, KeyError, TypeError):
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _holder(lock: Path) -> str:
    """Who holds LOCK, as its builder wrote it (a shared holder writes nothing: 'a process using the entry')."""
    try:
        who = json.loads(lock.read_text() or "{}")
        return f"pid {who['pid']} on host {who['host']} since {who['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process using the entry"


def kind_of(key: str) -> str:
    """The kind a key was made for: content_key(kind, parts) -> kind."""
    return key.rsplit("-", 1)[0]


def _check_key(key: str) -> str:
    # A key becomes a folder name; nothing that could climb out of root or hide as a dot file.
    if not _NAME.fullmatch(key):
        raise ValueError(f"cache key {key!r} must be letters, digits, '_', '-', '.' and not start with '.'")
    return key
