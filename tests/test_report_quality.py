"""The report's quality section: one row per generator with its own figures, set against the gain over the
oversampling control where the sweep measured it, else the uplift over the real-only baseline."""
import pandas as pd
import pytest

from fercore.report import diagnostics, plots
from fercore.report.render import Table
from fercore.report.tables import DASH, Results


def _trials(with_control: bool) -> pd.DataFrame:
    rows = []
    for i in range(6):
        g = i % 2  # two generators, three trials each (other policies): the same figures in each of its trials
        row = {"trial_id": f"t{i}", "status": "completed", "augment.policy": "balance", "n_train_synthetic": 50,
               "generator.type": "cgan" if g == 0 else "diffusion", "generator_key": f"g{g}",
               "gen_fid": 10.0 + 20 * g, "gen_kid": 0.01 + 0.05 * g, "gen_kid_std": 0.002, "gen_precision": 0.8 - g / 2,
               "gen_recall": 0.5, "gen_conditional_accuracy": 0.6, "filter_acceptance": 1.0,
               "uplift_test_macro_f1": 0.01 * i, "uplift_test_macro_f1_low": 0.0, "uplift_test_macro_f1_high": 0.1,
               "val_macro_f1": 0.5 - 0.01 * i}  # validation prefers each generator's first trial, test its last
        if with_control:
            row |= {"gain_control_test_macro_f1": 0.05 - 0.1 * g, "gain_control_test_macro_f1_low": -0.2,
                    "gain_control_test_macro_f1_high": 0.2}
        rows.append(row)
    return pd.DataFrame(rows)


def _section(trials, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(plots, "quality_scatter",
                        lambda points, panels, path, title, ylabel: seen.update(points=points, panels=panels,
                                                                               ylabel=ylabel, title=title))
    blocks = diagnostics.quality_section(Results(tmp_path, trials), tmp_path)
    (table,) = [b for b in blocks if isinstance(b, Table)]
    return table, seen


def test_quality_section_has_one_row_per_generator_and_uses_the_control_gain(tmp_path, monkeypatch):
    table, seen = _section(_trials(True), tmp_path, monkeypatch)
    assert len(table.rows) == 2
    best = dict(zip(table.columns, table.rows[0]))
    assert (best["generator"], best["trials"], best["FID"], best["KID"]) == ("cgan", "3", "10.0", "0.0100 ± 0.0020")
    assert best["precision"] == "0.800" and best["mean gain"] == "+0.050" and best["kept accuracy (mean)"] == DASH
    # One point per generator (its trials' mean gain), not one per trial.
    assert "oversampling control" in seen["ylabel"] and len(seen["points"]) == 2
    assert list(seen["points"]["uplift"]) == pytest.approx([0.05, -0.05])
    assert [c for c, _ in seen["panels"]] == ["gen_fid", "gen_kid", "gen_precision", "gen_recall",
                                              "gen_conditional_accuracy"]


def test_without_a_control_the_uplift_is_used(tmp_path, monkeypatch):
    table, seen = _section(_trials(False), tmp_path, monkeypatch)
    assert "real-only baseline" in seen["ylabel"]
    by = {row[0]: dict(zip(table.columns, row)) for row in table.rows}
    assert by["diffusion"]["mean gain"] == "+0.030"
    # The trial validation chose (t1), not the one with the largest test gain (t5: +0.050).
    assert by["diffusion"]["gain of the trial val_macro_f1 chose"] == "+0.010 (t1)"
    assert [row[0] for row in table.rows] == ["cgan", "diffusion"]  # by the chosen trial's validation figure
