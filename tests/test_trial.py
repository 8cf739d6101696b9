import json

import numpy as np
import pytest

from fercore import trial
from fercore.cli import main
from fercore.generators.cgan import CGAN
from fercore.labels import CLASSES
from tests.conftest import TINY_TRIAL


@pytest.mark.slow
def test_one_whole_trial_on_tiny_data(tiny_faces, monkeypatch):
    seen = {}
    fit = CGAN.fit

    def spy(self, images, labels, seed, on_step=None):
        seen["images"], seen["labels"] = images, labels
        return fit(self, images, labels, seed, on_step)

    monkeypatch.setattr(CGAN, "fit", spy)
    reports = []
    result = trial.run({**TINY_TRIAL, "augment.policy": "balance"}, tiny_faces,
                       lambda epoch, metrics, artifacts: reports.append((epoch, metrics, artifacts)))

    # The generator saw exactly the training split: no validation or test image reached it.
    train_x, train_y = tiny_faces.split("train")
    assert np.array_equal(seen["images"], train_x) and np.array_equal(seen["labels"], train_y)
    # One report per epoch; only the last carries test metrics and the artifacts.
    assert [r[0] for r in reports] == [1, 2]
    assert "test_accuracy" not in reports[0][1] and reports[0][2] is None
    assert "test_accuracy" in reports[1][1] and reports[1][2]["samples_png"].startswith(b"\x89PNG")
    assert np.asarray(reports[1][2]["confusion"]).sum() == (tiny_faces.splits == 2).sum()
    # The last report carries the whole row, config keys included, and the epochs table keeps each epoch's own values.
    assert reports[1][2]["row"] == result.row and reports[1][2]["row"]["augment.policy"] == "balance"
    assert [{k: m[k] for k in e} for (_, m, _), e in zip(reports, result.epochs)] == result.epochs
    # The one read of the test split: a probability per class for every test image, as the row's metrics saw it.
    test_x, test_y = tiny_faces.split("test")
    assert result.test.proba.shape == (len(test_x), 7) and np.array_equal(result.test.labels, test_y)
    assert np.allclose(result.test.proba.sum(1), 1, atol=1e-5)

    row = result.row
    counts = np.bincount(train_y, minlength=7)
    assert row["n_train_real"] == counts.sum()
    assert row["n_train_synthetic"] == (counts.max() - counts).sum()  # balance tops up to the largest class
    for key in ("generator.type", "classifier.backbone", "augment.policy", "val_macro_f1", "test_accuracy",
                "test_macro_f1", "train_seconds"):
        assert key in row
    for name in CLASSES:
        assert 0.0 <= row[f"test_recall_{name}"] <= 1.0
    assert row["status"] == "completed" and 1 <= row["best_epoch"] <= 2


@pytest.mark.slow
def test_real_only_trial_trains_no_generator(tiny_faces, monkeypatch):
    monkeypatch.setattr(CGAN, "fit", lambda *a, **k: pytest.fail("policy none must not train a generator"))
    config = {k: v for k, v in TINY_TRIAL.items() if k != "classifier.width"}  # cnn3's key, not resnet18's
    result = trial.run({**config, "augment.policy": "none", "classifier.backbone": "resnet18",
                        "classifier.epochs": 1}, tiny_faces, lambda *a: None)
    assert result.row["n_train_synthetic"] == 0 and "samples_png" not in result.artifacts


@pytest.mark.slow
def test_same_seed_same_result(tiny_faces):
    cfg = {**TINY_TRIAL, "augment.policy": "none", "classifier.epochs": 1}
    a = trial.run(cfg, tiny_faces, lambda *a: None).row
    b = trial.run(cfg, tiny_faces, lambda *a: None).row
    assert a["test_macro_f1"] == b["test_macro_f1"] and a["val_loss"] == b["val_loss"]


@pytest.mark.slow
def test_trial_command_prints_metrics_as_json_last(capsys, tmp_path):
    args = [f"{k}={v}" for k, v in TINY_TRIAL.items()] + ["classifier.epochs=1"]
    assert main(["trial", *args, "--storage", str(tmp_path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(last)
    assert metrics["status"] == "completed" and 0 <= metrics["test_accuracy"] <= 1
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "trials.parquet").num_rows == 1


def test_trial_command_bad_config_exits_2_with_one_line(capsys):
    assert main(["trial", "classifier.backbone=resnet999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classifier.backbone" in err[0] and "resnet18" in err[0]
