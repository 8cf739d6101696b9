"""A small sweep on a real local Ray instance, its Parquet tables read back with pyarrow and its event files with
TensorBoard's own reader."""
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fercore.augment.policies import uses_generator
from fercore.labels import CLASSES
from fercore.results import confusion_png
from fercore.results.tensorboard import _png_to_array, run_dir
from fercore.sweep.spec import load_sweep
from tests.conftest import TINY_TRIAL


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


def write_sweep(tmp_path, **overrides):
    fixed = {k: v for k, v in TINY_TRIAL.items() if not k.startswith("data.") and k != "classifier.width"}
    sweep = {"name": "tiny", "data": {"source": "procedural", "scale": 0.01}, "space": "quickstart",
             "fixed": fixed, "sampler": "tpe", "metric": "val_macro_f1", "mode": "max",
             "scheduler": {"type": "asha", "grace_period": 1}, "num_samples": 3, "max_concurrent": 2,
             "resources": {"cpu": 1}, **overrides}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.mark.slow
def test_small_sweep_writes_every_trial_to_parquet_and_tensorboard(tmp_path, local_ray, capsys):
    from fercore.sweep import run_sweep

    out = run_sweep(load_sweep(write_sweep(tmp_path)), tmp_path / "results")
    assert out == (tmp_path / "results" / "tiny").resolve()
    # A trial's progress lines (its start, its end: plain lines, as output is no terminal here) show validation only;
    # test figures wait for the final summary.
    printed = capsys.readouterr().out.splitlines()
    progress = [line for line in printed if line.startswith("[") and "] trial " in line]
    assert len(progress) == 6 and not any("test_" in line for line in progress), progress
    assert sum(line.startswith("[start] trial ") for line in progress) == 3
    assert "Configuration for experiment" not in "\n".join(printed), "Ray's banner only with --verbose"

    trials = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(trials) == 3 and len({r["trial_id"] for r in trials}) == 3
    for row in trials:
        assert row["status"] in ("completed", "stopped"), row["reason"]
        for key in ("classifier.backbone", "augment.policy", "classifier.lr", "seed", "val_macro_f1", "train_seconds"):
            assert row.get(key) is not None, key
        # A generator key has a value exactly where the trial used a generator (issue 15: keys that do not apply
        # stay empty).
        augment = {k.split(".", 1)[1]: v for k, v in row.items() if k.startswith("augment.") and v is not None}
        assert (row.get("generator.type") is not None) == uses_generator(row["augment.policy"], augment), row
        assert row["classifier.epochs"] == 2  # the sweep's fixed value reached the trial
    completed = [r for r in trials if r["status"] == "completed"]
    assert completed, "ASHA cannot stop every trial of three"
    for row in completed:
        assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["test_macro_f1"] <= 1
        assert all(0 <= row[f"test_recall_{c}"] <= 1 for c in CLASSES)

    epochs = pq.read_table(out / "epochs.parquet").to_pylist()
    assert {r["trial_id"] for r in epochs} == {r["trial_id"] for r in trials}
    assert all(r["val_macro_f1"] is not None for r in epochs)

    confusion = pq.read_table(out / "confusion.parquet").to_pylist()
    for row in trials:
        run = run_dir(out / "tb", row["trial_id"])  # named by what the trial was, then its id
        assert run.name.startswith(f"{row['classifier.backbone']}_") and f"_s{row['seed']}_" in run.name, run.name
        ea = EventAccumulator(str(run), size_guidance={"images": 0})
        ea.Reload()
        steps = [s.step for s in ea.Scalars("val/macro_f1")]
        assert steps[0] == 1 and len(steps) >= row["epochs_run"] if row["status"] == "completed" else steps
        assert "hparams" in ea.PluginTagToContent("hparams") or ea.PluginTagToContent("hparams")
        if row["status"] == "completed" and row["n_train_synthetic"]:
            assert ea.Images("samples/per_class_rows")
        if row["status"] == "completed":  # the matrix confusion.parquet holds, as its worker drew it
            cells = {(r["true"], r["predicted"]): r["count"] for r in confusion if r["trial_id"] == row["trial_id"]}
            matrix = np.array([[cells[t, p] for p in CLASSES] for t in CLASSES])
            drawn = ea.Images("confusion/test")[0].encoded_image_string
            assert np.array_equal(_png_to_array(drawn), _png_to_array(confusion_png(matrix, CLASSES)))


