"""The driver's results callback fed real Ray Trial objects and the results a worker reports, its trials.parquet
read back with pyarrow: a trial's config is the resolved one its worker sent with its first report (not resolved
again on the driver), merged before the row its artifact file holds, whether or not that row repeats the config keys;
a trial that never reported falls back to Ray's config, resolved where it resolves. Rows are committed only with a
save of Ray's state (simulated here by writing its staging file), and with a snapshot of it. No Ray instance is
started."""
import itertools
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fercore.config import resolve
from fercore.labels import CLASSES
from fercore.results import artifact_file, read_table
from fercore.sweep import inbox, internals
from fercore.sweep import state as tune_state
from fercore.sweep.callback import ResultsCallback
from fercore.sweep.searchers import TESTED
from fercore.sweep.trainable import CONFIG, EPOCH_METRICS

_saves = itertools.count()


@pytest.fixture(autouse=True)
def staging_without_ray(monkeypatch):
    """Ray's driver staging folder lies in its session folder, which needs a Ray instance: here, one beside the
    trials' storage."""
    monkeypatch.setattr(internals, "driver_staging_path", lambda trial: f"{trial.storage.storage_fs_path}/staging")


def ray_saves(trials) -> None:
    """What Ray's loop does when it saves its state: a new experiment state in its driver staging folder."""
    staging = Path(internals.driver_staging_path(trials[0]))
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "experiment_state-test.json").write_text(
        '{"trials": [%s], "save": %d}' % (",".join(f'"{t.trial_id}"' for t in trials), next(_saves)))


