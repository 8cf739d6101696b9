import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fercore.transforms import Strengths, augment, normalise
from fercore.classifiers import build_classifier
from fercore.config import resolve
from fercore.train import Trainer, deterministic_algorithms, metrics_from_proba


def make_trainer(data, **overrides):
    cfg = resolve({"classifier.backbone": "cnn3", "classifier.width": 8, "classifier.batch_size": 32,
                   "classifier.epochs": 4, "train.rotate": 10, "train.crop": 0.2, "train.erase": 0.3, **overrides})
    torch.manual_seed(0)
    model = build_classifier(cfg.classifier, 48, 7)
    return Trainer(model, data.split("train"), data.split("val"), cfg.classifier, cfg.train, seed=3,
                   device=torch.device("cpu"))


@pytest.mark.slow
def test_resumed_trainer_ends_with_the_same_weights(tiny_faces, tmp_path):
    straight = make_trainer(tiny_faces, **{"classifier.schedule": "cosine", "classifier.optimizer": "sgd"})
    list(straight.epochs())

    first = make_trainer(tiny_faces, **{"classifier.schedule": "cosine", "classifier.optimizer": "sgd"})
    for result in first.epochs():
        if result.epoch == 2:
            break
    first.save(tmp_path / "trainer.pt")
    resumed = make_trainer(tiny_faces, **{"classifier.schedule": "cosine", "classifier.optimizer": "sgd"})
    torch.manual_seed(12345)  # A restarted process starts from another RNG state; the saved one must win.
    resumed.load(tmp_path / "trainer.pt")
    epochs = [r.epoch for r in resumed.epochs()]
    assert epochs == [3, 4]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.best_epoch == resumed.best_epoch


@pytest.mark.slow
def test_early_stopping_stops_after_patience(tiny_faces):
    # At a learning rate of ~0 the predictions, and so validation macro-F1, cannot improve after the first epoch.
    t = make_trainer(tiny_faces, **{"classifier.lr": 1e-6, "classifier.epochs": 20, "classifier.patience": 2,
                                     "classifier.early_stop": "val_macro_f1"})
    results = list(t.epochs())
    assert results[-1].last and len(results) < 20
    assert t.bad_epochs == 2 and len(results) == t.best_epoch + 2


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_schedules_change_the_learning_rate(tiny_faces, schedule):
    t = make_trainer(tiny_faces, **{"classifier.schedule": schedule, "classifier.epochs": 4, "classifier.lr": 1e-2})
    lrs = [r.metrics["lr"] for r in t.epochs()]
    assert len(set(lrs)) > 1


def test_plateau_schedule_halves_the_rate_when_validation_loss_stalls(tiny_faces):
    t = make_trainer(tiny_faces, **{"classifier.schedule": "plateau", "classifier.epochs": 5, "classifier.lr": 1e-3})
    real_evaluate = t.evaluate

    def stalled(images, labels, split):  # The real metrics, with a validation loss that never improves.
        return {**real_evaluate(images, labels, split), "val_loss": 1.0}

    t.evaluate = stalled
    lrs = [r.metrics["lr"] for r in t.epochs()]
    # Epoch 1 sets the best loss; after more than patience (2) epochs without improvement the rate is halved.
    assert lrs == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4]


def test_class_weighted_loss_and_label_smoothing_are_used(tiny_faces):
    t = make_trainer(tiny_faces, **{"classifier.class_weights": True, "classifier.label_smoothing": 0.1})
    assert t.loss_fn.weight is not None and t.loss_fn.weight[1] > t.loss_fn.weight[3]  # disgust > happy
    assert t.loss_fn.label_smoothing == 0.1


def test_augmentations_are_off_at_zero_and_change_images_when_on():
    x = normalise(torch.randint(0, 255, (16, 48, 48), dtype=torch.uint8))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, Strengths(), gen), x)
    flipped = augment(x, Strengths(flip=1.0), gen)
    assert torch.equal(flipped, x.flip(3))
    for s in (Strengths(translate=3), Strengths(rotate=15), Strengths(crop=0.5), Strengths(erase=1.0)):
        y = augment(x, s, gen)
        assert y.shape == x.shape and not torch.equal(y, x) and y.abs().max() <= 1.0 + 1e-5
    erased = augment(x, Strengths(erase=1.0), gen)
    assert ((erased == 0) & (x != 0)).flatten(1).any(1).all()  # every image lost a rectangle
    # A 90-degree-free small rotation keeps the image's centre pixel nearly in place.
    centre = normalise(torch.zeros(1, 48, 48, dtype=torch.uint8) + 200)
    assert torch.allclose(augment(centre, Strengths(rotate=15), gen), centre, atol=1e-5)


