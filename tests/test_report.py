"""`fersweep report` on one small real sweep that fills every section: 2 backbones x real ratio 0.5 / 1.0 with a
one-epoch cGAN, two objectives. The report's files are checked, and its tables against the Parquet values they came
from, to the printed precision."""
import re
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image as PILImage

from fercore.cli import main
from fercore.labels import CLASSES
from fercore.report.render import read_table

SECTIONS = ("1. Best trials", "2. Synthetic uplift", "2.1 Across seeds", "2.2 Paired comparisons",
            "3. Test macro-F1 against the real share", "4. Early-stopping",
            "5. Per-class test recall", "6. Confusion matrices", "7. Generator quality", "8. Real vs synthetic",
            "9. Which hyperparameters", "10. Leakage audit")
PLOTS = {"uplift_by_trial.png", "uplift_per_class.png", "f1_vs_real_share.png", "best_epoch.png",
         "recall_by_setting.png", "confusion.png", "quality_vs_uplift.png", "embeddings.png", "importance.png",
         "pareto.png"}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """About 40 s on 2 CPU cores: four trials, two at a time; one cGAN, one reference classifier, two baselines."""
    import ray

    from fercore.sweep import run_sweep
    from fercore.sweep.spec import load_sweep

    tmp = tmp_path_factory.mktemp("report_sweep")
    sweep = {"name": "report_fill", "description": "every report section, in small",
             "data": {"source": "procedural", "scale": 0.01}, "sampler": "grid",
             "grid": {"classifier.backbone": ["linear", "cnn3"], "augment.real_ratio": [0.5, 1.0]},
             "fixed": {"augment.policy": "real_ratio", "generator.type": "cgan", "generator.epochs": 1,
                       "generator.width": 4, "generator.latent_dim": 16, "generator.resolution": 32,
                       "generator.batch_size": 32, "classifier.epochs": 2, "classifier.width": 8,
                       "classifier.batch_size": 32},
             "metric": ["val_macro_f1", "train_seconds"], "mode": ["max", "min"], "scheduler": {"type": "none"},
             "max_concurrent": 2, "resources": {"cpu": 1}}
    path = tmp / "report_fill.yaml"
    path.write_text(yaml.safe_dump(sweep))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    try:
        out = run_sweep(load_sweep(path), tmp / "results")
    finally:
        ray.shutdown()
    trials = pd.read_parquet(out / "trials.parquet")
    assert (trials["status"] == "completed").all(), trials[["trial_id", "status", "reason"]]
    return out


def report(results, out) -> str:
    assert main(["report", str(results), "--out", str(out)]) == 0
    return (out / "report.md").read_text()


