"""Kill a sweep's driver with SIGKILL mid-sweep, then `fersweep run --resume`: the sweep finishes, every trial is in
trials.parquet exactly once, the trials recorded before the kill were not run again, and Optuna's study (the
searcher's state) holds every recorded trial. Ray saves its state periodically here (every 2 s or more), and the
rows are committed with those saves: the kill lands after a commit, with trials running that finished or not since."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest

from tests.killed_driver import ENV, committed_rows, kill_when, write_lr_sweep

pytestmark = pytest.mark.slow  # every test here starts Ray, a subprocess or real training

FERSWEEP = Path(sys.executable).parent / "fersweep"
TRIALS = 6


def write_sweep(tmp_path: Path, sampler: str = "tpe") -> Path:
    return write_lr_sweep(tmp_path, "resumable", 1e-2, 6, sampler=sampler, scheduler={"type": "none"},
                          num_samples=TRIALS, max_concurrent=1, resources={"cpu": 1}, optuna_storage=True)


# NSGA-II: Ray unpickles the searcher's saved state, the sampler's too (Optuna 5.1's NSGA-II holds a lock that pickle
# refuses), so it is the sampler to resume here. The resume does not otherwise depend on the sampler: grid sweeps
# resume in tests/test_results_durability.py, random ones in tests/test_storage_uri.py, the confirmation phase in
# tests/test_confirm_sweep.py, and every sampler's searcher pickles in tests/test_sweep_internals.py.
@pytest.mark.parametrize("sampler", ["nsga2"])
def test_a_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path, sampler):
    sweep = write_sweep(tmp_path, sampler)
    storage = tmp_path / "results"
    out = storage / "resumable"
    # Rows are committed with Ray's saves of its state (every 2 s here), often several trials at once: the kill lands
    # after a commit, mid-sweep.
    kill_when([str(FERSWEEP), "run", str(sweep), "--storage", str(storage)], tmp_path,
              lambda: len(committed_rows(out)) >= 1, "trial committed")
    before = {r["trial_id"]: r for r in committed_rows(out)}
    assert 1 <= len(before) < TRIALS
    # Ray copies its state into tune/ in place, from a thread of its own: a kill during that copy leaves this.
    ray_copy = max((out / "tune").glob("experiment_state-*.json"))
    ray_copy.write_bytes(ray_copy.read_bytes()[: ray_copy.stat().st_size // 2])

    resumed = subprocess.run([str(FERSWEEP), "run", str(sweep), "--storage", str(storage), "--resume"],
                             cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(before)} trials already recorded" in resumed.stdout, resumed.stdout[-3000:]
    after = committed_rows(out)
    ids = [r["trial_id"] for r in after]
    # On failure, what the resumed driver said (its trials and summary) is the first thing to read.
    assert len(ids) == TRIALS and len(set(ids)) == TRIALS, (Counter(ids), sorted(before), resumed.stdout[-3000:])
    assert all(r["status"] == "completed" for r in after), [r["reason"] for r in after]
    # The trials recorded before the kill kept their rows: not run again (a rerun rewrites its row's timings).
    by_id = {r["trial_id"]: r for r in after}
    for tid, row in before.items():
        assert by_id[tid]["train_seconds"] == row["train_seconds"] and by_id[tid]["test_macro_f1"] == row["test_macro_f1"]
    # Nor trained again: a real-only trial stores its outcome as a baseline; a rerun would have found it cached.
    events = (out / "cache" / "events.jsonl").read_text().splitlines()
    hits = {e["key"] for e in map(json.loads, filter(str.strip, events)) if e["event"] == "hit"}
    assert not hits & {row["baseline_key"] for row in before.values()}
    # The searcher's state survived: Optuna's study holds every recorded trial, told its result. A trial that started
    # and ended after the last commit was told too (the study lives in optuna.db, written as trials end) and runs
    # again under a new id: the study may hold up to that many completed trials more than the rows.
    study = optuna.load_study(study_name="resumable", storage=f"sqlite:///{out / 'optuna.db'}")
    complete = Counter(t.params["classifier.lr"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert not Counter(r["classifier.lr"] for r in after) - complete
    assert TRIALS <= sum(complete.values()) <= TRIALS + (TRIALS - len(before))
