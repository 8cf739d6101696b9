"""Sweep files, validated whole before anything starts: samplers (grid, nsga2), several objectives, time budget,
retries, Optuna storage and GPU shares, every problem reported together with its key; search spaces that import
their siblings. No Ray here."""
import pickle
from pathlib import Path

import optuna
import pytest
import yaml

from fercore.cli import main
from fercore.sweep.spaces import REPO_ROOT, FixedSpace, flat_config, list_search_spaces, load_space
from fercore.sweep.spec import SweepError, load_sweep, set_gpus_per_trial

BASE = {"name": "t", "data": {"source": "procedural", "scale": 0.01}, "space": "quickstart",
        "fixed": {"classifier.epochs": 1}}


def write(tmp_path, name="t", drop=(), **keys):
    sweep = {**{k: v for k, v in BASE.items() if k not in drop}, **keys}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def problems(path) -> str:
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    return str(e.value)


def test_a_grid_runs_each_point_once_by_default_and_keeps_its_values_typed(tmp_path):
    grid = {"classifier.backbone": ["cnn3", "linear"], "augment.real_ratio": [0, 0.1, 0.3, 0.5, 1]}
    spec = load_sweep(write(tmp_path, drop=("space",), sampler="grid", grid=grid,
                            fixed={"augment.policy": "real_ratio", "classifier.epochs": 1}, seeds=2))
    assert spec.space == "" and spec.grid_size == 10 and spec.num_samples == 10  # the sweep runs it x seeds
    assert spec.grid["augment.real_ratio"] == [0.0, 0.1, 0.3, 0.5, 1.0]
    assert all(type(v) is float for v in spec.grid["augment.real_ratio"])
    assert spec.grid["classifier.backbone"] == ["cnn3", "linear"]


def test_grid_problems_are_reported_together(tmp_path):
    grid = {"classifier.backbone": ["cnn3", "vgg99"], "augment.real_ratio": [0.5], "classifier.epochs": [1, 2],
            "data.scale": [0.1], "classifier.nonsense": [1], "classifier.lr": [], "classifier.dropout": [0.1, 0.1]}
    text = problems(write(tmp_path, sampler="grid", grid=grid, num_samples=50))
    for expected in ("space: a grid sweep enumerates its grid and names no space",
                     "grid.classifier.backbone: unknown backbone 'vgg99'; valid: cnn3",
                     "grid.augment.real_ratio: applies to no grid point with these fixed values (it belongs to "
                     "augment.policy=real_ratio)",
                     "grid.classifier.epochs: also in fixed",
                     "grid.data.scale: the data set is loaded once per sweep",
                     "grid.classifier.nonsense: unknown key",
                     "grid.classifier.lr: expected a non-empty list",
                     "grid.classifier.dropout: a value is listed twice"):
        assert expected in text, (expected, text)


def test_a_grid_value_is_checked_where_its_key_applies(tmp_path):
    grid = {"augment.policy": ["none", "real_ratio"], "augment.real_ratio": [0.5, 2.0]}
    text = problems(write(tmp_path, drop=("space",), sampler="grid", grid=grid, num_samples=5))
    assert "grid.augment.real_ratio: expected a float in [0.0, 1.0], got 2.0" in text
    assert "num_samples: 5 is more than the grid's 4 points" in text


def test_a_grid_belongs_to_the_grid_sampler(tmp_path):
    assert "grid: missing; sampler: grid needs grid:" in problems(write(tmp_path, drop=("space",), sampler="grid"))
    text = problems(write(tmp_path, grid={"classifier.lr": [0.001]}))
    assert "grid: only for sampler: grid (this sweep's sampler is tpe)" in text


def test_several_objectives(tmp_path):
    spec = load_sweep(write(tmp_path, sampler="nsga2", metric=["val_macro_f1", "train_seconds"], mode=["max", "min"]))
    assert spec.metrics == ["val_macro_f1", "train_seconds"] and spec.modes == ["max", "min"]
    assert spec.multi_objective and spec.metric == "val_macro_f1" and spec.mode == "max"
    assert spec.scheduler["type"] == "none"  # ASHA judges one metric; with several it is off unless asked for
    one = load_sweep(write(tmp_path, sampler="nsga2"))  # NSGA-II on one objective is allowed
    assert one.metrics == ["val_macro_f1"] and one.scheduler["type"] == "asha"