def test_sweep_file_problems_are_reported_together(tmp_path):
    from fercore.sweep.spec import SweepError

    path = write_sweep(tmp_path, space="nope", sampler="bayes", fixed={"classifier.backbone": "vgg99"}, extra=1)
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    text = str(e.value)
    assert str(path) in text
    for expected in ("extra: unknown sweep key", "sampler: expected one of tpe, random", "space: no search space 'nope'",
                     "classifier.backbone: unknown backbone 'vgg99'"):
        assert expected in text


def test_quickstart_sweep_file_is_valid():
    spec = load_sweep("sweeps/quickstart.yaml")
    assert spec.space == "quickstart" and spec.num_samples >= 4


@pytest.mark.slow
def test_a_diverged_generator_is_recorded_and_the_sweep_goes_on(tmp_path, local_ray):
    """G barely learns (lr_g at its minimum) while D learns fast: D soon wins completely and the watchdog stops the
    generator after collapse_steps such steps. That trial is recorded as diverged; real-only trials still complete."""
    from fercore.sweep import run_sweep

    spaces = tmp_path / "search_spaces"
    spaces.mkdir()
    (spaces / "policy_only.py").write_text(
        "def space(trial):\n    trial.suggest_categorical('augment.policy', ['balance', 'none'])\n")
    (tmp_path / "sweeps").mkdir()
    fixed = {"generator.type": "cgan", "generator.width": 4, "generator.resolution": 32, "generator.epochs": 30,
             "generator.batch_size": 32, "generator.lr_g": 1e-6, "generator.lr_d": 2e-3,
             "generator.collapse_steps": 20, "classifier.epochs": 1, "classifier.batch_size": 32}
    sweep = write_sweep(tmp_path / "sweeps", name="diverge", space="policy_only", fixed=fixed, sampler="random",
                        scheduler={"type": "none"}, num_samples=4, max_concurrent=2, seed=2)
    out = run_sweep(load_sweep(sweep), tmp_path / "results")
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(rows) == 4
    by_policy = {p: [r for r in rows if r["augment.policy"] == p] for p in ("balance", "none")}
    assert by_policy["balance"] and by_policy["none"], "Optuna's RandomSampler(seed=2) draws balance, balance, balance, none"
    for r in by_policy["balance"]:
        assert r["status"] == "diverged" and "collapsed" in r["reason"] and "diverged at step" in r["reason"], r
        assert r["attempts"] == 1  # A divergence is an outcome, not a crash: not retried (max_failures is 1).
    for r in by_policy["none"]:
        assert r["status"] == "completed" and 0 <= r["test_macro_f1"] <= 1


def _space(tmp_path, name: str, body: str) -> None:
    spaces = tmp_path / "search_spaces"
    spaces.mkdir(exist_ok=True)
    (spaces / f"{name}.py").write_text(f"def space(trial):\n    {body}\n")
    (tmp_path / "sweeps").mkdir(exist_ok=True)


@pytest.mark.slow
def test_concurrent_trials_train_a_shared_generator_once(tmp_path, local_ray):
    """004's grid in small: one generator config, three real ratios, two trials at a time. The first two trials
    need the generator at once: one trains it while the other waits; the third finds it. Counted by the cache's
    recorded events and the rows' hit flags, not by timing."""
    from fercore.cache import CacheStore
    from fercore.sweep import run_sweep

    _space(tmp_path, "ratios", "trial.suggest_categorical('augment.real_ratio', [0.25, 0.5, 0.75])")
    fixed = {"generator.type": "cgan", "generator.width": 4, "generator.resolution": 32, "generator.epochs": 30,
             "generator.batch_size": 32, "augment.policy": "real_ratio", "classifier.backbone": "cnn3",
             "classifier.epochs": 1, "classifier.batch_size": 32, "classifier.width": 8}
    sweep = write_sweep(tmp_path / "sweeps", name="shared", space="ratios", fixed=fixed, sampler="random",
                        scheduler={"type": "none"}, num_samples=3, max_concurrent=2)
    out = run_sweep(load_sweep(sweep), tmp_path / "results")
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows), [r["reason"] for r in rows]
    assert len({r["generator_key"] for r in rows}) == 1
    assert sorted(r["generator_cache_hit"] for r in rows) == [False, True, True]
    assert all(r["baseline_key"] == rows[0]["baseline_key"] for r in rows)

    events = CacheStore(out / "cache").counts_by_kind()
    assert events["generator-v1", "built"] == 1 and events["generator-v1", "hit"] == 2
    assert events["generator-v1", "waited"] == 1  # the concurrent one; the third came after the build
    assert events["baseline-v3", "built"] == 1 and events["reference-v3", "built"] == 1


