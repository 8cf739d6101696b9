import pytest
import torch

from fercore.transforms import Strengths, augment, normalise
from fercore.classifiers import build_classifier
from fercore.config import resolve
from fercore.train import Trainer


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
