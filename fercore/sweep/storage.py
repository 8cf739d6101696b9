"""Where a sweep's results live (`--storage`): a local folder, or a URI that pyarrow.fs opens: s3://bucket/prefix,
gs://bucket/prefix, file:///abs/path, or an S3-compatible store through query options
(s3://bucket/prefix?endpoint_override=host:9000&scheme=http). A URI lets results outlive a cluster's head node.

For a URI the driver works in a local copy of the sweep folder, FERCORE_CACHE/storage/<hash of the URI>/<sweep>
(FERCORE_CACHE defaults to ~/.cache/fercore), exactly as in a local run, and after every flush of the tables uploads
each file that changed: the tables, optuna.db, sweep.json, TensorBoard's events and Ray Tune's experiment state
(tune/). The cache is never uploaded: its entries are guarded by flock, so it stays on each node's local disk.

Ray Tune's state goes through the copy too, rather than to the URI through RunConfig(storage_path=URI): Ray 2.60
uploads its whole experiment folder after every save (a request per trial folder). Uploaded after the commits
instead, off the driver's loop (at most every UPLOAD_EVERY_S), the URI's tables and the snapshot of Ray's state
committed with them (fercore.sweep.state) are of one moment: every trial with a row is known to that state, as
resuming needs. `--resume` (on any machine) downloads everything but the events into a fresh copy, then Ray restores
from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.parse
import uuid
from contextlib import closing
from pathlib import Path

import pyarrow.fs as pafs

from fercore import faults
from fercore.errors import UserError
from fercore.redact import redact
from fercore.results import MANIFEST
from fercore.results.manifest import ATTACHMENTS, manifest_from, read_manifest
from fercore.sweep.inbox import INCOMING
from fercore.sweep.lease import LEASE, Lease

# Object stores, whose PUT shows an object whole or not at all; other file systems show a file while it is written.
OBJECT_STORES = {"s3", "gcs", "abfs"}
# Never uploaded: the cache's locks only hold on a local disk; incoming artifact files live until their commit.
LOCAL_ONLY = {"cache", INCOMING}
NOT_DOWNLOADED = LOCAL_ONLY | {"tb", LEASE}  # the lease belongs to the URI, where drivers take it
SQLITE_MAGIC = b"SQLite format 3\x00"
UPLOAD_EVERY_S = 30.0  # a URI gets the latest commit at most this long after it was made (FERCORE_UPLOAD_EVERY_S)


def upload_every_s() -> float:
    return float(os.environ.get("FERCORE_UPLOAD_EVERY_S", UPLOAD_EVERY_S))


def is_uri(storage: str | Path) -> bool:
    return "://" in str(storage)


def working_root() -> Path:
    """Where the local copies of URI results live, one folder per URI."""
    return Path(os.environ.get("FERCORE_CACHE", Path.home() / ".cache" / "fercore")) / "storage"


class SweepFolder:
    """One sweep's results folder. `local` is the folder the driver and Ray Tune write (for a URI, its working copy);
    for a URI, `fs` and `fs_path` are where that copy is uploaded, in pyarrow's terms (the URI's scheme and options
    resolved into `fs`)."""

    def __init__(self, storage: str | Path, name: str):
        self.uri = str(storage) if is_uri(storage) else None
        self.fs: pafs.FileSystem | None = None
        self.fs_path = ""
        self._synced: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) when last uploaded
        self._uploader: threading.Thread | None = None
        self._push_lock = threading.Lock()
        self._uploaded_manifest: bytes | None = None
        if self.uri is None:
            self.local = Path(storage).resolve() / name
            return
        self.fs, base = _open(self.uri)
        self.fs_path = f"{base.rstrip('/')}/{name}"
        try:  # Fails here, before Ray starts, for a missing bucket, an unreachable endpoint or missing rights.
            self.fs.create_dir(self.fs_path, recursive=True)
        except OSError as e:
            raise UserError(f"--storage: cannot write to {redact(self.uri)} ({_one_line(e)}); expected a folder or a "
                            f"URI "
                            f"of a bucket or folder this machine can write to") from None
        self.local = working_root() / hashlib.blake2b(self.uri.encode(), digest_size=6).hexdigest() / name
        self.object_store = self.fs.type_name in OBJECT_STORES

    def __getstate__(self):  # Ray pickles the results callback, and its upload hook with it: no thread, no lock
        return {k: v for k, v in self.__dict__.items() if k not in ("_uploader", "_push_lock", "_wake", "_stopping")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._uploader, self._push_lock = None, threading.Lock()

    def where(self, name: str) -> str:
        """A file's location to show a user: its path, or its URI (query options kept, so pyarrow opens it)."""
        if self.uri is None:
            return str(self.local / name)
        parts = urllib.parse.urlsplit(self.uri)
        return urllib.parse.urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{self.local.name}/{name}"))

    def lease(self) -> Lease:
        """The sweep's lease: in the folder, or at the URI (the working copy is this machine's alone)."""
        if self.fs is None:
            return Lease(pafs.LocalFileSystem(), str(self.local), str(self.local))
        return Lease(self.fs, self.fs_path, redact(self.where("")))

    def pull(self) -> None:
        """Make the working copy what the URI holds, but for TensorBoard's events (only TensorBoard reads them): the
        tables, optuna.db and Ray's state downloaded, anything else removed but the cache. A no-op for a folder."""
        if self.fs is None:
            return
        self.local.mkdir(parents=True, exist_ok=True)
        local, remote = self._versions()
        if local > remote and not self.push():
            # The last run's driver committed results here that never reached the URI (its upload failed, or it
            # was killed first): they are kept, not replaced by the URI's older copy.
            raise UserError(f"{self.local} holds results that {redact(self.uri)} lacks (manifest version {local}, "
                            f"the URI's {remote}) and uploading them failed; nothing was deleted: make the URI "
                            f"writable and run again, or copy that folder yourself")
        for child in self.local.iterdir():
            if child.name in LOCAL_ONLY:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        self._synced.clear()
        for info in self.fs.get_file_info(pafs.FileSelector(self.fs_path, recursive=True, allow_not_found=True)):
            rel = info.path[len(self.fs_path):].strip("/")
            if info.type != pafs.FileType.File or rel.split("/")[0] in NOT_DOWNLOADED:
                continue
            path = self.local / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            os.close(fd)
            pafs.copy_files(info.path, tmp, source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
            os.replace(tmp, path)
            self._synced[rel] = _stamp(path)

    def _versions(self) -> tuple[int, int]:
        """The results manifest's version in the working copy and at the URI (0 where there is none)."""
        local = read_manifest(self.local) if (self.local / MANIFEST).exists() else None
        try:
            with self.fs.open_input_stream(f"{self.fs_path}/{MANIFEST}") as f:
                remote = json.loads(f.read()).get("version", 0)
        except (FileNotFoundError, ValueError):
            remote = 0
        except OSError as e:  # pyarrow's "Path does not exist" for some stores
            remote = 0 if "not exist" in str(e) or "NoSuchKey" in str(e) else None
            if remote is None:
                raise UserError(f"--storage: cannot read {redact(self.uri)} ({_one_line(e)})") from None
        return (local.version if local else 0), int(remote)

    def push_soon(self) -> None:
        """Ask the uploader thread for a push (after a flush): uploads run off the driver's loop, at most one every
        upload_every_s(), each taking every commit made since the last. A no-op for a local folder."""
        if self.fs is None:
            return
        if self._uploader is None:
            self._wake, self._stopping = threading.Event(), threading.Event()
            self._uploader = threading.Thread(target=self._upload_loop, name="fercore-upload", daemon=True)
            self._uploader.start()
        self._wake.set()

    def finish_uploads(self) -> bool:
        """Stop the uploader thread, then push what is left, in this thread; False when the last push failed."""
        self.stop_uploader()
        return self.push()

    def stop_uploader(self) -> None:
        if self._uploader is not None:
            self._stopping.set()
            self._wake.set()
            self._uploader.join()
            self._uploader = None

    def _upload_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            started = time.monotonic()
            self.push()
            self._stopping.wait(max(0.0, upload_every_s() - (time.monotonic() - started)))

    def push(self) -> bool:
        """Upload every file of the working copy that changed since its last upload, but the cache and files half
        written: the tables' parts before the manifest that commits them, as it was when the push began (so every
        part it names is up before it is), then remove the URI's parts no manifest names any more. False when an
        upload failed (the rest waits for the next push). A no-op for a local folder."""
        if self.fs is None:
            return True
        with self._push_lock:
            return self._push()

    def _push(self) -> bool:
        manifest_path = self.local / MANIFEST
        committed = manifest_path.read_bytes() if manifest_path.exists() else None  # replaced whole: one commit
        named = manifest_from(committed).named() if committed is not None else None
        files = []
        for root, dirs, names in os.walk(self.local):
            if Path(root) == self.local:
                dirs[:] = [d for d in dirs if d not in LOCAL_ONLY]
            files += [Path(root) / n for n in names if not n.endswith((".tmp", "-journal", "-wal", "-shm"))]
        files = [p for p in files if p != manifest_path and _committed_or_other(p.relative_to(self.local), named)]
        files.sort(key=lambda p: upload_order(p.relative_to(self.local).as_posix()))
        with tempfile.TemporaryDirectory(dir=self.local.parent) as scratch:
            rel = ""
            try:
                for path in files:
                    rel = path.relative_to(self.local).as_posix()
                    for _ in range(3):  # a file being written is copied again a moment later
                        stamp = _stamp(path)
                        if self._synced.get(rel) == stamp or self._upload(path, rel, stamp, Path(scratch)):
                            self._synced[rel] = stamp
                            break
                        time.sleep(0.05)
                if committed is not None and committed != self._uploaded_manifest:
                    rel = MANIFEST
                    faults.point("upload-midway")  # the parts are up, the manifest naming them is not
                    snapshot = Path(scratch) / MANIFEST
                    snapshot.write_bytes(committed)
                    self._put(snapshot, MANIFEST)
                    self._uploaded_manifest = committed
                    faults.point("upload-after-commit")  # the store holds this commit's trials, not the next's
            except OSError as e:
                # A store briefly unreachable must not end a sweep of many hours: the rest waits for the next
                # push, in order (the tables after what they rely on, the manifest last).
                print(f"[storage] uploading to {redact(self.uri)} failed at {rel} ({_one_line(e)}); tried again "
                      f"at the next upload, until then the latest results are only in {self.local}", flush=True)
                return False
        if named is not None:
            self._remove_stale_parts(named)
        return True

    def _remove_stale_parts(self, named: set[str]) -> None:
        """Delete the URI's part files of a table (a folder `*.parquet/`) that the manifest just uploaded does not name
        (as a part, or as garbage a slow reader may still read): parts a merge replaced. Left there, a reader of
        the URI's folder itself would count their rows twice."""
        for table in self.local.iterdir():
            if not table.is_dir() or not _is_committed_folder(table.name):
                continue
            remote = f"{self.fs_path}/{table.name}"
            for info in self.fs.get_file_info(pafs.FileSelector(remote, allow_not_found=True)):
                name = info.path.rsplit("/", 1)[-1]
                if info.type == pafs.FileType.File and f"{table.name}/{name}" not in named:
                    self.fs.delete_file(info.path)
                    self._synced.pop(f"{table.name}/{name}", None)

    def _upload(self, path: Path, rel: str, stamp: tuple[int, int], scratch: Path) -> bool:
        """Upload a snapshot of PATH; False (try again at the next push) when it changed while being copied."""
        snapshot = scratch / path.name
        if _is_sqlite(path):  # Optuna may be writing it: SQLite's backup copies a consistent state.
            with closing(sqlite3.connect(path)) as src, closing(sqlite3.connect(snapshot)) as dst:
                src.backup(dst)
        else:
            # Not every writer replaces its file whole: Ray copies its state into tune/ from a thread of its own,
            # and TensorBoard appends events. A copy taken while the file changed is not uploaded.
            shutil.copyfile(path, snapshot)
            if _stamp(path) != stamp:
                snapshot.unlink()
                return False
        self._put(snapshot, rel)
        snapshot.unlink()
        return True

    def _put(self, path: Path, rel: str) -> None:
        faults.fail("upload")
        dest = f"{self.fs_path}/{rel}"
        if self.object_store:
            # A PUT, or a multipart upload's completion, makes the object appear whole: readers of the URI see the
            # old table or the new one. A temporary name and a move would only add a copy (S3 has no rename).
            self._copy(path, dest)
        else:
            # A file system with directories (file://, HDFS) shows a file while it is written: write beside it,
            # then move it over the old one.
            self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            tmp = f"{dest}.{uuid.uuid4().hex[:8]}.tmp"
            self._copy(path, tmp)
            self.fs.move(tmp, dest)

    def _copy(self, path: Path, dest: str) -> None:
        # One call into Arrow, which opens, writes and closes the destination with no Python code in between: an
        # interrupt (Ctrl-C) cannot close an upload half written, which would publish half a table.
        pafs.copy_files(str(path), dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)


def _committed_or_other(rel: Path, named: set[str] | None) -> bool:
    """Whether a file of the working copy goes up: any file but a table's part or an attachment that the manifest
    being uploaded does not name (one of a flush not committed yet goes with the push after its commit)."""
    parts = rel.parts
    if named is None or len(parts) != 2 or not _is_committed_folder(parts[0]):
        return True
    return rel.as_posix() in named


def _is_committed_folder(name: str) -> bool:
    """A folder whose files a manifest names: a table's parts, or the attachments."""
    return name.endswith(".parquet") or name == ATTACHMENTS


def upload_order(rel: str) -> tuple[bool, bool, str]:
    """Sort key of a file (its path relative to the sweep folder) in an upload: everything else, then the tables'
    parts, then the manifest that commits them last, so that a trial's rows at the URI imply that Ray's state and
    the study beside them know the trial (which resuming from the URI relies on: the driver may die between two
    uploads), and that a reader of the URI's manifest finds every part it names."""
    top = rel.split("/", 1)[0]
    return rel == MANIFEST, rel.endswith(".parquet") or _is_committed_folder(top), rel


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    expected = ("expected a folder or a URI such as s3://bucket/prefix, gs://bucket/prefix, file:///abs/path or "
                "s3://bucket/prefix?endpoint_override=host:port&scheme=http")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:  # ArrowInvalid is a ValueError: an unknown scheme, a malformed URI
        raise UserError(f"--storage: cannot open {uri} ({_one_line(e)}); {expected}") from None
    if not path.strip("/"):
        raise UserError(f"--storage: {uri} names no bucket or folder; {expected}")
    return fs, path


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
