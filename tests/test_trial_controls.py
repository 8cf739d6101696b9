"""The controls a trial is compared against besides the real-only baseline: the oversampling control (the trial's
counts, synthetic images replaced by real ones drawn again) and the real-subset control (real_ratio's kept real
images alone); oversample_* trials, which are their own control; the cache keys of compared classifiers; and what a
row and the last report carry (cost keys, per-image predictions, empty keys that do not apply)."""
import numpy as np
import pandas as pd
import pytest
import torch

from fercore import trial
from fercore.cache import CacheStore, entries
from fercore.cache.entries import baseline_key, control_key, subset_key
from fercore.config import resolve
from fercore.labels import CLASSES
from fercore.metrics.classification import classification_metrics
from fercore.report.configs import Predictions
from fercore.results import PREDICTIONS, ResultsStore
from fercore.train import steps_per_epoch
from tests.conftest import TINY_TRIAL

ONE_EPOCH = {**TINY_TRIAL, "classifier.epochs": 1}


@pytest.fixture(scope="module")
def runs(tiny_faces, tmp_path_factory):
    """Trials in one cache, in this order: oversample_balance, balance, real_ratio 0.5, balance again; with the
    training set of every classifier each one trained (its own first, then its paired ones', in PAIRED's order)."""
    store = CacheStore(tmp_path_factory.mktemp("controls") / "cache")
    sets: list[tuple[np.ndarray, np.ndarray]] = []
    build = trial._trainer

    def spy(cfg, train, data, device):
        sets.append((np.array(train[0]), np.array(train[1])))
        return build(cfg, train, data, device)

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trial, "_trainer", spy)
        for name, extra in (("oversample", {"augment.policy": "oversample_balance"}),
                            ("balance", {"augment.policy": "balance"}),
                            ("real_ratio", {"augment.policy": "real_ratio", "augment.real_ratio": 0.5}),
                            ("balance_again", {"augment.policy": "balance"})):
            sets.clear()
            result = trial.run({**ONE_EPOCH, **extra}, tiny_faces, lambda *a: None, store)
            out[name] = (result, list(sets))
    out["store"] = store
    return out


def _ids(images: np.ndarray) -> list[bytes]:
    return [img.tobytes() for img in images]


def _counts(labels: np.ndarray) -> list[int]:
    return np.bincount(labels, minlength=len(CLASSES)).tolist()


@pytest.mark.slow
def test_an_oversample_trial_uses_no_generator_and_is_the_control_of_a_trial_with_its_counts(runs, tiny_faces):
    over, [(over_x, over_y), (base_x, _)] = runs["oversample"]  # itself, then its real-only baseline
    row = over.row
    train_x, train_y = tiny_faces.split("train")
    assert np.array_equal(base_x, train_x) and row["uplift_test_macro_f1"] is not None
    counts = np.bincount(train_y, minlength=7)
    assert _counts(over_y) == [int(counts.max())] * 7  # balance's counts
    assert set(_ids(over_x)) <= set(_ids(train_x))  # real images only, drawn again
    assert row["n_train_synthetic"] == 0 and row["n_train_duplicate"] == (counts.max() - counts).sum()
    assert "generator_key" not in row and "samples_png" not in over.artifacts
    assert all(v is None for k, v in row.items() if k.startswith("generator."))
    assert row["control_cache_hit"] is False and "gain_control_test_macro_f1" not in row

    balance, sets = runs["balance"]
    b = balance.row
    # The control of the balance trial is the oversample trial: found in the cache, its figures are the trial's.
    assert b["control_cache_hit"] is True and b["control_key"] == row["control_key"]
    assert b["control_test_macro_f1"] == row["test_macro_f1"] and b["control_test_accuracy"] == row["test_accuracy"]
    assert b["gain_control_test_macro_f1"] == pytest.approx(b["test_macro_f1"] - row["test_macro_f1"])
    assert b["gain_control_test_accuracy"] == pytest.approx(b["test_accuracy"] - row["test_accuracy"])
    assert b["gain_control_test_macro_f1_low"] <= b["gain_control_test_macro_f1"] <= b["gain_control_test_macro_f1_high"]
    for c in CLASSES:
        assert b[f"gain_control_test_recall_{c}"] == pytest.approx(b[f"test_recall_{c}"] - row[f"test_recall_{c}"])
    # The balance trial trained itself only (its baseline is the oversample trial's); the control's training set,
    # had it trained one, is exactly the oversample trial's: the trial's counts, its kept real images, no synthetic.
    [(own_x, own_y)] = sets
    assert b["baseline_cache_hit"] is True and b["baseline_key"] == row["baseline_key"]
    assert _counts(own_y) == _counts(over_y) and b["n_train_synthetic"] > 0
    real = b["n_train_real"]
    assert np.array_equal(own_x[:real], over_x[:real])
    assert b["uplift_test_macro_f1"] == pytest.approx(b["test_macro_f1"] - (row["test_macro_f1"]
                                                                          - row["uplift_test_macro_f1"]))


