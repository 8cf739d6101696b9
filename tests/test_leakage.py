"""The near-duplicate audit finds planted copies of test images, and only them, among honest procedural faces."""
import numpy as np
import pytest

from fercore.data import load
from fercore.metrics import leakage
from fercore.metrics.leakage import THRESHOLD, audit, duplicates_within, leakage_rows, nearest, phash, popcount_table


@pytest.fixture(scope="module")
def honest_pool():
    """Faces of another seed: same generator, same classes, no image in common with tiny_faces."""
    return load("procedural", scale=0.01, seed=7).split("train")[0]


def plant(pool: np.ndarray, test: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pool with 9 altered copies of test images inserted at random places: 3 exact, 3 with +-3 gray-level
    noise, 3 brightened by +5. Returns the pool, the copies' positions in it and the test images they copy."""
    src = rng.choice(len(test), size=9, replace=False)
    t = test[src].astype(np.int16)
    copies = np.concatenate([t[:3], t[3:6] + rng.integers(-3, 4, t[3:6].shape), t[6:] + 5])
    copies = np.clip(copies, 0, 255).astype(np.uint8)
    where = np.sort(rng.choice(len(pool) + 9, size=9, replace=False))
    out = np.empty((len(pool) + 9, *pool.shape[1:]), dtype=np.uint8)
    keep = np.ones(len(out), dtype=bool)
    keep[where] = False
    out[keep], out[where] = pool, copies
    return out, where, src


def test_audit_finds_exactly_the_planted_copies(tiny_faces, honest_pool):
    test = tiny_faces.split("test")[0]
    pool, where, src = plant(honest_pool, test, np.random.default_rng(3))
    found = audit(pool, test)
    assert found["count"] == 9 and found["test_count"] == 9
    assert found["candidate_index"].tolist() == where.tolist()  # no honest face flagged
    assert found["test_index"].tolist() == src.tolist()
    assert found["distance"][:3].tolist() == [0, 0, 0]  # exact copies
    assert (found["distance"] <= THRESHOLD).all()
    assert found["pairs"][0] == (int(where[0]), int(src[0]), 0)


def test_honest_faces_do_not_duplicate_the_test_split(tiny_faces, honest_pool):
    train, test = tiny_faces.split("train")[0], tiny_faces.split("test")[0]
    # Procedural faces draw every image from its own random parameters: no two coincide, within or across splits.
    assert leakage_rows(honest_pool, train, test) == {"leak_synthetic_test": 0, "leak_real_test": 0}
    assert duplicates_within(train) == 0
    # The honest margin: the nearest different face stays far above the threshold.
    assert nearest(phash(honest_pool), phash(test))[1].min() > THRESHOLD + 8


def test_leakage_rows_count_each_source(tiny_faces):
    train, test = tiny_faces.split("train")[0], tiny_faces.split("test")[0]
    leaky_train = np.concatenate([train, test[:2]])  # a split bug: two test images in the real training part
    synthetic = np.concatenate([test[5:10], load("procedural", scale=0.01, seed=7).split("val")[0]])
    assert leakage_rows(synthetic, leaky_train, test) == {"leak_synthetic_test": 5, "leak_real_test": 2}


def test_duplicates_within_counts_both_images_of_a_pair(tiny_faces):
    train = tiny_faces.split("train")[0]
    assert duplicates_within(np.concatenate([train, train[:1]])) == 2


def test_hash_shape_and_brightness_invariance(tiny_faces):
    images = tiny_faces.split("test")[0]
    h = phash(images)
    assert h.dtype == np.uint64 and h.shape == (len(images), 4)
    # 255 AC bits split at their median: 127 set, the DC bit never, so every distance is even.
    assert (popcount_table(h).sum(1) == 127).all()
    darker = np.clip(images.astype(np.int16) - 10, 0, 255).astype(np.uint8)
    assert nearest(phash(darker), h)[0].tolist() == list(range(len(images)))


def test_chunked_search_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=(37, 4), dtype=np.int64).astype(np.uint64) | np.uint64(1 << 63)
    b = rng.integers(0, 2**63, size=(11, 4), dtype=np.int64).astype(np.uint64)
    monkeypatch.setattr(leakage, "CHUNK_PAIRS", 50)  # 4 candidates per chunk, a ragged last chunk
    index, dist = nearest(a, b)
    brute = np.array([[sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(r, s)) for s in b] for r in a])
    assert dist.tolist() == brute.min(1).tolist()
    assert index.tolist() == brute.argmin(1).tolist()
    assert (popcount_table(a) == np.bitwise_count(a)).all()
    monkeypatch.setattr(leakage, "popcount", popcount_table)  # the numpy < 2 path
    assert nearest(a, b)[1].tolist() == dist.tolist()
