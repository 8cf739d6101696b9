"""The augmentation-aware copy audit (fercore.metrics.copies): planted copies under every alteration are counted,
in a folder-like set of images and in a real train split; distinct faces are not; feature neighbours, memorisation,
validation keys, a data set's own cross-split copies, and the split hashes cached once."""
import numpy as np
import pytest

from fercore.cache import CacheStore
from fercore.cache import split_hashes
from fercore.data import load
from fercore.data.faceset import SPLIT_INDEX, make_faceset
from fercore.metrics import copies
from fercore.metrics.alterations import ALTERATIONS
from fercore.metrics.metric_main import calc_metric


@pytest.fixture(scope="module")
def faces():
    return load("procedural", scale=0.01, seed=0)


@pytest.fixture(scope="module")
def honest():
    """Faces of another seed: no image in common with `faces`."""
    return load("procedural", scale=0.01, seed=7).split("train")[0]


def planted(pool: np.ndarray, test: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pool with one copy of a random test image under each alteration inserted at random places: the images,
    where the copies are, and which test image each copies."""
    src = rng.choice(len(test), size=len(ALTERATIONS), replace=False)
    altered = np.concatenate([f(test[s:s + 1]) for f, s in zip(ALTERATIONS.values(), src)])
    where = np.sort(rng.choice(len(pool) + len(src), size=len(src), replace=False))
    out = np.empty((len(pool) + len(src), *pool.shape[1:]), dtype=np.uint8)
    keep = np.ones(len(out), dtype=bool)
    keep[where] = False
    out[keep], out[where] = pool, altered
    return out, where, src


def test_every_alteration_of_every_test_image_is_a_copy(faces):
    test = faces.split("test")[0]
    index = copies.build_index(test)
    for name, alter in ALTERATIONS.items():
        found, dist = copies.nearest_copy(alter(test), index)
        assert found.tolist() == list(range(len(test))), name
        assert dist.max() <= copies.COPY_THRESHOLD, name


def test_rotated_and_cropped_copies_are_found_as_fercore_makes_them(faces, honest):
    """train.rotate and train.crop (fercore.transforms, as a training batch gets them) and the plain numpy ones:
    the windows alone miss them, the alignment stage finds each with its source; distinct faces stay far."""
    import torch

    from fercore.images import from_unit
    from fercore.metrics.alterations import crop, rotate
    from fercore.transforms import Strengths, augment, normalise

    test = faces.split("test")[0]
    index = copies.build_index(test)
    gen = torch.Generator().manual_seed(0)
    made = {"train.rotate=5": Strengths(rotate=5.0), "train.crop=0.15": Strengths(crop=0.15)}
    altered = {name: from_unit(augment(normalise(torch.from_numpy(test)), s, gen)).numpy() for name, s in made.items()}
    altered |= {"rotate_5": rotate(test, 5), "rotate_-5": rotate(test, -5), "crop_92": crop(test, 0.92),
                "crop_92_corner": crop(test, 0.92, 1.9, -1.9)}
    for name, x in altered.items():
        found, dist = copies.nearest_copy(x, index)
        assert found.tolist() == list(range(len(test))), name
        assert dist.max() <= copies.COPY_THRESHOLD, name
    assert (copies.nearest_copy(altered["rotate_5"], index, geometry=False)[1] > copies.COPY_THRESHOLD).all()
    assert (copies.nearest_copy(altered["crop_92"], index, geometry=False)[1] > copies.COPY_THRESHOLD).all()
    assert copies.copy_audit(honest, index)["count"] == 0
    assert copies.nearest_copy(honest, index)[1].min() > copies.COPY_THRESHOLD + 8


def test_a_folder_of_altered_copies_is_counted_and_honest_faces_are_not(faces, honest):
    test = faces.split("test")[0]
    folder, where, src = planted(honest, test, np.random.default_rng(1))  # what a `folder` generator would hand in
    found = copies.copy_audit(folder, test)
    assert found["count"] == len(ALTERATIONS) and found["reference_count"] == len(ALTERATIONS)
    assert found["candidate_index"].tolist() == where.tolist()  # no honest face flagged
    assert found["reference_index"].tolist() == src.tolist()
    assert copies.copy_audit(honest, test)["count"] == 0
    # The honest margin: distinct faces stay well above the threshold.
    assert copies.nearest_copy(honest, test)[1].min() > copies.COPY_THRESHOLD + 8


def test_rows_count_copies_in_real_train_and_validation(faces, honest):
    train, test, val = (faces.split(s)[0] for s in ("train", "test", "val"))
    rng = np.random.default_rng(2)
    real, _, _ = planted(train, test, rng)  # a split bug: altered test images in the real training part
    synthetic, _, _ = planted(honest, val, rng)  # a generator that copies validation images
    rows = copies.copy_rows(synthetic, real, test, val=val)
    n = len(ALTERATIONS)
    assert rows == {"leak_synthetic_test": 0, "leak_real_test": n, "leak_synthetic_val": 0, "leak_real_val": 0} | \
        {"leak_synthetic_val": n}
    assert calc_metric("leakage", synthetic=synthetic, real=real, test=test) == \
        {"leak_synthetic_test": 0, "leak_real_test": n}


def test_memorised_share_counts_copies_of_training_images(faces, honest):
    train = faces.split("train")[0]
    generated = np.concatenate([ALTERATIONS["flip_shift_2"](train[:10]), ALTERATIONS["brightness_+15"](train[10:20]),
                                honest[:60]])
    assert copies.memorised_share(generated, train) == pytest.approx(20 / 80)
    rows = copies.copy_rows(generated, train, faces.split("test")[0], train=train)
    assert rows["gen_memorised_share"] == pytest.approx(0.25)
    assert copies.memorised_share(honest[:0], train) != copies.memorised_share(honest[:0], train)  # NaN


def test_feature_neighbours_are_reported_apart(faces, honest):
    test = faces.split("test")[0]

    def features(images):  # a stand-in feature space: coarse mean-removed pixels, blind to a 1-pixel shift
        small = images.reshape(len(images), 12, 4, 12, 4).mean((2, 4)).reshape(len(images), -1)
        return small - small.mean(1, keepdims=True)

    near = np.clip(test[:5].astype(np.int16) + np.random.default_rng(0).integers(-40, 41, test[:5].shape), 0, 255)
    synthetic = np.concatenate([near.astype(np.uint8), honest[:50]])  # heavy noise: no hash copy, same features
    rows = copies.copy_rows(synthetic, honest[50:80], test, features=features, feature_threshold=0.955)
    assert rows["leak_synthetic_test"] == 0
    assert rows["leak_feature_synthetic_test"] == 5 and rows["leak_feature_real_test"] == 0
    sims = copies.feature_similarity(features(honest), features(test))
    assert sims.max() < 0.955


def test_split_leakage_counts_planted_cross_split_copies(faces):
    images, labels, splits = faces.images.copy(), faces.labels, faces.splits
    test_at, train_at, val_at = (np.flatnonzero(splits == SPLIT_INDEX[s]) for s in ("test", "train", "val"))
    images[train_at[:3]] = ALTERATIONS["flip_shift_1"](images[test_at[:3]])  # frames of one video in both splits
    images[train_at[3:5]] = ALTERATIONS["contrast_-15"](images[val_at[:2]])
    images[val_at[5:6]] = ALTERATIONS["shift_2"](images[test_at[10:11]])
    leaky = make_faceset(images, labels, splits, "leaky")
    assert copies.split_leakage(leaky) == {"train_test": 3, "train_val": 2, "val_test": 1}
    assert copies.split_leakage(faces) == {"train_test": 0, "train_val": 0, "val_test": 0}


def test_split_hashes_are_built_once_then_hit(faces, tmp_path):
    store = CacheStore(tmp_path)
    split_hashes.forget()
    first = split_hashes.split_index(faces, "test", store)
    split_hashes.forget()  # a new process: the memo is empty, the store has the entry
    second = split_hashes.split_index(faces, "test", store)
    assert [(e["event"]) for e in store.events()] == ["built", "hit"]
    assert (first.hashes == second.hashes).all() and first.image_shape == second.image_shape
    assert (first.images == second.images).all() and (first.images == faces.split("test")[0]).all()
    assert split_hashes.split_index(faces, "test", store) is second  # the memo: no store lookup at all
    assert len(store.events()) == 2
    assert copies.copy_rows(faces.split("test")[0][:4], faces.split("train")[0][:4], second,
                            val=split_hashes.split_index(faces, "val", store)) == \
        {"leak_synthetic_test": 4, "leak_real_test": 0, "leak_synthetic_val": 0, "leak_real_val": 0}


def test_data_info_warns_of_cross_split_copies(faces, monkeypatch, capsys):
    from fercore import cli

    images = faces.images.copy()
    train_at, test_at = (np.flatnonzero(faces.splits == SPLIT_INDEX[s]) for s in ("train", "test"))
    images[train_at[:4]] = ALTERATIONS["flip"](images[test_at[:4]])
    leaky = make_faceset(images, faces.labels, faces.splits, "leaky")
    monkeypatch.setattr(cli, "_load_for_inspection", lambda args: leaky)
    assert cli.main(["data", "info", "procedural"]) == 0
    out = capsys.readouterr().out
    assert "warning: 4 train images nearly copy a test image" in out
    assert out.count("warning:") == 1
    monkeypatch.setattr(cli, "_load_for_inspection", lambda args: faces)
    assert cli.main(["data", "info", "procedural"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_feature_neighbours_of_no_candidates_or_no_references_are_none():
    """real_ratio 0 keeps no real image: the audit's real candidates are empty (a smoke sweep met this)."""
    from fercore.metrics.copies import copy_rows, feature_neighbours

    assert feature_neighbours(np.zeros((0, 1)), np.ones((3, 4))) == 0
    assert feature_neighbours(np.ones((2, 4)), np.zeros((0, 4))) == 0
    rng = np.random.default_rng(0)
    test = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    rows = copy_rows(test[:2], np.zeros((0, 48, 48), np.uint8), test, features=lambda x: x.reshape(len(x), -1) + 1.0)
    assert rows["leak_feature_real_test"] == 0 and rows["leak_feature_synthetic_test"] == 2

