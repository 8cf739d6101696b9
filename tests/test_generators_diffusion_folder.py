"""The `diffusion` generator (schedule, DDIM sampler, guidance, seeding, save/load, divergence) and the `folder`
generator (reading a class-per-folder tree of images made elsewhere, seeded draws, errors, save/load)."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fercore.config import resolve
from fercore.errors import ConfigError, DataError
from fercore.generators import Diverged, build_generator
from fercore.generators import diffusion as diff
from fercore.generators.unet import UNet
from fercore.labels import CLASS_INDEX, CLASSES

CPU = torch.device("cpu")
SIZE = 48
TINY = {"generator.type": "diffusion", "generator.epochs": 1, "generator.batch_size": 32, "generator.width": 8,
        "generator.noise_steps": 20, "generator.sampling_steps": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make(overrides=None, size=SIZE):
    values = resolve({**TINY, **(overrides or {})}).generator.values
    return build_generator(dict(values), size, len(CLASSES), CPU)


@pytest.fixture(scope="module")
def small_train(tiny_faces):
    """Up to 8 training faces per class: every class present, two optimiser steps at batch 32."""
    x, y = tiny_faces.split("train")
    keep = np.concatenate([np.flatnonzero(y == c)[:8] for c in range(len(CLASSES))])
    return x[keep], y[keep]


@pytest.fixture(scope="module")
def fitted(small_train):
    gen = make()
    losses = []
    gen.fit(*small_train, seed=0, on_step=lambda step, logs: losses.append((step, logs["loss"])))
    return gen, losses


# ------------------------------------------------------------------------------------------------ diffusion

def test_diffusion_trains_and_reports_every_step(fitted, small_train):
    gen, losses = fitted
    steps = -(-len(small_train[0]) // 32)
    assert [s for s, _ in losses] == list(range(steps)) and gen.steps_done == steps
    assert all(np.isfinite(v) and 0 < v < 10 for _, v in losses)


def test_diffusion_samples_every_class_at_data_size(fitted, monkeypatch):
    gen, _ = fitted
    for c in range(len(CLASSES)):
        out = gen.sample(3, c, seed=c)
        assert out.shape == (3, SIZE, SIZE) and out.dtype == np.uint8
    assert gen.sample(0, 0, seed=0).shape == (0, SIZE, SIZE)
    monkeypatch.setattr(diff, "SAMPLE_CHUNK", 2)  # Several DDIM batches still give exactly n images.
    assert gen.sample(5, 1, seed=0).shape == (5, SIZE, SIZE)
    with pytest.raises(ValueError):
        gen.sample(1, len(CLASSES), seed=0)


def test_diffusion_sampling_is_seeded(fitted):
    gen, _ = fitted
    a, b, c = gen.sample(4, 3, seed=7), gen.sample(4, 3, seed=7), gen.sample(4, 3, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_diffusion_training_is_seeded(small_train):
    x, y = small_train[0][:16], small_train[1][:16]
    runs = []
    for seed in (3, 3, 4):
        gen = make()
        gen.fit(x, y, seed=seed)
        runs.append((gen.state_dict(), gen.sample(2, 5, seed=0)))
    (w1, s1), (w2, s2), (w3, s3) = runs
    assert all(torch.equal(w1[k], w2[k]) for k in w1) and np.array_equal(s1, s2)
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


def test_diffusion_save_load_gives_identical_samples(fitted, tmp_path):
    gen, _ = fitted
    gen.save(tmp_path / "g")
    fresh = make()
    assert not np.array_equal(fresh.sample(3, 2, seed=1), gen.sample(3, 2, seed=1))  # not trained yet
    fresh.load(tmp_path / "g")
    assert np.array_equal(fresh.sample(3, 2, seed=1), gen.sample(3, 2, seed=1))
    assert any(k.startswith("ema.") for k in torch.load(tmp_path / "g" / "weights.pt", weights_only=True))


def test_guidance_changes_the_samples(fitted):
    gen, _ = fitted
    state = gen.state_dict()
    outs = {}
    for g in (0.0, 1.0, 3.0):
        other = make({"generator.guidance": g})
        other.load_state_dict(state)
        outs[g] = other.sample(3, 4, seed=11)
    assert not np.array_equal(outs[0.0], outs[3.0])
    assert not np.array_equal(outs[1.0], outs[3.0])


def test_ema_off_and_eps_prediction_train(small_train):
    gen = make({"generator.ema": 0.0, "generator.prediction": "eps", "generator.min_snr": 0.0})
    gen.fit(*small_train, seed=0)
    assert gen.ema is None and set(gen.networks()) == {"net"}
    assert gen.sample(2, 0, seed=0).shape == (2, SIZE, SIZE)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("steps", [10, 1000, 4000])
def test_noise_schedule(kind, steps):
    ac = diff.make_schedule(kind, steps)
    assert ac.shape == (steps,)
    assert torch.all(ac[1:] < ac[:-1]), "alphas_cumprod must fall strictly"
    assert 0 < ac[-1] < 0.01 and ac[0] < 1
    if steps >= 1000:
        assert ac[0] > 0.999  # the first step adds almost no noise, the last leaves almost no signal


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weights_cap_the_x0_weight(prediction):
    """Whatever the target, the weight on the implied x0 error is min(SNR, gamma): the point of Min-SNR."""
    ac = diff.make_schedule("cosine", 1000)
    snr = ac / (1 - ac)
    x0_scale = snr if prediction == "eps" else snr + 1  # squared error of the target per squared x0 error
    w = diff.loss_weights(ac, prediction, 5.0)
    assert torch.allclose(w * x0_scale, snr.clamp(max=5.0))
    assert torch.equal(diff.loss_weights(ac, prediction, 0.0), torch.ones_like(ac))


def test_ddim_timesteps():
    assert diff.ddim_timesteps(50, 50) == list(range(49, -1, -1))
    assert diff.ddim_timesteps(1000, 1) == [999]
    ts = diff.ddim_timesteps(1000, 25)
    assert len(ts) == 25 and ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))


@pytest.mark.parametrize("sampling_steps", [1, 7, 50])
def test_ddim_recovers_a_point_mass(sampling_steps):
    """If every training image were X0, the ideal noise estimate is (x_t - sqrt(a) X0) / sqrt(1 - a); DDIM then
    lands on X0 from any start, in any number of steps."""
    ac = diff.make_schedule("cosine", 50)
    target = torch.linspace(-0.9, 0.9, 64, dtype=torch.float64).view(1, 1, 8, 8)

    def eps(x, t):
        return (x - ac[t].sqrt() * target) / (1 - ac[t]).sqrt()

    x_T = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = diff.ddim_sample(eps, x_T, ac, diff.ddim_timesteps(50, sampling_steps))
    assert torch.allclose(out, target.expand_as(out), atol=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_ddim_maps_unit_noise_to_the_data_spread(kind):
    """Data N(0, s^2) per pixel has the ideal noise estimate sqrt(1-a) x / (a s^2 + 1 - a), under which the
    probability-flow ODE that DDIM discretises maps x_T ~ N(0, 1) to s * x_T. With sampling_steps == noise_steps
    DDIM must get within 1 % of that, and fewer steps must be no closer: a wrong schedule or a sampler that
    mixes up timesteps misses."""
    s, steps = 0.4, 1000
    ac = diff.make_schedule(kind, steps)

    def eps(x, t):
        return (1 - ac[t]).sqrt() * x / (ac[t] * s**2 + 1 - ac[t])

    x_T = torch.randn(4096, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).view(-1, 1, 1, 1)
    gains = {}
    for sampling_steps in (25, 100, steps):
        out = diff.ddim_sample(eps, x_T, ac, diff.ddim_timesteps(steps, sampling_steps), clip=False)
        gain = out / x_T / s  # without clipping the map is linear: one gain for every pixel
        assert torch.allclose(gain, gain[0]), "DDIM with a linear noise estimate must be a linear map"
        gains[sampling_steps] = gain[0].item()
    assert abs(gains[steps] - 1) < 0.01
    assert abs(gains[25] - 1) > abs(gains[100] - 1) > abs(gains[steps] - 1)
    clipped = diff.ddim_sample(eps, 3 * x_T, ac, diff.ddim_timesteps(steps, steps))
    assert clipped.abs().max() <= 1.0  # the image range, even from far-out noise


class PointMassOracle(torch.nn.Module):
    """The ideal network if every training image were one flat grey X0: its exact eps or v for any x_t."""

    def __init__(self, gen, x0):
        super().__init__()
        self.ac, self.x0 = gen.alphas_cumprod, x0
        self.steps, self.prediction = gen.values["noise_steps"], gen.values["prediction"]

    def forward(self, x, t_input, y):
        t = torch.round(t_input * self.steps / 1000).long()
        a = self.ac[t].float()[:, None, None, None]
        eps = (x - a.sqrt() * self.x0) / (1 - a).sqrt()
        return eps if self.prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * self.x0


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("sampling_steps", [1, 5, 20])
def test_sample_with_an_ideal_network_returns_the_data(prediction, sampling_steps):
    """End to end through sample(): timestep scaling, guidance, the eps/v conversion, DDIM and uint8 output."""
    gen = make({"generator.prediction": prediction, "generator.sampling_steps": sampling_steps})
    gen.ema = PointMassOracle(gen, x0=0.2)
    out = gen.sample(3, 2, seed=0)
    assert np.all(out == round(1.2 * 127.5))


def test_full_length_sampling_of_a_trained_model(fitted):
    gen, _ = fitted
    full = make({"generator.sampling_steps": 20})  # == noise_steps: every training timestep visited
    full.load_state_dict(gen.state_dict())
    out = full.sample(2, 6, seed=0)
    assert out.shape == (2, SIZE, SIZE) and out.dtype == np.uint8
    assert not np.array_equal(out, gen.sample(2, 6, seed=0))


def test_nan_loss_raises_diverged(small_train, monkeypatch):
    monkeypatch.setattr(UNet, "forward", lambda self, x, t, y: torch.full_like(x, float("nan")))
    gen = make()
    with pytest.raises(Diverged) as err:
        gen.fit(*small_train, seed=0)
    assert err.value.step == 0 and "nan" in str(err.value)


def test_sampling_steps_above_noise_steps_is_rejected():
    with pytest.raises(ConfigError, match=r"generator\.sampling_steps.*generator\.noise_steps"):
        make({"generator.noise_steps": 10, "generator.sampling_steps": 11})
    with pytest.raises(ConfigError, match="generator.guidance"):
        resolve({**TINY, "generator.guidance": 25.0})


@pytest.mark.parametrize("resolution", [48, 64])
def test_other_resolutions_return_data_size(resolution):
    gen = make({"generator.resolution": resolution, "generator.width": 4, "generator.epochs": 0})
    gen.fit(np.zeros((0, SIZE, SIZE), np.uint8), np.zeros(0, np.int64), seed=0)
    assert gen.sample(2, 0, seed=0).shape == (2, SIZE, SIZE)


# ------------------------------------------------------------------------------------------------ folder

# (folder, file name, mode, size, fill): every image one flat colour, so each can be recognised after reading.
TREE = [
    ("happy", "a.png", "RGB", (64, 64), (200, 100, 50)),
    ("happy", "b.png", "RGB", (64, 64), (10, 20, 30)),
    ("happy", "c.jpg", "L", (64, 64), 90),
    ("happiness", "d.png", "RGB", (100, 80), (0, 0, 255)),  # an alias folder, a non-square image
    ("happiness/more", "e.png", "RGBA", (30, 30), (255, 255, 255, 255)),  # nested one level deeper
    ("Sad", "f.png", "L", (48, 48), 33),
]


def _gray(fill):
    if isinstance(fill, int):
        return fill
    r, g, b = fill[:3]
    return round((r * 299 + g * 587 + b * 114) / 1000)  # PIL's convert("L")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "synthetic"
    for folder, name, mode, size, fill in TREE:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, fill).save(root / folder / name)
    (root / "prompts.txt").write_text("a face expressing joy\n")  # beside the class folders: not an image
    (root / "happy" / ".DS_Store").write_bytes(b"\0")  # hidden: skipped
    return root


def folder_gen(path):
    values = resolve({"generator.type": "folder", "generator.path": str(path)}).generator.values
    return build_generator(dict(values), SIZE, len(CLASSES), CPU)


def fit(gen):
    gen.fit(np.zeros((0, SIZE, SIZE), np.uint8), np.zeros(0, np.int64), seed=0)
    return gen


def test_folder_reads_grayscale_resized_with_aliases(tree):
    gen = fit(folder_gen(tree))
    counts = [0] * len(CLASSES)
    counts[CLASS_INDEX["happy"]], counts[CLASS_INDEX["sad"]] = 5, 1
    assert gen.counts() == counts
    happy = gen.images[CLASS_INDEX["happy"]]
    assert happy.shape == (5, SIZE, SIZE) and happy.dtype == np.uint8
    # Flat colours stay flat through the resize, so each image is one grey value: the expected ones, in file order.
    assert all(len(np.unique(im)) == 1 for im in happy)
    # Class folders in sorted order (happiness/ before happy/), files sorted within each.
    fills = {name: fill for _, name, _, _, fill in TREE}
    order = ("d.png", "e.png", "a.png", "b.png", "c.jpg")
    assert [int(im[0, 0]) for im in happy] == [_gray(fills[name]) for name in order]
    assert int(gen.images[CLASS_INDEX["sad"]][0, 0, 0]) == 33


def test_folder_draws_are_seeded_and_replace_only_when_short(tree):
    gen = fit(folder_gen(tree))
    happy = CLASS_INDEX["happy"]
    values = lambda out: [int(im[0, 0]) for im in out]  # noqa: E731
    a, b = gen.sample(4, happy, seed=1), gen.sample(4, happy, seed=1)
    assert a.shape == (4, SIZE, SIZE) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert len(set(values(a))) == 4  # enough images: no repeats
    every = sorted(_gray(fill) for folder, _, _, _, fill in TREE if folder.startswith("happ"))
    assert sorted(values(gen.sample(5, happy, seed=2))) == every  # all five, each once
    draws = {tuple(values(gen.sample(5, happy, seed=s))) for s in range(6)}
    assert len(draws) > 1  # the seed changes the draw
    many = gen.sample(12, happy, seed=3)  # more than the folder holds: drawn with replacement
    assert many.shape == (12, SIZE, SIZE) and set(values(many)) <= set(every)
    assert np.array_equal(many, gen.sample(12, happy, seed=3))
    sad = gen.sample(3, CLASS_INDEX["sad"], seed=0)
    assert np.all(sad == 33)


def test_folder_class_without_images(tree):
    gen = fit(folder_gen(tree))
    angry = CLASS_INDEX["angry"]
    assert gen.sample(0, angry, seed=0).shape == (0, SIZE, SIZE)  # a class the trial does not top up
    with pytest.raises(DataError, match="angry"):
        gen.sample(2, angry, seed=0)


def test_folder_path_errors(tmp_path):
    with pytest.raises(ConfigError, match="generator.path"):
        folder_gen("")
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"generator\.path.*nowhere.*subfolder"):
        fit(folder_gen(missing))
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        fit(folder_gen(tmp_path / "empty"))


def test_folder_unknown_class_folder(tree):
    (tree / "confused").mkdir()
    with pytest.raises(DataError, match=r"'confused'.*angry, disgust, fear, happy, sad, surprise, neutral"):
        fit(folder_gen(tree))


def test_folder_unreadable_image(tree):
    (tree / "happy" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="broken.png"):
        fit(folder_gen(tree))


def test_folder_save_load_without_the_folder(tree, tmp_path):
    gen = fit(folder_gen(tree))
    before = {c: gen.sample(7, c, seed=5) for c in (CLASS_INDEX["happy"], CLASS_INDEX["sad"])}
    gen.save(tmp_path / "cached")
    shutil.rmtree(tree)
    fresh = folder_gen(tree)
    fresh.load(tmp_path / "cached")
    assert fresh.counts() == gen.counts()
    for c, images in before.items():
        assert np.array_equal(fresh.sample(7, c, seed=5), images)
    with pytest.raises(DataError, match="angry"):
        fresh.sample(1, CLASS_INDEX["angry"], seed=0)
