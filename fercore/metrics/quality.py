"""Quality of synthetic images, judged by a reference classifier trained on real training images only.

Inception-based FID needs downloaded ImageNet weights and is biased toward ImageNet content (Kynkaanniemi et al.
2023). For 48x48 faces a domain feature space is better, as the MNIST community does with LeNet features: the
penultimate layer of a `cnn3` trained on the real training split. On that space:
- Frechet distance between real and synthetic feature distributions (overall and per class);
- conditional accuracy: the share of synthetic images the reference classifier assigns to their conditioned class.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

from fercore.atomic import atomic_write
from fercore.augment.batch import normalise
from fercore.classifiers.simple import CNN3
from fercore.config import resolve
from fercore.data import FaceSet
from fercore.metrics.embedding import embedding_jsd_rows, embedding_sample, real_projection
from fercore.train import Trainer


class PenultimateFeatures(nn.Module):
    """uint8 B x H x W -> float64 B x F penultimate features of a cnn3: the FID feature space as a module, so that
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


@dataclass
class ReferenceClassifier:
    model: CNN3
    device: torch.device

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
        meta = {"backbone": "cnn3", "width": self.model.features[0].out_channels, "dropout": self.model.head[3].p}
        atomic_write(folder / "config.json", lambda f: f.write(json.dumps(meta).encode()))

    def feature_module(self) -> PenultimateFeatures:
        """The features of `features_and_proba` as an eval-mode module on the classifier's device."""
        self.model.eval()
        return PenultimateFeatures(self.model).eval()


def load_reference_classifier(folder: Path, image_size: int, num_classes: int,
                              device: torch.device) -> ReferenceClassifier:
    """A reference classifier written by `ReferenceClassifier.save`, loaded without running code from the file."""
    meta = json.loads((folder / "config.json").read_text())
    model = CNN3(image_size, num_classes, dropout=meta["dropout"], width=meta["width"])
    model.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
    return ReferenceClassifier(model.to(device).eval(), device)


def train_reference_classifier(data: FaceSet, seed: int = 0, epochs: int = 6,
                               device: torch.device | None = None) -> ReferenceClassifier:
    """A cnn3 trained on the real training split (validation picks its epoch); never sees synthetic or test images."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = resolve({"classifier.backbone": "cnn3", "classifier.epochs": epochs, "classifier.lr": 1e-3,
                   "data.image_size": data.image_size})
    torch.manual_seed(seed)
    model = CNN3(data.image_size, len(data.class_names), dropout=cfg.classifier.dropout, width=cfg.classifier.width)
    trainer = Trainer(model, data.split("train"), data.split("val"), cfg.classifier, cfg.train, seed, device)
    for _ in trainer.epochs():
        pass
    trainer.restore_best()
    return ReferenceClassifier(trainer.model, device)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows are samples)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        # A class with fewer images than feature dimensions has a singular covariance: SciPy warns, yet the square
        # root it returns is what the reference FID code (and torchmetrics) use; non-finite results are handled below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)  # `disp=False` is deprecated in SciPy 1.16 and gone in 1.18
    if not np.isfinite(covmean).all():
        # Near-singular covariances (few samples): regularise the product as the reference FID code does.
        eps = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def generator_quality(ref: ReferenceClassifier, real: tuple[np.ndarray, np.ndarray],
                      synthetic: tuple[np.ndarray, np.ndarray], class_names: tuple[str, ...],
                      embedding: bool = False) -> dict[str, float]:
    """FID in the reference feature space (overall and per class) and conditional accuracy, as result-row keys;
    with EMBEDDING also the Jensen-Shannon distance of the two sets' embeddings (fercore.metrics.embedding)."""
    return quality_and_embedding(ref, real, synthetic, class_names, embedding)[0]


def quality_and_embedding(ref: ReferenceClassifier, real: tuple[np.ndarray, np.ndarray],
                          synthetic: tuple[np.ndarray, np.ndarray], class_names: tuple[str, ...],
                          embedding: bool = False, points_per_class: int = 0,
                          seed: int = 0) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """generator_quality's figures, and with POINTS_PER_CLASS > 0 the projected points the embedding figure was
    measured on (fercore.metrics.embedding.embedding_sample), from one pass of the reference over the images."""
    real_f, _ = ref.features_and_proba(real[0])
    syn_f, syn_p = ref.features_and_proba(synthetic[0])
    # One PCA of the real features serves the overall figure and the points drawn to show it.
    projection = real_projection(real_f) if (embedding or points_per_class) and len(real_f) >= 2 else None
    points = embedding_sample((real_f, real[1]), (syn_f, synthetic[1]), points_per_class, seed, projection) \
        if points_per_class else {}
    out = {"gen_fid": frechet_distance(real_f, syn_f),
           "gen_conditional_accuracy": float((syn_p.argmax(1) == synthetic[1]).mean())}
    for c, name in enumerate(class_names):
        r, s = real_f[real[1] == c], syn_f[synthetic[1] == c]
        out[f"gen_fid_{name}"] = frechet_distance(r, s) if len(r) > 1 and len(s) > 1 else float("nan")
    if embedding:
        out.update(embedding_jsd_rows((real_f, real[1]), (syn_f, synthetic[1]), class_names,
                                      projection=projection))
    return out, points