@pytest.mark.slow
def test_seeds_repeat_each_sampled_config(tmp_path, local_ray):
    from fercore.sweep import run_sweep

    _space(tmp_path, "lr_only", "trial.suggest_float('classifier.lr', 1e-3, 2e-3)")
    fixed = {"augment.policy": "none", "classifier.backbone": "linear", "classifier.epochs": 1}
    sweep = write_sweep(tmp_path / "sweeps", name="seeds", space="lr_only", fixed=fixed, sampler="random",
                        scheduler={"type": "none"}, num_samples=1, seeds=2, seed=5)
    out = run_sweep(load_sweep(sweep), tmp_path / "results")
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert rows[0]["classifier.lr"] == rows[1]["classifier.lr"]
    assert sorted(r["seed"] for r in rows) == [0, 1]


# The sweep engine at scale: samplers, several objectives, the Optuna study on disk, retries, the time budget.
REAL_ONLY = {"augment.policy": "none", "classifier.epochs": 1, "classifier.batch_size": 32, "classifier.width": 8}


@pytest.mark.slow
def test_a_grid_sweep_runs_every_point_once_and_keeps_its_study_in_sqlite(tmp_path, local_ray, capsys):
    import optuna

    from fercore.sweep import run_sweep

    grid = {"classifier.backbone": ["linear", "cnn3"], "classifier.lr": [0.001, 0.002]}
    sweep = write_sweep(tmp_path, name="grid", space=None, sampler="grid", grid=grid, fixed=REAL_ONLY,
                        scheduler={"type": "none"}, optuna_storage=True, max_concurrent=2)
    raw = yaml.safe_load(sweep.read_text())
    del raw["num_samples"]  # It defaults to the grid's size.
    sweep.write_text(yaml.safe_dump(raw))
    spec = load_sweep(sweep)
    assert spec.num_samples == 4
    out = run_sweep(spec, tmp_path / "results")
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows), [r["reason"] for r in rows]
    assert sorted((r["classifier.backbone"], r["classifier.lr"]) for r in rows) == sorted(
        (b, lr) for b in grid["classifier.backbone"] for lr in grid["classifier.lr"])
    assert all(r["attempts"] == 1 for r in rows)

    url = f"sqlite:///{out / 'optuna.db'}"
    assert [s.study_name for s in optuna.get_all_study_summaries(storage=url)] == ["grid"]
    trials = optuna.load_study(study_name="grid", storage=url).trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.system_attrs["grid_id"] for t in trials) == [0, 1, 2, 3]
    for t in trials:
        row = next(r for r in rows if (r["classifier.backbone"], r["classifier.lr"]) == (
            t.params["classifier.backbone"], t.params["classifier.lr"]))
        assert t.value == pytest.approx(row["val_macro_f1"])
    assert f"optuna-dashboard {url}" in capsys.readouterr().out


