"""A sweep's cache entries damaged on disk (a full or shared disk, a copy that went wrong): the next trial that needs
them rebuilds them, counted as `corrupt` events, and gets the same figures as the trial that first built them."""
import pytest

from fercore import trial
from fercore.cache import CacheStore, kind_of
from tests.conftest import TINY_TRIAL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
AUGMENTED = {**TINY_TRIAL, "augment.policy": "balance", "classifier.epochs": 1}


def test_every_entry_truncated_is_rebuilt_not_a_crash(tiny_faces, tmp_path):
    store = CacheStore(tmp_path / "cache")
    first = trial.run(AUGMENTED, tiny_faces, lambda *a: None, store).row
    entries = [p for p in store.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert {kind_of(p.name) for p in entries} >= {"generator-v1", "pool-v2", "reference-v3", "baseline-v3",
                                                "control-v2"}
    for entry in entries:  # every file, meta.json included, cut to nothing
        for f in entry.rglob("*"):
            if f.is_file():
                f.open("r+b").truncate(0)

    again = trial.run(AUGMENTED, tiny_faces, lambda *a: None, store).row
    assert again["generator_cache_hit"] is False and again["baseline_cache_hit"] is False
    assert again["control_cache_hit"] is False and again["control_test_macro_f1"] == first["control_test_macro_f1"]
    assert again["test_macro_f1"] == first["test_macro_f1"] and again["gen_fid"] == first["gen_fid"]
    counts = store.counts_by_kind()
    for kind in ("generator-v1", "pool-v2", "reference-v3", "baseline-v3", "control-v2"):
        assert counts[kind, "corrupt"] == 1 and counts[kind, "built"] == 2, (kind, counts)