@pytest.mark.parametrize("keys, expected", [
    ({"metric": ["val_macro_f1", "train_seconds"], "mode": "max"}, "mode: 1 mode(s) for 2 metric(s)"),
    ({"metric": ["val_macro_f1", "train_seconds"]}, "mode: missing; give one mode (max or min) per metric"),
    ({"metric": "val_macro_f1", "mode": ["max", "min"]}, "mode: 2 mode(s) for 1 metric(s)"),
    ({"metric": ["val_macro_f1", "val_macro_f1"], "mode": ["max", "max"]}, "metric: val_macro_f1 is listed twice"),
    ({"metric": "test_macro_f1"}, "metric: test_macro_f1: the test split is read once"),
    ({"metric": ["val_macro_f1", "train_seconds"], "mode": ["max", "min"], "scheduler": {"type": "asha"}},
     "scheduler.type: asha stops trials on one metric"),
    ({"metric": "train_seconds", "mode": "min"}, "scheduler.type: asha compares trials on train_seconds every epoch"),
    ({"sampler": "bayes"}, "sampler: expected one of tpe, random, grid, nsga2, got 'bayes'"),
    ({"mode": "up"}, "mode: expected max or min"),
])
def test_objective_and_sampler_problems(tmp_path, keys, expected):
    assert expected in problems(write(tmp_path, **keys))


def test_budget_retries_storage_and_resources_are_checked_together(tmp_path):
    path = write(tmp_path, time_budget_s=0, max_failures=-1, optuna_storage=3, resources={"cpu": 1, "gpu": 1.5},
                 scheduler={"type": "asha", "reduction_factor": 1, "grace_period": 0.5})
    text = problems(path)
    assert "6 problems" in text
    for expected in ("time_budget_s: expected a number of seconds > 0, got 0",
                     "max_failures: expected an integer >= 0, got -1",
                     "optuna_storage: expected true, false, a file path, journal:PATH or an SQLAlchemy URL, got 3",
                     "resources.gpu: expected a fraction of one GPU in (0, 1] or a whole number of GPUs, got 1.5",
                     "scheduler.reduction_factor: expected a number > 1, got 1",
                     "scheduler.grace_period: expected a whole number of epochs >= 1, got 0.5"):
        assert expected in text, expected
    spec = load_sweep(write(tmp_path, time_budget_s=90, max_failures=0, optuna_storage=True,
                            resources={"cpu": 1, "gpu": 0.25}))
    assert (spec.time_budget_s, spec.max_failures, spec.resources["gpu"]) == (90, 0, 0.25)
    assert load_sweep(write(tmp_path)).max_failures == 1 and load_sweep(write(tmp_path)).optuna_storage is False


def test_where_the_optuna_study_is_kept(tmp_path):
    out = tmp_path / "results" / "t"
    spec = load_sweep(write(tmp_path, optuna_storage=True))
    assert spec.storage_url(out) == f"sqlite:///{out.resolve() / 'optuna.db'}"
    spec.optuna_storage = "studies/all.db"
    assert spec.storage_url(out) == f"sqlite:///{out.resolve() / 'studies' / 'all.db'}"
    spec.optuna_storage = "postgresql://host/db"
    assert spec.storage_url(out) == "postgresql://host/db"
    spec.optuna_storage = False
    assert spec.storage_url(out) is None


def test_gpus_per_trial_flag(tmp_path, capsys):
    path = write(tmp_path)
    for bad in ("0", "1.5", "-1"):
        assert main(["run", str(path), "--gpus-per-trial", bad]) == 2
        err = capsys.readouterr().err
        assert "--gpus-per-trial: expected a fraction of one GPU in (0, 1] or a whole number of GPUs" in err, err
    spec = load_sweep(path)
    set_gpus_per_trial(spec, 0.5)
    assert spec.resources["gpu"] == 0.5
    set_gpus_per_trial(spec, 2.0)
    assert spec.resources["gpu"] == 2 and isinstance(spec.resources["gpu"], int)


