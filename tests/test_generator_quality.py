"""A generator is scored once, on its fixed unfiltered sample: trials with other policies and filters copy the same
figures; a filter's effect is its acceptance and the conditional accuracy of what it kept."""
import numpy as np
import pytest
import torch

from fercore import trial
from fercore.cache import CacheStore
from tests.conftest import TINY_TRIAL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
AUGMENTED = {**TINY_TRIAL, "augment.policy": "balance", "classifier.epochs": 1}


def test_policies_and_filters_share_the_generator_figures(tiny_faces, tmp_path):
    store = CacheStore(tmp_path / "cache")
    plain = trial.run(AUGMENTED, tiny_faces, lambda *a: None, store).row
    filtered = trial.run({**AUGMENTED, "augment.policy": "multiply", "augment.multiply_k": 2,
                          "augment.filter": "classifier_confidence", "augment.filter_tau": 0.0}, tiny_faces, lambda *a: None, store).row
    assert filtered["generator_key"] == plain["generator_key"] and filtered["quality_cache_hit"]
    for key in ("gen_fid", "gen_kid", "gen_precision", "gen_recall", "gen_conditional_accuracy", "gen_fid_happy"):
        np.testing.assert_equal(filtered[key], plain[key], err_msg=key)  # (NaN where a class has too few faces)
    # A one-epoch generator passes no useful tau for every class on tiny_faces, so the filter keeps everything here;
    # the kept images' accuracy is still the filter's own figure, measured on the pool, beside its acceptance.
    kept = filtered["filter_kept_conditional_accuracy"]
    assert np.isfinite(kept) and 0 <= kept <= 1
    assert "filter_kept_conditional_accuracy" not in plain and 0 < filtered["filter_acceptance"] <= 1
    assert store.counts_by_kind()["quality-v2", "built"] == 1


class Memorising:
    """A generator that hands back its training faces: the memorisation quality figures must not reward."""

    def __init__(self, data):
        self.train_x, self.train_y = data.split("train")

    def sample(self, n, label, seed=0):
        faces = self.train_x[self.train_y == label]
        return faces[np.random.default_rng(seed).choice(len(faces), n, replace=n > len(faces))]


def test_a_memorising_generator_scores_worse_on_held_out_faces_than_against_its_training_faces(tiny_faces,
                                                                                                tmp_path):
    """Issue 24 item 4: the quality sample's real side is validation, which no generator or reference trained on.
    Against the training faces (the sample's real side before), a generator that copies them looks near perfect."""
    from fercore.metrics.quality import sample_quality
    from fercore.synthetic import EMBEDDING_POINTS, QUALITY_N, QUALITY_SEED, _Reference, generator_quality

    store = CacheStore(tmp_path / "cache")
    reference = _Reference(tiny_faces, store, torch.device("cpu"))
    gen = Memorising(tiny_faces)
    now, _ = generator_quality(gen, "memorising", tiny_faces, store, reference)
    # What the same generator scored with the real side drawn from the training split, as fercore did before.
    train_x, train_y = tiny_faces.split("train")
    counts = np.minimum(np.bincount(train_y, minlength=len(tiny_faces.class_names)), QUALITY_N)
    rng = np.random.default_rng(QUALITY_SEED)
    idx = np.concatenate([rng.choice(np.flatnonzero(train_y == c), n, replace=False) for c, n in enumerate(counts)])
    drawn = [gen.sample(int(n), c, seed=QUALITY_SEED + c) for c, n in enumerate(counts)]
    before, _ = sample_quality(reference(), (train_x[idx], train_y[idx]),
                               (np.concatenate(drawn), np.repeat(np.arange(len(counts)), counts)),
                               tiny_faces.class_names, points_per_class=EMBEDDING_POINTS, seed=QUALITY_SEED)
    assert now["gen_fid"] > 1.5 * before["gen_fid"], (now["gen_fid"], before["gen_fid"])
    assert now["gen_kid"] > before["gen_kid"]
    # The judge's own accuracy on faces it never trained on is in the row of every trial that uses it.
    ref = reference()
    assert 0 < ref.heldout_n < len(train_y) and 0 <= ref.heldout_accuracy <= 1