def last_result(out, trial_id: str, epoch: int, f1: float, artifacts: dict) -> dict:
    """The worker's last report: its artifacts, row included, written first as the inbox writes them."""
    path = inbox.artifact_path(out, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {**epoch_result(epoch, f1), TESTED: True}
    path.write_bytes(artifact_file.encode({**artifacts, EPOCH_METRICS: list(result.pop(EPOCH_METRICS))}))
    return result


def make_trial(tmp_path, trial_id: str, config: dict):
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    storage = StorageContext(storage_path=str(tmp_path / "ray"), experiment_dir_name="tune")
    return Trial("fercore_stub", config=config, trial_id=trial_id, stub=True, storage=storage)


def epoch_result(epoch: int, f1: float, artifacts: dict | None = None) -> dict:
    """What a worker reports for an epoch: the objective and the epoch as numbers, every figure as pairs."""
    figures = {"epoch": epoch, "val_macro_f1": f1, "train_loss": 1.0 / epoch}
    result = {"epoch": epoch, "val_macro_f1": f1, EPOCH_METRICS: tuple(figures.items()), "training_iteration": epoch,
              "time_total_s": 2.0 * epoch, "node_ip": "127.0.0.1", "node_id": "n1", "done": False}
    return {**result, "artifacts": artifacts} if artifacts else result


def row_of(f1: float) -> dict:
    return {"val_macro_f1": f1, "test_macro_f1": f1 - 0.1, "test_accuracy": 0.5, "status": "completed", "reason": "",
            "train_seconds": 3.5, **{f"test_recall_{c}": 0.5 for c in CLASSES}}


def test_rows_take_the_config_the_worker_resolved(tmp_path):
    out = tmp_path / "results"
    # What Ray sampled; the workers' resolved configs carry seed 7, which resolving Ray's config would not give.
    raw = {"classifier.lr": 0.002}
    sent = resolve({**raw, "seed": 7}, drop_inapplicable=True).flat()
    pairs = tuple(sent.items())  # as the worker sends it (fercore.sweep.trainable)
    trials = {tid: make_trial(tmp_path, tid, config) for tid, config in (
        ("row_without_config", raw), ("whole_row", raw), ("bad_config", {"classifier.backbone": "vgg99"}),
        ("never_reported", raw))}
    callback = ResultsCallback(out, total=len(trials))
    callback.setup(total_num_samples=len(trials))
    every = list(trials.values())
    for trial in every:
        callback.on_trial_start(0, every, trial)

    a, b = trials["row_without_config"], trials["whole_row"]
    callback.on_trial_result(1, every, a, epoch_result(1, 0.3, {CONFIG: pairs}))
    callback.on_trial_result(2, every, a, last_result(out, a.trial_id, 2, 0.4,
                                                      {"row": row_of(0.4), "confusion": [[1] * 7] * 7}))
    callback.on_trial_complete(2, every, a)
    callback.on_step_end(2, every)  # Ray has not saved its state since: nothing is committed
    assert not read_table(out, "trials.parquet")
    ray_saves(every)
    callback.on_step_end(2, every)  # now the row is committed, with the snapshot of Ray's state
    assert [r["trial_id"] for r in read_table(out, "trials.parquet").to_pylist()] == [a.trial_id]
    assert tune_state.committed(out).read_bytes() and not inbox.artifact_path(out, a.trial_id).exists()
    first_snapshot = tune_state.committed(out)
    callback.on_trial_result(3, every, b, epoch_result(1, 0.5, {CONFIG: pairs}))
    callback.on_trial_result(3, every, b, last_result(out, b.trial_id, 1, 0.5, {"row": {**sent, **row_of(0.5)}}))
    callback.on_trial_complete(3, every, b)
    # The worker could not resolve its config: it reports its end without one.
    bad = trials["bad_config"]
    callback.on_trial_result(4, every, bad, {"status": "error", "reason": "ConfigError: vgg99", "node_ip": "127.0.0.1",
                                             "val_macro_f1": None, "training_iteration": 1})
    callback.on_trial_complete(4, every, bad)
    ray_saves(every)  # Ray's last save, when its loop ends
    callback.on_experiment_end(every)  # never_reported: still running when the sweep ended
    assert tune_state.committed(out) != first_snapshot  # a new snapshot with the new rows

    rows = {r["trial_id"]: r for r in pq.read_table(out / "trials.parquet").to_pylist()}
    assert set(rows) == set(trials)
    for tid in ("row_without_config", "whole_row"):
        row = rows[tid]
        assert row["status"] == "completed" and row["seed"] == 7, row  # the sent config, not the driver's resolve
        assert {k: row[k] for k in sent} == sent
        assert row["val_macro_f1"] == (0.4 if tid == "row_without_config" else 0.5)
        assert row["attempts"] == 1 and row["train_seconds"] == 3.5
    bad_row = rows["bad_config"]
    assert bad_row["status"] == "error" and bad_row["reason"] == "ConfigError: vgg99"
    assert bad_row["classifier.backbone"] == "vgg99" and bad_row["classifier.lr"] is None  # Ray's config as sampled
    never = rows["never_reported"]
    assert never["status"] == "stopped" and never["reason"] == "the sweep ended after epoch 0"
    assert never["seed"] == 0 and never["classifier.lr"] == 0.002 and never["classifier.epochs"] == 5  # resolved here
    assert never["generator.type"] is None  # a real-only trial's generator keys do not apply: empty (issue 15)
    epochs = pq.read_table(out / "epochs.parquet").to_pylist()
    assert sorted((r["trial_id"], r["epoch"]) for r in epochs) == [
        ("row_without_config", 1), ("row_without_config", 2), ("whole_row", 1)]
    assert not any(k.startswith(("artifacts", CONFIG)) for r in epochs for k in r)
    assert len(pq.read_table(out / "confusion.parquet")) == 49


def test_the_last_report_tells_the_rows_value_and_the_epochs_table_keeps_the_epochs_own(tmp_path):
    """The worker's last report carries the row's (best epoch's) value under the objective's name, for ASHA and
    Optuna; the epochs table and TensorBoard keep the last epoch's own value, from its pairs. Its predictions go to
    predictions.parquet; the result Ray keeps holds no artifacts."""
    import numpy as np

    out = tmp_path / "results"
    trial = make_trial(tmp_path, "t1", {"classifier.lr": 0.002})
    callback = ResultsCallback(out, total=1)
    callback.setup(total_num_samples=1)
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_result(1, [trial], trial, epoch_result(1, 0.6))  # the best epoch
    predictions = {"index": np.array([4, 9, 2]), "true": np.array([0, 3, 6]), "predicted": np.array([0, 3, 3]),
                   "proba": np.full((3, 7), 1 / 7, np.float32)}
    last = last_result(out, "t1", 2, 0.45, {"row": row_of(0.6), "predictions": predictions})
    last["val_macro_f1"] = 0.6  # the row's value, told to Ray; the pairs hold the epoch's own
    callback.on_trial_result(2, [trial], trial, last)
    assert "artifacts" not in last  # what Ray keeps of it
    callback.on_trial_complete(2, [trial], trial)
    ray_saves([trial])
    callback.on_experiment_end([trial])

    epochs = sorted(pq.read_table(out / "epochs.parquet").to_pylist(), key=lambda r: r["epoch"])
    assert [r["val_macro_f1"] for r in epochs] == [0.6, 0.45]
    assert not any(TESTED in r or EPOCH_METRICS in r for r in epochs)
    (row,) = pq.read_table(out / "trials.parquet").to_pylist()
    assert row["val_macro_f1"] == 0.6 and row["status"] == "completed"
    stored = pq.read_table(out / "predictions.parquet").to_pylist()
    assert [(r["trial_id"], r["index"], r["true"], r["predicted"]) for r in stored] == [
        ("t1", 4, "angry", "angry"), ("t1", 9, "happy", "happy"), ("t1", 2, "neutral", "happy")]


def test_a_stopped_trials_validation_figures_are_its_best_epochs_as_a_completed_trials_are():
    """A trial ASHA stopped has no row of its own: its val_* come from the epoch the trainer would have tested (the
    first best by classifier.early_stop), not from its last epoch, so a stopped and a completed row mean the same."""
    from fercore.sweep.callback import best_epoch, trial_row

    epochs = [{"epoch": 1, "val_macro_f1": 0.20, "val_loss": 1.9},
              {"epoch": 2, "val_macro_f1": 0.31, "val_loss": 1.5, "val_weighted_loss": 1.8},
              {"epoch": 3, "val_macro_f1": 0.31, "val_loss": 1.6, "val_weighted_loss": 1.7},
              {"epoch": 4, "val_macro_f1": 0.25, "val_loss": 1.4, "val_weighted_loss": 1.75}]
    by_f1 = {"classifier.early_stop": "val_macro_f1"}
    row = trial_row("t1", by_f1, None, {**epochs[-1], "time_total_s": 9.0}, "stopped", "ASHA", 1, epochs)
    assert (row["val_macro_f1"], row["val_loss"], row["best_epoch"], row["epochs_run"]) == (0.31, 1.5, 2, 4)
    # By the validation loss trained on: the weighted one where it exists (epochs 2-4), else the plain one.
    assert best_epoch(epochs, {"classifier.early_stop": "val_loss"})["epoch"] == 3
    assert best_epoch(epochs[:1], {"classifier.early_stop": "val_loss"})["epoch"] == 1
    assert best_epoch([{"epoch": 1, "val_macro_f1": float("nan")}], by_f1) is None
    # No epochs (a trial that failed before its first): its last result, as before.
    assert trial_row("t2", by_f1, None, {"val_macro_f1": 0.1}, "error", "boom", 1)["val_macro_f1"] == 0.1
