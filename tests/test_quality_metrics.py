"""fercore's Frechet distance agrees with torchmetrics' FrechetInceptionDistance given the same feature module."""
import numpy as np
import pytest
import torch

from fercore.metrics.quality import frechet_distance, generator_quality
from fercore.reference import train_reference_classifier

FrechetInceptionDistance = pytest.importorskip("torchmetrics.image.fid").FrechetInceptionDistance

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              # 287 images in a 256-wide feature space (many ReLU units dead after one epoch): the covariances
              # are singular, and scipy says so; both implementations still agree, which is what is tested.
              pytest.mark.filterwarnings("ignore:Matrix is singular")]


@pytest.fixture(scope="module")
def reference(tiny_faces):
    return train_reference_classifier(tiny_faces, epochs=1)


def perturbed(images: np.ndarray, seed: int) -> np.ndarray:
    """Gaussian noise (sd 8 gray levels) and a +6 brightness shift: a clearly different but related set."""
    noise = np.random.default_rng(seed).normal(0, 8, images.shape).round()
    return np.clip(images.astype(np.int16) + noise + 6, 0, 255).astype(np.uint8)


def torchmetrics_fid(reference, real: np.ndarray, fake: np.ndarray) -> float:
    # The module takes what update() is given: uint8 N x H x W (no 3-channel RGB, no resizing, as torchmetrics
    # passes a custom module's input through unchanged when normalize=False). It declares num_features, so
    # torchmetrics does not probe it with a 3 x 299 x 299 dummy image.
    fid = FrechetInceptionDistance(feature=reference.feature_module(), normalize=False)
    fid.update(torch.from_numpy(real).to(reference.device), real=True)
    fid.update(torch.from_numpy(fake).to(reference.device), real=False)
    out = fid.compute()
    # torchmetrics accumulates in float64 and returns in the module's output dtype: the module returns the
    # float32 activations cast to float64, exactly the features fercore's side gets, so no float32 rounding
    # enters. What remains differs only in method (one-pass sum-of-outer-products covariance and the sum of
    # sqrt(eigvals(S1 S2)) against np.cov and scipy's sqrtm): about 1e-9 relative, hence the 1e-3 tolerance
    # has room even for the singular covariances here.
    assert out.dtype == torch.float64
    return float(out)


@pytest.mark.slow
def test_frechet_distance_agrees_with_torchmetrics(tiny_faces, reference):
    real = tiny_faces.split("train")[0]
    for fake in (perturbed(real, 0), tiny_faces.split("test")[0]):
        ours = frechet_distance(reference.features_and_proba(real)[0], reference.features_and_proba(fake)[0])
        assert ours > 0
        assert ours == pytest.approx(torchmetrics_fid(reference, real, fake), rel=1e-3)


@pytest.mark.slow
def test_per_class_fid_agrees_with_torchmetrics(tiny_faces, reference):
    real, labels = tiny_faces.split("train")
    fake = perturbed(real, 1)
    rows = generator_quality(reference, (real, labels), (fake, labels), tiny_faces.class_names)
    happy = tiny_faces.class_names.index("happy")  # the largest class: 72 images
    mask = labels == happy
    assert rows["gen_fid_happy"] == pytest.approx(torchmetrics_fid(reference, real[mask], fake[mask]), rel=1e-3)
    assert rows["gen_fid"] == pytest.approx(torchmetrics_fid(reference, real, fake), rel=1e-3)


def test_feature_module_gives_the_features_of_features_and_proba(tiny_faces, reference):
    images = tiny_faces.split("val")[0]
    module = reference.feature_module()
    with torch.no_grad():
        f = module(torch.from_numpy(images).to(reference.device)).cpu().numpy()
    assert f.dtype == np.float64 and f.shape == (len(images), module.num_features)
    assert np.allclose(f, reference.features_and_proba(images)[0], rtol=1e-6, atol=1e-6)
