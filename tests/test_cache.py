"""The content-addressed cache: stable keys, hits, one builder among concurrent processes, crashed and failing builds.

Processes synchronise through marker files and the store's own events, never through sleeps of a guessed length;
`_wait_for` only bounds how long a broken test hangs."""
import fcntl
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fercore.cache import CacheStore, content_key

PARTS = {"generator": {"type": "cgan", "lr": 2e-4, "epochs": 3, "widths": [4, 8]}, "data": "fp-abc", "seed": 0}
KEY = content_key("generator-v1", PARTS)


def _wait_for(ready, what: str, limit_s: float = 120.0) -> None:
    end = time.monotonic() + limit_s
    while not ready():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def _fill(folder: Path) -> None:
    for i in range(3):
        (folder / f"part{i}.txt").write_text(f"content {i}\n")


def _is_complete(entry: Path) -> bool:
    parts_ok = all((entry / f"part{i}.txt").read_text() == f"content {i}\n" for i in range(3))
    return parts_ok and (entry / "meta.json").exists()


def _temps(root: Path) -> list[Path]:
    return list(root.glob(".tmp-*"))


# Keys.

def test_key_ignores_order_and_float_spelling():
    reordered = {"seed": 0, "data": "fp-abc",
                 "generator": {"widths": [4, 8], "epochs": 3, "lr": 0.0002, "type": "cgan"}}
    assert content_key("generator-v1", reordered) == KEY
    assert content_key("x", {"lr": 1e-3}) == content_key("x", {"lr": 0.001})
    assert KEY.startswith("generator-v1-") and len(KEY.rsplit("-", 1)[1]) == 16


@pytest.mark.parametrize("change", [
    lambda p: p["generator"].update(lr=2.0001e-4),
    lambda p: p["generator"].update(epochs=3.0),          # int and float differ
    lambda p: p["generator"]["widths"].reverse(),          # list order matters
    lambda p: p["generator"].update(extra=None),
    lambda p: p.update(seed=True),                          # bool is not 1 (or 0)
    lambda p: p.update(data="fp-abd"),
])
def test_key_changes_with_any_value(change):
    parts = json.loads(json.dumps(PARTS))
    change(parts)
    assert content_key("generator-v1", parts) != KEY
    assert content_key("generator-v2", PARTS) != KEY


@pytest.mark.slow
def test_key_is_the_same_in_another_process_and_release():
    # A fresh interpreter with a different str hash seed; the pinned value catches a change of the canonical form,
    # which would silently orphan every stored entry.
    code = ("import json, sys; from fercore.cache import content_key; "
            "print(content_key('generator-v1', json.loads(sys.argv[1])))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(PARTS)], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == KEY == "generator-v1-97b66945010367c4"


def test_key_refuses_values_without_a_stable_form():
    with pytest.raises(TypeError):
        content_key("x", {"f": object()})
    with pytest.raises(TypeError):
        content_key("x", {1: "int keys would collide with '1'"})
    with pytest.raises(ValueError):
        content_key("../escape", {})


# One process.

def test_second_call_hits_without_building(tmp_path):
    store, calls = CacheStore(tmp_path / "cache"), []
    path, hit = store.get_or_create(KEY, lambda f: (calls.append(f), _fill(f)), parts=PARTS)
    assert not hit and path == tmp_path / "cache" / KEY and _is_complete(path)
    again, hit = store.get_or_create(KEY, lambda f: calls.append(f))
    assert hit and again == path and len(calls) == 1
    meta = json.loads((path / "meta.json").read_text())
    assert meta["parts"] == PARTS and meta["built_by"]["pid"] == os.getpid() and meta["build_seconds"] >= 0
    assert [e["event"] for e in store.events()] == ["built", "hit"]
    assert store.stats() == {"total": {"built": 1, "hit": 1}, "by_key": {KEY: {"built": 1, "hit": 1}}}
    assert not _temps(store.root)


def test_raising_build_leaves_nothing_and_next_call_builds(tmp_path):
    store = CacheStore(tmp_path)

    def broken(folder):
        (folder / "part0.txt").write_text("half")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        store.get_or_create(KEY, broken)
    assert store.lookup(KEY) is None and not _temps(tmp_path)
    # The lock is free again: another open file description can take it at once.
    with open(tmp_path / f"{KEY}.lock") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f, fcntl.LOCK_UN)
    path, hit = store.get_or_create(KEY, _fill)
    assert not hit and _is_complete(path)
    assert [e["event"] for e in store.events()] == ["failed", "built"]


def test_builder_removes_stale_temps_of_its_key_only(tmp_path):
    store = CacheStore(tmp_path)
    mine, longer_key = tmp_path / f".tmp-{KEY}-999999-abc_12de", tmp_path / f".tmp-{KEY}-b-999999-abc_12de"
    for stale in (mine, longer_key):
        stale.mkdir()
        (stale / "part0.txt").write_text("half")
    store.get_or_create(KEY, _fill)
    assert not mine.exists() and longer_key.exists()


