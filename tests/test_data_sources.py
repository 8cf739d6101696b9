"""The file readers (FER2013 CSV, image folders, RAF-DB) and the cache, on small files written in the real formats."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import fercore.data.fer2013 as fer2013
from fercore.data import load
from fercore.data.faceset import SPLIT_INDEX
from fercore.data.fer2013 import read_fer2013_csv
from fercore.data.folders import TEST_FRACTION, read_image_folders
from fercore.data.rafdb import find_label_file, read_rafdb
from fercore.data.splitting import stratified_holdout
from fercore.errors import DataError
from fercore.labels import CLASS_INDEX, CLASSES

SIDE = 8


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # No test may touch the user's ~/.cache, even through a load() that forgets cache_dir.
    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "default-cache"))


def face(seed: int, side: int = SIDE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(side, side), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------- FER2013

USAGE_OF = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
PER_SPLIT = {"train": 3, "val": 2, "test": 1}  # faces per class in each split


def fer_rows():
    """[(label, face, usage)]: PER_SPLIT[split] faces of every class in every split."""
    rows, seed = [], 0
    for split, n in PER_SPLIT.items():
        for label in range(len(CLASSES)):
            for _ in range(n):
                rows.append((label, face(seed), USAGE_OF[split]))
                seed += 1
    return rows


def write_csv(path, rows, header="emotion,pixels,Usage", order=("emotion", "pixels", "Usage")):
    lines = [header]
    for label, img, usage in rows:
        values = {"emotion": str(label), "pixels": img if isinstance(img, str) else " ".join(map(str, img.ravel())),
                  "Usage": usage, "extra": "x"}
        lines.append(",".join(values[c] for c in order))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fer2013_round_trip_through_load(tmp_path):
    rows = fer_rows()
    path = write_csv(tmp_path / "fer2013.csv", rows)
    fs = load(str(path), image_size=SIDE, cache_dir=tmp_path / "cache")
    assert fs.images.shape == (len(rows), SIDE, SIDE)
    assert fs.counts() == {split: [n] * len(CLASSES) for split, n in PER_SPLIT.items()}
    np.testing.assert_array_equal(fs.images, np.stack([img for _, img, _ in rows]))
    np.testing.assert_array_equal(fs.labels, [label for label, _, _ in rows])


def test_fer2013_column_order_and_extra_columns(tmp_path):
    rows = fer_rows()
    path = write_csv(tmp_path / "a.csv", rows, header="Usage,extra,pixels,emotion",
                     order=("Usage", "extra", "pixels", "emotion"))
    fs = read_fer2013_csv(path, image_size=SIDE)
    np.testing.assert_array_equal(fs.images, np.stack([img for _, img, _ in rows]))
    assert fs.counts()["val"] == [2] * len(CLASSES)


def test_fer2013_windows_line_endings_and_bom(tmp_path):
    rows = fer_rows()
    plain = read_fer2013_csv(write_csv(tmp_path / "a.csv", rows), image_size=SIDE)
    path = tmp_path / "b.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "a.csv").read_bytes().replace(b"\n", b"\r\n"))
    assert read_fer2013_csv(path, image_size=SIDE).fingerprint == plain.fingerprint


def test_fer2013_resizes(tmp_path):
    flat = np.full((SIDE, SIDE), 77, np.uint8)
    path = write_csv(tmp_path / "a.csv", [(3, flat, "Training"), (4, face(1), "PrivateTest")])
    fs = read_fer2013_csv(path, image_size=4)
    assert fs.images.shape == (2, 4, 4)
    assert (fs.images[0] == 77).all()  # a flat face stays flat whatever the filter


def test_fer2013_exact_path_agrees_with_fast_path(tmp_path):
    rows = fer_rows()
    clean = write_csv(tmp_path / "fast.csv", rows)
    assert fer2013._fast_parse(clean, fer2013._read_header(clean)) is not None
    fast = read_fer2013_csv(clean, image_size=SIDE)
    # Double spaces and a blank line are legal but push the reader onto its slow exact path.
    loose = [(label, "  ".join(map(str, img.ravel())), usage) for label, img, usage in rows]
    path = write_csv(tmp_path / "slow.csv", loose)
    path.write_text(path.read_text().replace("\n", "\n\n", 1))
    assert fer2013._fast_parse(path, fer2013._read_header(path)) is None
    slow = read_fer2013_csv(path, image_size=SIDE)
    assert slow.fingerprint == fast.fingerprint


def _bad_csv(tmp_path, bad_line: str, *, line_no: int = 4):
    """A valid CSV whose data row at line `line_no` is replaced by `bad_line`."""
    good = " ".join(["1"] * (SIDE * SIDE))
    lines = ["emotion,pixels,Usage"] + [f"{i % 7},{good},Training" for i in range(6)]
    lines[line_no - 1] = bad_line
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _raises(path, *fragments, reader=lambda p: read_fer2013_csv(p, image_size=SIDE)):
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_fer2013_wrong_pixel_count(tmp_path):
    short = " ".join(["1"] * (SIDE * SIDE - 1))
    _raises(_bad_csv(tmp_path, f"2,{short},Training"), "line 4", "expected 64 pixels", "found 63")


def test_fer2013_non_numeric_pixel(tmp_path):
    pixels = " ".join(["1"] * 10 + ["ab"] + ["1"] * (SIDE * SIDE - 11))
    _raises(_bad_csv(tmp_path, f"2,{pixels},Training", line_no=6), "line 6", "pixel 11", "'ab'", "0-255")


def test_fer2013_pixel_out_of_range(tmp_path):
    pixels = " ".join(["256"] + ["1"] * (SIDE * SIDE - 1))
    _raises(_bad_csv(tmp_path, f"2,{pixels},Training"), "line 4", "pixel 1 is 256", "0-255")


@pytest.mark.parametrize("label", ["7", "-1", "2.5", "happy"])
def test_fer2013_bad_label(tmp_path, label):
    pixels = " ".join(["1"] * (SIDE * SIDE))
    _raises(_bad_csv(tmp_path, f"{label},{pixels},Training", line_no=3), "line 3", "emotion", "0-6")


def test_fer2013_unknown_usage(tmp_path):
    pixels = " ".join(["1"] * (SIDE * SIDE))
    _raises(_bad_csv(tmp_path, f"2,{pixels},Validation"), "line 4", "'Validation'",
            "Training, PublicTest, PrivateTest")


def test_fer2013_missing_columns(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("emotion,image\n0,1 2 3 4,Training\n")
    _raises(path, "line 1", "'pixels'", "'Usage'")


def test_fer2013_empty_file(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("")
    _raises(path, "empty", "emotion,pixels,Usage")


def test_fer2013_header_only(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("emotion,pixels,Usage\n")
    _raises(path, "no data rows")


def test_fer2013_not_text(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    _raises(path, "line 1", "not a readable text file")


def test_fer2013_bad_bytes_mid_file(tmp_path):
    path = _bad_csv(tmp_path, "placeholder", line_no=5)
    path.write_bytes(path.read_bytes().replace(b"placeholder", b"2,\xff\xfe,Training"))
    _raises(path, "line 5", "not readable text")


# --------------------------------------------------------------------------------------------------- cache

def test_cache_second_load_skips_the_reader(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "fer2013.csv", fer_rows())
    first = load(str(path), image_size=SIDE, cache_dir=tmp_path / "cache")

    def refuse(*args, **kwargs):
        raise AssertionError("the reader ran although the cache holds this file")

    monkeypatch.setattr(fer2013, "read_fer2013_csv", refuse)
    second = load(str(path), image_size=SIDE, cache_dir=tmp_path / "cache")
    assert second.fingerprint == first.fingerprint
    for name in ("images", "labels", "splits"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))


def test_cache_keeps_nothing_from_a_failed_conversion(tmp_path):
    path = _bad_csv(tmp_path, "9,1 2,Training")
    with pytest.raises(DataError):
        load(str(path), image_size=SIDE, cache_dir=tmp_path / "cache")
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())


def test_cache_keeps_nothing_from_a_failed_write(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "fer2013.csv", fer_rows())

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        load(str(path), image_size=SIDE, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # neither the entry nor its temp file


# ------------------------------------------------------------------------------------------------ splitting

def test_stratified_holdout_is_stratified_and_seeded():
    labels = np.repeat(np.arange(7), [20, 10, 2, 1, 0, 40, 5])
    mask = stratified_holdout(labels, 0.1, seed=3)
    held = np.bincount(labels[mask], minlength=7).tolist()
    assert held == [2, 1, 1, 0, 0, 4, 1]  # ~10% per class, >=1 where a class has >=2, none from a singleton
    np.testing.assert_array_equal(mask, stratified_holdout(labels, 0.1, seed=3))
    assert not np.array_equal(mask, stratified_holdout(labels, 0.1, seed=4))
    assert not stratified_holdout(labels, 0.0, seed=3).any()


# ---------------------------------------------------------------------------------------------- image folders

def write_tree(root, splits: dict[str, dict[str, int]], *, side=SIDE, mode="L", ext="png"):
    """root/<split>/<class>/<i>.<ext> for {split: {class folder: count}}; returns {path: pixels written}."""
    written, seed = {}, 1000
    for split, classes in splits.items():
        for cls, n in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = face(seed, side)
                seed += 1
                pil = Image.fromarray(img)
                pil = pil.convert(mode) if mode != "L" else pil
                pil.save(folder / f"{i:03d}.{ext}")
                written[folder / f"{i:03d}.{ext}"] = img
    return written


def all_classes(n):
    return {c: n for c in CLASSES}


def test_folders_kaggle_fer2013_layout(tmp_path):
    root = tmp_path / "fer2013"
    written = write_tree(root, {"train": all_classes(10), "test": all_classes(3)})
    (root / "train" / "happy" / ".DS_Store").write_bytes(b"\x00junk")
    fs = load(str(root), image_size=SIDE, seed=0, val_fraction=0.2, cache_dir=tmp_path / "cache")
    counts = fs.counts()
    assert counts == {"train": [8] * 7, "val": [2] * 7, "test": [3] * 7}
    # The test folder is read as is, pixel for pixel.
    test_images, test_labels = fs.split("test")
    expected = [written[p] for p in sorted(written) if p.parts[-3] == "test"]
    assert sorted(map(bytes, test_images)) == sorted(map(bytes, expected))


def test_folders_carved_val_is_seeded(tmp_path):
    root = tmp_path / "fer2013"
    write_tree(root, {"train": all_classes(10), "test": all_classes(1)})
    a = read_image_folders(root, image_size=SIDE, seed=0, val_fraction=0.2)
    b = read_image_folders(root, image_size=SIDE, seed=0, val_fraction=0.2)
    c = read_image_folders(root, image_size=SIDE, seed=1, val_fraction=0.2)
    np.testing.assert_array_equal(a.splits, b.splits)
    assert not np.array_equal(a.splits, c.splits)
    assert a.counts()["val"] == c.counts()["val"] == [2] * 7


def test_folders_face_expression_layout_carves_a_fixed_test(tmp_path):
    root = tmp_path / "face-expression"
    write_tree(root / "images", {"train": all_classes(20), "validation": all_classes(2)})
    a = load(str(root), image_size=SIDE, seed=0, cache_dir=tmp_path / "cache")
    b = load(str(root), image_size=SIDE, seed=5, val_fraction=0.3, cache_dir=tmp_path / "cache")
    per_class = round(TEST_FRACTION * 20)
    assert a.counts() == {"train": [20 - per_class] * 7, "val": [2] * 7, "test": [per_class] * 7}
    # The carved test split depends on neither seed nor val_fraction.
    np.testing.assert_array_equal(a.splits == SPLIT_INDEX["test"], b.splits == SPLIT_INDEX["test"])


def test_folders_without_val_or_test_carve_both_disjointly(tmp_path):
    root = tmp_path / "flat"
    write_tree(root, {"Train": all_classes(20)})
    fs = read_image_folders(root, image_size=SIDE, val_fraction=0.1)
    assert fs.counts() == {"train": [16] * 7, "val": [2] * 7, "test": [2] * 7}


def test_folders_aliases_case_and_rgb(tmp_path):
    root = tmp_path / "aliases"
    written = write_tree(root, {"TRAINING": {"Anger": 2, "Happiness": 3, "sadness": 2},
                                "Validation": {"anger": 1}, "Testing": {"HAPPY": 1}}, side=16, mode="RGB")
    fs = read_image_folders(root, image_size=SIDE)
    counts = fs.counts()
    assert counts["train"][CLASS_INDEX["angry"]] == 2 and counts["train"][CLASS_INDEX["happy"]] == 3
    assert counts["train"][CLASS_INDEX["sad"]] == 2
    assert counts["val"][CLASS_INDEX["angry"]] == 1 and counts["test"][CLASS_INDEX["happy"]] == 1
    assert fs.images.shape == (len(written), SIDE, SIDE)


def test_folders_grayscale_png_round_trips(tmp_path):
    root = tmp_path / "t"
    written = write_tree(root, {"train": {"happy": 2}, "val": {"happy": 1}, "test": {"happy": 1}})
    fs = read_image_folders(root, image_size=SIDE)
    expected = [written[p] for p in sorted(written)]  # sorted paths: test, train, val order aside, same set
    assert sorted(map(bytes, fs.images)) == sorted(map(bytes, expected))


def test_folders_unreadable_image(tmp_path):
    root = tmp_path / "t"
    write_tree(root, {"train": {"happy": 2}, "test": {"happy": 1}})
    bad = root / "train" / "happy" / "broken.png"
    bad.write_text("not a png")
    with pytest.raises(DataError, match="not a readable image") as info:
        read_image_folders(root, image_size=SIDE)
    assert str(info.value).startswith(str(bad))


def test_folders_unknown_class_folder(tmp_path):
    root = tmp_path / "t"
    write_tree(root, {"train": {"happy": 2, "contempt": 1}, "test": {"happy": 1}})
    with pytest.raises(DataError) as info:
        read_image_folders(root, image_size=SIDE)
    message = str(info.value)
    assert str(root / "train" / "contempt") in message and "'contempt'" in message
    assert ", ".join(CLASSES) in message


def test_folders_class_without_training_image(tmp_path):
    root = tmp_path / "t"
    write_tree(root, {"train": {"happy": 2}, "test": {"happy": 1, "fear": 1}})
    with pytest.raises(DataError, match="class 'fear' has no training image") as info:
        read_image_folders(root, image_size=SIDE)
    assert str(info.value).startswith(str(root))


def test_folders_no_layout(tmp_path):
    root = tmp_path / "t"
    (root / "stuff" / "more").mkdir(parents=True)
    (root / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="no recognisable image-folder layout") as info:
        read_image_folders(root, image_size=SIDE)
    message = str(info.value)
    assert message.startswith(str(root)) and "ROOT/train/<class>" in message and "ROOT/images/train" in message


# ---------------------------------------------------------------------------------------------------- RAF-DB

# RAF-DB label id -> canonical class name.
RAF = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}


def write_rafdb(root, *, n_train=4, n_test=2, aligned=True):
    """root/basic/EmoLabel/list_patition_label.txt and its RGB jpg images; returns the label file."""
    base = root / "basic"
    (base / "EmoLabel").mkdir(parents=True)
    folder = base / "Image" / ("aligned" if aligned else "original")
    folder.mkdir(parents=True)
    lines, seed = [], 0
    for split, n in (("train", n_train), ("test", n_test)):
        for label in RAF:
            for _ in range(n):
                seed += 1
                name = f"{split}_{seed:05d}.jpg"
                lines.append(f"{name} {label}")
                file = folder / (f"{split}_{seed:05d}_aligned.jpg" if aligned else name)
                Image.fromarray(face(seed, 12)).convert("RGB").save(file)
    label_file = base / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text("\n".join(lines) + "\n")
    return label_file


def test_rafdb_layout_labels_and_splits(tmp_path):
    label_file = write_rafdb(tmp_path / "raf")
    assert find_label_file(tmp_path / "raf") == label_file
    fs = load(str(tmp_path / "raf"), image_size=SIDE, val_fraction=0.25, cache_dir=tmp_path / "cache")
    assert fs.images.shape == (7 * 6, SIDE, SIDE)
    assert fs.counts() == {"train": [3] * 7, "val": [1] * 7, "test": [2] * 7}
    # Line 1 is train_00001.jpg with RAF label 1 = surprise.
    assert fs.labels[0] == CLASS_INDEX["surprise"]
    first_of = {CLASS_INDEX[name]: fs.labels.tolist().index(CLASS_INDEX[name]) for name in RAF.values()}
    assert [first_of[CLASS_INDEX[RAF[k]]] for k in sorted(RAF)] == [4 * i for i in range(7)]


def test_rafdb_original_images_from_label_file(tmp_path):
    label_file = write_rafdb(tmp_path / "raf", aligned=False)
    fs = load(str(label_file), image_size=SIDE, cache_dir=tmp_path / "cache")
    assert sum(fs.counts()["test"]) == 14 and fs.image_size == SIDE


def test_rafdb_label_out_of_range(tmp_path):
    label_file = write_rafdb(tmp_path / "raf")
    lines = label_file.read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 8"
    label_file.write_text("\n".join(lines) + "\n")
    _raises(label_file, "line 3", "label 8", "1-7", reader=lambda p: read_rafdb(p, image_size=SIDE))


def test_rafdb_malformed_line(tmp_path):
    label_file = write_rafdb(tmp_path / "raf")
    label_file.write_text(label_file.read_text().replace("\n", "\ntrain_99999.jpg\n", 1))
    _raises(label_file, "line 2", "expected '<image name> <label>'", reader=lambda p: read_rafdb(p, image_size=SIDE))


def test_rafdb_missing_image(tmp_path):
    label_file = write_rafdb(tmp_path / "raf")
    gone = label_file.parent.parent / "Image" / "aligned" / "train_00002_aligned.jpg"
    gone.unlink()
    with pytest.raises(DataError, match="image missing") as info:
        read_rafdb(tmp_path / "raf", image_size=SIDE)
    assert str(info.value).startswith(str(gone)) and "line 2" in str(info.value)


def test_rafdb_unreadable_image(tmp_path):
    label_file = write_rafdb(tmp_path / "raf")
    bad = label_file.parent.parent / "Image" / "aligned" / "test_00030_aligned.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match="not a readable image") as info:
        read_rafdb(tmp_path / "raf", image_size=SIDE)
    assert str(info.value).startswith(str(bad))


def test_rafdb_empty_label_file(tmp_path):
    label_file = write_rafdb(tmp_path / "raf")
    label_file.write_text("\n")
    _raises(label_file, "empty", reader=lambda p: read_rafdb(p, image_size=SIDE))


def test_rafdb_cache_sees_a_changed_image_through_the_label_file(tmp_path):
    label_file = write_rafdb(tmp_path / "raf")
    first = load(str(label_file), image_size=SIDE, cache_dir=tmp_path / "cache")
    image = label_file.parent.parent / "Image" / "aligned" / "train_00001_aligned.jpg"
    Image.fromarray(np.full((20, 20), 255, np.uint8)).convert("RGB").save(image)
    second = load(str(label_file), image_size=SIDE, cache_dir=tmp_path / "cache")
    assert second.fingerprint != first.fingerprint
    assert (second.images[0] > 250).all()
