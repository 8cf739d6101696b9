"""A trial that uses synthetic images: cached generator, pool, reference classifier and baseline; its quality,
leakage and paired-uplift keys; each checked through the cache's recorded events, not by timing."""
import numpy as np
import pytest
from PIL import Image

from fercore import trial
from fercore.cache import CacheStore
from fercore.labels import CLASSES
from tests.conftest import TINY_TRIAL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
AUGMENTED = {**TINY_TRIAL, "augment.policy": "balance", "classifier.epochs": 1}


def test_augmented_trial_records_quality_leakage_and_uplift(tiny_faces, tmp_path):
    store = CacheStore(tmp_path / "cache")
    row = trial.run(AUGMENTED, tiny_faces, lambda *a: None, store).row
    assert row["generator_cache_hit"] is False and row["generator_key"].startswith("generator-v1-")
    assert row["baseline_cache_hit"] is False and row["reference_cache_hit"] is False
    assert np.isfinite(row["gen_fid"]) and 0 <= row["gen_conditional_accuracy"] <= 1
    assert 0 <= row["gen_embedding_jsd"] <= 1
    # The generator's own figures, on its fixed unfiltered sample: tiny_faces has fewer than 50 training images in
    # every class but happy, so per-class figures are missing with a reason wherever the class is small.
    assert row["gen_quality_n"] == 500 and row["quality_cache_hit"] is False
    # Under 1,000 images on each side, KID's one subset is the whole sample: its spread is not measured.
    assert np.isfinite(row["gen_kid"]) and np.isnan(row["gen_kid_std"])
    assert 0 <= row["gen_precision"] <= 1 and 0 <= row["gen_recall"] <= 1
    assert np.isnan(row["gen_kid_disgust"]) and "need 50" in row["gen_quality_note_disgust"]
    assert "filter_kept_conditional_accuracy" not in row  # no filter, nothing it kept to judge
    assert row["filter_acceptance"] == 1.0  # no filter: every drawn image is kept
    assert row["leak_synthetic_test"] == 0 and row["leak_real_test"] == 0
    assert 0 <= row["gen_memorised_share"] <= 1  # a one-epoch GAN's share of images that copy a training image
    for key in ("uplift_test_accuracy", "uplift_test_macro_f1", *(f"uplift_test_recall_{c}" for c in CLASSES)):
        assert -1 <= row[key] <= 1, key
    assert row["uplift_test_macro_f1_low"] <= row["uplift_test_macro_f1"] <= row["uplift_test_macro_f1_high"]

    again = trial.run(AUGMENTED, tiny_faces, lambda *a: None, store).row
    assert again["generator_cache_hit"] and again["pool_cache_hit"] and again["baseline_cache_hit"]
    assert again["generator_key"] == row["generator_key"]
    # Same config and seed, generator loaded instead of trained: the same trial.
    assert again["test_macro_f1"] == row["test_macro_f1"] and again["gen_fid"] == row["gen_fid"]
    assert again["quality_cache_hit"] and again["gen_kid"] == row["gen_kid"]
    events = store.counts_by_kind()
    for kind in ("generator-v1", "quality-v2", "pool-v2", "baseline-v3", "control-v2"):
        assert events[kind, "built"] == 1 and events[kind, "hit"] == 1, (kind, events)
    # The generator's figures were found and no filter needs a judge; the audit's feature neighbours still ask the
    # reference, from the cache, trained once.
    assert events["reference-v3", "built"] == 1 and events["reference-v3", "hit"] == 1, events
    assert again["leak_feature_synthetic_test"] == row["leak_feature_synthetic_test"]
    assert again["reference_key"] == row["reference_key"] and "reference_cache_hit" not in again


def test_a_real_only_trial_is_the_baseline_augmented_trials_pair_with(tiny_faces, tmp_path):
    store = CacheStore(tmp_path / "cache")
    real = trial.run({**AUGMENTED, "augment.policy": "none"}, tiny_faces, lambda *a: None, store).row
    assert real["baseline_cache_hit"] is False and "generator_key" not in real
    assert "gen_memorised_share" not in real  # no generator, nothing memorised
    augmented = trial.run(AUGMENTED, tiny_faces, lambda *a: None, store).row
    assert augmented["baseline_cache_hit"] is True and augmented["baseline_key"] == real["baseline_key"]
    assert augmented["uplift_test_macro_f1"] == pytest.approx(augmented["test_macro_f1"] - real["test_macro_f1"])
    assert store.counts_by_kind()["baseline-v3", "built"] == 1