@pytest.fixture(scope="module")
def written(sweep_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, report(sweep_dir, out)


def table_after(markdown: str, marker: str) -> pd.DataFrame:
    """The first Markdown table after the line containing MARKER, as strings."""
    header, body = read_table(markdown, marker)
    return pd.DataFrame(body, columns=header)


@pytest.mark.slow
def test_report_writes_markdown_html_and_every_plot_it_references(written, sweep_dir, capsys):
    out, md = written
    html = (out / "report.html").read_text()
    for heading in SECTIONS:
        assert f"## {heading}" in md and heading in html
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    # The gain over the oversampling control has its plot where the trials measured it (issue 15's control).
    control = {"gain_over_control_by_trial.png"} if trials.get("gain_control_test_macro_f1", pd.Series()).notna().any() \
        else set()
    assert set(images) == PLOTS | control, "a sweep that fills every section draws every plot"
    # Each augmented trial's baseline and controls sent their test predictions through Ray: the uplift and gains of
    # section 2.1 resample the test images from them.
    models = pd.read_parquet(sweep_dir / "predictions.parquet").groupby("trial_id")["model"].agg(set)
    for _, t in trials[trials["uplift_test_macro_f1"].notna()].iterrows():
        assert {"trial", "baseline"} <= models[t["trial_id"]], models[t["trial_id"]]
    assert "those of the real-only baseline and controls it was compared against" in md
    for name in images:
        assert f'src="{name}"' in html
        with PILImage.open(out / name) as im:
            im.verify()
        with PILImage.open(out / name) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 250
        assert (out / name).stat().st_size > 10_000, name


def test_best_trials_table_agrees_with_trials_parquet(written, sweep_dir):
    _, md = written
    trials = pd.read_parquet(sweep_dir / "trials.parquet").set_index("trial_id")
    table = table_after(md, "## 1. Best trials")
    # Ranked by the sweep's own objective (its first, val_macro_f1: what the searcher chose on), never by test.
    ranked = trials.reset_index().sort_values(["val_macro_f1", "trial_id"], ascending=[False, True])
    expected = ranked["trial_id"][:5].tolist()  # ties (identical predictions) go by trial id
    assert table["trial"].tolist() == expected
    for _, row in table.iterrows():
        t = trials.loc[row["trial"]]
        f1 = f"{t.test_macro_f1:.3f} [{t.test_macro_f1_ci_low:.3f}, {t.test_macro_f1_ci_high:.3f}]"
        acc = f"{t.test_accuracy:.3f} [{t.test_accuracy_ci_low:.3f}, {t.test_accuracy_ci_high:.3f}]"
        assert row["test macro-F1 [95 % CI]"] == f1
        assert row["test accuracy [95 % CI]"] == acc
        assert row["val macro-F1"] == f"{t.val_macro_f1:.3f}"
        assert row["classifier.backbone"] == t["classifier.backbone"]
        assert float(row["augment.real_ratio"]) == t["augment.real_ratio"]
        # A real-only trial's generator is not shown: it made none of its images.
        assert row["generator.type"] == ("cgan" if t.n_train_synthetic else "–")


def test_per_class_tables_agree_with_the_parquet_means(written, sweep_dir):
    _, md = written
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    augmented = trials[trials["n_train_synthetic"] > 0]
    assert len(augmented) == 2
    uplift = table_after(md, "Per-class test recall uplift").set_index("class")
    assert uplift.index.tolist() == list(CLASSES)
    for c in CLASSES:
        assert uplift.loc[c, "mean uplift of test recall"] == f"{augmented[f'uplift_test_recall_{c}'].mean():+.3f}"

    recall = table_after(md, "Mean test recall per class and augmentation setting").set_index("class")
    groups = {"real only (n=2)": trials[trials["n_train_synthetic"] == 0], "real_ratio 0.5 (n=2)": augmented}
    assert recall.columns.tolist() == list(groups)
    for column, part in groups.items():
        for c in CLASSES:
            assert recall.loc[c, column] == f"{part[f'test_recall_{c}'].mean():.3f}"


def copy_results(src, dst, **changes):
    """A copy of a results folder whose trials.parquet has CHANGES: {column: {trial_id: value}}."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("cache", "tb", "tune", "report*", "*.db"))
    table = pq.read_table(dst / "trials.parquet").to_pandas()
    for column, values in changes.items():
        table[column] = [values.get(t, v) for t, v in zip(table["trial_id"], table[column])]
    write_trials(dst, table)
    return dst


def write_trials(folder, table: pd.DataFrame):
    """FOLDER's trials.parquet replaced by TABLE, as one file (the layout of fercore before parts, still read)."""
    path = folder / "trials.parquet"
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), folder / "trials.parquet")


@pytest.mark.slow
def test_a_planted_leak_is_the_first_thing_the_report_says(written, sweep_dir, tmp_path):
    _, clean = written
    assert "WARNING" not in clean
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    leaky = trials[trials["n_train_synthetic"] > 0]["trial_id"].iloc[0]
    folder = copy_results(sweep_dir, tmp_path / "leaky", leak_synthetic_test={leaky: 3})
    md = report(folder, tmp_path / "leaky_report")
    first = md.splitlines()[0]
    assert first.startswith("WARNING") and f"{leaky} (3)" in first and "3 synthetic training images" in first
    assert md.index("WARNING") < md.index("# Sweep report")
    assert "WARNING" in (tmp_path / "leaky_report" / "report.html").read_text().split("<h1>")[0]


def test_a_folder_without_trials_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and "trials.parquet" in err


