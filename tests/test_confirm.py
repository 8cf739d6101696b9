"""The confirmation phase's plan (fercore.sweep.confirm) and its sweep keys: which configs it re-runs (the search's
best by validation, over their seeds, never one with a seed stopped or failed), on which seeds (none the search
used), and how `--smoke` sizes it. The phase run end to end: tests/test_confirm_sweep.py."""
import math

import optuna
import pytest
import yaml

from fercore.results.rows import CONFIRM, PHASE
from fercore.sweep.confirm import config_of, fresh_seeds, plan, ranked_configs, repeats_text, shown_keys
from fercore.sweep.keys import SweepError
from fercore.sweep.smoke import smoke_spec
from fercore.sweep.spec import load_sweep


def row(tid, lr, seed, val, status="completed", **more):
    return {"trial_id": tid, "classifier.lr": lr, "classifier.backbone": "cnn3", "seed": seed, "status": status,
            "val_macro_f1": val, "val_loss": 1 - val if val is not None else None, "test_macro_f1": 1 - (val or 0),
            "augment.policy": "none", "generator.lr_g": None, **more}


ROWS = [
    row("t1", 0.01, 0, 0.50), row("t2", 0.01, 1, 0.60),  # mean 0.55
    row("t3", 0.02, 0, 0.70), row("t4", 0.02, 1, 0.30),  # mean 0.50
    row("t5", 0.03, 0, 0.90), row("t6", 0.03, 1, 0.95, status="stopped"),  # a seed stopped: not ranked
    row("t7", 0.04, 0, 0.52), row("t8", 0.04, 1, math.nan),  # a seed without a value: not ranked
    row("t9", 0.05, 0, 0.40), row("ta", 0.05, 1, 0.40),  # mean 0.40
]


def test_configs_are_ranked_by_their_validation_mean_over_seeds_and_incomplete_ones_left_out():
    ranked = ranked_configs(ROWS, "val_macro_f1", "max")
    assert [c["classifier.lr"] for c, _, _ in ranked] == [0.01, 0.02, 0.05]
    assert [round(m, 3) for _, m, _ in ranked] == [0.55, 0.5, 0.4] and all(n == 2 for _, _, n in ranked)
    assert all("seed" not in c and "generator.lr_g" not in c for c, _, _ in ranked), "the seed and empty keys"
    # The test figure ranks nothing: a min objective of val_loss turns the order around, test_macro_f1 never enters.
    assert [c["classifier.lr"] for c, _, _ in ranked_configs(ROWS, "val_loss", "min")] == [0.01, 0.02, 0.05]
    flipped = [{**r, "test_macro_f1": -r["test_macro_f1"]} for r in ROWS]
    assert ranked_configs(flipped, "val_macro_f1", "max") == ranked


def test_confirmation_trials_are_the_top_configs_on_fresh_seeds_seed_by_seed():
    configs = plan(ROWS, ranked_configs(ROWS, "val_macro_f1", "max")[:2], seeds=3)
    assert [(c["classifier.lr"], c["seed"]) for c in configs] == [
        (0.01, 2), (0.02, 2), (0.01, 3), (0.02, 3), (0.01, 4), (0.02, 4)]
    assert all(c["classifier.backbone"] == "cnn3" and c["augment.policy"] == "none" for c in configs)
    # Seeds after every seed a trial used, confirmation trials of an earlier run included.
    assert fresh_seeds(ROWS + [row("x", 0.01, 9, 0.1, **{PHASE: CONFIRM})], 2) == [10, 11]
    # Confirmation rows are not ranked again (a resumed sweep plans from the search's rows only).
    both = ROWS + [row("c1", 0.05, 2, 0.99, **{PHASE: CONFIRM})]
    again = plan(both, ranked_configs(both, "val_macro_f1", "max")[:1], seeds=1)
    assert [c["classifier.lr"] for c in again] == [0.01]
    failed = [row("s", 0.01, 0, 0.5, status="error")]
    assert plan(failed, ranked_configs(failed, "val_macro_f1", "max")[:2], 2) == []


