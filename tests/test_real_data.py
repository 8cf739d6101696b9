"""Real faces (issue 22): a fixed stratified subset of FER2013 (tests/real_faces.py) read by the three file readers,
which must agree face for face, and one trial with a generator and a quality filter run end to end on it.

The real_data tests need ../shared/data/fer2013-images.tar.gz beside the project, or FERCORE_FER2013_ARCHIVE: without
it they fail (at set-up), naming where they looked. None reads the whole of FER2013.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from fercore import trial
from fercore.data import describe_source, load
from fercore.labels import CLASSES
from tests import real_faces as rf
from tests.real_faces import FACESET_SPLIT, FER2013_LABELS, PER_CLASS

SUBSET_DIGEST = "78b5625fdae09820"  # RealFaces.digest() of the subset every run draws


def faces_of(images: np.ndarray, labels: np.ndarray) -> Counter:
    """The multiset of (pixels' hash, class name) of a reader's faces: what two readers that keep different file
    orders must agree on."""
    return Counter((hashlib.blake2b(img.tobytes(), digest_size=16).digest(), CLASSES[label])
                   for img, label in zip(images, labels))


def expected(faces: list[rf.Face]) -> Counter:
    """The same multiset from the archive's files, decoded by PIL here rather than by a reader."""
    return Counter((hashlib.blake2b(f.pixels().tobytes(), digest_size=16).digest(), f.label) for f in faces)


def read(path) -> tuple[str, object]:
    return describe_source(str(path)), load(str(path), use_cache=False)


# ------------------------------------------------------------------------------------------------- the subset

@pytest.mark.real_data
def test_the_subset_is_fixed_stratified_and_has_every_class(real_faces):
    counts = Counter((f.split, f.label) for f in real_faces.faces)
    assert counts == {(split, label): n for split, n in PER_CLASS.items() for label in FER2013_LABELS}
    assert all(f.pixels().shape == (48, 48) for f in real_faces.faces)
    assert real_faces.digest() == SUBSET_DIGEST, "the subset changed: tests pinned to its faces would drift"


def test_a_missing_archive_fails_naming_the_path_and_the_variable(tmp_path, monkeypatch):
    gone = tmp_path / "nowhere" / "fer2013-images.tar.gz"
    monkeypatch.setenv(rf.ARCHIVE_ENV, str(gone))
    with pytest.raises(pytest.fail.Exception) as info:
        rf.archive_path()
    assert str(gone) in str(info.value) and rf.ARCHIVE_ENV in str(info.value)
    # Without the variable: the place beside the project, and the variable that would point elsewhere.
    monkeypatch.delenv(rf.ARCHIVE_ENV)
    monkeypatch.setattr(rf, "DEFAULT_ARCHIVE", gone)
    with pytest.raises(pytest.fail.Exception) as info:
        rf.archive_path()
    assert str(gone) in str(info.value) and rf.ARCHIVE_ENV in str(info.value)


# ------------------------------------------------------------------------------------------ three readers, one set

@pytest.mark.real_data
def test_the_folder_tree_reads_every_face_decoded_and_labelled(real_faces):
    kind, data = read(real_faces.tree)
    assert kind == "folders" and data.class_names == CLASSES
    assert data.counts() == {FACESET_SPLIT[s]: [n] * len(CLASSES) for s, n in PER_CLASS.items()}
    for split, name in FACESET_SPLIT.items():  # the archive's own splits, kept: nothing carved
        assert faces_of(*data.split(name)) == expected(real_faces.of(split)), split


@pytest.mark.real_data
def test_the_fer2013_csv_reads_the_same_faces_as_the_folder_tree(real_faces):
    kind, data = read(real_faces.csv)
    _, tree = read(real_faces.tree)
    assert kind == "fer2013_csv" and data.class_names == CLASSES
    assert data.counts() == tree.counts()
    for name in FACESET_SPLIT.values():
        assert faces_of(*data.split(name)) == faces_of(*tree.split(name)), name
    # The CSV's rows are the subset in order, so its faces are too: pixel for pixel, label for label.
    np.testing.assert_array_equal(data.images, np.stack([f.pixels() for f in real_faces.faces]))
    assert [CLASSES[y] for y in data.labels] == [f.label for f in real_faces.faces]


@pytest.mark.real_data
def test_rafdb_reads_the_same_faces_its_test_split_exactly_and_validation_carved_from_train(real_faces):
    kind, data = read(real_faces.rafdb)
    _, tree = read(real_faces.tree)
    assert kind == "rafdb" and data.class_names == CLASSES
    # The label file lists the subset in order (train and validation faces as train_, test faces as test_).
    np.testing.assert_array_equal(data.images, np.stack([f.pixels() for f in real_faces.faces]))
    assert [CLASSES[y] for y in data.labels] == [f.label for f in real_faces.faces]
    assert faces_of(*data.split("test")) == faces_of(*tree.split("test"))
    counts = data.counts()
    assert counts["test"] == [PER_CLASS["test"]] * len(CLASSES)
    # RAF-DB has no validation split: the reader carves one from train_, every class in it, so train + val, pooled,
    # are the tree's train + validation faces.
    pooled = [a + b for a, b in zip(counts["train"], counts["val"])]
    assert pooled == [PER_CLASS["train"] + PER_CLASS["validation"]] * len(CLASSES) and min(counts["val"]) > 0
    assert faces_of(*data.split("train")) + faces_of(*data.split("val")) == \
        faces_of(*tree.split("train")) + faces_of(*tree.split("val"))


# -------------------------------------------------------------------------------------------- one trial on it

# A cgan trained for one short pass tops disgust up to MINORITY_TARGET; its discriminator filters what it draws
# (tau well under the ~0.49 a one-pass discriminator gives, so the pool fills in the first round); cnn3 learns for two.
MINORITY_TARGET = 80
REAL_TRIAL = {
    "generator.type": "cgan", "generator.epochs": 1, "generator.width": 4, "generator.batch_size": 32,
    "generator.latent_dim": 16, "generator.resolution": 32,
    "augment.policy": "minority", "augment.minority_classes": "disgust", "augment.minority_target": MINORITY_TARGET,
    "augment.filter": "discriminator", "augment.filter_tau": 0.3,
    "classifier.backbone": "cnn3", "classifier.width": 8, "classifier.epochs": 2, "classifier.batch_size": 32,
}
LEAK_KEYS = [f"leak_{kind}{side}_{split}" for kind in ("", "feature_") for side in ("real", "synthetic")
             for split in ("test", "val")]


def exact_copies(faces: list[rf.Face], others: list[rf.Face]) -> int:
    """How many of FACES have the very pixels of a face in OTHERS: FER2013's splits share some."""
    seen = {f.pixels().tobytes() for f in others}
    return sum(f.pixels().tobytes() in seen for f in faces)


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.usefixtures("one_torch_thread")
def test_a_trial_with_a_generator_and_a_filter_runs_end_to_end_on_real_faces(real_faces):
    data = load(str(real_faces.tree), use_cache=False)
    row = trial.run({**REAL_TRIAL, "data.source": str(real_faces.tree)}, data, lambda *a: None).row
    assert row["status"] == "completed" and row["classes"] == ",".join(CLASSES)
    assert row["generator.type"] == "cgan" and row["augment.filter"] == "discriminator"

    # Every class is in the test split, so each has its figures and none is listed absent.
    assert row["test_absent_classes"] == "" and np.isfinite(row["test_macro_f1"])
    for name in CLASSES:
        assert 0 <= row[f"test_recall_{name}"] <= 1 and 0 <= row[f"test_f1_{name}"] <= 1, name

    # The plan: disgust topped up from its real count to the target, no other class touched.
    topped = MINORITY_TARGET - PER_CLASS["train"]
    assert row["n_train_synthetic"] == row["n_train_synthetic_disgust"] == topped
    assert all(row[f"n_train_synthetic_{name}"] == 0 for name in CLASSES if name != "disgust")
    assert row["n_train_real"] == PER_CLASS["train"] * len(CLASSES)

    # The filter judged every image it drew; only disgust drew any.
    assert 0 < row["filter_acceptance"] <= 1 and row["filter_acceptance_disgust"] == row["filter_acceptance"]
    assert all(np.isnan(row[f"filter_acceptance_{name}"]) for name in CLASSES if name != "disgust")
    assert row["filter_generated"] >= topped

    # The audit: whole counts, synthetic ones bounded by the synthetic images; the real ones at least count the
    # subset's training faces that are pixel-exact copies of its validation or test faces (FER2013 holds some).
    assert all(isinstance(row[k], int) and row[k] >= 0 for k in LEAK_KEYS), {k: row.get(k) for k in LEAK_KEYS}
    assert row["leak_synthetic_test"] <= topped and row["leak_synthetic_val"] <= topped
    train = real_faces.of("train")
    assert row["leak_real_val"] >= exact_copies(train, real_faces.of("validation"))
    assert row["leak_real_test"] >= exact_copies(train, real_faces.of("test"))
    assert 0 <= row["gen_memorised_share"] <= 1
    assert np.isfinite(row["uplift_test_macro_f1"])  # paired with the real-only baseline