def test_without_paired_baseline_no_uplift_is_recorded(tiny_faces):
    row = trial.run({**AUGMENTED, "augment.paired_baseline": False}, tiny_faces, lambda *a: None).row
    assert "uplift_test_macro_f1" not in row and "baseline_key" not in row


def write_folder(root, images, labels):
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i, img in enumerate(images[labels == c]):
            Image.fromarray(img).save(root / name / f"{i}.png")
    return str(root)


MADE_ELSEWHERE = {k: v for k, v in AUGMENTED.items() if not k.startswith("generator.")}  # no training keys


def test_synthetic_images_that_copy_test_images_are_counted(tiny_faces, tmp_path):
    """A `folder` generator whose images are the test split: every synthetic image the trial mixes in is a copy."""
    path = write_folder(tmp_path / "made", *tiny_faces.split("test"))
    row = trial.run({**MADE_ELSEWHERE, "generator.type": "folder", "generator.path": path,
                     "augment.policy": "real_ratio", "augment.real_ratio": 0.5, "augment.paired_baseline": False},
                    tiny_faces, lambda *a: None).row
    assert row["n_train_synthetic"] > 0
    assert row["leak_synthetic_test"] == row["n_train_synthetic"]
    assert row["leak_real_test"] == 0
    assert row["gen_memorised_share"] == 0  # test images copy no training image
    # Reported apart from the copies: each synthetic image's reference features equal its test image's (cosine 1).
    assert row["leak_feature_synthetic_test"] == row["n_train_synthetic"]
    assert all(isinstance(row[k], int) and row[k] >= 0
               for k in ("leak_feature_real_test", "leak_feature_synthetic_val", "leak_feature_real_val"))


@pytest.mark.slow
def test_a_folder_of_altered_test_copies_is_counted_whole(tiny_faces, tmp_path):
    """As a new user would: a `folder` generator whose images are flipped, shifted (up to 2 px), flipped and shifted,
    brightened or darkened, or contrast-changed copies of the test split tops up the data set; the audit counts every
    one of them, not a small minority."""
    from fercore.metrics.alterations import ALTERATIONS

    test_x, test_y = tiny_faces.split("test")
    names = [n for n in ALTERATIONS if n != "exact"]
    altered = np.concatenate([ALTERATIONS[names[i % len(names)]](test_x[i:i + 1]) for i in range(len(test_x))])
    path = write_folder(tmp_path / "made", altered, test_y)
    row = trial.run({**MADE_ELSEWHERE, "generator.type": "folder", "generator.path": path,
                     "augment.policy": "real_ratio", "augment.real_ratio": 0.5, "augment.paired_baseline": False},
                    tiny_faces, lambda *a: None).row
    assert row["n_train_synthetic"] > 0
    assert row["leak_synthetic_test"] == row["n_train_synthetic"]


def test_classifier_confidence_filter_records_acceptance(tiny_faces, tmp_path):
    """Real training images as the 'synthetic' source: the reference classifier is confident on many, not all.
    Only happy, the class a reference trained on ~270 images learns first, is topped up (its probability of happy
    on them: 0.21-0.25, so tau 0.22 keeps some)."""
    store = CacheStore(tmp_path / "cache")
    path = write_folder(tmp_path / "made", *tiny_faces.split("train"))
    row = trial.run({**MADE_ELSEWHERE, "generator.type": "folder", "generator.path": path,
                     "augment.policy": "minority", "augment.minority_classes": "happy",
                     "augment.minority_target": 200,
                     "augment.filter": "classifier_confidence", "augment.filter_tau": 0.22,
                     "augment.filter_rounds": 10, "augment.paired_baseline": False},
                    tiny_faces, lambda *a: None, store).row
    assert 0 < row["filter_acceptance"] < 1 and row["filter_generated"] > row["n_train_synthetic"]
    assert row["filter_acceptance_happy"] == row["filter_acceptance"]
    assert all(np.isnan(row[f"filter_acceptance_{name}"]) for name in CLASSES if name != "happy")
    # Every 'synthetic' image is a training image: memorised, all of them.
    assert row["gen_memorised_share"] == 1.0
    # The filter used the same cached reference classifier that judges the pool's quality.
    assert store.counts_by_kind()["reference-v3", "built"] == 1 and row["reference_cache_hit"] is False