def test_k_fold_configs_are_ranked_over_their_folds_and_confirmed_on_each():
    # lr 0.02 has the best single fold (0.80 on fold 0) but the worse mean over its folds: choosing a fold is choosing
    # on noise, so the config is ranked over every fold and seed, and confirmed on the folds it searched.
    folds = [row("a", 0.01, 0, 0.60, **{"data.fold": 0}), row("b", 0.01, 0, 0.50, **{"data.fold": 1}),
             row("c", 0.01, 1, 0.60, **{"data.fold": 0}), row("d", 0.01, 1, 0.50, **{"data.fold": 1}),
             row("e", 0.02, 0, 0.80, **{"data.fold": 0}), row("f", 0.02, 0, 0.20, **{"data.fold": 1}),
             row("g", 0.02, 1, 0.80, **{"data.fold": 0}), row("h", 0.02, 1, 0.20, **{"data.fold": 1})]
    ranked = ranked_configs(folds, "val_macro_f1", "max")
    assert [(c["classifier.lr"], round(m, 3), n) for c, m, n in ranked] == [(0.01, 0.55, 4), (0.02, 0.5, 4)]
    assert all("data.fold" not in c for c, _, _ in ranked)
    configs = plan(folds, ranked[:1], seeds=2)
    assert [(c["classifier.lr"], c["data.fold"], c["seed"]) for c in configs] == [
        (0.01, 0, 2), (0.01, 1, 2), (0.01, 0, 3), (0.01, 1, 3)]
    # A fold its search never ran is not confirmed on either (a sweep of folds 0 and 1 of 5 stays on those).
    assert {c["data.fold"] for c in plan(folds, ranked, seeds=1)} == {0, 1}
    # What the driver prints of a confirmed config: the key the search varied, even with one config confirmed, and
    # its trials counted by seeds and folds.
    assert "classifier.lr" in shown_keys(folds, ("classifier.backbone",))
    assert "classifier.lr" not in shown_keys(folds[:4], ("classifier.backbone",))
    assert repeats_text(folds[:4]) == "2 seeds x 2 folds" and repeats_text(ROWS[:2]) == "2 seeds"


def test_a_row_config_holds_only_config_keys_with_a_value():
    config = config_of({**ROWS[0], "epochs_run": 3, "node_ip": "x", "data.scale": 0.01})
    assert config == {"classifier.lr": 0.01, "classifier.backbone": "cnn3", "seed": 0, "augment.policy": "none",
                      "data.scale": 0.01}


def write(tmp_path, **keys):
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "lr.py").write_text(
        "def space(trial):\n    trial.suggest_float('classifier.lr', 1e-3, 1e-2, log=True)\n")
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    path = tmp_path / "sweeps" / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "space": "lr", "fixed": {"classifier.backbone": "cnn3"}, **keys}))
    return path


def test_confirm_keys_are_validated_and_sized_for_smoke(tmp_path):
    spec = load_sweep(write(tmp_path, confirm={"top": 3, "seeds": 5}))
    assert spec.confirm_trials == 15
    assert smoke_spec(spec).confirm_trials == 1, "--smoke confirms its best config once"
    assert load_sweep(write(tmp_path)).confirm_trials == 0
    assert smoke_spec(load_sweep(write(tmp_path))).confirm_trials == 0
    assert load_sweep(write(tmp_path, confirm={"top": 2})).confirm_trials == 10, "seeds default to 5"
    with pytest.raises(SweepError, match=r"confirm\.seeds.*(0|at least)"):
        load_sweep(write(tmp_path, confirm={"top": 1, "seeds": 0}))
    with pytest.raises(SweepError, match=r"confirm\.rounds: unknown; valid: top, seeds"):
        load_sweep(write(tmp_path, confirm={"rounds": 2}))


def test_confirmation_trials_are_recorded_in_a_study_of_their_own(tmp_path):
    from fercore.sweep.confirm_search import ConfirmSearcher
    from fercore.sweep.searchers import TESTED

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=url, direction="maximize")
    configs = plan(ROWS, ranked_configs(ROWS, "val_macro_f1", "max")[:2], seeds=1)
    searcher = ConfirmSearcher(configs, ["val_macro_f1"], ["max"], "s", url)
    assert [searcher.suggest(t) for t in ("a", "b", "c")] == [configs[0], configs[1], "FINISHED"]
    assert searcher.suggest("a") == configs[0], "a restored trial asks again for its own config"
    searcher.on_trial_complete("a", {"val_macro_f1": 0.4, TESTED: True})
    searcher.on_trial_complete("a", {"val_macro_f1": 0.4, TESTED: True})  # a resumed sweep's repeat: once
    searcher.on_trial_complete("b", {"val_macro_f1": 0.3}, error=True)
    study = optuna.load_study(study_name="s.confirm", storage=url)
    assert [(t.state.name, t.values, t.params) for t in study.trials] == [
        ("COMPLETE", [0.4], {"classifier.lr": 0.01, "seed": 2}), ("FAIL", None, {"classifier.lr": 0.02, "seed": 2})]
    assert study.user_attrs == {PHASE: CONFIRM, "search_study": "s"}
    assert optuna.load_study(study_name="s", storage=url).user_attrs == {PHASE: "search"}


def test_confirm_on_the_command_line_reaches_the_sweep(tmp_path, monkeypatch, capsys):
    """`fersweep run --confirm TOP,SEEDS` sizes the confirmation phase in place of the file's (and --smoke's)."""
    import fercore.sweep.run as run
    from fercore.cli import main

    seen = {}
    monkeypatch.setattr(run, "run_sweep", lambda spec, storage, **kwargs: seen.update(kwargs))
    path = write(tmp_path, confirm={"top": 3, "seeds": 5})
    assert main(["run", str(path), "--smoke", "--confirm", "8,5"]) == 0 and seen["confirm"] == (8, 5)
    assert main(["run", str(path)]) == 0 and seen["confirm"] is None
    for bad in ("8", "8,0", "-1,5", "a,b"):
        with pytest.raises(SystemExit):
            main(["run", str(path), "--confirm", bad])
    assert "expected TOP" in capsys.readouterr().err
