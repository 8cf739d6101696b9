"""The built-in procedural faces: determinism, sizes, splits and a check that the task is not trivial."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fercore.data.procedural import draw_procedural
from fercore.labels import CLASSES

FER2013_TRAIN = (3995, 436, 4097, 7215, 4830, 3171, 4965)


def expected_counts(scale: float) -> dict[str, list[int]]:
    half_up = lambda x: int(math.floor(x + 0.5))  # noqa: E731
    train = [max(1, half_up(n * scale)) for n in FER2013_TRAIN]
    held = [max(1, half_up(n * 3589 / 28709)) for n in train]
    return {"train": train, "val": held, "test": held}


@pytest.fixture(scope="module")
def small():
    return draw_procedural(scale=0.01, seed=0)


def test_same_seed_is_byte_identical(small):
    again = draw_procedural(scale=0.01, seed=0)
    assert again.images.tobytes() == small.images.tobytes()
    assert np.array_equal(again.labels, small.labels)
    assert np.array_equal(again.splits, small.splits)
    assert again.fingerprint == small.fingerprint


def test_different_seed_differs(small):
    other = draw_procedural(scale=0.01, seed=1)
    assert other.images.shape == small.images.shape
    assert other.fingerprint != small.fingerprint
    # Not just a reshuffle: the pictures themselves differ.
    assert not np.array_equal(np.sort(other.images.reshape(len(other.images), -1).sum(1)),
                              np.sort(small.images.reshape(len(small.images), -1).sum(1)))


@pytest.mark.parametrize("scale", [0.01, 0.023, 1e-4])
def test_class_counts_per_split(scale):
    fs = draw_procedural(scale=scale, seed=5)
    assert fs.counts() == expected_counts(scale)
    assert fs.source == f"procedural(scale={scale}, seed=5)"


def test_counts_follow_fer2013_at_full_scale():
    # Checked on the formula only (drawing scale=1 takes seconds): ~35,887 images, FER2013's split sizes.
    counts = expected_counts(1.0)
    assert sum(counts["train"]) == 28709
    assert abs(sum(counts["val"]) - 3589) <= 3 and counts["val"] == counts["test"]


def test_dtype_shape_and_range(small):
    n = sum(sum(c) for c in expected_counts(0.01).values())
    assert small.images.dtype == np.uint8 and small.images.shape == (n, 48, 48)
    assert small.labels.dtype == np.int64 and set(np.unique(small.labels)) == set(range(len(CLASSES)))
    assert small.splits.dtype == np.uint8 and set(np.unique(small.splits)) == {0, 1, 2}
    flat = small.images.reshape(n, -1).astype(np.float64)
    assert flat.min() < 30 and flat.max() > 225  # uses the whole range over the set
    assert (flat.std(1) > 8).mean() > 0.95  # pictures, not flat fields
    assert 60 < flat.mean() < 190


def test_every_class_in_every_split(small):
    for name in ("train", "val", "test"):
        _, labels = small.split(name)
        assert (np.bincount(labels, minlength=len(CLASSES)) > 0).all(), name


def test_rows_are_shuffled(small):
    _, labels = small.split("train")
    assert (np.diff(labels) != 0).mean() > 0.5  # not sorted or blocked by class
    assert (np.diff(small.splits.astype(int)) != 0).sum() > 10  # splits interleaved too


@pytest.mark.parametrize("size", [32, 64])
def test_other_image_sizes(size):
    fs = draw_procedural(scale=0.003, seed=2, image_size=size)
    assert fs.images.shape[1:] == (size, size) and fs.image_size == size
    assert fs.counts() == expected_counts(0.003)
    assert fs.images.reshape(len(fs.images), -1).std(1).min() > 3


def test_mean_intensity_does_not_give_the_class_away():
    fs = draw_procedural(scale=0.03, seed=0)
    xtr, ytr = fs.split("train")
    xte, yte = fs.split("test")
    xtr = np.concatenate([xtr, fs.split("val")[0]])
    ytr = np.concatenate([ytr, fs.split("val")[1]])
    mtr, mte = xtr.reshape(len(xtr), -1).mean(1), xte.reshape(len(xte), -1).mean(1)
    centres = np.array([mtr[ytr == c].mean() for c in range(len(CLASSES))])
    pred = np.abs(mte[:, None] - centres[None]).argmin(1)
    assert (pred == yte).mean() < 0.35
    # ... and the class centres lie within a small part of the spread of the image means.
    assert np.ptp(centres) < 0.5 * mtr.std()


def test_bad_scale_is_refused():
    with pytest.raises(ValueError):
        draw_procedural(scale=0.0)
