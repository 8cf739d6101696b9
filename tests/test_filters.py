"""Quality filters: fill_pool's exact counts, acceptance figures, seeding and bounded over-generation on a fake
generator and scorer; then each real scorer (a tiny trained cgan's discriminator, a tiny reference classifier) and
the discriminator_scores of every generator type."""
import numpy as np
import pytest
import torch

from fercore.augment import filters
from fercore.augment.filters import FILTERS, FilterShortfall, fill_pool
from fercore.config import COMMON, resolve
from fercore.errors import ConfigError, UserError
from fercore.generators import build_generator
from fercore.generators.per_class import PerClass
from fercore.labels import CLASSES
from fercore.reference import confidence_scorer
from fercore.synthetic import build_scorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
SIZE = 48
NEEDED = np.array([10, 0, 300, 1, 0, 70, 5])


def fake_sample(n: int, label: int, seed: int) -> np.ndarray:
    """Deterministic in (n, label, seed), like Generator.sample; brightness varies so a threshold rejects some."""
    return np.random.default_rng([seed, label]).integers(0, 256, (n, 4, 4), dtype=np.uint8)


def mean_score(images: np.ndarray, label: int) -> np.ndarray:
    return images.mean(axis=(1, 2)) / 255


class Recorder:
    """Wraps the fake sampler and scorer and counts, per class, what was generated and what passed TAU."""

    def __init__(self, tau: float):
        self.tau = tau
        self.generated, self.accepted = np.zeros(7, np.int64), np.zeros(7, np.int64)
        self.seeds: list[int] = []

    def sample(self, n, label, seed):
        self.generated[label] += n
        self.seeds.append(seed)
        return fake_sample(n, label, seed)

    def score(self, images, label):
        scores = mean_score(images, label)
        self.accepted[label] += int((scores >= self.tau).sum())
        return scores


@pytest.mark.parametrize("tau", [0.0, 0.5, 0.55, 0.6])
def test_fill_pool_gives_exact_counts_of_images_scoring_at_least_tau(tau):
    rec = Recorder(tau)
    pool, acceptance, generated = fill_pool(rec.sample, NEEDED, rec.score, tau=tau, rounds=10, seed=3)
    assert [len(pool[c]) for c in range(7)] == NEEDED.tolist()
    assert all(pool[c].shape[1:] == (4, 4) for c in range(7))  # empty classes too
    assert all((mean_score(pool[c], c) >= tau).all() for c in range(7))
    assert generated.tolist() == rec.generated.tolist()
    assert np.isnan(acceptance[NEEDED == 0]).all()
    assert np.allclose(acceptance[NEEDED > 0], (rec.accepted / np.maximum(rec.generated, 1))[NEEDED > 0])
    assert len(set(rec.seeds)) == len(rec.seeds)  # every draw its own seed


def test_fill_pool_is_seeded_and_a_class_does_not_depend_on_the_others():
    a, acc_a, gen_a = fill_pool(fake_sample, NEEDED, mean_score, tau=0.55, rounds=10, seed=3)
    b, acc_b, gen_b = fill_pool(fake_sample, NEEDED, mean_score, tau=0.55, rounds=10, seed=3)
    assert all((a[c] == b[c]).all() for c in range(7)) and gen_a.tolist() == gen_b.tolist()
    assert np.array_equal(acc_a, acc_b, equal_nan=True)
    other, _, _ = fill_pool(fake_sample, NEEDED, mean_score, tau=0.55, rounds=10, seed=4)
    assert not (a[2] == other[2]).all()
    alone, _, _ = fill_pool(fake_sample, np.where(np.arange(7) == 2, NEEDED, 0), mean_score, 0.55, 10, seed=3)
    assert (alone[2] == a[2]).all()


