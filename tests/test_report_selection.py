"""The report chooses on validation and compares defensibly (issue 15), on results folders written here by hand:
trials.parquet, predictions.parquet, confusion.parquet, embeddings.parquet and sweep.json with the columns the
trial and sweep layers write (issue 15's contract), for a grid of classifier.lr x augment.policy {none, balance}
over 3 seeds. Each trial's test figures are computed from its predictions, as the trial computes them."""
import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score

from fercore.labels import CLASSES
from tests.test_report import report, table_after
from fercore.report import plots
from fercore.report.configs import Estimate

K, N, SEEDS = len(CLASSES), 140, (0, 1, 2, 3, 4)  # 5: the fewest a claim (✓) is made from
# Probability of a right answer per config: lr 0.01 gains a lot from balance, lr 0.001 nothing.
ACCURACY = {(0.01, "none"): 0.40, (0.01, "balance"): 0.62, (0.001, "none"): 0.35, (0.001, "balance"): 0.35}


def f1(true, pred):
    return float(f1_score(true, pred, labels=list(range(K)), average="macro", zero_division=0))


def build_trials(rng):
    """Rows and predictions of the grid; val_macro_f1 follows test except where it is planted to differ."""
    true = np.repeat(np.arange(K), N // K)
    rows, preds = [], {}
    for (lr, policy), q in ACCURACY.items():
        for seed in SEEDS:
            tid = f"{'a' if policy == 'none' else 'b'}{int(lr * 1000):02d}s{seed}"
            right = rng.random(N) < q + 0.02 * seed
            pred = np.where(right, true, (true + rng.integers(1, K, N)) % K)
            preds[tid] = pred
            aug = policy == "balance"
            rows.append({"trial_id": tid, "status": "completed", "seed": seed, "classifier.lr": lr,
                         "classifier.backbone": "cnn3", "augment.policy": policy,
                         "generator.type": "cgan" if aug else None, "data.source": "procedural",
                         "n_train_real": 1000, "n_train_synthetic": 500 if aug else 0, "best_epoch": 3,
                         "classifier.epochs": 5, "train_seconds": 10.0 + seed,
                         "test_macro_f1": f1(true, pred), "test_accuracy": float((pred == true).mean()),
                         **{f"test_recall_{c}": float((pred[true == i] == i).mean()) for i, c in enumerate(CLASSES)}})
    table = pd.DataFrame(rows)
    table["test_macro_f1_ci_low"] = table["test_macro_f1"] - 0.06
    table["test_macro_f1_ci_high"] = table["test_macro_f1"] + 0.06
    table["val_macro_f1"] = table["test_macro_f1"] - 0.05
    table["val_loss"] = 2.0 - table["val_macro_f1"]
    # Paired figures of the augmented rows: the real-only trial of the same lr and seed is their baseline here.
    for i, r in table[table["augment.policy"] == "balance"].iterrows():
        base = table[(table["augment.policy"] == "none") & (table["classifier.lr"] == r["classifier.lr"])
                     & (table["seed"] == r["seed"])].iloc[0]
        up = r["test_macro_f1"] - base["test_macro_f1"]
        table.loc[i, ["uplift_test_macro_f1", "uplift_test_macro_f1_low", "uplift_test_macro_f1_high"]] = \
            [up, up - 0.05, up + 0.05]
        gain = up - 0.03  # the control takes some of the uplift: more steps and rebalancing
        table.loc[i, ["gain_control_test_macro_f1", "gain_control_test_macro_f1_low",
                      "gain_control_test_macro_f1_high", "control_test_macro_f1"]] = \
            [gain, gain - 0.05, gain + 0.05, r["test_macro_f1"] - gain]
        for c in CLASSES:
            table.loc[i, f"uplift_test_recall_{c}"] = r[f"test_recall_{c}"] - base[f"test_recall_{c}"]
            table.loc[i, f"gain_control_test_recall_{c}"] = 0.01
    # Plant the disagreement: validation's favourite is an augmented trial whose test figures are middling, and the
    # test's favourite validated worst of all.
    aug = table[table["augment.policy"] == "balance"]
    test_best = table["test_macro_f1"].idxmax()
    chosen = aug.drop(index=test_best, errors="ignore")["uplift_test_macro_f1"].idxmin()
    table.loc[test_best, "val_macro_f1"] = 0.01
    table.loc[chosen, "val_macro_f1"] = 0.99
    table["val_loss"] = 2.0 - table["val_macro_f1"]
    return table, true, preds


def write_folder(folder, table, true, preds, objective=("val_macro_f1", "max"), with_predictions=True, paired=None):
    """PAIRED: trial id -> {model ("baseline", "control", "subset"): its predicted class ids}, written as rows of that
    model (predictions.parquet's model column); without it the table has no model column, as older folders."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), folder / "trials.parquet")
    pred_rows, conf_rows, emb_rows = [], [], []
    models = {tid: {"trial": pred, **(paired or {}).get(tid, {})} for tid, pred in preds.items()}
    for tid, pred in preds.items():
        for model, predicted in models[tid].items():
            for i in range(N):
                pred_rows.append({"trial_id": tid, **({"model": model} if paired is not None else {}), "index": i,
                                  "true": CLASSES[true[i]], "predicted": CLASSES[predicted[i]],
                                  **{f"p_{c}": float(j == predicted[i]) for j, c in enumerate(CLASSES)}})
        counts = pd.crosstab(true, pred)
        conf_rows += [{"trial_id": tid, "true": CLASSES[t], "predicted": CLASSES[p], "count": int(counts.loc[t, p])}
                      for t in counts.index for p in counts.columns]
        if tid.startswith("b"):
            emb_rows += [{"trial_id": tid, "source": s, "class": c, "x": float(j), "y": float(k)}
                         for j, c in enumerate(CLASSES) for k, s in enumerate(("real", "synthetic"))]
    if with_predictions:
        pq.write_table(pa.Table.from_pylist(pred_rows), folder / "predictions.parquet")
    pq.write_table(pa.Table.from_pylist(conf_rows), folder / "confusion.parquet")
    pq.write_table(pa.Table.from_pylist(emb_rows), folder / "embeddings.parquet")
    (folder / "sweep.json").write_text(json.dumps({
        "name": "fixture", "metrics": [objective[0]], "modes": [objective[1]], "sampler": "grid", "seeds": 3,
        "grid": {"classifier.lr": [0.01, 0.001], "augment.policy": ["none", "balance"]},
        "fixed": {"data.source": "procedural"}, "scheduler": {"type": "none"}}))
    return folder


@pytest.fixture(scope="module")
def grid():
    return build_trials(np.random.default_rng(3))


def section(markdown: str, heading: str) -> str:
    start = markdown.index(f"## {heading}")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end > 0 else None]


@pytest.fixture(scope="module")
def written(grid, tmp_path_factory):
    table, true, preds = grid
    folder = write_folder(tmp_path_factory.mktemp("grid") / "results", table, true, preds)
    return table, report(folder, folder / "report")


def test_section_one_ranks_by_validation_and_shows_test_beside(written):
    table, md = written
    val_best = table.loc[table["val_macro_f1"].idxmax(), "trial_id"]
    test_best = table.loc[table["test_macro_f1"].idxmax(), "trial_id"]
    assert val_best != test_best  # the fixture's point: the two rankings disagree
    shown = table_after(md, "## 1. Best trials")
    expected = table.sort_values(["val_macro_f1", "trial_id"], ascending=[False, True])["trial_id"][:5].tolist()
    assert shown["trial"].tolist() == expected
    assert test_best not in shown["trial"].tolist()  # it validated worst: the test split does not promote it
    first = table.set_index("trial_id").loc[val_best]
    assert shown.iloc[0]["test macro-F1 [95 % CI]"].startswith(f"{first.test_macro_f1:.3f} [")
    assert "## 1. Best trials by val_macro_f1" in md


def test_a_min_objective_ranks_lowest_first(grid, tmp_path):
    table, true, preds = grid
    folder = write_folder(tmp_path / "loss", table, true, preds, objective=("val_loss", "min"))
    md = report(folder, tmp_path / "out")
    shown = table_after(md, "## 1. Best trials")
    assert shown["trial"].tolist() == table.sort_values("val_loss")["trial_id"][:5].tolist()
    assert shown["val_loss"].tolist() == [f"{v:.3f}" for v in table.sort_values("val_loss")["val_loss"][:5]]


def test_uplift_groups_show_the_validation_choice_and_both_comparisons(written):
    table, md = written
    text = section(md, "2. Synthetic uplift")
    assert 'The gain over the oversampling control answers "did the synthetic content help"' in text
    groups = table_after(text, "per policy").set_index("policy")
    aug = table[table["augment.policy"] == "balance"].set_index("trial_id")
    chosen = aug["val_macro_f1"].idxmax()
    assert chosen != aug["uplift_test_macro_f1"].idxmax()  # validation's choice is not test's
    row = groups.loc["balance"]
    assert row["trial chosen on validation"].startswith(chosen)
    u = aug.loc[chosen]
    assert row["its uplift over real-only [95 % CI]"] == (
        f"{u.uplift_test_macro_f1:+.3f} [{u.uplift_test_macro_f1_low:+.3f}, {u.uplift_test_macro_f1_high:+.3f}]")
    assert row["its gain over control [95 % CI]"].startswith(f"{u.gain_control_test_macro_f1:+.3f} [")
    assert row["mean uplift over real-only"] == f"{aug['uplift_test_macro_f1'].mean():+.3f}"
    assert row["mean gain over control"] == f"{aug['gain_control_test_macro_f1'].mean():+.3f}"
    per_class = table_after(text, "Per-class test recall uplift")
    assert set(per_class["mean gain of test recall over control"]) == {"+0.010"}
    assert "gain_over_control_by_trial.png" in text


def test_confusion_and_embedding_panels_are_picked_on_validation(grid, tmp_path, monkeypatch):
    table, true, preds = grid
    seen = {}
    monkeypatch.setattr(plots, "confusion_pair",
                        lambda panels, path, title, classes=None: seen.setdefault("confusion", panels))
    monkeypatch.setattr(plots, "embedding_panels", lambda panels, path, title: seen.setdefault("embedding", panels))
    md = report(write_folder(tmp_path / "r", table, true, preds), tmp_path / "out")
    for kind, part in (("real-only", table[table["augment.policy"] == "none"]),
                       ("augmented", table[table["augment.policy"] == "balance"])):
        val_pick = part.loc[part["val_macro_f1"].idxmax(), "trial_id"]
        title = next(t for t, _ in seen["confusion"] if t.startswith(f"Best {kind}"))
        assert f"trial {val_pick} " in title, title
    aug = table[table["augment.policy"] == "balance"]
    assert seen["embedding"][0][0].startswith(f"cgan: trial {aug.loc[aug['val_macro_f1'].idxmax(), 'trial_id']},")
    assert "best trial of each kind by val_macro_f1" in md


def test_per_config_means_over_seeds_with_two_level_intervals(written):
    table, md = written
    text = section(md, "2.1 Across seeds")
    assert "a t interval with S - 1 degrees of freedom over the per-seed figures" in text
    assert "a bootstrap over the test images of predictions.parquet (2000 resamples, the seeds held fixed" in text
    configs = table_after(text, "Per config").set_index("config")
    assert len(configs) == 4 and set(configs["seeds"]) == {str(len(SEEDS))}
    means = table.groupby(["classifier.lr", "augment.policy"])[["val_macro_f1", "test_macro_f1"]].mean()
    order = means.sort_values("val_macro_f1", ascending=False)
    for (lr, policy), m in means.iterrows():
        label = f"classifier.lr={lr:.4g}, augment.policy={policy}"
        if policy == "balance":
            label = f"classifier.lr={lr:.4g}, augment.policy={policy}, generator.type=cgan"
        row = configs.loc[label]
        value, low, high = map(float, re.findall(r"[-+]?\d\.\d+", row["mean test macro-F1 [95 % CI]"]))
        assert value == pytest.approx(m.test_macro_f1, abs=5e-4) and low < value < high
        assert row["mean val_macro_f1"] == f"{m.val_macro_f1:.3f}"
    # Best mean validation first.
    assert [float(v) for v in configs["mean val_macro_f1"]] == sorted(float(v) for v in configs["mean val_macro_f1"])[::-1]
    assert len(order) == 4
    strong = configs.loc["classifier.lr=0.01, augment.policy=balance, generator.type=cgan"]
    assert strong["mean uplift over real-only [95 % CI]"].startswith("+")
    assert configs.loc["classifier.lr=0.01, augment.policy=none", "Holm p (uplift over real-only)"] == "–"


def test_paired_comparisons_use_the_predictions_and_holm(written):
    table, md = written
    text = section(md, "2.2 Paired comparisons")
    pairs = table_after(text, "Paired differences")
    assert set(pairs["interval from"]) == {"predictions"}
    policy = pairs[pairs["key"] == "augment.policy"].set_index("other keys (shared)")
    assert set(policy["values"]) == {"none → balance"}
    t = table.set_index(["classifier.lr", "augment.policy", "seed"])["test_macro_f1"]
    for lr, survives in ((0.01, True), (0.001, False)):
        row = policy.loc[f"classifier.lr={lr:.4g}"]
        diff = np.mean([t[lr, "balance", s] - t[lr, "none", s] for s in SEEDS])
        assert row["difference in test macro-F1 [95 % CI]"].startswith(f"{diff:+.3f} [")
        assert row["Holm p"].endswith("✓") == survives, row["Holm p"]
    lr = pairs[pairs["key"] == "classifier.lr"]
    assert set(lr["values"]) == {"0.001 → 0.01"} and len(lr) == 2
    # Holm over every test of 2.1 and 2.2: 2 augmented configs x (uplift, gain over control) + 4 pairs.
    assert "Holm-Bonferroni (family-wise error 5%) over all 8 tests" in text


def test_with_fewer_than_five_seeds_nothing_is_claimed(grid, tmp_path):
    """The same sweep cut to 3 seeds: lr 0.01's gain is as large, its p still small, but the seed level is weak."""
    table, true, preds = grid
    few = table[table["seed"] < 3]
    md = report(write_folder(tmp_path / "few", few, true, {t: preds[t] for t in few["trial_id"]}), tmp_path / "out")
    text = section(md, "2.1 Across seeds") + section(md, "2.2 Paired comparisons")
    assert "✓" not in text.replace("✓ marks", "")
    policy = table_after(section(md, "2.2 Paired comparisons"), "Paired differences")
    strong = policy[(policy["key"] == "augment.policy")].set_index("other keys (shared)").loc["classifier.lr=0.01"]
    assert strong["Holm p"].endswith("(weak: 3 seeds)")
    assert "the seed-level evidence for them is weak (fewer than 5), and the report claims nothing from it" in md
    # Whatever the p: a test that would survive Holm claims nothing below 5 seeds.
    assert not Estimate(0.1, 0.05, 0.15, 4, "predictions", p=1e-4, holm=1e-3).survives
    assert Estimate(0.1, 0.05, 0.15, 5, "predictions", p=1e-4, holm=1e-3).survives


def test_without_predictions_the_report_says_so_and_uses_the_figures(grid, tmp_path):
    table, true, preds = grid
    folder = write_folder(tmp_path / "nopred", table, true, preds, with_predictions=False)
    md = report(folder, tmp_path / "out")
    assert "no predictions.parquet being here" in section(md, "2.1 Across seeds")
    pairs = table_after(section(md, "2.2 Paired comparisons"), "Paired differences")
    assert set(pairs["interval from"]) == {"unpaired intervals"}


def test_older_folders_without_the_control_say_why(grid, tmp_path):
    table, true, preds = grid
    old = table.drop(columns=[c for c in table if c.startswith(("gain_control_", "control_"))])
    md = report(write_folder(tmp_path / "old", old, true, preds), tmp_path / "out")
    text = section(md, "2. Synthetic uplift")
    assert "These trials have no gain over the oversampling control (gain_control_test_macro_f1)" in text
    assert "gain over control" not in table_after(text, "per policy").columns.str.cat(sep=" ")
    assert "mean gain over control" not in section(md, "2.1 Across seeds")


def test_real_ratio_trials_show_the_gain_over_the_real_subset(grid, tmp_path):
    table, true, preds = grid
    ratio = table.copy()
    aug = ratio["augment.policy"] == "balance"
    ratio.loc[aug, "augment.policy"] = "real_ratio"
    ratio.loc[aug, "augment.real_ratio"] = 0.5
    md = report(write_folder(tmp_path / "plain", ratio, true, preds), tmp_path / "out")
    assert "These real_ratio trials have no gain_subset_* columns" in md
    ratio.loc[aug, "gain_subset_test_macro_f1"] = 0.02
    ratio.loc[aug, "gain_subset_test_macro_f1_low"] = -0.01
    ratio.loc[aug, "gain_subset_test_macro_f1_high"] = 0.05
    md = report(write_folder(tmp_path / "subset", ratio, true, preds), tmp_path / "out2")
    text = section(md, "2. Synthetic uplift")
    assert "the generator was trained on every real training image" in text
    assert "These trials' real subsets predate that" in text  # no subset_train_steps: trained fewer steps
    ratio.loc[aug, "subset_train_steps"] = 100
    md = report(write_folder(tmp_path / "matched", ratio, true, preds), tmp_path / "out3")
    assert "predate that" not in section(md, "2. Synthetic uplift")
    assert table_after(text, "per policy").set_index("policy").loc["real_ratio", "mean gain over real subset"] \
        == "+0.020"
    assert "mean gain over real subset [95 % CI]" in section(md, "2.1 Across seeds")
