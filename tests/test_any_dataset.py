"""Issue 17 as its users meet it, every part at once: a CK+-like tree in CK+'s own folders (contempt, no neutral,
near-identical frames of each subject's sequences) read with its classes, subjects and folds; an AffectNet-like tree
of eight classes in 224-px colour read at 96 px in colour and trained on; and a k-fold sweep over the CK+-like tree
whose report aggregates over the folds. The parts have their own tests (test_data_classes, test_data_groups,
test_data_folds, test_data_color); these check that they hold together."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fercore import trial
from fercore.cli import main
from fercore.data import DataOptions, load
from fercore.metrics.copies import split_leakage
from tests.face_trees import CK_GROUP, CK_PLUS, ck_tree
from tests.test_report import table_after
from tests.test_report_selection import section

CK_AS_FERCORE = ("angry", "disgust", "fear", "happy", "sad", "surprise", "contempt")
AFFECTNET = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> Path:
    return ck_tree(tmp_path_factory.mktemp("ckplus"), names=CK_PLUS)


def test_ck_plus_folders_keep_contempt_and_subjects_stop_the_sequence_leak(ck):
    grouped = load(str(ck), use_cache=False, options=DataOptions(classes="folders", group=CK_GROUP))
    assert grouped.class_names == CK_AS_FERCORE and "neutral" not in grouped.class_names
    assert grouped.subjects() is not None and split_leakage(grouped)["train_test"] == 0
    # Every subject sits in one split only.
    for subject in np.unique(grouped.groups):
        assert len(np.unique(grouped.splits[grouped.groups == subject])) == 1
    random = load(str(ck), use_cache=False, options=DataOptions(classes="folders"))
    assert random.class_names == CK_AS_FERCORE and split_leakage(random)["train_test"] >= 10


def test_ck_plus_folds_keep_subjects_whole_and_each_fold_is_its_own_data_set(ck):
    data = load(str(ck), use_cache=False, options=DataOptions(classes="folders", group=CK_GROUP, folds=3))
    folds = [data.for_fold(i) for i in range(3)]
    tested = [set(np.unique(f.groups[f.splits == 2])) for f in folds]
    assert all(not (a & b) for i, a in enumerate(tested) for b in tested[i + 1:])
    assert set().union(*tested) == set(np.unique(data.groups))
    assert len({f.fingerprint for f in folds}) == 3 and all(f.class_names == CK_AS_FERCORE for f in folds)
    for f in folds:
        assert split_leakage(f)["train_test"] == 0


def _affectnet_tree(root: Path, per_class: int = 6) -> Path:
    """Eight class folders of colour images, 224 px and other sizes: each class a hue, so colour carries the class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(AFFECTNET):
        hue = np.array([(c * 37) % 256, (c * 91 + 60) % 256, (c * 151 + 120) % 256])
        for i in range(per_class):
            side = (224, 224) if i % 3 else (200, 240)  # AffectNet is mostly 224 x 224; some are not square
            pixels = np.clip(hue + rng.integers(-20, 21, size=(*side, 3)), 0, 255).astype(np.uint8)
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def test_affectnet_like_colour_at_96_px_trains_on_eight_classes(tmp_path):
    root = _affectnet_tree(tmp_path / "affectnet")
    data = load(str(root), options=DataOptions(classes="folders", image_size=96, channels=3))
    assert data.images.shape[1:] == (96, 96, 3) and len(data.class_names) == 8
    assert "contempt" in data.class_names and "angry" in data.class_names  # anger read as FER2013's angry
    happy = data.images[data.labels == data.class_names.index("happy")].reshape(-1, 3).mean(0)
    assert np.abs(happy - np.array([37, 151, 15])).max() < 8  # the colour survived reading and resizing
    config = {"data.source": str(root), "data.classes": "folders", "data.image_size": 96, "data.channels": 3,
              "augment.policy": "none", "classifier.backbone": "cnn3", "classifier.width": 8,
              "classifier.epochs": 1, "classifier.batch_size": 16}
    row = trial.run(config, data, lambda *a: None).row
    assert row["classes"] == ",".join(data.class_names)
    assert np.isfinite(row["test_macro_f1"]) and "test_recall_contempt" in row


@pytest.mark.slow
def test_a_k_fold_sweep_over_ck_plus_reports_contempt_and_aggregates_over_folds(ck, tmp_path):
    import ray

    sweep = tmp_path / "ckplus_folds.yaml"
    sweep.write_text(f"""name: ckplus_folds
data:
  source: {ck}
  classes: folders
  group: '{CK_GROUP}'
  folds: 3
sampler: grid
grid:
  data.fold: [0, 1, 2]
fixed:
  classifier.backbone: cnn3
  classifier.epochs: 1
metric: val_macro_f1
mode: max
scheduler: {{type: none}}
max_concurrent: 1
resources: {{cpu: 1, gpu: 0}}
""")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    try:
        assert main(["run", str(sweep), "--smoke", "--num-samples", "3", "--storage", str(tmp_path / "out")]) == 0
    finally:
        ray.shutdown()
    folder = tmp_path / "out" / "ckplus_folds"
    rows = pq.read_table(folder / "trials.parquet").to_pylist()
    assert sorted(r["data.fold"] for r in rows) == [0, 1, 2] and {r["status"] for r in rows} == {"completed"}
    assert all(r["classes"] == ",".join(CK_AS_FERCORE) for r in rows)
    assert all("test_recall_contempt" in r and "test_recall_neutral" not in r for r in rows)
    assert all(r["leak_real_test"] == 0 for r in rows)
    assert main(["report", str(folder)]) == 0
    text = section((folder / "report" / "report.md").read_text(), "2.1 Across seeds")
    assert "aggregated over its folds before configs are compared" in text
    assert table_after(text, "Per config").iloc[0]["folds"] == "3"