def test_without_a_filter_each_class_is_one_unfiltered_draw_with_the_trials_seed():
    pool, acceptance, generated = fill_pool(fake_sample, NEEDED, None, seed=3000)
    assert all((pool[c] == fake_sample(int(n), c, 3000 + c)).all() for c, n in enumerate(NEEDED))
    assert generated.tolist() == NEEDED.tolist()
    assert np.array_equal(acceptance, np.where(NEEDED > 0, 1.0, np.nan), equal_nan=True)


def test_over_generation_draws_what_the_observed_acceptance_says_is_missing():
    # Nothing passes: round 0 assumes every image will (10 * 1.2, at least MIN_DRAW), later rounds the floor.
    first = max(int(np.ceil(10 * filters.MARGIN)), filters.MIN_DRAW)
    later = int(np.ceil(10 / filters.FLOOR * filters.MARGIN))
    assert filters.draw_size(10, 0, 0) == first and filters.draw_size(10, 0, first) == later
    assert filters.draw_size(1000, 250, 1000) == int(np.ceil(1000 / 0.25 * filters.MARGIN))


def test_a_class_still_short_after_the_rounds_is_an_error_that_says_what_to_change():
    with pytest.raises(FilterShortfall) as err:
        fill_pool(fake_sample, np.array([0, 0, 0, 0, 0, 10, 0]), mean_score, tau=0.99, rounds=2, seed=0)
    assert isinstance(err.value, UserError)
    generated = filters.draw_size(10, 0, 0) + filters.draw_size(10, 0, filters.draw_size(10, 0, 0))
    message = str(err.value)
    assert "'surprise'" in message and f"0 of {generated} generated" in message and "after 2 rounds" in message
    assert "augment.filter_tau" in message and "augment.filter_rounds" in message