@pytest.mark.slow
def test_plateau_factor_and_patience_are_config_keys(tiny_faces):
    t = make_trainer(tiny_faces, **{"classifier.schedule": "plateau", "classifier.epochs": 5, "classifier.lr": 1e-3,
                                    "classifier.plateau_factor": 0.1, "classifier.plateau_patience": 1})
    real_evaluate = t.evaluate
    t.evaluate = lambda images, labels, split: {**real_evaluate(images, labels, split), "val_loss": 1.0}
    lrs = [r.metrics["lr"] for r in t.epochs()]
    # Cut by 10 after more than one stalled epoch, then again two epochs later (002's schedule, not the default's).
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    assert resolve({}).classifier.plateau_factor == 0.5 and resolve({}).classifier.plateau_patience == 2


def test_weighted_validation_loss_is_torchs_weighted_cross_entropy():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(50, 7)))
    labels = rng.integers(0, 7, 50)
    weights = rng.uniform(0.1, 3.0, 7)
    m = metrics_from_proba(torch.softmax(logits, 1).numpy(), labels, "val", weights)
    expected = F.cross_entropy(logits, torch.from_numpy(labels), weight=torch.from_numpy(weights))
    assert m["val_weighted_loss"] == pytest.approx(float(expected), rel=1e-6)
    assert m["val_loss"] == pytest.approx(float(F.cross_entropy(logits, torch.from_numpy(labels))), rel=1e-6)
    assert m["val_weighted_loss"] != pytest.approx(m["val_loss"])
    assert "val_weighted_loss" not in metrics_from_proba(torch.softmax(logits, 1).numpy(), labels, "val")
    # With label smoothing: the loss trained on, smoothing included (val_loss stays the plain cross-entropy).
    smooth = metrics_from_proba(torch.softmax(logits, 1).numpy(), labels, "val", weights, label_smoothing=0.1)
    expected = F.cross_entropy(logits, torch.from_numpy(labels), weight=torch.from_numpy(weights), label_smoothing=0.1)
    assert smooth["val_weighted_loss"] == pytest.approx(float(expected), rel=1e-6)
    assert smooth["val_weighted_loss"] != pytest.approx(m["val_weighted_loss"]) and smooth["val_loss"] == m["val_loss"]


@pytest.mark.slow
def test_early_stopping_on_val_loss_judges_the_weighted_loss_with_class_weights(tiny_faces):
    t = make_trainer(tiny_faces, **{"classifier.class_weights": True, "classifier.early_stop": "val_loss",
                                    "classifier.epochs": 4})
    real_evaluate = t.evaluate
    plain = iter([4.0, 3.0, 2.0, 1.0])  # improves every epoch
    weighted = iter([1.0, 2.0, 3.0, 4.0])  # gets worse every epoch: the one that must decide

    def evaluate(images, labels, split):
        m = real_evaluate(images, labels, split)
        assert "val_weighted_loss" in m and m["val_weighted_loss"] != m["val_loss"]
        return {**m, "val_loss": next(plain), "val_weighted_loss": next(weighted)}

    t.evaluate = evaluate
    list(t.epochs())
    assert t.best_epoch == 1
    unweighted = make_trainer(tiny_faces, **{"classifier.early_stop": "val_loss", "classifier.epochs": 1})
    assert "val_weighted_loss" not in next(unweighted.epochs()).metrics


def test_deterministic_mode_is_set_inside_and_restored_after():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"]
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark) == before
    with deterministic_algorithms(False):
        assert torch.are_deterministic_algorithms_enabled() == before[0]


def test_choosing_the_device_flushes_denormal_floats_on_the_cpu():
    """Issue 22: denormal activations slowed late epochs of a CNN on FER2013 threefold; every trial and generator
    picks its device through pick_device, which flushes them to zero where the CPU can."""
    from fercore.train import pick_device

    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert (tiny * 1.0).item() != 0.0  # a denormal survives arithmetic while not flushed
    try:
        pick_device("cpu")
        assert (tiny * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(True)