@pytest.mark.slow
def test_real_ratio_is_paired_with_both_controls_trained_on_its_kept_images(runs, tiny_faces):
    result, sets = runs["real_ratio"]
    row = result.row
    # Its own set, then (the baseline found in the cache) the oversampling control's and the real subset's.
    assert row["baseline_cache_hit"] is True and row["control_cache_hit"] is False and row["subset_cache_hit"] is False
    (own_x, own_y), (control_x, control_y), (subset_x, subset_y) = sets
    kept = row["n_train_real"]
    assert 0 < kept < len(tiny_faces.split("train")[1])
    # The control: the trial's counts per class, no synthetic image, its real images drawn from the kept ones.
    assert _counts(control_y) == _counts(own_y)
    assert np.array_equal(control_x[:kept], own_x[:kept]) and set(_ids(control_x)) <= set(_ids(own_x[:kept]))
    # The subset: exactly the real images the trial kept, nothing else.
    assert np.array_equal(subset_x, own_x[:kept]) and np.array_equal(subset_y, own_y[:kept])
    # Optimiser steps, from the row: the control (the trial's counts) and the baseline (the whole real split: as
    # many images as real_ratio's set) take the trial's; the subset, a share of the images, trains more epochs to
    # take as many (within one of its epochs), not that share of them.
    steps = row["train_steps"]
    subset_epoch = steps_per_epoch(kept, resolve(ONE_EPOCH).classifier.batch_size)
    assert steps > 0 and row["control_train_steps"] == steps == row["baseline_train_steps"]
    assert steps <= row["subset_train_steps"] < steps + subset_epoch and subset_epoch < steps / row["epochs_run"]
    for name in ("control", "subset"):
        assert row[f"{name}_key"].startswith(entries.RULES[name][0] + "-")
        assert row[f"gain_{name}_test_macro_f1"] == pytest.approx(row["test_macro_f1"] - row[f"{name}_test_macro_f1"])
        assert row[f"gain_{name}_test_macro_f1_low"] <= row[f"gain_{name}_test_macro_f1"] \
            <= row[f"gain_{name}_test_macro_f1_high"]
        for c in CLASSES:
            assert row[f"gain_{name}_test_recall_{c}"] == pytest.approx(row[f"test_recall_{c}"]
                                                                      - row[f"{name}_test_recall_{c}"])
    assert "subset_key" not in runs["balance"][0].row  # balance keeps every real image


@pytest.mark.slow
def test_cost_keys_say_what_each_part_took(runs):
    first, again = runs["balance"][0].row, runs["balance_again"][0].row
    for row in (first, again):
        assert 0 < row["classifier_seconds"] < row["train_seconds"]
        assert row["classifier_seconds"] + row["synthetic_seconds"] + row["paired_seconds"] <= row["train_seconds"]
        assert 0 < row["generator_seconds"] <= row["synthetic_seconds"]
    for row in (first, again):  # their baseline and control were in the cache: nothing trained but the trial
        assert row["paired_seconds"] == 0 and row["baseline_cache_hit"] and row["control_cache_hit"]
    assert again["generator_seconds"] < first["generator_seconds"]  # loaded, not trained
    over = runs["oversample"][0].row
    assert over["generator_seconds"] == 0 == over["synthetic_seconds"] and over["paired_seconds"] > 0  # its baseline
    assert runs["real_ratio"][0].row["paired_seconds"] > 0  # its two controls
    # A generator's cache key is what it was before the keys that do not apply were emptied (pinned).
    assert first["generator_key"] == "generator-v1-885caf48e03fe516"
    events = runs["store"].counts_by_kind()
    assert events["control-v2", "built"] == 2 and events["subset-v2", "built"] == 1  # oversample's, real_ratio's


@pytest.mark.slow
def test_the_last_report_carries_per_image_test_predictions(runs, tiny_faces):
    result = runs["balance"][0]
    p = result.artifacts["predictions"]
    assert p is result.predictions
    test_y = tiny_faces.split("test")[1]
    n = len(test_y)
    assert p["index"].dtype == np.int64 and np.array_equal(p["index"], np.arange(n))
    assert p["face_id"].dtype == np.int64 and np.array_equal(p["face_id"], np.flatnonzero(tiny_faces.splits == 2))
    assert p["true"].dtype == np.int64 and np.array_equal(p["true"], test_y)
    assert p["predicted"].dtype == np.int64 and np.array_equal(p["predicted"], p["proba"].argmax(1))
    assert p["proba"].dtype == np.float32 and p["proba"].shape == (n, len(CLASSES))
    assert np.mean(p["predicted"] == p["true"]) == pytest.approx(result.row["test_accuracy"])


