"""The sweep-file keys declared as data (fercore.sweep.keys): each check's message names the key and what was expected,
SweepSpec's defaults are the table's, docs/sweeps.md's key table is the table's, and sweep-file validation and
`fersweep list` run without importing Ray."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fercore.sweep import keys
from fercore.sweep.spaces import REPO_ROOT
from fercore.sweep.spec import SweepSpec, load_sweep
from tests.test_docs import MAX_CELL


@pytest.mark.parametrize("name, bad, expected", [
    ("data", [1], "data: expected a mapping, got [1]"),
    ("sampler", "bayes", "sampler: expected one of tpe, random, grid, nsga2, got 'bayes'"),
    ("num_samples", 0, "num_samples: expected an integer >= 1, got 0"),
    ("seed", 1.5, "seed: expected an integer >= 0, got 1.5"),
    ("seeds", True, "seeds: expected an integer >= 1, got True"),
    ("cache", "yes", "cache: expected true or false, got 'yes'"),
    ("time_budget_s", float("inf"), "time_budget_s: expected a number of seconds > 0, got inf"),
    ("optuna_storage", "",
     "optuna_storage: expected true, false, a file path, journal:PATH or an SQLAlchemy URL, got ''"),
    ("metric", [],
     "metric: expected a metric name or a list of them (e.g. [val_macro_f1, classifier_seconds]), got []"),
    ("mode", "up", "mode: expected max or min (a list of them for several metrics), got 'up'"),
    ("grid", {}, "grid: expected a mapping of config keys to lists of values, e.g. {classifier.backbone: [cnn3, "
                 "linear]}, got {}"),
    ("scheduler.type", "hyperband", "scheduler.type: expected one of asha, none, got 'hyperband'"),
    ("scheduler.grace_period", 0, "scheduler.grace_period: expected a whole number of epochs >= 1, got 0"),
    ("scheduler.max_t", None, "scheduler.max_t: expected a whole number of epochs >= 1, got None"),
    ("scheduler.reduction_factor", 1, "scheduler.reduction_factor: expected a number > 1, got 1"),
    ("resources.cpu", -1, "resources.cpu: expected a number >= 0, got -1"),
    ("resources.gpu", "one", "resources.gpu: expected a number of GPUs per trial, got 'one'"),
])
def test_each_key_names_itself_and_what_it_expects(name, bad, expected):
    assert keys.BY_NAME[name].problem(bad) == expected


@pytest.mark.parametrize("name, good", [
    ("scheduler.max_t", 4.0), ("time_budget_s", None), ("time_budget_s", 0.5), ("resources.gpu", 0.25),
    ("resources.gpu", 2), ("optuna_storage", "studies/all.db"), ("optuna_storage", "journal:study.log"),
    ("metric", ["val_macro_f1", "train_seconds"]),
    ("mode", ["max", "min"]), ("name", 3), ("seed", 0),
])
def test_valid_values_pass(name, good):
    assert keys.BY_NAME[name].problem(good) is None


def test_a_sweep_files_problems_come_from_the_table(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"space": "quickstart", "seeds": 0, "scheduler": {"type": "asha", "rungs": 3},
                                    "resources": {"cpu": 1, "tpu": 1}, "nonsense": 1}))
    with pytest.raises(keys.SweepError) as e:
        load_sweep(path)
    text = str(e.value)
    assert "4 problems" in text
    assert f"nonsense: unknown sweep key; valid: {', '.join(sorted(keys.TOP_LEVEL))}" in text
    assert "seeds: expected an integer >= 1, got 0" in text
    assert "scheduler.rungs: unknown; valid: type, grace_period, reduction_factor, max_t" in text
    assert "resources.tpu: unknown; valid: cpu, gpu" in text


def test_the_specs_defaults_are_the_tables():
    spec = SweepSpec(name="t", path=Path("t.yaml"))
    for key in keys.KEYS:
        if "." in key.name or key.name in ("name", "metric", "mode"):
            continue
        assert getattr(spec, key.name) == key.default, key.name
    assert spec.metrics == [keys.default("metric")] and spec.modes == [keys.default("mode")]
    assert spec.resources == {k.name.split(".")[1]: k.default for k in keys.sub_keys("resources")}
    spec.scheduler = {"type": "asha"}
    assert spec.setting("scheduler.grace_period") == 1 and spec.setting("scheduler.reduction_factor") == 2
    spec.resources = {"cpu": 2}
    assert spec.setting("resources.gpu") == 0 and spec.setting("resources.cpu") == 2
    spec.data["source"] = "x"  # each spec its own mappings
    assert SweepSpec(name="u", path=Path("u.yaml")).data == {}


def docs_key_table() -> str:
    """keys.markdown_table() as docs/sweeps.md holds it: a cell longer than docs may have (tests/test_docs.py's
    MAX_CELL) reads "below the table", and its text follows the table as a list item, so no key's words are lost."""
    header, rule, *rows = keys.markdown_table().splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    lines, notes = [header, rule], []
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip()[1:-1])]  # an escaped \| stays in its cell
        for i, cell in enumerate(cells):
            if len(cell) > MAX_CELL:
                notes.append(f"- {cells[0]}, {columns[i]}: {cell}")
                cells[i] = "below the table"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + notes)


def test_the_docs_table_is_the_declared_one():
    page = (REPO_ROOT / "docs" / "sweeps.md").read_text()
    assert docs_key_table() in page, (
        "docs/sweeps.md's sweep-file key table differs from fercore.sweep.keys: paste the output of "
        "`.venv/bin/python -c 'from tests.test_sweep_keys import docs_key_table; print(docs_key_table())'` (from the "
        "repository root) in its place")
    assert keys.text_table() in keys.__doc__


@pytest.mark.slow
def test_validation_and_fersweep_list_do_not_import_ray():
    code = ("import sys\n"
            "from fercore.cli import main\n"
            "from fercore.sweep import load_sweep\n"
            "load_sweep('sweeps/quickstart.yaml')\n"
            "main(['list'])\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "sweep-file keys (sweeps/*.yaml):" in run.stdout and "scheduler.grace_period" in run.stdout
