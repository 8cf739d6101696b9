"""The report aggregates a k-fold sweep's config over its folds before comparing configs (issue 17): a results folder
written here by hand, two learning rates x 3 folds x 2 seeds, with one fold run with a third seed so that a plain mean
over trials and the mean over folds differ."""
import re

import numpy as np
import pandas as pd
import pytest

from tests.test_report import report, table_after
from tests.test_report_selection import K, N, f1, section, write_folder

FOLDS = 3
LEVEL = {0.01: (0.55, 0.35, 0.45), 0.001: (0.40, 0.30, 0.35)}  # right-answer rate per fold


def build(rng):
    true = np.repeat(np.arange(K), N // K)
    rows, preds = [], {}
    for lr, per_fold in LEVEL.items():
        for fold, q in enumerate(per_fold):
            for seed in ((0, 1, 2) if fold == 0 else (0, 1)):
                tid = f"lr{int(lr * 1000):02d}f{fold}s{seed}"
                right = rng.random(N) < q
                pred = np.where(right, true, (true + rng.integers(1, K, N)) % K)
                preds[tid] = pred
                rows.append({"trial_id": tid, "status": "completed", "seed": seed, "data.fold": fold,
                             "data.folds": FOLDS, "classifier.lr": lr, "classifier.backbone": "cnn3",
                             "augment.policy": "none", "data.source": "ckplus", "best_epoch": 2,
                             "classifier.epochs": 3, "train_seconds": 5.0, "test_macro_f1": f1(true, pred),
                             "test_accuracy": float((pred == true).mean())})
    table = pd.DataFrame(rows)
    table["test_macro_f1_ci_low"] = table["test_macro_f1"] - 0.05
    table["test_macro_f1_ci_high"] = table["test_macro_f1"] + 0.05
    table["val_macro_f1"] = table["test_macro_f1"] + 0.01
    table["val_loss"] = 1.0
    return table, true, preds


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    table, true, preds = build(np.random.default_rng(5))
    folder = write_folder(tmp_path_factory.mktemp("kfold") / "results", table, true, preds)
    return table, report(folder, folder / "report")


def test_a_config_is_the_mean_over_its_folds_with_their_spread(written):
    table, md = written
    text = section(md, "2.1 Across seeds")
    assert "aggregated over its folds before configs are compared" in text
    configs = table_after(text, "Per config").set_index("config")
    assert set(configs.index) == {"classifier.lr=0.01", "classifier.lr=0.001"}  # data.fold is no config key
    for lr in LEVEL:
        part = table[table["classifier.lr"] == lr]
        by_fold = part.groupby("data.fold")["test_macro_f1"].mean()
        row = configs.loc[f"classifier.lr={lr:.4g}"]
        assert row["trials (seed x fold)"] == "7" and row["folds"] == "3"
        assert row["sd over folds of test macro-F1"] == f"{by_fold.std(ddof=1):.3f}"
        value, low, high = map(float, re.findall(r"[-+]?\d\.\d+", row["mean test macro-F1 [95 % CI]"]))
        # The fold mean, not the trial mean (fold 0's third seed would pull that one towards fold 0).
        assert value == pytest.approx(by_fold.mean(), abs=5e-4)
        assert abs(part["test_macro_f1"].mean() - by_fold.mean()) > 1e-3
        assert low < value < high
        val = part.groupby("data.fold")["val_macro_f1"].mean().mean()
        assert row["mean val_macro_f1"] == f"{val:.3f}"


def test_configs_are_compared_fold_by_fold_and_seed_by_seed(written):
    table, md = written
    text = section(md, "2.2 Paired comparisons")
    assert "a pair's \"seeds\" are its (seed, fold) trials, compared fold by fold" in text
    pairs = table_after(text, "Paired differences")
    row = pairs[pairs["key"] == "classifier.lr"].iloc[0]
    assert row["values"] == "0.001 → 0.01" and row["seeds"] == "7"
    t = table.set_index(["classifier.lr", "data.fold", "seed"])["test_macro_f1"]
    diffs = pd.Series({(f, s): t[0.01, f, s] - t[0.001, f, s] for f, s in t.loc[0.01].index})
    by_fold = diffs.groupby(level=0).mean()
    assert row["difference in test macro-F1 [95 % CI]"].startswith(f"{by_fold.mean():+.3f} [")
    assert abs(diffs.mean() - by_fold.mean()) > 1e-3