@pytest.mark.parametrize("damage", [
    lambda e: (e / "part1.txt").write_text("cont"),                                   # truncated
    lambda e: (e / "part1.txt").write_text("CONTENT 1\n"),                          # same size, other bytes
    lambda e: (e / "part2.txt").unlink(),                                             # lost
    lambda e: (e / "extra.bin").write_bytes(b"x"),                                    # a file the build did not write
    lambda e: (e / "meta.json").write_text("{\"key\": "),                            # meta.json cut short
    lambda e: [(p.open("r+b").truncate(0)) for p in e.iterdir()],                    # every file truncated
], ids=["truncated", "altered", "lost", "added", "meta", "all_truncated"])
def test_a_damaged_entry_is_set_aside_counted_and_rebuilt(tmp_path, damage):
    store = CacheStore(tmp_path)
    path, _ = store.get_or_create(KEY, _fill, parts=PARTS)
    files = json.loads((path / "meta.json").read_text())["files"]
    assert sorted(files) == ["part0.txt", "part1.txt", "part2.txt"] and files["part0.txt"]["size"] == 10
    damage(path)
    rebuilt, hit = store.get_or_create(KEY, _fill, parts=PARTS)
    assert not hit and rebuilt == path and _is_complete(rebuilt)
    events = store.events()
    assert [e["event"] for e in events] == ["built", "corrupt", "built"]
    assert events[1]["detail"]
    bad = list(tmp_path.glob(f".bad-{KEY}-*/{KEY}"))
    assert len(bad) == 1  # kept for inspection, out of the entries' way
    assert store.counts_by_kind()[("generator-v1", "corrupt")] == 1
    again, hit = store.get_or_create(KEY, _fill)
    assert hit and again == path


def test_an_entry_without_checksums_is_rebuilt_once(tmp_path):
    """Entries written before checksums existed cannot be verified: each is rebuilt once, then trusted."""
    store = CacheStore(tmp_path)
    path, _ = store.get_or_create(KEY, _fill)
    meta = json.loads((path / "meta.json").read_text())
    del meta["files"]
    (path / "meta.json").write_text(json.dumps(meta))
    assert store.lookup(KEY) is None and [e["event"] for e in store.events()][-1] == "corrupt"
    _, hit = store.get_or_create(KEY, _fill)
    assert not hit
    _, hit = store.get_or_create(KEY, _fill)
    assert hit


def test_disabled_store_builds_every_time_in_private_folders(tmp_path):
    store, calls = CacheStore(tmp_path, enabled=False), []
    first, hit1 = store.get_or_create(KEY, lambda f: (calls.append(f), _fill(f)))
    second, hit2 = store.get_or_create(KEY, lambda f: (calls.append(f), _fill(f)))
    assert not hit1 and not hit2 and len(calls) == 2 and first != second
    assert _is_complete(first) and _is_complete(second)
    assert store.lookup(KEY) is None and not (tmp_path / f"{KEY}.lock").exists() and not _temps(tmp_path)
    assert store.stats()["total"] == {"built": 2}


# Several processes. Children run these module-level functions under the spawn context (fresh interpreters).

def _build_when_released(root: str, gate: str) -> None:
    gate = Path(gate)

    def build(folder):
        with open(gate / "builders.txt", "a") as f:
            f.write(f"{os.getpid()}\n")
        (gate / "started").touch()
        _wait_for((gate / "release").exists, "the parent's release")
        _fill(folder)

    path, hit = CacheStore(root).get_or_create(KEY, build)
    (gate / f"result-{os.getpid()}.json").write_text(json.dumps({"path": str(path), "hit": hit,
                                                                 "complete": _is_complete(path)}))


def _half_build_then_die(root: str, gate: str, how: str) -> None:
    def build(folder):
        (folder / "part0.txt").write_text("content 0\n")
        (Path(gate) / "started").touch()
        if how == "exit":
            os._exit(1)
        _wait_for(lambda: False, "the SIGKILL", limit_s=600)

    CacheStore(root).get_or_create(KEY, build)


def _waited_pids(store: CacheStore) -> set[int]:
    return {e["pid"] for e in store.events() if e["event"] == "waited"}


@pytest.mark.slow
def test_concurrent_processes_build_once_and_share(tmp_path):
    root, gate = tmp_path / "cache", tmp_path / "gate"
    gate.mkdir()
    store = CacheStore(root)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_when_released, args=(str(root), str(gate))) for _ in range(4)]
    for p in procs:
        p.start()
    # The builder holds the lock until released, so the other three must find it taken and wait.
    _wait_for(lambda: (gate / "started").exists() and len(_waited_pids(store)) == 3, "one builder and three waiters")
    (gate / "release").touch()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [json.loads((gate / f"result-{p.pid}.json").read_text()) for p in procs]
    builders = [int(line) for line in (gate / "builders.txt").read_text().split()]
    assert len(builders) == 1
    assert {r["path"] for r in results} == {str(root / KEY)} and all(r["complete"] for r in results)
    assert sorted(r["hit"] for r in results) == [False, True, True, True]
    assert store.stats()["total"] == {"built": 1, "waited": 3, "hit": 3}
    assert [e["pid"] for e in store.events() if e["event"] == "built"] == builders
    assert not _temps(root)


