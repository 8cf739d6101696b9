"""data.dedupe and the data set's own cross-split copies found once (fercore.cache.split_copies, dedupe): planted
copies between splits are dropped before anything trains, counted in the row and by `fersweep data info`, the test
split is never touched, the deduplicated set has its own fingerprint (so its cache entries never mix with the raw
set's), and a trial's leak_real_* counted by lookup equals the copy audit run on its kept real images."""
import numpy as np
import pytest

from fercore import trial
from fercore.cache import CacheStore, split_copies, split_hashes
from fercore.cache.dedupe import dedupe
from fercore.data.faceset import SPLIT_INDEX, make_faceset
from fercore.metrics import copies
from fercore.metrics.alterations import ALTERATIONS
from tests.conftest import TINY_TRIAL


@pytest.fixture(scope="module")
def leaky(tiny_faces_module):
    """tiny_faces with 3 training faces that copy a test face, 2 that copy a validation face, 1 validation face that
    copies a test face (as FER2013's splits share the same photograph flipped, shifted or re-toned)."""
    faces = tiny_faces_module
    images = faces.images.copy()
    test_at, train_at, val_at = (np.flatnonzero(faces.splits == SPLIT_INDEX[s]) for s in ("test", "train", "val"))
    images[train_at[[0, 7, 20]]] = ALTERATIONS["flip_shift_1"](images[test_at[:3]])
    images[train_at[[30, 41]]] = ALTERATIONS["contrast_-15"](images[val_at[:2]])
    images[val_at[5:6]] = ALTERATIONS["shift_2"](images[test_at[10:11]])
    return make_faceset(images, faces.labels, faces.splits, "leaky"), train_at, val_at


@pytest.fixture(scope="module")
def tiny_faces_module():
    from fercore.data import load

    return load("procedural", scale=0.01, seed=0)


def test_split_copies_flag_each_planted_copy_and_are_kept_in_the_store(leaky, tmp_path):
    data, _, _ = leaky
    store = CacheStore(tmp_path)
    split_copies.forget()
    split_hashes.forget()
    found = split_copies.split_copies(data, store)
    assert np.flatnonzero(found["train_test"]).tolist() == [0, 7, 20]
    assert np.flatnonzero(found["train_val"]).tolist() == [30, 41]
    assert np.flatnonzero(found["val_test"]).tolist() == [5]
    assert split_copies.counts(found) == copies.split_leakage(data)  # the audit's own figures
    split_copies.forget()  # a new process: read back from the store, not found again
    again = split_copies.split_copies(data, store)
    assert all((again[k] == found[k]).all() for k in found)
    assert [e["event"] for e in store.events() if e["key"].startswith(split_copies.KIND)] == ["built", "hit"]


def test_drop_removes_the_copies_before_anything_trains_and_keeps_the_test_split(leaky, tmp_path):
    data, train_at, val_at = leaky
    store = CacheStore(tmp_path)
    same, removed = dedupe(data, "none", store)
    assert same is data and removed == {"dedupe_removed_train": 0, "dedupe_removed_val": 0}
    clean, removed = dedupe(data, "drop", store)
    assert removed == {"dedupe_removed_train": 5, "dedupe_removed_val": 1}
    assert [sum(n) for n in clean.counts().values()] == [sum(data.counts()["train"]) - 5,
                                                           sum(data.counts()["val"]) - 1, sum(data.counts()["test"])]
    assert (clean.split("test")[0] == data.split("test")[0]).all()
    gone = np.concatenate([train_at[[0, 7, 20, 30, 41]], val_at[[5]]])
    kept = np.setdiff1d(np.arange(len(data.images)), gone)
    assert (clean.images == data.images[kept]).all() and (clean.labels == data.labels[kept]).all()
    assert clean.fingerprint != data.fingerprint
    assert copies.split_leakage(clean) == {"train_test": 0, "train_val": 0, "val_test": 0}
    # A set without copies is left as it is: same fingerprint, so its trials share the raw set's cache entries.
    plain, removed = dedupe(tiny_clean := dedupe(data, "drop", store)[0], "drop", store)
    assert plain is tiny_clean and removed == {"dedupe_removed_train": 0, "dedupe_removed_val": 0}