@pytest.mark.slow
def test_several_objectives_mark_the_pareto_front(tmp_path, local_ray, capsys):
    """NSGA-II on (val_macro_f1 max, train_seconds min), two seeds per config: Optuna is told each config's mean
    of both objectives, and trials.parquet marks the completed rows no other row beats on both."""
    import optuna

    from fercore.sweep import run_sweep

    _space(tmp_path, "lr_only", "trial.suggest_float('classifier.lr', 1e-3, 3e-3)")
    fixed = {**REAL_ONLY, "classifier.backbone": "linear"}
    sweep = write_sweep(tmp_path / "sweeps", name="multi", space="lr_only", fixed=fixed, sampler="nsga2",
                        metric=["val_macro_f1", "train_seconds"], mode=["max", "min"], scheduler={"type": "none"},
                        num_samples=2, seeds=2, optuna_storage=True)
    out = run_sweep(load_sweep(sweep), tmp_path / "results")
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows), [r["reason"] for r in rows]

    def beaten(r):
        return any(o["val_macro_f1"] >= r["val_macro_f1"] and o["train_seconds"] <= r["train_seconds"]
                   and (o["val_macro_f1"] > r["val_macro_f1"] or o["train_seconds"] < r["train_seconds"])
                   for o in rows)

    assert [r["pareto"] for r in rows] == [not beaten(r) for r in rows] and any(r["pareto"] for r in rows)
    printed = capsys.readouterr().out
    assert "Pareto front over val_macro_f1 (max), train_seconds (min)" in printed
    assert all(f"trial {r['trial_id']}:" in printed for r in rows if r["pareto"])

    study = optuna.load_study(study_name="multi", storage=f"sqlite:///{out / 'optuna.db'}")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        seeds = [r for r in rows if r["classifier.lr"] == t.params["classifier.lr"]]
        assert sorted(r["seed"] for r in seeds) == [0, 1]
        assert t.values == pytest.approx([sum(r[m] for r in seeds) / 2 for m in ("val_macro_f1", "train_seconds")])


# Learning rates at which a linear classifier's validation F1 on the tiny set goes up and down from epoch to epoch.
OSCILLATING = {"augment.policy": "none", "classifier.backbone": "linear", "classifier.batch_size": 32,
               "classifier.epochs": 5, "classifier.patience": 0}


def _optuna_trials(out, name):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'optuna.db'}").trials


@pytest.mark.slow
def test_optuna_is_told_each_configs_best_epoch_value_averaged_over_its_seeds(tmp_path, local_ray):
    """Trials that peak before their last epoch: the values in the Optuna study are those of trials.parquet (the best
    epoch's, whose weights were tested), averaged over the config's two seeds, for both objectives (the cost
    objective classifier_seconds too); epochs.parquet keeps every epoch's own value."""
    import optuna

    from fercore.sweep import run_sweep

    grid = {"classifier.lr": [0.01, 0.05, 0.1]}
    sweep = write_sweep(tmp_path, name="best", space=None, sampler="grid", grid=grid, fixed=OSCILLATING,
                        metric=["val_macro_f1", "classifier_seconds"], mode=["max", "min"],
                        scheduler={"type": "none"}, num_samples=3, seeds=2, optuna_storage=True)
    out = run_sweep(load_sweep(sweep), tmp_path / "results")
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(rows) == 6 and all(r["status"] == "completed" for r in rows), [r["reason"] for r in rows]
    peaked_early = [r for r in rows if r["best_epoch"] < r["epochs_run"]]
    assert peaked_early, [(r["best_epoch"], r["epochs_run"]) for r in rows]
    epochs = {(e["trial_id"], e["epoch"]): e for e in pq.read_table(out / "epochs.parquet").to_pylist()}
    for r in rows:  # the row holds the best epoch's value; the epochs table each epoch's own
        assert epochs[r["trial_id"], r["best_epoch"]]["val_macro_f1"] == r["val_macro_f1"]
        assert all(epochs[r["trial_id"], e]["val_macro_f1"] <= r["val_macro_f1"] for e in range(1, 6))
    assert any(epochs[r["trial_id"], 5]["val_macro_f1"] < r["val_macro_f1"] for r in peaked_early)

    trials = _optuna_trials(out, "best")
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        seeds = [r for r in rows if r["classifier.lr"] == t.params["classifier.lr"]]
        assert sorted(r["seed"] for r in seeds) == [0, 1]
        assert t.values == pytest.approx([sum(r[m] for r in seeds) / 2 for m in ("val_macro_f1", "classifier_seconds")],
                                         rel=1e-12)


