"""The adversarial generator types (gan, dcgan, cgan) and the pieces they share: training, seeded sampling, save/load,
D augmentation, the watchdog and one-model-per-class. Tiny data and tiny networks: each test takes seconds on a CPU."""
import json

import numpy as np
import pytest
import torch

from fercore.config import resolve
from fercore.errors import ConfigError
from fercore.generators import Diverged, Generator, build_generator
from fercore.generators.discriminator_augment import DAugment
from fercore.generators.per_class import PerClass
from fercore.generators.watchdog import Watchdog

TYPES = ("gan", "dcgan", "cgan")
SIZE, CLASSES = 48, 7
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gen_values(kind: str, **overrides) -> dict:
    flat = {"generator.type": kind, "generator.epochs": 1, "generator.batch_size": 16, "generator.width": 4,
            "generator.latent_dim": 16, **{f"generator.{k}": v for k, v in overrides.items()}}
    return dict(resolve(flat).generator.values)


def build(kind: str, **overrides) -> Generator:
    torch.manual_seed(0)  # initial weights come from the global generator (a trial seeds it the same way)
    return build_generator(gen_values(kind, **overrides), SIZE, CLASSES, CPU)


@pytest.fixture(scope="module")
def train(tiny_faces):
    """At most 20 training images per class, every class present."""
    x, y = tiny_faces.split("train")
    keep = np.concatenate([np.flatnonzero(y == c)[:20] for c in range(CLASSES)])
    assert len(np.unique(y[keep])) == CLASSES
    return x[keep], y[keep]


@pytest.fixture(scope="module")
def small(train):
    """41 training images of three classes (one of them a single image): for the tests that train many times."""
    x, y = train
    keep = np.concatenate([np.flatnonzero(y == 0)[:20], np.flatnonzero(y == 3)[:20], np.flatnonzero(y == 5)[:1]])
    return x[keep], y[keep]


@pytest.fixture(scope="module", params=[(kind, ema) for kind in TYPES for ema in (0.0, 0.9)],
                ids=lambda p: f"{p[0]}-ema{p[1]}")
def trained(request, train):
    kind, ema = request.param
    g = build(kind, ema=ema)
    steps = []
    g.fit(*train, seed=3, on_step=lambda step, losses: steps.append((step, losses)))
    return kind, ema, g, steps


def test_trains_reporting_every_step(trained):
    kind, _, g, steps = trained
    assert steps and [s for s, _ in steps] == list(range(len(steps)))  # one global count, also across classes
    assert g.steps_done == len(steps)
    assert all(np.isfinite(v) for _, losses in steps for k, v in losses.items() if k.startswith("loss"))
    if kind != "cgan":  # PerClass: the hook says which class each step trained
        assert {losses["class"] for _, losses in steps} == set(map(float, range(CLASSES)))


def test_samples_every_class_at_the_data_sets_size(trained):
    _, _, g, _ = trained
    for c in range(CLASSES):
        images = g.sample(5, c, seed=11)
        assert images.shape == (5, SIZE, SIZE) and images.dtype == np.uint8
    assert g.sample(0, 0, seed=1).shape == (0, SIZE, SIZE)
    assert g.sample(1, 6, seed=1).shape == (1, SIZE, SIZE)


def test_same_seed_same_images_other_seed_other_images(trained):
    _, _, g, _ = trained
    a, b, other = g.sample(6, 2, seed=5), g.sample(6, 2, seed=5), g.sample(6, 2, seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, other)
    assert not np.array_equal(a[0], a[1])  # different noise within one call, too


def test_save_and_load_into_a_fresh_instance(trained, tmp_path):
    kind, ema, g, _ = trained
    g.save(tmp_path)
    assert (tmp_path / "weights.pt").is_file()
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta == {"values": g.values, "image_size": SIZE, "num_classes": CLASSES}
    assert meta["values"]["type"] == kind and meta["values"]["ema"] == ema

    fresh = build_generator(meta["values"], meta["image_size"], meta["num_classes"], CPU)
    before = fresh.sample(4, 1, seed=9)
    fresh.load(tmp_path)
    for c in (0, 1, 6):
        assert np.array_equal(fresh.sample(4, c, seed=9), g.sample(4, c, seed=9))
    assert not np.array_equal(before, fresh.sample(4, 1, seed=9))  # the weights did change something


def test_ema_copy_is_what_samples(trained):
    kind, ema, g, _ = trained
    model = g if kind == "cgan" else g.models[3]
    if ema == 0:
        assert model.g_ema is None and "g_ema" not in model.networks()
        return
    assert model.g_ema is not None and "g_ema" in model.networks()
    with_ema = g.sample(4, 3, seed=2)
    model.g_ema, kept = None, model.g_ema
    try:
        live = g.sample(4, 3, seed=2)
    finally:
        model.g_ema = kept
    assert not np.array_equal(with_ema, live)
    assert np.array_equal(g.sample(4, 3, seed=2), with_ema)


