"""A sweep that confirmed is reported from its confirmation trials only (issue 24 item 1): its best trials, per-config
means and comparisons read those trials, the search's are shown as exploration beside them; a sweep without a
confirmation phase says its figures lean upward."""
import numpy as np
import pandas as pd

from tests.test_report_selection import build_trials, report, section, write_folder


def confirmed_sweep(rng):
    """build_trials' grid as the search, and its configs run again as the confirmation on seeds 10 and up, with other
    predictions and test figures: the search flattered config lr 0.01 / balance, which confirms worse."""
    search, true, preds = build_trials(rng)
    confirm, confirm_preds = build_trials(np.random.default_rng(11))[0], {}
    confirm["seed"] = confirm["seed"] + 10
    confirm["trial_id"] = "c" + confirm["trial_id"]
    confirm["val_macro_f1"] = confirm["test_macro_f1"] - 0.05  # no planted disagreement in the confirmation
    confirm["val_loss"] = 2.0 - confirm["val_macro_f1"]
    for tid in confirm["trial_id"]:
        confirm_preds[tid] = preds[tid[1:]][::-1].copy()
    search["phase"], confirm["phase"] = "search", "confirm"
    table = pd.concat([search, confirm], ignore_index=True)
    return table, true, {**preds, **confirm_preds}, search, confirm


def test_claims_come_from_the_confirmation_trials_and_the_search_is_exploration(tmp_path):
    table, true, preds, search, confirm = confirmed_sweep(np.random.default_rng(3))
    md = report(write_folder(tmp_path / "r", table, true, preds), tmp_path / "out")
    phases = section(md, "Search and confirmation")
    assert "This sweep confirmed" in phases and f"{len(search)} trials" in phases
    fresh = sorted(confirm["seed"].unique())
    assert "4 configs" in phases and ", ".join(map(str, fresh)) in phases and min(fresh) >= 10
    # Its table: each config's search mean beside its confirmation mean, in the search's order.
    lines = [line for line in phases.splitlines() if line.startswith("| classifier")]
    assert len(lines) == 4
    for (lr, policy), part in confirm.groupby(["classifier.lr", "augment.policy"]):
        line = next(line for line in lines if f"classifier.lr={lr:g}" in line and f"augment.policy={policy}" in line)
        before = search[(search["classifier.lr"] == lr) & (search["augment.policy"] == policy)]["val_macro_f1"]
        assert f"{before.mean():.3f} ({len(before)})" in line
        assert f"{part['val_macro_f1'].mean():.3f} ({len(part)})" in line
    # Section 1 lists confirmation trials only, though the search's planted favourite validated 0.99.
    best = section(md, "1. Best trials")
    ids = [line.split("|")[1].strip() for line in best.splitlines() if line.startswith("| ") and "trial" not in line]
    assert ids and all(t.startswith("c") for t in ids), ids
    assert "0.990" not in best
    # Section 2.1's per-config means are the confirmation's, not the search's.
    seeds = section(md, "2.1")
    for _, part in confirm.groupby(["classifier.lr", "augment.policy"]):
        assert f"{part['test_macro_f1'].mean():.3f}" in seeds
    # The header counts every trial, both phases.
    assert f"{len(table)} trials" in md.split("## Search and confirmation")[0]


def test_a_confirmation_cut_short_counts_its_completed_trials_only(tmp_path):
    # The sweep ended (Ctrl-C) while its last fresh seed ran: those trials are `stopped` rows, and carry no claim.
    table, true, preds, search, confirm = confirmed_sweep(np.random.default_rng(3))
    last = confirm["seed"].max()
    cut = (table["phase"] == "confirm") & (table["seed"] == last)
    table.loc[cut, "status"] = "stopped"
    md = report(write_folder(tmp_path / "r", table, true, preds), tmp_path / "out")
    phases = section(md, "Search and confirmation")
    done = sorted(confirm["seed"][confirm["seed"] != last].unique())
    assert f"fresh seeds ({', '.join(map(str, done))})" in phases  # the cut-off seed not among them
    assert f"{len(confirm) - cut.sum()} confirmation trials ({cut.sum()} more did not complete" in phases


def test_a_sweep_without_confirmation_says_its_figures_lean_upward(tmp_path):
    table, true, preds = build_trials(np.random.default_rng(3))
    md = report(write_folder(tmp_path / "r", table, true, preds), tmp_path / "out")
    assert "No confirmation phase" in section(md, "Search and confirmation")
    assert "0.990" in section(md, "1. Best trials"), "the search's own trials are all there is"
