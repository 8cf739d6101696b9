"""Subject-aware splits (data.group): subjects named from file paths or a CSV column, carved splits that keep each
subject whole and stay stratified, fixed splits that share a subject refused, and the copy audit on a CK+-like tree
(frames of one sequence) counting no train/test near-copies with subjects, many without."""
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from fercore.cli import main
from fercore.data import DataOptions, load
from fercore.data.groups import compile_group, subject_of, subjects_from_paths
from fercore.data.splitting import group_holdout, holdout, stratified_holdout
from fercore.errors import ConfigError, DataError
from fercore.metrics.copies import split_leakage
from tests.face_trees import CK_GROUP, JAFFE_GROUP, ck_tree, jaffe_tree


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> Path:
    return ck_tree(tmp_path_factory.mktemp("ck"))


@pytest.fixture(scope="module")
def jaffe(tmp_path_factory) -> Path:
    return jaffe_tree(tmp_path_factory.mktemp("jaffe"))


def _subject_splits(data) -> dict[int, set[int]]:
    return {g: set(np.unique(data.splits[data.groups == g]).tolist()) for g in np.unique(data.groups)}


# ---------------------------------------------------------------------------------------------- subject names

def test_regex_is_tried_on_the_name_then_on_longer_tails_of_the_path():
    ck = compile_group(CK_GROUP)
    assert subject_of(PurePosixPath("train/happy/S005_001_00000011.png"), ck) == "005"
    folder = compile_group(r"(S\d+)/")
    assert subject_of(PurePosixPath("happy/S012/001.png"), folder) == "S012"
    assert subject_of(PurePosixPath("happy/x.png"), ck) is None


def test_bad_regexes_name_data_group():
    with pytest.raises(ConfigError, match="data.group: .*not a valid regular expression"):
        compile_group("S(\\d+")
    with pytest.raises(ConfigError, match="data.group: .*has no group"):
        compile_group("^S\\d+_")


def test_an_unmatched_file_is_named(tmp_path):
    files = [tmp_path / "happy" / "S001_001_1.png", tmp_path / "happy" / "odd.png"]
    with pytest.raises(DataError, match=r"data.group: .*does not match 1 of 2 files, e.g. .*odd.png"):
        subjects_from_paths(files, tmp_path, CK_GROUP)
    ids, names = subjects_from_paths(files[:1] * 2, tmp_path, CK_GROUP)
    assert names == ("001",) and ids.tolist() == [0, 0]


# ------------------------------------------------------------------------------------------------- hold-outs

def test_group_holdout_keeps_subjects_whole_stratifies_and_is_seeded():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 10)  # 40 subjects of 10 images, every class in each
    labels = np.tile(np.arange(5).repeat(2), 40)
    labels = labels[rng.permutation(len(labels))]
    mask = group_holdout(labels, groups, 0.2, seed=3)
    for g in range(40):
        assert len(set(mask[groups == g].tolist())) == 1, "a subject is split"
    held_share = np.bincount(labels[mask], minlength=5) / np.bincount(labels, minlength=5)
    assert np.all(np.abs(held_share - 0.2) < 0.06), held_share
    np.testing.assert_array_equal(mask, group_holdout(labels, groups, 0.2, seed=3))
    assert not np.array_equal(mask, group_holdout(labels, groups, 0.2, seed=4))


def test_group_holdout_never_takes_a_class_s_last_subject_and_is_never_empty():
    labels = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array([0, 0, 0, 1, 1, 2])  # class 0 has one subject; class 1 two
    mask = group_holdout(labels, groups, 0.05, seed=0)
    assert not mask[labels == 0].any() and mask.any()


def test_without_subjects_the_hold_out_is_today_s():
    labels = np.repeat(np.arange(7), 30)
    np.testing.assert_array_equal(holdout(labels, None, 0.1, 5), stratified_holdout(labels, 0.1, 5))


def test_without_group_the_data_set_is_unchanged(ck):
    plain = load(str(ck), use_cache=False)
    same = load(str(ck), use_cache=False, options=DataOptions())
    assert plain.groups is None and plain.fingerprint == same.fingerprint


# ----------------------------------------------------------------------------------------------- the readers

def test_ck_tree_with_group_keeps_each_subject_in_one_split(ck):
    data = load(str(ck), use_cache=False, options=DataOptions(group=CK_GROUP))
    assert len(data.group_names) == 12 and data.group_names[0] == "005"
    assert all(len(s) == 1 for s in _subject_splits(data).values())
    subjects = data.subjects()
    assert subjects["train"] >= 8 and subjects["val"] >= 1 and subjects["test"] >= 1
    assert sum(subjects.values()) == 12
    plain = load(str(ck), use_cache=False)
    assert data.fingerprint != plain.fingerprint


def test_jaffe_tree_subjects_and_stratified_splits(jaffe):
    data = load(str(jaffe), use_cache=False, options=DataOptions(group=JAFFE_GROUP, val_fraction=0.15))
    assert len(data.group_names) == 8
    assert all(len(s) == 1 for s in _subject_splits(data).values())
    counts = data.counts()
    # Every subject shows every class alike, so whole subjects give every split every class.
    for split in ("train", "val", "test"):
        assert all(n > 0 for n in counts[split]), (split, counts)


def test_audit_counts_no_train_test_copies_with_subjects_and_many_without(ck):
    grouped = split_leakage(load(str(ck), use_cache=False, options=DataOptions(group=CK_GROUP)))
    assert grouped == {"train_test": 0, "train_val": 0, "val_test": 0}
    random = split_leakage(load(str(ck), use_cache=False))
    assert random["train_test"] >= 10, random


