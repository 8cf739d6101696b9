"""Class sets that come from the data (issue 17): data.classes fer2013 / folders / a list, data.drop_classes,
data.aliases, on small CK+-like and AffectNet-like trees and CSVs written here; metrics over the classes present in
the test split; the names following into a trial's row, its TensorBoard events and the results tables."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from fercore.augment.policies import plan_mix
from fercore.cli import main
from fercore.data import DataOptions, load, make_faceset
from fercore.data.fer2013 import read_fer2013_csv
from fercore.data.folders import read_image_folders
from fercore.data.procedural import draw_procedural
from fercore.errors import ConfigError, DataError
from fercore.labels import CLASSES, resolve_classes
from fercore.metrics.classification import bootstrap_intervals, classification_metrics
from fercore.metrics.uplift import uplift_metrics
from fercore.results.rows import per_class_rows

SIDE = 16
CK = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")  # CK+'s folders: no neutral
CK_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "contempt")  # what fercore calls them
AFFECTNET = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "default-cache"))


def write_tree(root, folders, per_split=None, side=SIDE):
    """root/<split>/<folder>/<i>.png, each folder's faces a brightness of their own (a linear model can learn it)."""
    per_split = per_split or {"train": 12, "val": 3, "test": 3}
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        for k, folder in enumerate(folders):
            path = root / split / folder
            path.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                level = 20 + 220 * k / max(1, len(folders) - 1)
                img = np.clip(level + rng.normal(0, 8, (side, side)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(path / f"{i:03d}.png")
    return root


def options(**kw) -> DataOptions:
    return DataOptions(image_size=SIDE, **kw)


# ------------------------------------------------------------------------------------------------ class sets

def test_ck_like_tree_with_classes_folders_keeps_contempt_and_has_no_neutral(tmp_path):
    root = write_tree(tmp_path / "ck", CK)
    data = read_image_folders(root, options=options(classes="folders"))
    # FER2013's order for the names that map to its seven (anger -> angry, sadness -> sad), then the others sorted.
    assert data.class_names == CK_CLASSES
    counts = data.counts()
    assert counts["train"] == [12] * 7 and counts["test"] == [3] * 7
    # Each folder's images carry its class: the contempt folder's faces (brightness rank 1) are class 6.
    contempt = data.images[data.labels == CK_CLASSES.index("contempt")]
    assert len(contempt) == 18 and abs(contempt.mean() - (20 + 220 / 6)) < 5


def test_ck_like_tree_under_fer2013_names_contempt_and_how_to_keep_it(tmp_path):
    root = write_tree(tmp_path / "ck", CK)
    with pytest.raises(DataError) as err:
        read_image_folders(root, options=options())
    message = str(err.value)
    assert str(root / "train" / "contempt") in message and "'contempt'" in message
    for fix in ("data.classes: folders", "data.aliases: contempt=<class>", "data.drop_classes: contempt"):
        assert fix in message


def test_drop_classes_contempt_under_fer2013_keeps_the_seven_with_neutral_empty(tmp_path):
    root = write_tree(tmp_path / "ck", CK)
    data = read_image_folders(root, options=options(drop_classes="contempt"))
    assert data.class_names == CLASSES
    counts = data.counts()
    assert counts["train"][CLASSES.index("neutral")] == 0 and sum(counts["train"]) == 6 * 12
    # Dropping neutral as well leaves six classes, renumbered.
    six = read_image_folders(root, options=options(drop_classes="contempt,neutral"))
    assert six.class_names == tuple(c for c in CLASSES if c != "neutral") and six.labels.max() == 5


def test_affectnet_like_tree_reads_as_eight_classes(tmp_path):
    root = write_tree(tmp_path / "affectnet", AFFECTNET)
    data = read_image_folders(root, options=options(classes="folders"))
    assert data.class_names == CLASSES + ("contempt",)
    assert data.counts()["train"] == [12] * 8
    # An explicit list sets the order (and the label ids) itself.
    listed = read_image_folders(root, options=options(classes="contempt,neutral,happy,sad,surprise,fear,disgust,anger"))
    assert listed.class_names == ("contempt", "neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")
    bright = listed.images[listed.labels == 7].mean()  # anger is the brightest folder but one
    assert abs(bright - (20 + 220 * 6 / 7)) < 5


def test_aliases_map_folders_fercore_does_not_know(tmp_path):
    root = write_tree(tmp_path / "t", ("joy", "grumpy", "neutral"), {"train": 4, "test": 2})
    data = read_image_folders(root, options=options(aliases="grumpy=angry"))  # joy is a built-in alias of happy
    counts = data.counts()
    seen = [t + v for t, v in zip(counts["train"], counts["val"])]  # val is carved from train
    assert data.class_names == CLASSES and seen == [4, 0, 0, 4, 0, 0, 4]
    merged = read_image_folders(root, options=options(classes="folders", aliases="grumpy=cross"))
    assert merged.class_names == ("happy", "neutral", "cross")


def test_the_fingerprint_includes_the_class_names(tmp_path):
    root = write_tree(tmp_path / "affectnet", AFFECTNET)
    a = read_image_folders(root, options=options(classes="folders"))
    b = read_image_folders(root, options=options(classes="neutral,happy,sad,surprise,fear,disgust,angry,contempt"))
    assert np.array_equal(a.images, a.images) and a.class_names != b.class_names
    assert a.fingerprint != b.fingerprint
    # Same pixels and label ids, other names: still another data set.
    renamed = read_image_folders(root, options=options(classes="folders", aliases="contempt=scorn"))
    assert np.array_equal(renamed.labels, a.labels) and renamed.class_names[-1] == "scorn"
    assert renamed.fingerprint != a.fingerprint
    # Seven classes: FER2013's names and CK+'s give two fingerprints for the same arrays.
    x, y, sp = np.zeros((3, 4, 4), np.uint8), np.array([0, 1, 6]), np.zeros(3, np.uint8)
    assert make_faceset(x, y, sp, "a").fingerprint != make_faceset(x, y, sp, "a", CK_CLASSES).fingerprint
    assert make_faceset(x, y, sp, "a").fingerprint == make_faceset(x, y, sp, "b", CLASSES).fingerprint


@pytest.mark.parametrize("opts, key, names", [
    (dict(classes="angry,happy,neutral,contempt"), "data.classes", "'neutral'"),
    (dict(classes="folders", drop_classes="neutral"), "data.drop_classes", "'neutral'"),
    (dict(classes="angry,disgust,fear,happy,sad,surprise"), "data.classes", "'contempt'"),
])
def test_bad_class_options_are_data_errors_naming_the_key(tmp_path, opts, key, names):
    root = write_tree(tmp_path / "ck", CK, {"train": 2})
    with pytest.raises(DataError) as err:
        read_image_folders(root, options=options(**opts))
    assert key in str(err.value) and names in str(err.value) and str(root) in str(err.value)


def test_unsafe_class_names_are_config_errors():
    with pytest.raises(ConfigError, match="data.classes: class name 'very-happy'"):
        resolve_classes(options(classes="very-happy,sad"), ["very-happy", "sad"], "x")
    with pytest.raises(ConfigError, match="data.aliases: 'grumpy' is not name=class"):
        resolve_classes(options(aliases="grumpy"), ["happy"], "x")


def test_data_info_with_a_missing_listed_class_exits_2_and_writes_nothing_to_the_cache(tmp_path, capsys):
    root = write_tree(tmp_path / "ck", CK, {"train": 2, "test": 1})
    cache = tmp_path / "default-cache"
    assert main(["data", "info", str(root), "--image-size", str(SIDE),
                 "--set", "classes=angry,contempt,neutral,disgust,fear,happy,sad,surprise"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.classes" in err and "'neutral'" in err and str(root) in err
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))
    # The same tree read as its folders: eight lines, one per class, contempt among them and no neutral.
    assert main(["data", "info", str(root), "--image-size", str(SIDE), "--set", "classes=folders"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "7 classes" in out[0]
    assert [line.split()[0] for line in out[2:9]] == list(CK_CLASSES)


def test_csv_with_eight_classes_through_an_explicit_list(tmp_path):
    path = tmp_path / "affect.csv"
    rng = np.random.default_rng(3)
    lines = ["emotion,pixels,Usage"]
    for usage in ("Training", "Training", "PublicTest", "PrivateTest"):
        for label in range(8):
            lines.append(f"{label},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},{usage}")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="emotion 7 is out of range.*data.classes"):
        read_fer2013_csv(path)  # FER2013's seven: 7 is outside them, and the message says how to list more
    data = read_fer2013_csv(path, options=DataOptions(classes=",".join(AFFECTNET)))
    assert data.class_names == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")
    assert data.counts() == {"train": [2] * 8, "val": [1] * 8, "test": [1] * 8}
    dropped = read_fer2013_csv(path, options=DataOptions(classes=",".join(AFFECTNET), drop_classes="contempt,sad"))
    assert dropped.class_names == ("neutral", "happy", "surprise", "fear", "disgust", "angry")
    assert len(dropped.labels) == 24 and dropped.labels.max() == 5
    # Through load(): the class options are part of the converted data set's key.
    assert load(str(path), options=DataOptions(classes=",".join(AFFECTNET))).class_names == data.class_names
    assert load(str(path), options=DataOptions(classes=",".join(AFFECTNET), drop_classes="contempt")
                ).class_names == data.class_names[:-1]


def test_procedural_drops_classes_and_refuses_unknown_ones():
    data = draw_procedural(scale=0.01, options=DataOptions(drop_classes="disgust"))
    assert data.class_names == tuple(c for c in CLASSES if c != "disgust") and data.labels.max() == 5
    with pytest.raises(DataError, match="data.drop_classes names 'contempt'"):
        draw_procedural(scale=0.01, options=DataOptions(drop_classes="contempt"))


# ------------------------------------------------------------------------------------ metrics, absent classes

@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_macro_f1_is_the_mean_over_the_classes_present_in_the_test_split():
    names = CK_CLASSES[:3]  # angry, disgust, fear; no fear image in the test labels
    y = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 2, 1, 0])  # one angry taken for fear (absent), one disgust taken for angry
    m = classification_metrics(y, pred, "test", names)
    # By hand: angry tp 3, fp 1, fn 1 -> F1 6/8; disgust tp 1, fp 0, fn 1 -> F1 2/3; fear has no test image.
    assert m["test_macro_f1"] == pytest.approx((6 / 8 + 2 / 3) / 2)
    assert m["test_macro_f1"] == pytest.approx(f1_score(y, pred, labels=[0, 1], average="macro"))
    assert m["test_absent_classes"] == "fear"
    assert np.isnan(m["test_recall_fear"]) and np.isnan(m["test_f1_fear"]) and m["test_recall_angry"] == 0.75
    # Counting the absent class as an F1 of 0 would have said (0.75 + 0.667 + 0) / 3.
    assert m["test_macro_f1"] > 0.7 > (6 / 8 + 2 / 3) / 3
    ci = bootstrap_intervals(y, pred, "test", 3, resamples=200, seed=1)
    assert ci["test_macro_f1_ci_high"] <= 1 and ci["test_macro_f1_ci_high"] > (6 / 8 + 2 / 3) / 3
    up = uplift_metrics(y, pred, y, "test", names, resamples=50)
    assert up["uplift_test_macro_f1"] == pytest.approx(1 - (6 / 8 + 2 / 3) / 2)
    assert np.isnan(up["uplift_test_recall_fear"])


def test_per_class_rows_follow_the_rows_classes():
    row = {"trial_id": "t1", "classes": ",".join(CK_CLASSES), "test_recall_contempt": 0.5, "test_recall_angry": 1.0,
           "n_train_real_contempt": 12, "test_macro_f1": 0.7}
    rows = per_class_rows(row)
    assert [r["class"] for r in rows] == ["angry", "contempt"]
    assert rows[1] == {"trial_id": "t1", "class": "contempt", "test_recall": 0.5, "n_train_real": 12}


def test_a_policy_naming_a_class_the_data_lacks_is_a_config_error_naming_the_key():
    counts = np.full(7, 10)
    with pytest.raises(ConfigError, match="augment.minority_classes: unknown class 'neutral'.*contempt"):
        plan_mix("minority", counts, {"minority_classes": "neutral", "minority_target": 0}, CK_CLASSES)


# ------------------------------------------------------------------------------------------- a whole trial

@pytest.mark.slow
def test_a_trial_on_a_ck_like_tree_names_contempt_everywhere(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fercore import trial
    from fercore.results import ResultsStore, TensorBoardWriter
    from fercore.results.tensorboard import run_dir

    root = write_tree(tmp_path / "ck", CK)
    data = load(str(root), options=options(classes="folders"))
    config = {"data.source": str(root), "data.classes": "folders", "data.image_size": SIDE,
              "augment.policy": "none", "classifier.backbone": "linear", "classifier.epochs": 1,
              "classifier.batch_size": 16}
    result = trial.run(config, data, lambda *a: None)
    row = result.row
    assert row["classes"] == ",".join(CK_CLASSES) and row["test_absent_classes"] == ""
    assert 0 <= row["test_recall_contempt"] <= 1 and "val_recall_contempt" in row
    assert not any("neutral" in k for k in row)
    assert result.test.proba.shape[1] == 7

    row = {**row, "trial_id": "t1"}
    store = ResultsStore(tmp_path / "results")
    store.add_trial(row)
    store.add_artifacts("t1", result.artifacts)
    store.flush()
    import pyarrow.parquet as pq

    per_class = pq.read_table(tmp_path / "results" / "per_class.parquet").to_pylist()
    assert [r["class"] for r in per_class] == list(CK_CLASSES)
    confusion = pq.read_table(tmp_path / "results" / "confusion.parquet").to_pylist()
    assert {r["true"] for r in confusion} == set(CK_CLASSES)
    predictions = pq.read_table(tmp_path / "results" / "predictions.parquet")
    assert "p_contempt" in predictions.column_names and "p_neutral" not in predictions.column_names

    tb = TensorBoardWriter(tmp_path / "tb")
    tb.epoch("t1", 1, result.epochs[0])
    tb.finish("t1", {k: v for k, v in row.items() if "." in k}, row, result.artifacts)
    acc = EventAccumulator(str(run_dir(tmp_path / "tb", "t1")), size_guidance={"images": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert "result/test_macro_f1" in scalars and not any("contempt" in t for t in scalars)
    assert "confusion/test" in acc.Tags()["images"]


def test_the_report_reads_the_classes_from_the_trials_table():
    import pandas as pd

    from fercore.report.outcomes import _absent_note
    from fercore.report.tables import data_classes, recall_by_setting

    rows = [{"trial_id": f"t{i}", "classes": ",".join(CK_CLASSES), "augment.policy": "none", "status": "completed",
             "test_absent_classes": "contempt" if i else "", **{f"test_recall_{c}": 0.5 + i / 10 for c in CK_CLASSES}}
            for i in range(2)]
    done = pd.DataFrame(rows)
    assert data_classes(done) == CK_CLASSES and data_classes(done.drop(columns="classes")) == CLASSES
    table, counts, _ = recall_by_setting(done)
    assert list(table.index) == list(CK_CLASSES) and table.loc["contempt"].iloc[0] == pytest.approx(0.55)
    assert "no image of contempt" in _absent_note(done) and _absent_note(done.iloc[:1]) == ""