def _macro_f1(true: np.ndarray, predicted: np.ndarray) -> float:
    return classification_metrics(true, predicted, "test")["test_macro_f1"]


@pytest.mark.slow
def test_the_compared_models_predictions_travel_with_the_trial_and_reproduce_its_paired_figures(runs, tmp_path):
    """Each model a trial was compared against (trained here or found in the cache) sends its per-image test
    predictions under predictions["paired"]; stored as predictions.parquet rows of its model, they give back the
    row's figures, so the report can resample the test images of the uplift and gains."""
    over, balance, ratio = (runs[name][0] for name in ("oversample", "balance", "real_ratio"))
    assert set(over.predictions["paired"]) == {"baseline"}  # it is its own control
    assert set(balance.predictions["paired"]) == {"baseline", "control"}
    assert set(ratio.predictions["paired"]) == {"baseline", "control", "subset"}
    # Cache hits: the balance trial's baseline and control are the oversample trial's baseline and the oversample
    # trial itself, read back from the cache's test_proba.npy.
    assert balance.row["baseline_cache_hit"] and balance.row["control_cache_hit"]
    assert np.array_equal(balance.predictions["paired"]["baseline"]["proba"],
                          over.predictions["paired"]["baseline"]["proba"])
    assert np.array_equal(balance.predictions["paired"]["control"]["proba"], over.predictions["proba"])
    store = ResultsStore(tmp_path)
    for name, result in (("over", over), ("balance", balance), ("ratio", ratio)):
        store.add_trial({**result.row, "trial_id": name})
        store.add_artifacts(name, result.artifacts)
    store.flush()
    stored = Predictions(pd.read_parquet(tmp_path / PREDICTIONS))
    for name, result in (("over", over), ("balance", balance), ("ratio", ratio)):
        row, (key, true, own) = result.row, stored[name]  # the report's key of an image: its face id
        assert np.array_equal(key, result.predictions["face_id"]) and _macro_f1(true, own) == row["test_macro_f1"]
        for model, sent in result.predictions["paired"].items():
            assert sent["predicted"].dtype == np.int64 and np.array_equal(sent["predicted"], sent["proba"].argmax(1))
            predicted = stored.paired(name, model)
            assert np.array_equal(predicted, sent["predicted"])
            figure = _macro_f1(true, predicted)
            if model == "baseline":
                assert figure == pytest.approx(row["test_macro_f1"] - row["uplift_test_macro_f1"], abs=1e-12)
            else:
                assert figure == pytest.approx(row[f"{model}_test_macro_f1"], abs=1e-12)
                assert _macro_f1(true, own) - figure == pytest.approx(row[f"gain_{model}_test_macro_f1"], abs=1e-12)


@pytest.mark.slow
def test_train_deterministic_holds_for_the_whole_trial_and_is_restored(tiny_faces):
    seen = []
    before = torch.are_deterministic_algorithms_enabled()
    trial.run({**ONE_EPOCH, "train.deterministic": True}, tiny_faces,
              lambda *a: seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                                      torch.backends.cudnn.benchmark)))
    assert seen and all(s == (True, True, False) for s in seen)
    assert torch.are_deterministic_algorithms_enabled() == before


def test_compared_classifiers_keys_hold_the_device_type_and_precision(tiny_faces):
    cfg = resolve({})
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    real, total = np.full(7, 5), np.full(7, 9)
    for key in (lambda c, d: baseline_key(c, tiny_faces, d), lambda c, d: control_key(c, tiny_faces, d, real, total),
                lambda c, d: subset_key(c, tiny_faces, d, real)):
        k_cpu, parts = key(cfg, cpu)
        assert parts["device"] == "cpu" and parts["precision"] == "fp32"
        k_cuda, parts_cuda = key(cfg, cuda)  # precision auto: bf16 on CUDA
        assert parts_cuda["device"] == "cuda" and parts_cuda["precision"] == "bf16" and k_cuda != k_cpu
        assert key(resolve({"train.precision": "bf16"}), cpu)[0] not in (k_cpu, k_cuda)
        assert key(resolve({"train.precision": "fp32"}), cpu)[0] == k_cpu  # auto is fp32 on the CPU
        assert key(resolve({"train.threads": 3, "train.compile": True}), cpu)[0] == k_cpu  # speed, not the result
    assert baseline_key(cfg, tiny_faces, cpu)[0].startswith("baseline-v3-")
    # Keys that take no part in the classifier (momentum under adam) do not split its entries.
    assert baseline_key(resolve({"classifier.momentum": 0.5}), tiny_faces, cpu)[0] == baseline_key(cfg, tiny_faces,
                                                                                                    cpu)[0]
    assert control_key(cfg, tiny_faces, cpu, real, total + 1)[0] != control_key(cfg, tiny_faces, cpu, real, total)[0]