@pytest.mark.parametrize("mode", ["none", "diffaugment", "ada"])
@pytest.mark.parametrize("kind", TYPES)
def test_every_d_augmentation_mode_trains(kind, mode, small):
    g = build(kind, augment=mode, ada_kimg=0.1)
    ps = []
    g.fit(*small, seed=0, on_step=lambda step, losses: ps.append(losses["ada_p"]))
    assert ps and all(0.0 <= p <= 1.0 for p in ps)
    if mode != "ada":
        assert set(ps) == {0.0}
    assert g.sample(3, 0, seed=1).shape == (3, SIZE, SIZE)


def test_a_class_with_one_image_trains_despite_batch_norm(small):
    x, y = small
    one = y == 5
    assert one.sum() == 1
    g = build("gan")  # batch norm in an MLP: a batch of one would fail
    g.fit(x[one], y[one], seed=0)
    assert g.sample(2, 5, seed=0).shape == (2, SIZE, SIZE)


def test_ada_probability_rises_when_d_is_confident_on_reals_and_falls_otherwise():
    aug = DAugment("ada", ada_target=0.6, ada_kimg=0.1, ada_interval=4)  # 100 images move p from 0 to 1
    confident, unsure = torch.full((16,), 3.0), torch.tensor([1.0, -1.0] * 8)
    history = []
    for _ in range(8):
        aug.update(confident)
        history.append(float(aug.p))
    assert history[2] == 0.0 and history[3] == pytest.approx(0.64)  # adjusted once every 4 updates, by 64/100
    assert history[-1] == 1.0  # clamped
    for _ in range(4):
        aug.update(unsure)  # E[sign] = 0 < target
    assert float(aug.p) == pytest.approx(0.36)
    for _ in range(12):
        aug.update(-confident)
    assert float(aug.p) == 0.0

    x = torch.rand(8, 1, 64, 64) * 2 - 1
    aug.p.fill_(1.0)
    out = aug(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    aug.p.fill_(0.0)
    assert torch.equal(aug(x), x)
    assert torch.equal(DAugment("none")(x), x)
    diff = DAugment("diffaugment")
    out = diff(x.requires_grad_())
    out.sum().backward()  # differentiable: G learns through it
    assert out.shape == x.shape and x.grad is not None
    for mode in ("diffaugment", "none"):
        plain = DAugment(mode)
        plain.update(confident)
        assert float(plain.p) == 0.0  # only ADA adapts


def test_watchdog_collapse_needs_consecutive_confident_steps():
    dog = Watchdog(collapse_steps=3)
    dog.check(0, {"loss_d": 0.01}, 0.995, 0.005)
    dog.check(1, {"loss_d": 0.01}, 0.995, 0.005)
    dog.check(2, {"loss_d": 0.5}, 0.98, 0.005)  # D unsure on reals: the streak resets
    dog.check(3, {"loss_d": 0.01}, 0.999, 0.02)  # D unsure on fakes: resets again
    dog.check(4, {"loss_d": 0.01}, 0.995, 0.005)
    dog.check(5, {"loss_d": 0.01}, 0.99, 0.01)
    with pytest.raises(Diverged) as err:
        dog.check(6, {"loss_d": 0.01}, 1.0, 0.0)
    assert err.value.step == 6 and "collapse" in err.value.why


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_watchdog_stops_non_finite_losses(bad):
    dog = Watchdog()
    dog.check(0, {"loss_d": 1.0, "loss_g": 1.0})  # no probabilities: only the finiteness check
    with pytest.raises(Diverged) as err:
        dog.check(7, {"loss_d": 1.0, "loss_g": bad}, 0.5, 0.5)
    assert err.value.step == 7 and "loss_g" in str(err.value)


def test_nan_from_the_discriminator_raises_diverged_at_its_step(small, monkeypatch):
    from fercore.generators.cgan import CGANDiscriminator

    forward, calls = CGANDiscriminator.forward, []

    def poisoned(self, x, labels):
        calls.append(1)
        out = forward(self, x, labels)
        return out * float("nan") if len(calls) > 3 * 2 else out  # 3 D calls per step (real, fake, G's fake)

    monkeypatch.setattr(CGANDiscriminator, "forward", poisoned)
    steps = []
    with pytest.raises(Diverged) as err:
        build("cgan", batch_size=4).fit(*small, seed=0, on_step=lambda step, losses: steps.append(step))
    assert err.value.step == 2 and steps == [0, 1] and "nan" in err.value.why


def test_per_class_divergence_reports_the_global_step_and_class(train, monkeypatch):
    g = build("gan")
    x, y = train
    target = g.models[2].g
    forward = type(target).forward

    def exploding(self, z, labels=None):
        out = forward(self, z, labels)
        return out * float("inf") if self is target else out

    monkeypatch.setattr(type(target), "forward", exploding)
    steps = []
    with pytest.raises(Diverged) as err:
        g.fit(x, y, seed=0, on_step=lambda step, losses: steps.append(step))
    assert err.value.step == len(steps) > 0  # classes 0 and 1 trained, class 2's first step failed
    assert err.value.why.startswith("class 2:")


def test_frozen_generator_config_collapses(tiny_faces):
    """A plain config (no patching) that makes a GAN collapse: G barely moves (lr_g at its minimum) while D learns at
    2e-3, so D soon wins completely. The MLP GAN's network on the tiny training split stopped at steps 94-135 for
    initial weights 0-3 with a 25-step watchdog (cgan with width 8 and the default 200-step watchdog: steps 218-286
    in 12 of 12, but that takes minutes); at most 20 epochs x 17 steps are allowed here."""
    from fercore.generators.adversarial import AdversarialSetup, train_adversarial

    values = gen_values("gan", lr_g=1e-6, lr_d=2e-3, epochs=20)
    model = build("gan", lr_g=1e-6, lr_d=2e-3).models[0]
    with pytest.raises(Diverged) as err:
        train_adversarial(AdversarialSetup(model.g, model.d, values["latent_dim"], SIZE), *tiny_faces.split("train"),
                          values, CPU, seed=0, watchdog=Watchdog(collapse_steps=25))
    assert "collapsed" in err.value.why and 25 <= err.value.step < 20 * 17


class _Recorder(Generator):
    """An unconditional stand-in: remembers what it trained on; samples are filled with its images' mean."""

    def fit(self, images, labels, seed, on_step=None):
        self.images, self.labels, self.seed = images, labels, seed
        self.steps_done = len(images)
        for step in range(self.steps_done):
            if on_step is not None:
                on_step(step, {"loss_d": 0.0})

    def sample(self, n, label, seed):
        assert label == 0
        return np.full((n, self.image_size, self.image_size), int(self.images.mean()), np.uint8)


class _PerClassRecorder(PerClass):
    inner = _Recorder


def test_per_class_trains_one_model_per_present_class_and_samples_from_it():
    labels = np.array([0, 0, 2, 2, 2, 6])
    images = np.stack([np.full((SIZE, SIZE), 10 * (c + 1), np.uint8) for c in labels])
    g = _PerClassRecorder({"type": "test"}, SIZE, CLASSES, CPU)
    hooked = []
    g.fit(images, labels, seed=4, on_step=lambda step, losses: hooked.append((step, losses["class"])))

    for c in range(CLASSES):
        if c in (0, 2, 6):
            model = g.models[c]
            assert np.array_equal(model.images, images[labels == c]) and set(model.labels) == {0}
            assert model.seed == 4 * 100 + c
            assert (g.sample(3, c, seed=0) == 10 * (c + 1)).all()
        else:
            assert not hasattr(g.models[c], "images")  # no images of this class: no training
    assert hooked == [(0, 0.0), (1, 0.0), (2, 2.0), (3, 2.0), (4, 2.0), (5, 6.0)]
    assert g.steps_done == 6


def test_per_class_real_type_keeps_models_apart(small):
    x, y = small
    g = build("gan")
    g.fit(x, y, seed=0)
    for c in (0, 3):
        assert np.array_equal(g.sample(4, c, seed=1), g.models[c].sample(4, 0, seed=1))
    assert not np.array_equal(g.sample(4, 0, seed=1), g.sample(4, 3, seed=1))
    state = g.state_dict()
    assert {k.split(".")[0] for k in state} == {f"class{c}" for c in range(CLASSES)}


@pytest.mark.parametrize("kind", ["gan", "dcgan"])
def test_params_are_declared_and_validated(kind):
    values = gen_values(kind)
    for key in ("lr_g", "lr_d", "beta1", "beta2", "d_steps", "augment", "ada_target", "ada_kimg", "ema", "width"):
        assert key in values
    with pytest.raises(ConfigError):
        gen_values(kind, width=1)
    with pytest.raises(ConfigError):
        gen_values(kind, augment="mixup")
    defaults = dict(resolve({"generator.type": kind}).generator.values)
    assert defaults["latent_dim"] == 100 and defaults["width"] <= 32


def test_diverged_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(Diverged(12, "loss_d is nan")))
    assert isinstance(err, Diverged) and err.step == 12 and err.why == "loss_d is nan"
    assert str(err) == "diverged at step 12: loss_d is nan"


@pytest.mark.parametrize("resolution", [32, 64])
def test_cgan_resolution_sets_what_d_sees_and_output_stays_data_size(small, resolution):
    g = build("cgan", resolution=resolution)
    assert g.g(torch.randn(2, 16), torch.tensor([0, 3])).shape == (2, 1, resolution, resolution)
    g.fit(*small, seed=0)
    images = g.sample(5, 3, seed=1)
    assert images.shape == (5, SIZE, SIZE) and images.dtype == np.uint8


def test_cgan_projection_discriminator_sees_the_image_alone_and_uses_the_label(small):
    g = build("cgan", resolution=32, conditioning="projection")
    assert g.d.features[0].in_channels == 1  # no label mask channels
    x = torch.randn(2, 1, 32, 32)
    g.d.eval()
    same_image = torch.cat([x[:1], x[:1]])
    logits = g.d(same_image, torch.tensor([0, 5]))
    assert logits.shape == (2,) and not torch.allclose(logits[0], logits[1])  # the label changes D's verdict
    g.fit(*small, seed=0)
    assert g.sample(3, 5, seed=0).shape == (3, SIZE, SIZE)
