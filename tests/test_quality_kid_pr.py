"""KID agrees with torchmetrics' KernelInceptionDistance given the same features; precision and recall tell a
generator that makes few good images from one that makes many poor ones; small classes get a reason, not a number."""
import numpy as np
import pytest
import torch

from fercore.metrics.kid import kernel_inception_distance, polynomial_mmd2
from fercore.metrics.precision_recall import precision_recall
from fercore.metrics.quality import MIN_PER_CLASS, sample_quality

KernelInceptionDistance = pytest.importorskip("torchmetrics.image.kid").KernelInceptionDistance


class _Identity(torch.nn.Module):
    """Hands torchmetrics the features themselves (float64 rows), as a custom feature module may."""

    def forward(self, x):
        return x


def _torchmetrics_kid(real: np.ndarray, fake: np.ndarray) -> float:
    # One subset holding every row of both sets: torchmetrics' random permutation then changes nothing, so the two
    # implementations measure exactly the same estimate.
    kid = KernelInceptionDistance(feature=_Identity(), subsets=1, subset_size=len(real), normalize=False)
    kid.update(torch.from_numpy(real), real=True)
    kid.update(torch.from_numpy(fake), real=False)
    mean, _ = kid.compute()
    return float(mean)


def test_kid_agrees_with_torchmetrics():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(120, 16))
    for fake in (rng.normal(size=(120, 16)), rng.normal(0.5, 1.3, size=(120, 16))):
        ours, spread = kernel_inception_distance(real, fake)
        assert np.isnan(spread)  # one subset, the whole of both sets: no spread to measure
        assert ours == pytest.approx(_torchmetrics_kid(real, fake), rel=1e-6, abs=1e-9)
    assert kernel_inception_distance(real, rng.normal(1, 1, (120, 16)))[0] > 10 * abs(
        kernel_inception_distance(real, rng.normal(size=(120, 16)))[0])


def test_kid_is_unbiased_and_spreads_over_subsets():
    rng = np.random.default_rng(1)
    # Same distribution: the unbiased estimate averages to ~0 (a biased one would be clearly positive at n = 40).
    values = [polynomial_mmd2(rng.normal(size=(40, 8)), rng.normal(size=(40, 8))) for _ in range(200)]
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))
    mean, std = kernel_inception_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), subset_size=100,
                                          subsets=20)
    assert std > 0 and np.isfinite(mean)
    assert np.isnan(kernel_inception_distance(rng.normal(size=(1, 8)), rng.normal(size=(5, 8)))[0])


def test_precision_recall_tell_few_good_from_many_poor():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(600, 4))
    few_good = rng.normal(size=(600, 4)) * 0.3  # a shrunk subset of the real cloud: realistic, not diverse
    many_poor = rng.normal(size=(600, 4)) * 2.5  # covers the real cloud, mostly outside it
    p_good, r_good = precision_recall(real, few_good)
    p_poor, r_poor = precision_recall(real, many_poor)
    assert p_good > 0.95 and r_good < 0.5
    assert p_poor < 0.5 and r_poor > 0.9
    p_same, r_same = precision_recall(real, rng.normal(size=(600, 4)))
    assert p_same > 0.8 and r_same > 0.8
    assert np.isnan(precision_recall(real[:3], few_good)[0])


class _Features:
    """A reference whose features are the images' pixels and whose prediction is pixel 0 (a class id)."""

    def features_and_proba(self, images):
        f = images.reshape(len(images), -1).astype(np.float64)
        proba = np.eye(3)[images[:, 0, 0].astype(int)]
        return f, proba


def test_sample_quality_per_class_figures_and_notes():
    rng = np.random.default_rng(3)
    counts = [MIN_PER_CLASS + 10, MIN_PER_CLASS - 1, MIN_PER_CLASS + 5]
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])

    def images(scale):
        x = rng.normal(size=(len(labels), 2, 2)) * scale + 5
        x[:, 0, 0] = labels
        return x

    synthetic = images(1.0)
    synthetic[labels == 2, 0, 0] = 0  # class 2 is always misread: macro accuracy (1 + 1 + 0) / 3
    rows, _ = sample_quality(_Features(), (images(1.0), labels), (synthetic, labels), ("a", "b", "c"))
    assert rows["gen_conditional_accuracy"] == pytest.approx(2 / 3)
    assert np.isfinite(rows["gen_kid_a"]) and np.isfinite(rows["gen_precision_c"]) and np.isfinite(rows["gen_fid_a"])
    assert all(np.isnan(rows[f"gen_{k}_b"]) for k in ("fid", "kid", "kid_std", "precision", "recall"))
    assert "need 50" in rows["gen_quality_note_b"] and "gen_quality_note_a" not in rows
    for key in ("gen_fid", "gen_kid", "gen_precision", "gen_recall", "gen_embedding_jsd"):
        assert np.isfinite(rows[key]), key
    assert np.isnan(rows["gen_kid_std"])  # 164 images a side: one subset, the whole sample, no spread
