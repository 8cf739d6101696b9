"""The confirmation phase run for real (issue 24 item 1): a search under ASHA, then its best configs by validation
again on fresh seeds, to completion, the driver killed (SIGKILL) in the confirmation phase and the sweep resumed in
that phase: every trial once in trials.parquet, each row's phase, and the Optuna studies of both phases."""
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest

from fercore.sweep.confirm import ranked_configs
from tests.killed_driver import ENV, committed_rows, kill_when, write_lr_sweep

pytestmark = pytest.mark.slow  # starts Ray in a subprocess, trains

FERSWEEP = Path(sys.executable).parent / "fersweep"
SEARCH, TOP, SEEDS, EPOCHS = 3, 2, 2, 5


def write_sweep(tmp_path: Path) -> Path:
    return write_lr_sweep(tmp_path, "confirmed", 3e-2, EPOCHS,
                          scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2}, num_samples=SEARCH,
                          max_concurrent=1, resources={"cpu": 1}, optuna_storage=True,
                          confirm={"top": TOP, "seeds": SEEDS})


def test_a_sweep_confirms_its_best_configs_and_resumes_in_its_confirmation_phase(tmp_path):
    sweep = write_sweep(tmp_path)
    storage = tmp_path / "results"
    out = storage / "confirmed"
    kill_when([str(FERSWEEP), "run", str(sweep), "--storage", str(storage)], tmp_path,
              lambda: any(r.get("phase") == "confirm" for r in committed_rows(out)), "confirmation trial committed",
              poll_s=0.2)
    before = {r["trial_id"]: r for r in committed_rows(out)}
    # The search is over (every search row is committed before the confirmation starts). ASHA may have stopped some
    # of its trials, and a config with a stopped seed is not ranked: the confirmation runs the TOP ranked or fewer.
    searched = [r for r in before.values() if r["phase"] == "search"]
    chosen = [c["classifier.lr"] for c, _, _ in ranked_configs(searched, "val_macro_f1", "max")[:TOP]]
    confirmations = len(chosen) * SEEDS
    assert len(searched) == SEARCH and chosen
    assert 1 <= sum(r["phase"] == "confirm" for r in before.values()) < confirmations, "killed mid-confirmation"

    resumed = subprocess.run([str(FERSWEEP), "run", str(sweep), "--storage", str(storage), "--resume"],
                             cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "in its confirmation phase" in resumed.stdout, resumed.stdout[-3000:]
    after = committed_rows(out)
    ids = Counter(r["trial_id"] for r in after)
    assert len(after) == SEARCH + confirmations and max(ids.values()) == 1, (ids, resumed.stdout[-3000:])
    search = [r for r in after if r["phase"] == "search"]
    confirm = [r for r in after if r["phase"] == "confirm"]
    assert len(search) == SEARCH and len(confirm) == confirmations
    for tid, row in before.items():  # recorded before the kill: not run again
        assert {k: row[k] for k in ("train_seconds", "seed", "phase")} == \
            {k: after_row[k] for after_row in after if after_row["trial_id"] == tid for k in ("train_seconds", "seed",
                                                                                               "phase")}
    # The configs confirmed are the search's best by validation, on seeds no search trial used, each run to
    # completion: no scheduler stops a confirmation trial.
    assert Counter(r["classifier.lr"] for r in confirm) == Counter({lr: SEEDS for lr in chosen})
    fresh = sorted({r["seed"] for r in confirm})
    assert len(fresh) == SEEDS and min(fresh) > max(r["seed"] for r in search)
    assert all(r["status"] == "completed" and r["epochs_run"] == EPOCHS for r in confirm), \
        [(r["status"], r["epochs_run"]) for r in confirm]
    # Optuna tells the phases apart: the search's study, and the confirmation's beside it, each trial once.
    url = f"sqlite:///{out / 'optuna.db'}"
    study = optuna.load_study(study_name="confirmed.confirm", storage=url)
    told = [t.user_attrs["ray_trial_id"] for t in study.trials]
    assert sorted(told) == sorted(r["trial_id"] for r in confirm)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert optuna.load_study(study_name="confirmed", storage=url).user_attrs["phase"] == "search"
    # The summary and the report speak of the confirmation.
    assert "Confirmed by val_macro_f1" in resumed.stdout