@pytest.mark.slow
def test_crashed_builder_leaves_no_entry_and_next_caller_builds(tmp_path):
    root, gate = tmp_path / "cache", tmp_path / "gate"
    gate.mkdir()
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_half_build_then_die, args=(str(root), str(gate), "exit"))
    child.start()
    child.join(120)
    assert child.exitcode == 1 and (gate / "started").exists()
    store = CacheStore(root)
    assert store.lookup(KEY) is None and len(_temps(root)) == 1  # The half build is there, but not as an entry.
    path, hit = store.get_or_create(KEY, _fill)
    assert not hit and _is_complete(path) and not _temps(root)
    assert store.stats()["total"] == {"built": 1}  # The dead holder's lock did not make us wait.


@pytest.mark.slow
def test_waiter_takes_over_when_the_holder_is_killed(tmp_path):
    root, gate = tmp_path / "cache", tmp_path / "gate"
    gate.mkdir()
    store = CacheStore(root)
    ctx = multiprocessing.get_context("spawn")
    holder = ctx.Process(target=_half_build_then_die, args=(str(root), str(gate), "kill"))
    holder.start()
    _wait_for((gate / "started").exists, "the holder to start building")
    waiter = ctx.Process(target=_build_when_released, args=(str(root), str(gate)))
    (gate / "release").touch()  # The waiter builds at once when it gets the lock.
    waiter.start()
    _wait_for(lambda: waiter.pid in _waited_pids(store), "the second process to wait")
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(120)
    waiter.join(120)
    assert holder.exitcode == -signal.SIGKILL and waiter.exitcode == 0
    result = json.loads((gate / f"result-{waiter.pid}.json").read_text())
    assert result == {"path": str(root / KEY), "hit": False, "complete": True}
    assert [(e["event"], e["pid"]) for e in store.events()] == [("waited", waiter.pid), ("built", waiter.pid)]
    assert not _temps(root)


def _blob(folder: Path, size: int = 1000) -> None:
    (folder / "blob").write_bytes(os.urandom(size))


def test_over_its_limit_the_store_evicts_least_recently_used_entries_no_process_holds(tmp_path):
    store = CacheStore(tmp_path, max_bytes=2500)
    for key in ("k-a", "k-b"):
        store.get_or_create(key, _blob)
        time.sleep(0.02)
    store.release()
    held = CacheStore(tmp_path)  # another user of k-a (a running trial) holds it
    held.get_or_create("k-a", _blob)
    store.get_or_create("k-c", _blob)  # 3,000 bytes: over the limit; k-a is oldest but held, so k-b goes
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["k-a", "k-c"]
    held.release()
    store.release()
    store.get_or_create("k-b", _blob)  # built again; now k-a, the least recently used, goes
    kept = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert kept == ["k-b", "k-c"], kept
    assert [e["key"] for e in store.events() if e["event"] == "evicted"] == ["k-b", "k-a"]


def test_uncached_builds_go_when_the_trial_releases_the_store(tmp_path):
    store = CacheStore(tmp_path, enabled=False)
    folder, _ = store.get_or_create("k-u", _blob)
    assert folder.exists()
    store.release()
    assert not folder.exists() and not list((tmp_path / ".uncached").iterdir())


def _hold_the_build(root: str, started) -> None:
    CacheStore(root).get_or_create("k-slow", lambda folder: (started.set(), time.sleep(60)))


def test_a_lock_wait_times_out_naming_the_lock_and_its_holder(tmp_path):
    started = multiprocessing.Event()
    builder = multiprocessing.Process(target=_hold_the_build, args=(str(tmp_path), started))
    builder.start()
    try:
        assert started.wait(30)
        waiter = CacheStore(tmp_path, lock_timeout_s=0.5)
        with pytest.raises(OSError, match=rf"k-slow.lock: waited 0 s for the lock of k-slow \(held by pid "
                                          rf"{builder.pid} on host .* since .*\); its holder may be stuck"):
            waiter.get_or_create("k-slow", _blob)
    finally:
        builder.kill()
        builder.join()


def test_a_torn_line_in_the_event_log_is_skipped(tmp_path):
    store = CacheStore(tmp_path)
    store.get_or_create("k-a", _blob)
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"key": "k-a", "ev')  # a write cut short on a shared file system
    store.get_or_create("k-a", _blob)
    assert [e["event"] for e in store.events()] == ["built", "hit"]