@pytest.mark.slow
def test_a_trial_asha_stopped_is_pruned_in_optuna_and_a_completed_one_has_its_rows_value(tmp_path, local_ray):
    import optuna

    from fercore.sweep import run_sweep

    grid = {"classifier.lr": [0.003, 0.01, 0.03, 0.05, 0.1]}
    sweep = write_sweep(tmp_path, name="asha", space=None, sampler="grid", grid=grid, fixed=OSCILLATING,
                        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2}, num_samples=5,
                        max_concurrent=1, optuna_storage=True)
    out = run_sweep(load_sweep(sweep), tmp_path / "results")
    rows = {r["classifier.lr"]: r for r in pq.read_table(out / "trials.parquet").to_pylist()}
    statuses = sorted(r["status"] for r in rows.values())
    assert "stopped" in statuses and "completed" in statuses, statuses  # the grid's order is the sampler seed's
    for t in _optuna_trials(out, "asha"):
        row = rows[t.params["classifier.lr"]]
        if row["status"] == "stopped":
            assert t.state == optuna.trial.TrialState.PRUNED, row["reason"]
        else:
            assert row["status"] == "completed" and t.state == optuna.trial.TrialState.COMPLETE
            assert t.value == row["val_macro_f1"]


@pytest.mark.slow
def test_a_crashed_trial_is_retried_and_recorded_and_the_sweep_goes_on(tmp_path, local_ray, capsys):
    """A trial that crashes (an exception that is no user error fercore catches, raised here around the real trial
    function for one grid point) runs again (max_failures=1) and is recorded as an error after its two attempts;
    the grid's other point completes. (train.device=cuda without CUDA was the crash here; it is now a ConfigError,
    recorded at once: tests/test_gpu_cpu.py.)"""
    from fercore.sweep import run_sweep
    from fercore.sweep.trainable import trainable as _trainable

    def crashes_at_lr_2e_3(config, **kwargs):  # Defined here, so Ray pickles it by value for its workers.
        if config.get("classifier.lr") == 2e-3:
            raise RuntimeError("a crash inside the trial")
        return _trainable(config, **kwargs)

    sweep = write_sweep(tmp_path, name="crash", space=None, sampler="grid", grid={"classifier.lr": [1e-3, 2e-3]},
                        fixed={**REAL_ONLY, "classifier.backbone": "linear"}, scheduler={"type": "none"},
                        num_samples=2, max_concurrent=1)
    out = run_sweep(load_sweep(sweep), tmp_path / "results", trainable=crashes_at_lr_2e_3)
    rows = {r["classifier.lr"]: r for r in pq.read_table(out / "trials.parquet").to_pylist()}
    assert rows[1e-3]["status"] == "completed" and rows[1e-3]["attempts"] == 1
    assert rows[2e-3]["status"] == "error" and rows[2e-3]["attempts"] == 2, rows[2e-3]
    assert rows[2e-3]["reason"] == "RuntimeError: a crash inside the trial (after 2 attempts)"
    printed = capsys.readouterr().out
    assert f"[retry] trial {rows[2e-3]['trial_id']} crashed" in printed
    # One line a person can act on: the trial, the message, where it was raised, its full log (issue 25).
    line = next(line for line in printed.splitlines() if f"trial {rows[2e-3]['trial_id']} error" in line)
    assert f"RuntimeError: a crash inside the trial (after 2 attempts) (at {__file__}:" in line
    assert f"full log: {out / rows[2e-3]['log']})" in line and "Traceback" not in line
    log = (out / rows[2e-3]["log"]).read_text()
    assert 'raise RuntimeError("a crash inside the trial")' in log and "\x1b[" not in log  # the frames, no colours


@pytest.mark.slow
def test_the_time_budget_ends_the_sweep_and_records_the_trial_it_cut_short(tmp_path, local_ray):
    """Trials of 1000 epochs, 50 of them, one at a time, in a 15 s budget: the sweep ends with the running trial
    recorded as stopped by the budget (no trial can finish 1000 epochs of Ray reports in that time)."""
    from fercore.sweep import run_sweep

    _space(tmp_path, "lr_only", "trial.suggest_float('classifier.lr', 1e-3, 2e-3)")
    fixed = {**REAL_ONLY, "classifier.backbone": "linear", "classifier.epochs": 1000}
    sweep = write_sweep(tmp_path / "sweeps", name="budget", space="lr_only", fixed=fixed, sampler="random",
                        scheduler={"type": "none"}, num_samples=50, max_concurrent=1, time_budget_s=15)
    out = run_sweep(load_sweep(sweep), tmp_path / "results")
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert 1 <= len(rows) < 50
    stopped = [r for r in rows if r["status"] == "stopped"]
    assert stopped and all("time budget (time_budget_s=15) ran out after epoch" in r["reason"] for r in stopped)
    assert all(r["epochs_run"] < 1000 for r in stopped)


