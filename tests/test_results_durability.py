"""Durability proven with real processes: a real `fersweep run` driver killed (SIGKILL, through fercore.faults'
test-only hook) at named points of a flush, of the end-of-sweep merge and of an upload, or meeting a full disk or a
store that stops taking writes; then `fersweep run --resume`. After it, every trial's rows are in every table exactly
once, read through the manifest and, the sweep having ended, by a reader given the folder itself; nothing local that
the store lacked was deleted; a sweep that ends with results not uploaded exits non-zero and says where they are.

One writer per sweep: a second driver on the same folder or URI is refused while the first runs, naming it; a stale
lease is taken over."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fercore.results import (CONFUSION, EPOCHS, PER_CLASS, PREDICTIONS, TRIALS, read_table, table_files)
from fercore.results.manifest import read_manifest

pytestmark = pytest.mark.slow  # every test here runs real sweeps in subprocesses

FERSWEEP = Path(sys.executable).parent / "fersweep"
# Ray saves its state at every step of its loop, so rows are committed as trials finish (fercore commits them with
# Ray's saves, 10 s apart or more by default, by which time these two-second trials would all be done): the kill
# points then land between trials, and the named counts below mean what they say.
EVERY_STEP = {"TUNE_GLOBAL_CHECKPOINT_S": "0"}
LRS = [1e-3, 2e-3, 3e-3, 4e-3]
EPOCHS_PER_TRIAL = 2


def write_sweep(tmp_path: Path, name: str = "durable", **overrides) -> Path:
    sweep = {"name": name, "data": {"source": "procedural", "scale": 0.01}, "sampler": "grid",
             "grid": {"classifier.lr": LRS},
             "fixed": {"augment.policy": "none", "classifier.backbone": "linear", "classifier.epochs": EPOCHS_PER_TRIAL,
                       "classifier.batch_size": 64},
             "scheduler": {"type": "none"}, "max_concurrent": 1, "resources": {"cpu": 1}, **overrides}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def fersweep(tmp_path: Path, *args: str, kill_at: str | None = None, fail_at: str | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """`fersweep ARGS` in its own session (its local Ray instance too), every process of which is gone after."""
    env = {**os.environ, **EVERY_STEP, "RAY_ADDRESS": "", "FERCORE_CACHE": str(tmp_path / "fercore-cache")}
    env.pop("FERCORE_KILL_AT", None)
    env.pop("FERCORE_FAIL_AT", None)
    if kill_at:
        env["FERCORE_KILL_AT"] = kill_at
    if fail_at:
        env["FERCORE_FAIL_AT"] = fail_at
    driver = subprocess.Popen([str(FERSWEEP), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = driver.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # Ray's processes of a killed driver's session
        except ProcessLookupError:
            pass
        driver.wait()
    return subprocess.CompletedProcess(driver.args, driver.returncode, out, "")


def assert_every_trial_once_in_every_table(folder: Path, ended: bool = True) -> None:
    readers = {"manifest": lambda name: read_table(folder, name).to_pandas()}
    if ended:  # one part per table, nothing the manifest does not name: the folder itself reads the same
        readers["folder"] = lambda name: pd.read_parquet(folder / name)
        for name in (TRIALS, EPOCHS, PER_CLASS, CONFUSION, PREDICTIONS):
            assert sorted(os.listdir(folder / name)) == sorted(f.name for f in table_files(folder, name)), name
        assert read_manifest(folder).garbage == []
    for how, read in readers.items():
        trials = read(TRIALS)
        ids = trials["trial_id"].tolist()
        assert len(ids) == len(LRS) and len(set(ids)) == len(LRS), (how, ids)
        assert sorted(trials["classifier.lr"]) == LRS and (trials["status"] == "completed").all(), how
        epochs = read(EPOCHS)
        assert not epochs.duplicated(["trial_id", "epoch"]).any(), how
        assert epochs.groupby("trial_id").size().to_dict() == dict.fromkeys(ids, EPOCHS_PER_TRIAL), how
        assert read(PER_CLASS).groupby("trial_id").size().to_dict() == dict.fromkeys(ids, 7), how
        assert read(CONFUSION).groupby("trial_id").size().to_dict() == dict.fromkeys(ids, 49), how
        predictions = read(PREDICTIONS)
        assert not predictions.duplicated(["trial_id", "model", "index"]).any(), how
        per_trial = predictions.groupby("trial_id").size()
        assert set(per_trial.index) == set(ids) and per_trial.nunique() == 1, how


def committed_ids(folder: Path) -> list[str]:
    table = read_table(folder, TRIALS)
    return table.column("trial_id").to_pylist() if table is not None and table.num_rows else []


def test_a_driver_killed_at_each_named_point_resumes_to_every_row_exactly_once(tmp_path):
    """One sweep killed again at every named point in turn, each run a `--resume` of the last: in a flush between
    two tables, before its commit, after it; in the end-of-sweep merge before its commit, after it. After each kill
    the committed trials are whole (each in every table once); after the last resume, every trial is."""
    sweep = write_sweep(tmp_path)
    folder = tmp_path / "results" / "durable"
    # Counts are per process: a commit comes with each finished trial here (its rows, epochs included, go together;
    # Ray saves at every step). A flush is 7 tables, so the 10th table of the first run is in its second flush.
    kills = ["flush-between-tables@10", "flush-before-commit@2", "flush-after-commit@2", "compact-before-commit",
             "compact-after-commit"]
    counts = []
    for i, point in enumerate(kills):
        args = ["run", str(sweep), "--storage", "results"] + (["--resume"] if i else [])
        killed = fersweep(tmp_path, *args, kill_at=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stdout[-3000:])
        ids = committed_ids(folder)
        assert len(ids) == len(set(ids)), point
        confusion = read_table(folder, CONFUSION)
        confusion = confusion.to_pandas().groupby("trial_id").size() if confusion.num_rows else pd.Series(dtype=int)
        assert set(confusion.index) == set(ids) and (confusion == 49).all(), point
        counts.append(len(ids))
    assert counts == sorted(counts) and counts[-1] == len(LRS), counts  # nothing committed was lost
    assert any(0 < n < len(LRS) for n in counts[:3]), counts  # a kill landed mid-sweep, with trials still to run
    resumed = fersweep(tmp_path, "run", str(sweep), "--storage", "results", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert_every_trial_once_in_every_table(folder)


def test_a_driver_killed_during_an_upload_resumes_from_the_uri_to_every_row_exactly_once(tmp_path):
    sweep = write_sweep(tmp_path)
    uri = f"file://{tmp_path / 'bucket'}"
    killed = fersweep(tmp_path, "run", str(sweep), "--storage", uri, kill_at="upload-midway@2")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    remote = tmp_path / "bucket" / "durable"
    # Killed at the second manifest upload (uploads are batched, 30 s apart: here the one when the sweep ends): the
    # URI holds the first commit it got, whole, and not the last.
    ids = committed_ids(remote)
    assert (remote / TRIALS).is_dir() and len(ids) < len(LRS)
    confusion = read_table(remote, CONFUSION)
    confusion = confusion.column("trial_id").to_pylist() if confusion.num_rows else []
    assert set(confusion) == set(ids) and len(confusion) == 49 * len(ids)
    resumed = fersweep(tmp_path, "run", str(sweep), "--storage", uri, "--resume", "--trust-storage")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert_every_trial_once_in_every_table(remote)


def test_uploads_that_fail_end_the_sweep_non_zero_and_lose_nothing_local(tmp_path):
    """The store stops taking writes after the first upload: every trial still runs and commits locally; the sweep
    exits non-zero naming where the results are; the next run uploads them rather than deleting them."""
    sweep = write_sweep(tmp_path)
    uri = f"file://{tmp_path / 'bucket'}"
    failed = fersweep(tmp_path, "run", str(sweep), "--storage", uri, fail_at="upload@2")
    assert failed.returncode == 2, failed.stdout[-3000:]
    last = failed.stdout.strip().splitlines()[-1]
    assert last.startswith("fersweep: error: the sweep ended but its results are not all at file://"), last
    local = Path(last.split(": they are in ")[1].split(";")[0])
    assert local.is_dir() and read_table(local, TRIALS).num_rows == len(LRS)
    remote = tmp_path / "bucket" / "durable"
    assert (read_manifest(remote).version if (remote / "manifest.json").exists() else 0) < \
        read_manifest(local).version
    resumed = fersweep(tmp_path, "run", str(sweep), "--storage", uri, "--resume", "--trust-storage")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert_every_trial_once_in_every_table(remote)


def test_a_full_disk_stops_the_sweep_cleanly_and_resume_finishes_it(tmp_path):
    """Every write of a results part from the 8th on fails with ENOSPC (the second commit's): nothing half written
    is committed, the sweep stops with one line saying why, and --resume (space freed) finishes it."""
    sweep = write_sweep(tmp_path)
    full = fersweep(tmp_path, "run", str(sweep), "--storage", "results", fail_at="write-part@8")
    assert full.returncode == 2, full.stdout[-3000:]
    last = full.stdout.strip().splitlines()[-1]
    assert "the sweep stopped: writing the results to" in last and "No space left on device" in last, last
    assert "--resume" in last
    folder = tmp_path / "results" / "durable"
    committed = read_table(folder, TRIALS)
    assert committed.num_rows < len(LRS)  # the commits from the second on failed whole
    resumed = fersweep(tmp_path, "run", str(sweep), "--storage", "results", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert_every_trial_once_in_every_table(folder)


def test_trials_that_keep_failing_stop_the_sweep(tmp_path):
    """Every trial fails (its weights file is missing); the sweep stops after two in a row instead of running all."""
    sweep = write_sweep(tmp_path, name="failing", max_consecutive_errors=2,
                        fixed={"augment.policy": "none", "classifier.backbone": "resnet18", "classifier.epochs": 1,
                               "classifier.weights": str(tmp_path / "no-such-weights.pt")})
    run = fersweep(tmp_path, "run", str(sweep), "--storage", "results")
    assert run.returncode == 2, run.stdout[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    assert "2 trials in a row failed (max_consecutive_errors=2)" in last, last
    rows = read_table(tmp_path / "results" / "failing", TRIALS).to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"error"}


def test_a_sweep_that_needs_more_free_space_than_there_is_does_not_start(tmp_path):
    sweep = write_sweep(tmp_path, name="roomy", min_free_gb=1e9)
    run = fersweep(tmp_path, "run", str(sweep), "--storage", "results")
    assert run.returncode == 2 and "min_free_gb" in run.stdout and "GB free, under min_free_gb=1e+09" in run.stdout
    assert not (tmp_path / "results" / "roomy" / TRIALS).exists()


@pytest.mark.parametrize("where", ["folder", "uri"])
def test_a_second_driver_on_a_running_sweep_is_refused_naming_the_first(tmp_path, where):
    storage = "results" if where == "folder" else f"file://{tmp_path / 'bucket'}"
    # Long enough that the first driver still runs while two more are refused (it is killed after them): 12 trials
    # were done in seconds once trials' rows came in fewer commits.
    sweep = write_sweep(tmp_path, grid={"classifier.lr": [1e-4 * (i + 1) for i in range(200)]})
    env = {**os.environ, "RAY_ADDRESS": "", "FERCORE_CACHE": str(tmp_path / "fercore-cache")}
    first = subprocess.Popen([str(FERSWEEP), "run", str(sweep), "--storage", storage], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    lease = (tmp_path / "results" if where == "folder" else tmp_path / "bucket") / "durable" / "lease.json"
    try:
        deadline = time.monotonic() + 120
        while not lease.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first driver took no lease"
            time.sleep(0.2)
        for args in ([], ["--resume", "--trust-storage"]):
            second = fersweep(tmp_path, "run", str(sweep), "--storage", storage, *args, timeout=120)
            assert second.returncode == 2, second.stdout[-2000:]
            assert f"this sweep is being written by another driver (pid {first.pid} on host {socket.gethostname()}" \
                in second.stdout, second.stdout[-2000:]
        assert first.poll() is None, "the refused drivers left the first alone"
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        first.wait()


def test_a_stale_lease_is_taken_over(tmp_path):
    sweep = write_sweep(tmp_path)
    folder = tmp_path / "results" / "durable"
    folder.mkdir(parents=True)
    (folder / "lease.json").write_text(json.dumps({"token": "gone", "host": "elsewhere", "pid": 1,
                                                   "heartbeat": time.time() - 3600}))
    run = fersweep(tmp_path, "run", str(sweep), "--storage", "results")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "[lease] taking over the sweep from pid 1 on host elsewhere" in run.stdout
    assert not (folder / "lease.json").exists(), "released when the sweep ended"
    assert_every_trial_once_in_every_table(folder)