def test_fixed_splits_sharing_a_subject_are_refused(tmp_path):
    root = tmp_path / "tree"
    ck_tree(root / "train", subjects=3, frames=2)
    ck_tree(root / "test", subjects=2, frames=2, seed=1)  # subjects S005, S006 again
    load(str(root), use_cache=False)  # without data.group it reads
    with pytest.raises(DataError, match=r"data.group: subject '005' has images in both the train and the test split"):
        load(str(root), use_cache=False, options=DataOptions(group=CK_GROUP))


def test_csv_group_column(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage,subject"]
    for i in range(40):
        usage = "Training" if i < 30 else "PrivateTest"
        subject = f"P{i // 5}"  # P0..P5 train, P6, P7 test
        rows.append(f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 64)))},{usage},{subject}")
    path = tmp_path / "faces.csv"
    path.write_text("\n".join(rows) + "\n")
    data = load(str(path), use_cache=False, options=DataOptions(image_size=8, group="Subject"))
    assert data.group_names == tuple(f"P{i}" for i in range(8))
    assert data.subjects() == {"train": 6, "val": 0, "test": 2}
    with pytest.raises(DataError, match="data.group: no column 'who'"):
        load(str(path), use_cache=False, options=DataOptions(image_size=8, group="who"))
    rows[-1] = rows[-1].rsplit(",", 1)[0] + ",P0"  # P0 in Training and PrivateTest
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="subject 'P0' has images in both the train and the test split"):
        load(str(path), use_cache=False, options=DataOptions(image_size=8, group="subject"))


def test_converted_cache_keeps_subjects(ck, tmp_path):
    options = DataOptions(group=CK_GROUP)
    first = load(str(ck), options=options, cache_dir=tmp_path)
    again = load(str(ck), options=options, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert again.group_names == first.group_names and again.fingerprint == first.fingerprint
    np.testing.assert_array_equal(again.groups, first.groups)


# ---------------------------------------------------------------------------------------------- fersweep data

def test_data_info_prints_subjects_per_split_and_no_leak_warning(ck, capsys):
    assert main(["data", "info", str(ck), "--set", f"group={CK_GROUP}"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("subjects"))
    assert line.split()[1:4] != ["0", "0", "0"] and "12 subjects" in line
    assert "warning" not in out
    assert main(["data", "info", str(ck)]) == 0
    assert "train images nearly copy a test image" in capsys.readouterr().out


@pytest.mark.parametrize("group, expected", [
    ("S(\\d+", "data.group: 'S(\\\\d+' is not a valid regular expression"),
    ("^S\\d+_", "has no group"),
    ("^X(\\d+)", "matches no file under"),
])
def test_data_info_bad_group_is_status_2_and_writes_no_cache(ck, tmp_path, monkeypatch, capsys, group, expected):
    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "cache"))
    assert main(["data", "info", str(ck), "--set", f"group={group}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.group" in err and expected in err, err
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_data_info_fixed_splits_sharing_a_subject_is_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "tree"
    ck_tree(root / "train", subjects=2, frames=1)
    ck_tree(root / "test", subjects=1, frames=1, seed=1)
    assert main(["data", "info", str(root), "--set", f"group={CK_GROUP}"]) == 2
    err = capsys.readouterr().err
    assert "subject '005'" in err and "train" in err and "test" in err and str(root) in err
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))



def _write_rafdb(root: Path, train_subjects: str, test_subjects: str) -> None:
    """A RAF-DB folder whose image names carry a subject letter: train_A_3.jpg is subject A's image of RAF label 3."""
    from tests.test_data_sources import face

    folder = root / "basic" / "Image" / "aligned"
    folder.mkdir(parents=True)
    (root / "basic" / "EmoLabel").mkdir()
    lines, seed = [], 0
    for split, subjects in (("train", train_subjects), ("test", test_subjects)):
        for subject in subjects:
            for label in range(1, 8):
                seed += 1
                lines.append(f"{split}_{subject}_{label}.jpg {label}")
                Image.fromarray(face(seed, 12)).save(folder / f"{split}_{subject}_{label}_aligned.jpg")
    (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")


def test_rafdb_subjects_from_image_paths(tmp_path):
    _write_rafdb(tmp_path / "raf", "ABCDEF", "GH")
    options = DataOptions(image_size=12, val_fraction=0.2, group=r"^(?:train|test)_([A-Z])_")
    data = load(str(tmp_path / "raf"), use_cache=False, options=options)
    assert data.group_names == tuple("ABCDEFGH")
    assert data.subjects() == {"train": 5, "val": 1, "test": 2}
    assert all(len(s) == 1 for s in _subject_splits(data).values())
    with pytest.raises(DataError, match="data.folds: 3 folds pool every image, but this source fixes its own "
                                        "held-out split \\(the test_ images\\)"):
        load(str(tmp_path / "raf"), use_cache=False, options=DataOptions(image_size=12, folds=3))
    shared = tmp_path / "shared"
    _write_rafdb(shared, "ABC", "C")
    with pytest.raises(DataError, match="list_patition_label.txt: data.group: subject 'C' has images in both the "
                                        "train and the test split"):
        load(str(shared), use_cache=False, options=options)


def test_a_split_no_subject_can_fill_is_an_error(tmp_path):
    root = tmp_path / "tree"
    for subject, cls in (("S001", "happy"), ("S002", "sad"), ("S003", "angry")):  # each subject: all of a class
        (root / cls).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(root / cls / f"{subject}_{k}.png")
    with pytest.raises(DataError, match="data.group: cannot carve the test split from the training images: no "
                                        "subject of 3 can be held out"):
        load(str(root), use_cache=False, options=DataOptions(image_size=8, group="^(S\\d+)_"))
