"""A generator is scored once, on its fixed unfiltered sample: trials with other policies and filters copy the same
figures; a filter's effect is its acceptance and the conditional accuracy of what it kept."""
import numpy as np
import pytest

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
        assert filtered[key] == plain[key], key
    # A one-epoch generator passes no useful tau for every class on tiny_faces, so the filter keeps everything here;
    # the kept images' accuracy is still the filter's own figure, measured on the pool, beside its acceptance.
    kept = filtered["filter_kept_conditional_accuracy"]
    assert np.isfinite(kept) and 0 <= kept <= 1
    assert "filter_kept_conditional_accuracy" not in plain and 0 < filtered["filter_acceptance"] <= 1
    assert store.counts_by_kind()["quality-v1", "built"] == 1