def test_a_score_function_must_give_one_score_in_0_1_per_image():
    with pytest.raises(ValueError, match="one score per image"):
        fill_pool(fake_sample, NEEDED, lambda x, c: np.ones(1), tau=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fill_pool(fake_sample, NEEDED, lambda x, c: mean_score(x, c) * 255, tau=0.5)


def test_filter_keys_are_validated_and_match_the_registry():
    (choice,) = [p for p in COMMON["augment"] if p.name == "filter"]
    assert sorted(choice.choices) == FILTERS.names()
    assert resolve({"augment.filter": "discriminator", "augment.filter_tau": 0.9}).augment.filter_tau == 0.9
    for key, value in (("filter", "sharpness"), ("filter_tau", 1.5), ("filter_rounds", 0)):
        with pytest.raises(ConfigError, match=f"augment.{key}"):
            resolve({f"augment.{key}": value})


def gen_values(kind: str, **overrides) -> dict:
    flat = {"generator.type": kind, "generator.epochs": 1, "generator.batch_size": 16, "generator.width": 4,
            **({"generator.latent_dim": 16} if kind != "diffusion" else {}),
            **{f"generator.{k}": v for k, v in overrides.items()}}
    return dict(resolve(flat).generator.values)


def build(kind: str, **overrides):
    torch.manual_seed(0)
    return build_generator(gen_values(kind, **overrides), SIZE, len(CLASSES), CPU)


def discriminators(g) -> list[torch.nn.Module]:
    if hasattr(g, "models"):  # stylegan: one pair per class or one conditional pair
        models = g.models() if callable(g.models) else g.models
        return [m.d for m in models]
    return [g.d]


@pytest.fixture(scope="module")
def faces(tiny_faces):
    x, y = tiny_faces.split("train")
    return x, y


@pytest.mark.parametrize("kind, overrides", [("gan", {}), ("dcgan", {}), ("cgan", {"resolution": 32}),
                                             ("stylegan", {}), ("stylegan", {"conditioning": "label"})],
                         ids=["gan", "dcgan", "cgan", "stylegan", "stylegan-label"])
def test_discriminator_scores_are_probabilities_and_change_no_state(kind, overrides, faces):
    g = build(kind, **overrides)
    images = faces[0][:6]
    nets = discriminators(g)
    for d in nets:
        d.train()  # as training leaves it
    before = [{k: t.clone() for k, t in d.state_dict().items()} for d in nets]
    scores = g.discriminator_scores(images, 1)
    assert scores.shape == (6,) and scores.dtype == np.float64 and ((scores >= 0) & (scores <= 1)).all()
    assert np.array_equal(scores, g.discriminator_scores(images, 1))
    assert all(d.training for d in nets)  # mode restored
    for d, state in zip(nets, before):  # no batch-norm statistics or spectral-norm vectors moved
        assert all(torch.equal(t, state[k]) for k, t in d.state_dict().items())
    assert g.discriminator_scores(images[:0], 0).shape == (0,)
    if isinstance(g, PerClass):  # each class asks its own D, which was trained on label 0
        assert np.array_equal(scores, g.models[1].discriminator_scores(images, 0))
        assert not np.array_equal(scores, g.discriminator_scores(images, 0))


def test_generators_without_a_discriminator_say_so_naming_augment_filter():
    g = build("diffusion")
    with pytest.raises(ConfigError, match="augment.filter=discriminator .* generator.type diffusion has none"):
        g.discriminator_scores(np.zeros((2, SIZE, SIZE), np.uint8), 0)
    with pytest.raises(ConfigError, match="augment.filter=discriminator"):  # before any drawing
        build_scorer("discriminator", g, reference=lambda: pytest.fail("no reference classifier needed"))


def test_a_tiny_trained_cgans_discriminator_filters_its_own_samples(faces):
    x, y = faces
    keep = np.concatenate([np.flatnonzero(y == c)[:10] for c in range(len(CLASSES))])
    g = build("cgan", resolution=32)
    g.fit(x[keep], y[keep], seed=0)
    score = build_scorer("discriminator", g, reference=lambda: pytest.fail("no reference classifier needed"))
    needed = np.array([3, 0, 5, 0, 0, 0, 2])
    medians = []
    for c in np.flatnonzero(needed):
        scores = score(g.sample(16, c, seed=1), c)
        assert scores.shape == (16,) and ((scores >= 0) & (scores <= 1)).all()
        medians.append(np.median(scores))
    tau = float(min(medians))  # D judges classes differently: a threshold every class can meet within the rounds
    pool, acceptance, generated = fill_pool(g.sample, needed, score, tau=tau, rounds=10, seed=7)
    assert [len(pool[c]) for c in range(7)] == needed.tolist()
    assert all((score(pool[c], c) >= tau).all() for c in range(7) if needed[c])
    assert (acceptance[needed > 0] > 0).all() and (generated[needed > 0] >= needed[needed > 0]).all()


def test_a_tiny_reference_classifier_scores_the_conditioned_class(tiny_faces):
    from fercore.reference import train_reference_classifier

    ref = train_reference_classifier(tiny_faces, epochs=1, device=CPU)
    score = build_scorer("classifier_confidence", None, reference=lambda: ref)
    assert build_scorer("none", None, reference=lambda: pytest.fail("not needed")) is None
    x, y = tiny_faces.split("test")
    medians = []
    for c in (0, 3):
        images = x[y == c]
        scores = score(images, c)
        assert scores.shape == (len(images),) and ((scores >= 0) & (scores <= 1)).all()
        assert np.allclose(scores, ref.features_and_proba(images)[1][:, c])
        medians.append(np.median(scores))
    tau = float(min(medians))  # after one epoch the classifier may still favour some classes
    confidence = confidence_scorer(ref)

    def real_sample(n, label, seed):  # a "generator" that draws real test faces of the class
        own = x[y == label]
        return own[np.random.default_rng(seed).integers(0, len(own), n)]

    needed = np.array([4, 0, 0, 6, 0, 0, 0])
    pool, acceptance, _ = fill_pool(real_sample, needed, confidence, tau=tau, rounds=10, seed=0)
    assert [len(pool[c]) for c in range(7)] == needed.tolist()
    assert all((confidence(pool[c], c) >= tau).all() for c in (0, 3))
    assert ((acceptance[needed > 0] > 0) & (acceptance[needed > 0] <= 1)).all()
