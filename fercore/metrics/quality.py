"""Quality of synthetic images, judged by a reference classifier trained on real training images only
(fercore.reference; measured here, trained there).

Inception-based FID needs downloaded ImageNet weights and is biased toward ImageNet content (Kynkaanniemi et al.
2023). For 48x48 faces a domain feature space is better, as the MNIST community does with LeNet features: the
penultimate layer of a `cnn3` trained on the real training split. On that space:
- Frechet distance between real and synthetic feature distributions (overall and per class);
- conditional accuracy: the share of synthetic images the reference classifier assigns to their conditioned class.

`sample_quality` scores a generator once, on an unfiltered class-matched sample (fercore.synthetic draws it): FID,
KID with its spread (fercore.metrics.kid), precision and recall (fercore.metrics.precision_recall), overall and per
class, and conditional accuracy macro-averaged over classes. Per-class figures need MIN_PER_CLASS images on each
side; below it they are NaN and `gen_quality_note_<class>` says why.
"""
from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np
from scipy import linalg

from fercore.metrics.embedding import embedding_jsd_rows, embedding_sample, real_projection
from fercore.metrics.kid import kernel_inception_distance
from fercore.metrics.precision_recall import precision_recall

# Fewer images than this in a class (real or synthetic side): its per-class figures are missing, not a number.
# 50 keeps the k-NN radii (k=3) and KID's unbiased estimate meaningful; FID is still biased here, hence KID beside it.
MIN_PER_CLASS = 50


class FeatureExtractor(Protocol):
    """What judges images here: fercore.reference.ReferenceClassifier, or anything with its features_and_proba."""

    def features_and_proba(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


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


def generator_quality(ref: FeatureExtractor, real: tuple[np.ndarray, np.ndarray],
                      synthetic: tuple[np.ndarray, np.ndarray], class_names: tuple[str, ...],
                      embedding: bool = False) -> dict[str, float]:
    """FID in the reference feature space (overall and per class) and conditional accuracy, as result-row keys;
    with EMBEDDING also the Jensen-Shannon distance of the two sets' embeddings (fercore.metrics.embedding)."""
    return quality_and_embedding(ref, real, synthetic, class_names, embedding)[0]


def quality_and_embedding(ref: FeatureExtractor, real: tuple[np.ndarray, np.ndarray],
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


def sample_quality(ref: FeatureExtractor, real: tuple[np.ndarray, np.ndarray],
                   synthetic: tuple[np.ndarray, np.ndarray], class_names: tuple[str, ...],
                   min_per_class: int = MIN_PER_CLASS, points_per_class: int = 0,
                   seed: int = 0) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """A generator's figures on a class-matched sample (REAL and SYNTHETIC: images and labels, the same count per
    class on both sides), as result-row keys: gen_fid, gen_kid, gen_kid_std, gen_precision, gen_recall, each also
    per class (`gen_fid_<class>` ...), gen_conditional_accuracy (the mean over classes of the per-class share
    assigned to its conditioned class, so a large class does not hide a small one), gen_embedding_jsd; and with
    POINTS_PER_CLASS > 0 the embedding points (as quality_and_embedding)."""
    real_f, _ = ref.features_and_proba(real[0])
    syn_f, syn_p = ref.features_and_proba(synthetic[0])
    projection = real_projection(real_f) if len(real_f) >= 2 else None
    points = embedding_sample((real_f, real[1]), (syn_f, synthetic[1]), points_per_class, seed, projection) \
        if points_per_class else {}
    out: dict[str, object] = {"gen_fid": frechet_distance(real_f, syn_f)}
    out["gen_kid"], out["gen_kid_std"] = kernel_inception_distance(real_f, syn_f, seed=seed)
    out["gen_precision"], out["gen_recall"] = precision_recall(real_f, syn_f)
    hits = syn_p.argmax(1) == synthetic[1]
    per_class_accuracy = []
    for c, name in enumerate(class_names):
        r, s = real_f[real[1] == c], syn_f[synthetic[1] == c]
        if len(s):
            per_class_accuracy.append(float(hits[synthetic[1] == c].mean()))
        if min(len(r), len(s)) < min_per_class:
            for key in ("fid", "kid", "kid_std", "precision", "recall"):
                out[f"gen_{key}_{name}"] = float("nan")
            out[f"gen_quality_note_{name}"] = (f"{len(r)} real and {len(s)} synthetic images: per-class figures "
                                               f"need {min_per_class} of each")
            continue
        out[f"gen_fid_{name}"] = frechet_distance(r, s)
        out[f"gen_kid_{name}"], out[f"gen_kid_std_{name}"] = kernel_inception_distance(r, s, seed=seed + 1 + c)
        out[f"gen_precision_{name}"], out[f"gen_recall_{name}"] = precision_recall(r, s)
    out["gen_conditional_accuracy"] = float(np.mean(per_class_accuracy)) if per_class_accuracy else float("nan")
    out.update(embedding_jsd_rows((real_f, real[1]), (syn_f, synthetic[1]), class_names, projection=projection))
    return out, points