def _spaces(tmp_path, **files):
    folder = tmp_path / "search_spaces"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.py").write_text(text)
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    return tmp_path / "sweeps"


def test_spaces_are_drawn_from_before_the_sweep_starts(tmp_path):
    sweeps = _spaces(tmp_path, bad_value="def space(trial):\n    trial.suggest_categorical('classifier.backbone', "
                                          "['cnn3', 'vgg99'])\n",
                     raises="def space(trial):\n    return {'x': 1 / 0}\n",
                     dynamic="def space(trial):\n    b = trial.suggest_categorical('classifier.backbone', "
                             "['cnn3', 'linear'])\n    trial.suggest_categorical('classifier.optimizer', "
                             "['adam', 'sgd'] if b == 'cnn3' else ['adam'])\n",
                     data_key="def space(trial):\n    trial.suggest_float('data.val_fraction', 0.1, 0.2)\n")
    assert ("space: bad_value drew an invalid config: classifier.backbone: unknown backbone 'vgg99'"
            in problems(write(sweeps, space="bad_value")))
    assert "space: raises raised ZeroDivisionError on draw 1: division by zero" in problems(write(sweeps, space="raises"))
    assert "dynamic value space" in problems(write(sweeps, space="dynamic"))
    assert "space: data_key suggests data.val_fraction; the data set is loaded once per sweep" in problems(
        write(sweeps, space="data_key"))


def test_a_space_imports_its_siblings_from_any_working_folder(tmp_path, monkeypatch):
    """Two folders each with a parts.py: each space gets its own folder's, whatever the working folder."""
    sweeps = _spaces(tmp_path, parts="def backbones():\n    return ['linear']\n",
                     mine="from .parts import backbones\n\ndef space(trial):\n"
                          "    trial.suggest_categorical('classifier.backbone', backbones())\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_sweep(write(sweeps, space="mine"))
    study = optuna.create_study()
    trial = study.ask()
    load_space("mine", spec.path)(trial)
    assert trial.params == {"classifier.backbone": "linear"}
    full = load_space("full")  # the repository's, whose parts.py is another file of the same name
    trial = optuna.create_study().ask()
    full(trial)
    assert "classifier.lr" in trial.params
    assert "full" in list_search_spaces() and "parts" not in list_search_spaces()


def test_fixed_values_answer_suggestions_of_their_key_under_any_variant_name(tmp_path):
    fixed = {"augment.filter": "none", "classifier.lr": 0.002}
    space = pickle.loads(pickle.dumps(FixedSpace("full", REPO_ROOT / "sweeps" / "x.yaml", fixed)))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        config = flat_config({**trial.params, **space(trial)})
        assert config["augment.filter"] == "none" and config["classifier.lr"] == 0.002
        assert not any(k.startswith(("augment.filter", "classifier.lr")) for k in trial.params)
    assert flat_config({"augment.filter@no_discriminator": "none", "seed": 1}) == {"augment.filter": "none", "seed": 1}


def test_the_quickstart_sweep_keeps_its_study_for_the_dashboard():
    spec = load_sweep(Path(REPO_ROOT / "sweeps" / "quickstart.yaml"))
    assert spec.optuna_storage is True and spec.max_failures == 1 and spec.scheduler["type"] == "asha"


def test_every_sweep_says_in_its_header_how_to_run_it_on_fer2013():
    """Issue 22: each sweep file's leading comment names the command that points it at the real data set."""
    for path in sorted((REPO_ROOT / "sweeps").glob("*.yaml")):
        header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
        assert f"fersweep run sweeps/{path.name} --data DIR/fer2013" in header, path.name


def test_run_data_overrides_the_sweep_files_source(tmp_path):
    from fercore.sweep.keys import SweepError
    from fercore.sweep.spec import set_data_source

    spec = load_sweep(REPO_ROOT / "sweeps" / "weighted_loss.yaml")
    assert spec.data == {"source": "procedural", "scale": 0.1}
    with pytest.raises(SweepError, match="--data: .*missing: no such file or folder"):
        set_data_source(spec, str(tmp_path / "missing"))
    set_data_source(spec, str(tmp_path))
    assert spec.data == {"source": str(tmp_path)}  # data.scale applies to the procedural faces only