@pytest.mark.slow
def test_a_resume_ray_cannot_restore_stops_before_running_anything(tmp_path, local_ray):
    """Ray 2.60 answers a saved state it cannot read by logging it and starting a new experiment of one trial, which
    would end "finished" without the sweep's missing trials. With no committed snapshot to put back, the resumed
    sweep refuses instead, naming the folder, and leaves the tables as they were."""
    from fercore.errors import UserError
    from fercore.results.manifest import commit, read_manifest
    from fercore.sweep import run_sweep
    from fercore.sweep import state as tune_state

    sweep = write_sweep(tmp_path, name="unrestorable", space=None, sampler="grid", grid={"classifier.lr": [1e-3, 2e-3]},
                        fixed={**REAL_ONLY, "classifier.backbone": "linear"}, scheduler={"type": "none"},
                        num_samples=2, max_concurrent=1)
    out = run_sweep(load_sweep(sweep), tmp_path / "results")
    tables = {p.relative_to(out): p.read_bytes() for p in out.glob("*.parquet/*")}  # each table a folder of parts
    snapshot = tune_state.committed(out)  # committed with the rows, named by the manifest
    assert snapshot is not None and snapshot.exists()
    manifest = read_manifest(out)
    manifest.attachments = {}
    commit(out, manifest)
    snapshot.unlink()
    for state in (out / "tune").glob("experiment_state-*.json"):
        state.write_text('{"not": "what Ray wrote"}')  # whole JSON, so only Ray's own restore can find it wrong
    with pytest.raises(UserError, match=r"could not restore the sweep from .*unrestorable/tune .* a new experiment "
                                         r"of 1 trials instead of finishing these 2; nothing was run"):
        run_sweep(load_sweep(sweep), tmp_path / "results", resume=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.glob("*.parquet/*")} == tables


def test_failed_trials_are_labelled_by_their_last_error_line():
    from fercore.sweep.callback import _failure_status

    assert _failure_status("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB") == "oom"
    assert _failure_status("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low") == "oom"
    assert _failure_status("fercore.generators.base.Diverged: diverged at step 3: loss_g is nan") == "diverged"
    assert _failure_status("RuntimeError: Found no NVIDIA driver on your system.") == "error"


@pytest.mark.slow
def test_a_gpu_sweep_on_a_local_instance_without_gpus_is_a_clear_error(tmp_path, local_ray, monkeypatch):
    from fercore.errors import UserError
    from fercore.sweep import run_sweep

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = load_sweep(write_sweep(tmp_path, resources={"cpu": 1, "gpu": 0.5}))
    with pytest.raises(UserError, match=r"resources.gpu: each trial asks for 0.5 GPU"):
        run_sweep(spec, tmp_path / "results")
    assert not (tmp_path / "results" / "tiny" / "trials.parquet").exists()


def test_a_new_run_into_a_folder_holding_an_earlier_runs_trials_is_refused(tmp_path, capsys):
    """A second `fersweep run` without --resume would add to the earlier run's study and tables (a --smoke run's
    trials in the real run's report): refused before Ray starts, with what to do, and nothing of the earlier run
    touched."""
    import pyarrow as pa

    from fercore.cli import main

    sweep = write_sweep(tmp_path)
    table = tmp_path / "results" / "tiny" / "trials.parquet"
    table.mkdir(parents=True)
    pq.write_table(pa.table({"trial_id": ["a1", "b2"], "status": ["completed"] * 2}), table / "part-00000000.parquet")
    before = sorted(p.name for p in (tmp_path / "results" / "tiny").rglob("*"))
    assert main(["run", str(sweep), "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert f"{table}: already holds 2 trials of an earlier run of this sweep; --resume finishes that run" in err
    assert sorted(p.name for p in (tmp_path / "results" / "tiny").rglob("*")) == before
