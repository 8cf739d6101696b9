"""One driver per sweep: a lease file (lease.json) in the sweep's results folder, or at its URI, that the driver
takes before it touches anything there and renews from a thread while it runs.

Why not a lock: flock on a folder does not exclude across NFS hosts, and an object store has none. A lease works on
both: a driver writes its lease (owner, host, pid, a random token, the time of its last heartbeat), waits SETTLE_S
and reads it back; if the token is still its own, the sweep is its. A second driver finds a fresh lease and is
refused, naming the holder. A lease whose heartbeat is older than TIMEOUT_S (its driver died or lost the network) is
taken over, and so is one whose holder is a process on this host that no longer exists (a driver killed a moment
ago: `--resume` need not wait out the timeout). A driver whose renewal finds another token has lost the sweep: its
guard stops it.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

import pyarrow.fs as pafs

from fercore.errors import UserError

LEASE = "lease.json"
TIMEOUT_S = 60.0  # a lease not renewed for this long is stale
HEARTBEAT_S = 10.0  # how often the holder renews it
SETTLE_S = 1.0  # between writing a lease and reading it back: two drivers starting at once both see the winner


class Lease:
    """The lease of the sweep folder FS_PATH on file system FS (a local folder: pafs.LocalFileSystem and its path).
    WHERE names it for a person (a path or a URI without its password)."""

    def __init__(self, fs: pafs.FileSystem, fs_path: str, where: str):
        self.fs, self.path, self.where = fs, f"{fs_path.rstrip('/')}/{LEASE}", where
        self.lost: str | None = None  # set by the heartbeat thread when another driver took the sweep over
        self.token = uuid.uuid4().hex
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease, or raise UserError naming the driver that holds it."""
        held = self._read()
        if held is not None and held.get("token") != self.token:
            stale = self._stale(held)
            if stale is None:
                raise UserError(f"{self.where}: this sweep is being written by another driver ({_holder(held)}); two "
                                f"drivers on one sweep would run its trials twice and overwrite each other's results. "
                                f"Wait for it to end or stop it; a driver that died leaves its lease stale after "
                                f"{TIMEOUT_S:.0f} s, and it is taken over then")
            print(f"[lease] taking over the sweep from {_holder(held)}: {stale}", flush=True)
        self._write()
        time.sleep(SETTLE_S)
        now = self._read()
        if now is None or now.get("token") != self.token:
            raise UserError(f"{self.where}: another driver took this sweep at the same moment "
                            f"({_holder(now) if now else 'its lease then vanished'}); run again once it has ended")
        self._thread = threading.Thread(target=self._renew, name="fercore-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still this driver's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S)
        held = self._read()
        if held is not None and held.get("token") == self.token:
            try:
                self.fs.delete_file(self.path)
            except OSError:
                pass  # left to go stale

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                held = self._read()
                if held is not None and held.get("token") != self.token:
                    self.lost = f"another driver took the sweep over ({_holder(held)}); this one stops writing"
                    return
                self._write()
            except OSError as e:  # the store is briefly unreachable: the lease stays valid until TIMEOUT_S
                print(f"[lease] could not renew the lease at {self.where} ({e}); trying again", flush=True)

    def _stale(self, held: dict) -> str | None:
        """Why HELD may be taken over, or None while its driver is alive."""
        age = time.time() - float(held.get("heartbeat", 0))
        if age > TIMEOUT_S:
            return f"its last heartbeat was {age:.0f} s ago (stale after {TIMEOUT_S:.0f} s)"
        if held.get("host") == self.host and not _alive(int(held.get("pid", -1))):
            return f"its process {held.get('pid')} on this host has ended"
        return None

    def _read(self) -> dict | None:
        try:
            with self.fs.open_input_stream(self.path) as f:
                held = json.loads(f.read())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"heartbeat": 0}  # torn or foreign: stale
        except OSError as e:
            if "not exist" in str(e) or "NoSuchKey" in str(e) or "No such file" in str(e):
                return None
            raise
        return held if isinstance(held, dict) else {"heartbeat": 0}

    def _write(self) -> None:
        body = json.dumps({"token": self.token, "host": self.host, "pid": self.pid, "started": self.started,
                           "heartbeat": time.time()})
        folder = self.path.rsplit("/", 1)[0]
        self.fs.create_dir(folder, recursive=True)
        tmp = f"{self.path}.{self.token[:8]}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(body.encode())
        self.fs.move(tmp, self.path)  # whole or not at all (an object store's move is a copy of a whole object)


def _holder(held: dict) -> str:
    age = time.time() - float(held.get("heartbeat", 0))
    return f"pid {held.get('pid', '?')} on host {held.get('host', '?')}, last heartbeat {age:.0f} s ago"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