def kept_real_images(data, cfg):
    """The real training images a trial of CFG keeps on DATA (the policy's plan, mix()'s seeded choice)."""
    from fercore.augment.policies import kept_real, plan_mix
    from fercore.config import resolve

    resolved = resolve(cfg)
    train_x, train_y = data.split("train")
    plan = plan_mix(resolved.augment.policy, np.bincount(train_y, minlength=len(data.class_names)),
                    dict(resolved.augment.values), data.class_names)
    return train_x[kept_real(train_y, plan, resolved.seed)]


@pytest.mark.slow
def test_a_trial_counts_its_kept_real_copies_by_lookup_and_records_what_dedupe_removed(leaky, tmp_path):
    data, _, _ = leaky
    cfg = {**TINY_TRIAL, "augment.policy": "real_ratio", "augment.real_ratio": 0.5, "generator.type": "gan",
           "classifier.epochs": 1}
    store = CacheStore(tmp_path)
    raw = trial.run({**cfg, "data.dedupe": "none"}, data, lambda *a: None, store)
    # The lookup equals the audit run on the real images the trial kept (a seeded half of each class).
    kept = kept_real_images(data, cfg)
    assert raw.row["n_train_real"] == len(kept) < sum(data.counts()["train"])
    assert raw.row["leak_real_test"] == copies.copy_audit(kept, data.split("test")[0])["count"]
    assert raw.row["leak_real_val"] == copies.copy_audit(kept, data.split("val")[0])["count"]
    assert raw.row["dedupe_removed_train"] == 0 and raw.row["dedupe_removed_val"] == 0
    clean = trial.run({**cfg, "data.dedupe": "drop"}, data, lambda *a: None, store)
    assert clean.row["dedupe_removed_train"] == 5 and clean.row["dedupe_removed_val"] == 1
    assert clean.row["leak_real_test"] == 0 and clean.row["leak_real_val"] == 0
    assert clean.row["data_fingerprint"] != raw.row["data_fingerprint"]
    assert clean.row["n_train_real"] == len(kept_real_images(dedupe(data, "drop", store)[0], cfg))


def test_data_info_says_what_drop_removes(leaky, monkeypatch, capsys):
    from fercore import cli

    data, _, _ = leaky
    monkeypatch.setattr(cli, "_load_for_inspection", lambda args: data)
    assert cli.main(["data", "info", "procedural", "--set", "dedupe=drop"]) == 0
    out = capsys.readouterr().out
    assert "data.dedupe drop: removed 5 training faces" in out and "and 1 validation faces" in out
    assert "warning" not in out
    assert cli.main(["data", "info", "procedural"]) == 0
    out = capsys.readouterr().out
    assert "warning: 3 train images nearly copy a test image" in out and "data.dedupe: drop removes them" in out


def test_without_a_keeping_store_the_split_hashes_and_copies_are_kept_beside_the_data_set(leaky, tmp_path):
    """`fersweep trial` without --storage runs with a disabled store: the data set's hashes and copies still go to the
    data-level store, so a second such trial finds them instead of hashing the splits again."""
    data, _, _ = leaky
    split_hashes.forget()
    split_copies.forget()
    disabled = CacheStore(tmp_path / "trial", enabled=False)
    kept = split_hashes.data_store()
    before = len(kept.events())
    split_copies.split_copies(data, disabled)
    first = {e["key"].rsplit("-", 1)[0] for e in kept.events()[before:]}
    assert {split_copies.KIND, split_hashes.KIND} <= first  # built there (or found, had a test put them there)
    split_hashes.forget()
    split_copies.forget()
    split_copies.split_copies(data, disabled)  # a new process
    assert [e["event"] for e in kept.events() if e["key"].startswith(split_copies.KIND)][-1] == "hit"
    assert not (tmp_path / "trial").exists() or not any((tmp_path / "trial").glob(f"{split_copies.KIND}*"))
