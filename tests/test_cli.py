"""`fersweep` verbs: list, data info, data preview, trial's last JSON line and its --storage tables, and the one-line
errors with status 2."""
import json
import math
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fercore.cli import main
from fercore.data import load
from fercore.labels import CLASSES


def test_list_shows_every_registered_name(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("cgan", "cnn3", "resnet18", "linear", "none", "balance", "real_ratio", "generator.latent_dim"):
        assert name in out
    assert "search spaces: " in out and "quickstart" in out.split("search spaces: ")[1]


def test_list_shows_the_quality_filters_with_their_keys(capsys):
    from fercore.augment.filters import FILTERS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    section = out.split("augment.filter (default none):\n")[1].split("\n")
    names = [name for name, _ in FILTERS.items()]
    listed = {line.split()[0]: line for line in section[:len(names)]}
    assert set(listed) == set(names)
    for name in ("classifier_confidence", "discriminator"):
        assert FILTERS.get(name).help in listed[name]
        assert "[augment.filter_tau=0.5, augment.filter_rounds=5]" in listed[name]
    assert "augment.filter_tau" not in listed["none"]  # keeping every image reads no threshold


@pytest.mark.slow
def test_trial_prints_the_whole_rows_figures_and_stores_its_predictions(tmp_path, capsys, monkeypatch):
    """An augmented trial: its last JSON line holds every figure of its row (gen_*, uplift_*, leak_*, cache hits,
    counts), the same as trials.parquet; --storage writes predictions.parquet from the artifacts' predictions."""
    from fercore import trial
    from tests.conftest import TINY_TRIAL

    run = trial.run

    def with_predictions(*args, **kwargs):
        # Until fercore.trial sends artifacts["predictions"] (issue 15's contract) the test makes them from the
        # trial's own test read, in that format; once it does, the trial's own are stored.
        result = run(*args, **kwargs)
        if "predictions" not in result.artifacts:
            read = result.test
            result.artifacts["predictions"] = {"index": np.arange(len(read.labels), dtype=np.int64),
                                               "true": np.asarray(read.labels, dtype=np.int64),
                                               "predicted": read.predicted.astype(np.int64),
                                               "proba": read.proba.astype(np.float32)}
        return result

    monkeypatch.setattr(trial, "run", with_predictions)
    args = [f"{k}={v}" for k, v in TINY_TRIAL.items()] + ["classifier.epochs=1", "augment.policy=balance"]
    assert main(["trial", *args, "--storage", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = pq.read_table(tmp_path / "trials.parquet").to_pylist()
    figures = {k: v for k, v in row.items() if "." not in k and k not in ("seed", "trial_id")}
    assert set(printed) == set(figures)
    for key, value in figures.items():
        if isinstance(value, float) and not math.isfinite(value):
            assert printed[key] is None, key
        else:
            assert printed[key] == pytest.approx(value) if isinstance(value, float) else printed[key] == value, key
    for key in ("gen_fid", "gen_conditional_accuracy", "uplift_test_macro_f1", "leak_synthetic_test",
                "generator_cache_hit", "baseline_cache_hit", "n_train_synthetic", "classifier_seconds",
                "test_macro_f1", "val_macro_f1", "best_epoch"):
        assert key in printed, key
    stored = pq.read_table(tmp_path / "predictions.parquet").to_pylist()
    assert {r["model"] for r in stored} == {"trial", "baseline", "control"}  # and the compared models' own rows
    predictions = [r for r in stored if r["model"] == "trial"]
    confusion = pq.read_table(tmp_path / "confusion.parquet").to_pylist()
    assert len(predictions) == sum(r["count"] for r in confusion) > 0  # one row per test image
    assert {r["trial_id"] for r in predictions} == {row["trial_id"]}
    assert all(r["predicted"] == max(CLASSES, key=lambda c: r[f"p_{c}"]) for r in predictions)


def test_data_info_prints_counts_per_class_and_split(capsys):
    assert main(["data", "info", "procedural", "--scale", "0.01"]) == 0
    out = capsys.readouterr().out.splitlines()
    counts = load("procedural", scale=0.01).counts()
    for i, name in enumerate(CLASSES):
        line = next(line for line in out if line.startswith(name))
        assert [int(v) for v in line.split()[1:]] == [counts[s][i] for s in ("train", "val", "test")]


def test_data_preview_writes_a_grid_per_class(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "procedural", "--scale", "0.01", "--out", str(out), "--per-class", "3"]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (3 * 48, 7 * 48)


@pytest.mark.slow
def test_bad_data_file_is_one_line_and_status_2(tmp_path):
    bad = tmp_path / "fer2013.csv"
    bad.write_text("emotion,pixels,Usage\n0," + " ".join(["1"] * 2304) + ",Training\n9," + " ".join(["1"] * 2304)
                   + ",Training\n")
    proc = subprocess.run([sys.executable, "-m", "fercore.cli", "data", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "line 3" in lines[0] and "Traceback" not in proc.stderr


def test_bad_sweep_file_is_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nspace: quickstart\nnum_samples: -1\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "num_samples" in err and str(bad) in err
