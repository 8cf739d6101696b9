"""The report's uplift and gains over seeds (section 2.1) resample the test images from the stored predictions of each
trial and of the baseline and control it was compared against (predictions.parquet's model column, issue 15), and
fall back to each trial's paired interval in a folder written before those were stored. Results folders written here
by hand: augment.policy none vs balance over 4 seeds, each augmented trial's predictions made from its baseline's by
changing a share of its answers (so the two are correlated, as a trial and its baseline are), its row's paired
figures computed from those predictions and its paired intervals planted far wider than they are."""
import re

import numpy as np
import pandas as pd
import pytest

from fercore.report import resample
from fercore.report.configs import compare
from fercore.report.tables import load
from tests.test_report import report, table_after
from tests.test_report_selection import K, N, f1, section, write_folder

SEEDS = (0, 1, 2, 3)
WIDE = 0.25  # the planted half-width of each augmented row's paired intervals (their truth is far narrower)


def _answers(rng, true, q):
    right = rng.random(N) < q
    return np.where(right, true, (true + rng.integers(1, K, N)) % K)


def _redrawn(rng, true, pred, share, q):
    """PRED with a SHARE of its images answered afresh (right with probability Q)."""
    change = rng.random(N) < share
    return np.where(change, _answers(rng, true, q), pred)


