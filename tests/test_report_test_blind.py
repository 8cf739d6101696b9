"""No headline of the report is chosen by a test figure (issue 24): the same sweep reported twice, the second time
with the test figures of its trials shuffled among trials of the same policy (validation figures unchanged). Every
line that names a "best" or a choice, and every table's order, must read the same in both reports once numbers are
masked: anything chosen by validation stays, anything chosen by test would move."""
import re

import numpy as np
import pandas as pd

from tests.test_report_selection import build_trials, report, write_folder

TEST_DERIVED = ("test_", "uplift_", "gain_control_", "gain_subset_", "control_test_")
CHOICE = re.compile(r"\b(best|chose|chosen|highest|largest|beat)\b", re.IGNORECASE)


def sweep(rng):
    """build_trials' grid with a second backbone and a second generator type, so the report names a best backbone
    per real share and ranks generators."""
    table, true, preds = build_trials(rng)
    other = table.copy()
    other["trial_id"] = "r" + other["trial_id"]
    other["classifier.backbone"] = "resnet18"
    other["val_macro_f1"] = other["val_macro_f1"] + rng.normal(0, 0.05, len(other))
    other["val_loss"] = 2.0 - other["val_macro_f1"]
    table = pd.concat([table, other], ignore_index=True)
    preds = {**preds, **{"r" + t: p for t, p in preds.items()}}
    aug = table["augment.policy"] == "balance"
    table.loc[aug & (table["classifier.lr"] == 0.001), "generator.type"] = "dcgan"
    table.loc[aug, "generator_key"] = table.loc[aug, "generator.type"] + "-" + table.loc[aug, "classifier.backbone"]
    table.loc[aug, "gen_fid"] = np.where(table.loc[aug, "generator.type"] == "cgan", 20.0, 30.0)
    return table, true, preds


def shuffled_tests(table: pd.DataFrame, rng) -> pd.DataFrame:
    """TABLE with every test-derived column's values moved together to another trial of the same policy."""
    out = table.copy()
    cols = [c for c in table if c.startswith(TEST_DERIVED)]
    for _, part in table.groupby("augment.policy"):
        order = rng.permutation(part.index.to_numpy())
        out.loc[part.index, cols] = table.loc[order, cols].to_numpy()
    return out


def masked(text: str) -> str:
    return re.sub(r"[-+]?\d+(\.\d+)?", "#", text)


def choices(md: str) -> list[str]:
    """Every line that names a choice, numbers masked; and each table's first column, in its order."""
    lines = [masked(line) for line in md.splitlines() if CHOICE.search(line) and not line.startswith("|")]
    cells = [masked(line.split("|")[1]) for line in md.splitlines() if line.startswith("|")]
    return lines + cells


def test_no_best_is_chosen_by_a_test_figure(tmp_path):
    rng = np.random.default_rng(3)
    table, true, preds = sweep(rng)
    moved = shuffled_tests(table, np.random.default_rng(9))
    # The shuffle changes what the test split would choose: the trial, the generator and the backbone at a share.
    assert table.loc[table["test_macro_f1"].idxmax(), "trial_id"] != moved.loc[moved["test_macro_f1"].idxmax(),
                                                                                "trial_id"]
    assert table["val_macro_f1"].equals(moved["val_macro_f1"])

    def test_best(t, by):
        return t.groupby(by)["test_macro_f1"].mean().idxmax()
    assert (test_best(table, ["classifier.backbone"]) != test_best(moved, ["classifier.backbone"])
            or test_best(table, ["generator.type"]) != test_best(moved, ["generator.type"]))

    first = report(write_folder(tmp_path / "a", table, true, preds), tmp_path / "out_a")
    second = report(write_folder(tmp_path / "b", moved, true, preds), tmp_path / "out_b")
    a, b = choices(first), choices(second)
    assert len(a) == len(b) and any("best" in line.lower() for line in a)
    differ = [(x, y) for x, y in zip(a, b) if x != y]
    assert not differ, differ[:3]