def test_a_bare_real_only_table_still_gives_every_section(tmp_path):
    """Only trials.parquet, without gen_*, uplift_*, confusion or embeddings: each section says why it is empty."""
    rows = [{"trial_id": f"t{i}", "status": s, "classifier.backbone": b, "augment.policy": "none",
             "val_macro_f1": 0.2 + 0.05 * i, "test_macro_f1": 0.3 + 0.04 * i, "n_train_real": 100,
             "n_train_synthetic": 0, "train_seconds": 10.0 + i, "best_epoch": 2,
             **{f"test_recall_{c}": 0.1 * i for c in CLASSES}}
            for i, (s, b) in enumerate([("completed", "cnn3"), ("completed", "linear"), ("error", "cnn3")])]
    tmp_path.mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "trials.parquet")
    md = report(tmp_path, tmp_path / "out")
    for heading in SECTIONS:
        assert f"## {heading}" in md
    assert "No completed trial used synthetic images, so there is no uplift to show." in md
    assert "WARNING" not in md
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (tmp_path / "out" / name).exists()


def test_without_real_only_trials_the_paired_baselines_are_the_original_column(sweep_dir, tmp_path):
    """Report 002's table III has an "Original" column; a sweep of augmented trials only gets it from their paired
    baselines: test recall minus its uplift, one value per distinct baseline."""
    dst = copy_results(sweep_dir, tmp_path / "augmented_only")
    table = pd.read_parquet(dst / "trials.parquet")
    augmented = table[table["n_train_synthetic"] > 0]
    write_trials(dst, augmented)
    md = report(dst, tmp_path / "out")
    recall = table_after(md, "Mean test recall per class and augmentation setting").set_index("class")
    baselines = augmented.drop_duplicates("baseline_key")
    column = f"real-only baseline (paired) (n={len(baselines)})"
    assert recall.columns[0] == column
    for c in CLASSES:
        expected = (baselines[f"test_recall_{c}"] - baselines[f"uplift_test_recall_{c}"]).mean()
        assert recall.loc[c, column] == f"{expected:.3f}"


def test_setting_labels_need_no_policy_registry():
    """The report reads each policy's own values from the row (its augment.* keys but the common ones), not from the
    registry: for every registered policy, in a table holding every policy's rows, the label names the policy's
    values in the registry's order, as the registry would."""
    from fercore.augment.policies import POLICIES
    from fercore.config import resolve
    from fercore.report.tables import fmt_value, setting_label

    values = {"augment.real_ratio": 0.3, "augment.per_class_target": 900, "augment.minority_classes": "fear",
              "augment.minority_target": 0, "augment.multiply_k": 2.0}
    rows = [{**resolve({"augment.policy": name, **values}, drop_inapplicable=True).flat(), "n_train_synthetic": 10,
             "augment.filter": "classifier_confidence" if name == "balance" else "none"}
            for name, _ in POLICIES.items()]
    table = pd.DataFrame(rows)
    for (name, entry), (_, row) in zip(POLICIES.items(), table.iterrows()):
        shown = [fmt_value(values[f"augment.{p.name}"]) for p in entry.params if values[f"augment.{p.name}"] != 0]
        filter_ = ", filter classifier_confidence" if name == "balance" else ""
        assert setting_label(row) == " ".join([name, *shown]) + filter_
    assert setting_label(table.iloc[0].drop(["augment.policy"])) == "synthetic"


def test_an_oversampled_trial_is_labelled_by_its_policy_not_as_real_only():
    from fercore.report.tables import REAL_ONLY, setting_label

    base = {"augment.policy": "oversample_balance", "n_train_synthetic": 0}
    assert setting_label(pd.Series({**base, "n_train_duplicate": 120})) == "oversample_balance"
    assert setting_label(pd.Series({**base, "augment.policy": "none", "n_train_duplicate": 0})) == REAL_ONLY


@pytest.mark.slow
def test_the_report_imports_no_runtime_registry():
    """Labelling an augmented trial (what used the policy registry) in a fresh interpreter loads no registry."""
    import subprocess
    import sys

    script = ("import sys, pandas as pd, fercore.report\n"
              "from fercore.report.tables import setting_label\n"
              "row = pd.Series({'augment.policy': 'real_ratio', 'augment.real_ratio': 0.5, 'n_train_synthetic': 9})\n"
              "assert setting_label(row) == 'real_ratio 0.5', setting_label(row)\n"
              "print(sorted(m for m in sys.modules if m.startswith(('fercore.augment', 'fercore.generators', "
              "'fercore.classifiers', 'fercore.metrics', 'ray', 'torch'))))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