def build(rng, units=tuple((s, None) for s in SEEDS), folds=0):
    """UNITS: the (seed, fold) trials of each config (fold None outside k-fold)."""
    true = np.repeat(np.arange(K), N // K)
    rows, preds, paired = [], {}, {}
    for seed, fold in units:
        tag = f"s{seed}" + (f"f{fold}" if fold is not None else "")
        base = _answers(rng, true, 0.40 + (0.1 * fold if fold else 0.0))
        trial = _redrawn(rng, true, base, 0.3, 0.70)
        control = _redrawn(rng, true, base, 0.3, 0.55)
        common = {"status": "completed", "seed": seed, "classifier.backbone": "cnn3", "data.source": "procedural",
                  "best_epoch": 2, "classifier.epochs": 3, "train_seconds": 1.0,
                  **({"data.fold": fold, "data.folds": folds} if folds else {})}
        for tid, pred, policy in ((f"n{tag}", base, "none"), (f"b{tag}", trial, "balance")):
            preds[tid] = pred
            rows.append({"trial_id": tid, "augment.policy": policy, "generator.type": "cgan" if policy != "none"
                         else None, **common, "test_macro_f1": f1(true, pred),
                         "test_accuracy": float((pred == true).mean())})
        up, gain = f1(true, trial) - f1(true, base), f1(true, trial) - f1(true, control)
        rows[-1] |= {"uplift_test_macro_f1": up, "uplift_test_macro_f1_low": up - WIDE,
                     "uplift_test_macro_f1_high": up + WIDE, "gain_control_test_macro_f1": gain,
                     "gain_control_test_macro_f1_low": gain - WIDE, "gain_control_test_macro_f1_high": gain + WIDE,
                     "control_test_macro_f1": f1(true, control)}
        paired[f"b{tag}"] = {"baseline": base, "control": control}
    table = pd.DataFrame(rows)
    table["test_macro_f1_ci_low"] = table["test_macro_f1"] - 0.05
    table["test_macro_f1_ci_high"] = table["test_macro_f1"] + 0.05
    table["val_macro_f1"] = table["test_macro_f1"]
    table["val_loss"] = 1.0
    return table, true, preds, paired


@pytest.fixture(scope="module")
def grid():
    return build(np.random.default_rng(11))


def _augmented(comp):
    [config] = [c for c in comp.configs if c.values.get("augment.policy") == "balance"]
    return config, comp.configs.index(config)


def _ci(cell):
    return tuple(map(float, re.findall(r"[-+]?\d\.\d+", cell)))


def test_uplift_and_gain_intervals_come_from_the_paired_predictions(grid, tmp_path):
    table, true, preds, paired = grid
    folder = write_folder(tmp_path / "paired", table, true, preds, paired=paired)
    comp = compare(load(folder), max_configs=30)
    config, n = _augmented(comp)
    aug = table[table["augment.policy"] == "balance"]
    ids = aug["trial_id"].tolist()
    for name, col, model in (("uplift", "uplift_test_macro_f1", "baseline"),
                             ("control", "gain_control_test_macro_f1", "control")):
        e = config.comparisons[name]
        assert e.source == "predictions" and e.seeds == len(SEEDS)
        # The mean is the rows' (which the predictions reproduce); the interval, the t over seeds with the test
        # images' variance added: a bootstrap of the trial's predictions against its baseline's or control's, the
        # seeds held fixed, one draw of images for every seed.
        assert e.mean == pytest.approx(aug[col].mean(), abs=1e-12)
        assert np.mean([f1(true, preds[t]) - f1(true, paired[t][model]) for t in ids]) == pytest.approx(e.mean)
        var = resample.image_variance([true] * len(ids), [preds[t] for t in ids], K,
                                      pred_a=[paired[t][model] for t in ids], shared_images=True, seed=n)
        t = resample.seed_t(aug[col].to_numpy(), var)
        assert (e.low, e.high, e.p, e.df) == pytest.approx((t.low, t.high, t.p, len(ids) - 1))
        assert var > 0 and e.high - e.low > resample.seed_t(aug[col].to_numpy()).high - e.mean  # the images add
        # Narrower than the rows' planted intervals would make it (what the fallback reads).
        planted = (aug[f"{col}_high"] - aug[f"{col}_low"]).mean() / (2 * resample.Z95)
        fallback = resample.seed_t(aug[col].to_numpy(), planted ** 2)
        assert e.high - e.low < fallback.high - fallback.low

    md = report(folder, tmp_path / "out")
    text = section(md, "2.1 Across seeds")
    assert ("For the uplift and the gains, the test images from predictions.parquet: each trial's own predictions "
            "and those of the real-only baseline and controls it was compared against") in text
    assert "are not stored" not in text
    row = table_after(text, "Per config").set_index("config").loc[
        "augment.policy=balance, generator.type=cgan"]
    shown = _ci(row["mean uplift over real-only [95 % CI]"])
    e = config.comparisons["uplift"]
    assert shown == pytest.approx((e.mean, e.low, e.high), abs=5e-4)


def test_an_older_folder_without_the_model_column_falls_back_to_the_trials_intervals(grid, tmp_path):
    table, true, preds, paired = grid
    old = write_folder(tmp_path / "old", table, true, preds)  # the trials' own predictions only, no model column
    comp = compare(load(old), max_configs=30)
    config, _ = _augmented(comp)
    new, _ = _augmented(compare(load(write_folder(tmp_path / "new", table, true, preds, paired=paired)), 30))
    for name in ("uplift", "control"):
        e, by_predictions = config.comparisons[name], new.comparisons[name]
        assert e.source == "intervals" and e.mean == pytest.approx(by_predictions.mean)
        assert e.high - e.low > 2 * (by_predictions.high - by_predictions.low)  # the planted widths show
    assert config.f1.source == "predictions"  # the trials' own predictions still serve their test macro-F1
    text = section(report(old, tmp_path / "out"), "2.1 Across seeds")
    assert "the real-only baselines' and controls' predictions are not stored here" in text
    assert "drawn from its trial's paired 95 % interval" in text


def test_a_seed_without_its_control_predictions_sends_that_comparison_to_the_intervals(grid, tmp_path):
    table, true, preds, paired = grid
    some = {t: dict(p) for t, p in paired.items()}
    del some["bs2"]["control"]  # one seed's control not stored (its uplift's baseline is)
    comp = compare(load(write_folder(tmp_path / "mixed", table, true, preds, paired=some)), max_configs=30)
    config, _ = _augmented(comp)
    assert config.comparisons["uplift"].source == "predictions"
    assert config.comparisons["control"].source == "intervals"
    text = section(report(tmp_path / "mixed", tmp_path / "out"), "2.1 Across seeds")
    assert "where every seed of a config has them; elsewhere" in text


def test_k_fold_comparisons_average_over_folds_and_resample_the_predictions(tmp_path):
    # Fold 0 ran a third seed: the mean over folds of each fold's mean then differs from the mean over trials.
    units = ((0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (0, 2), (1, 2))
    table, true, preds, paired = build(np.random.default_rng(5), units, folds=3)
    config, _ = _augmented(compare(load(write_folder(tmp_path / "kfold", table, true, preds, paired=paired)), 30))
    aug = table[table["augment.policy"] == "balance"]
    by_fold = aug.groupby("data.fold")["uplift_test_macro_f1"].mean().mean()
    e = config.comparisons["uplift"]
    assert e.source == "predictions" and e.seeds == len(units)
    assert e.mean == pytest.approx(by_fold) and abs(aug["uplift_test_macro_f1"].mean() - by_fold) > 1e-4
    assert e.low < e.mean < e.high
