"""The reference classifier: a cnn3 trained on the real training split only, less a held-out part (HOLDOUT_SHARE of
each class, drawn with its seed) that measures its own accuracy on faces it never trained on (validation picks its
epoch), the one judge of every trial's synthetic images. Its penultimate layer is the feature space of
fercore.metrics.quality (FID, embedding distance); its class probabilities are the score of the
classifier_confidence quality filter.

Here live the model wrapper, its training, save and load; fercore.cache.entries keeps one per data set.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fercore.atomic import atomic_write
from fercore.transforms import normalise
from fercore.augment.filters import ScoreFn
from fercore.classifiers.simple import CNN3
from fercore.config import resolve
from fercore.data import FaceSet
from fercore.train import Trainer


class PenultimateFeatures(nn.Module):
    """uint8 B x H x W (x 3) -> float64 B x F penultimate features of a cnn3: the FID feature space as a module, so that
    torchmetrics' FrechetInceptionDistance(feature=...) can cross-check `frechet_distance` (it reads `num_features`
    instead of probing the module with a 3 x 299 x 299 dummy image)."""

    def __init__(self, model: CNN3):
        super().__init__()
        self.model = model
        self.num_features = model.head[1].out_features

    def penultimate(self, images_u8: torch.Tensor) -> torch.Tensor:
        """The features in the network's own dtype: after the head's Flatten, Linear and ReLU, before dropout."""
        x = self.model.features(normalise(images_u8))
        for layer in list(self.model.head.children())[:3]:
            x = layer(x)
        return x

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return self.penultimate(images_u8).double()


HOLDOUT_SHARE = 0.1  # of each class of the training split, kept out of the reference's training


@dataclass
class ReferenceClassifier:
    model: CNN3
    device: torch.device
    # Its accuracy on the held-out part of the training split (faces it never trained on, nor chose its epoch by),
    # and that part's size; NaN and 0 for a reference saved before it held any out.
    heldout_accuracy: float = float("nan")
    heldout_n: int = 0

    @torch.no_grad()
    def features_and_proba(self, images: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate-layer features (after ReLU, before dropout) and class probabilities of uint8 images."""
        features = self.feature_module()
        last = self.model.head[-1]
        feats, probs = [], []
        for i in range(0, len(images), batch_size):
            f = features.penultimate(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(self.device))
            feats.append(f.double().cpu())
            probs.append(torch.softmax(last(f), dim=1).cpu())
        if not feats:
            return np.zeros((0, features.num_features)), np.zeros((0, last.out_features))
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()

    def save(self, folder: Path) -> None:
        """weights.pt (the cnn3's state) and config.json (what rebuilds it), each written atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "weights.pt", lambda f: torch.save(self.model.state_dict(), f))
        first = self.model.features[0]
        meta = {"backbone": "cnn3", "width": first.out_channels, "dropout": self.model.head[3].p}
        if first.in_channels != 1:  # Colour; a gray reference's file stays as it was.
            meta["in_channels"] = first.in_channels
        meta |= {"heldout_accuracy": self.heldout_accuracy, "heldout_n": self.heldout_n}
        atomic_write(folder / "config.json", lambda f: f.write(json.dumps(meta).encode()))

    def feature_module(self) -> PenultimateFeatures:
        """The features of `features_and_proba` as an eval-mode module on the classifier's device."""
        self.model.eval()
        return PenultimateFeatures(self.model).eval()


def confidence_scorer(ref: ReferenceClassifier) -> ScoreFn:
    """A quality filter's score function (fercore.augment.filters.ScoreFn): the reference classifier's probability
    of the conditioned class, per image (quality's conditional accuracy, made per image)."""
    def score(images: np.ndarray, label: int) -> np.ndarray:
        return ref.features_and_proba(images)[1][:, label].astype(np.float64)

    return score


def load_reference_classifier(folder: Path, image_size: int, num_classes: int,
                              device: torch.device, in_channels: int = 1) -> ReferenceClassifier:
    """A reference classifier written by `ReferenceClassifier.save`, loaded without running code from the file."""
    meta = json.loads((folder / "config.json").read_text())
    model = CNN3(image_size, num_classes, dropout=meta["dropout"], width=meta["width"],
                 in_channels=meta.get("in_channels", in_channels))
    model.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
    return ReferenceClassifier(model.to(device).eval(), device, float(meta.get("heldout_accuracy", float("nan"))),
                               int(meta.get("heldout_n", 0)))


def heldout_mask(labels: np.ndarray, seed: int, share: float = HOLDOUT_SHARE) -> np.ndarray:
    """Which training images the reference holds out: SHARE of each class (rounded down; none of a class with fewer
    than 2 images, which it needs to train on), drawn with SEED."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = int(len(members) * share) if len(members) >= 2 else 0
        held[rng.choice(members, n, replace=False)] = True
    return held


def train_reference_classifier(data: FaceSet, seed: int = 0, epochs: int = 6,
                               device: torch.device | None = None) -> ReferenceClassifier:
    """A cnn3 trained on the real training split less its held-out part (heldout_mask; validation picks its epoch),
    with its accuracy on that part; never sees synthetic or test images."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = resolve({"classifier.backbone": "cnn3", "classifier.epochs": epochs, "classifier.lr": 1e-3,
                   "data.image_size": data.image_size})
    torch.manual_seed(seed)
    model = CNN3(data.image_size, len(data.class_names), dropout=cfg.classifier.dropout, width=cfg.classifier.width,
                 in_channels=data.channels)
    train_x, train_y = data.split("train")
    held = heldout_mask(train_y, seed)
    trainer = Trainer(model, (train_x[~held], train_y[~held]), data.split("val"), cfg.classifier, cfg.train, seed,
                      device, len(data.class_names), class_names=data.class_names)
    for _ in trainer.epochs():
        pass
    trainer.restore_best()
    reference = ReferenceClassifier(trainer.model, device)
    if held.any():
        predicted = reference.features_and_proba(train_x[held])[1].argmax(1)
        reference.heldout_accuracy, reference.heldout_n = float((predicted == train_y[held]).mean()), int(held.sum())
    return reference
