"""`stylegan`: both resolutions and conditionings train and sample deterministically, save/load round-trips (ADA's p
included), ADA moves p, demodulation bounds a modulated conv's output, and the R1 penalty changes D's update."""
import numpy as np
import pytest
import torch

from fercore.config import resolve
from fercore.errors import ConfigError
from fercore.generators import build_generator
from fercore.generators.stylegan_networks import ModulatedConv2d, StyleDiscriminator, StyleGenerator

CPU = torch.device("cpu")
TINY = {"generator.epochs": 1, "generator.width": 4, "generator.latent_dim": 16, "generator.batch_size": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def faces(tiny_faces):
    """At most 8 training images per class (the smallest class has fewer): one batch per class, seconds to train."""
    images, labels = tiny_faces.split("train")
    keep = np.concatenate([np.flatnonzero(labels == c)[:8] for c in range(7)])
    return images[keep], labels[keep]


def make(**overrides):
    flat = {"generator.type": "stylegan", **TINY, **{f"generator.{k}": v for k, v in overrides.items()}}
    torch.manual_seed(0)  # the initial weights, as a trial seeds them; fit() seeds the rest
    return build_generator(resolve(flat).generator.values, 48, 7, CPU)


def trained(faces, **overrides):
    gen = make(**overrides)
    gen.fit(*faces, seed=0)
    return gen


@pytest.mark.slow
@pytest.mark.parametrize("conditioning", ["per_class", "label"])
@pytest.mark.parametrize("resolution", [32, 64])
def test_trains_samples_and_round_trips(faces, tmp_path, resolution, conditioning):
    steps = []
    gen = make(resolution=resolution, conditioning=conditioning)
    gen.fit(*faces, seed=0, on_step=lambda step, losses: steps.append(losses))
    assert gen.steps_done == len(steps) > 0
    assert all(np.isfinite(losses["loss_d"]) and np.isfinite(losses["loss_g"]) for losses in steps)
    for c in range(7):
        x = gen.sample(5, c, seed=3)
        assert x.shape == (5, 48, 48) and x.dtype == np.uint8
        np.testing.assert_array_equal(x, gen.sample(5, c, seed=3))
        assert not np.array_equal(x, gen.sample(5, c, seed=4))
    assert gen.sample(0, 0, seed=3).shape == (0, 48, 48)
    assert not np.array_equal(gen.sample(4, 0, seed=3), gen.sample(4, 1, seed=3))  # the class matters

    gen.save(tmp_path)
    fresh = make(resolution=resolution, conditioning=conditioning)
    fresh.load(tmp_path)
    for c in range(7):
        np.testing.assert_array_equal(fresh.sample(6, c, seed=11), gen.sample(6, c, seed=11))


def test_params_defaults_and_ranges():
    values = resolve({"generator.type": "stylegan"}).generator.values
    assert values["resolution"] == 32 and values["conditioning"] == "per_class"
    assert values["ema"] > 0 and values["r1_gamma"] > 0 and values["augment"] == "none"
    # Its own defaults override the shared GAN ones for this type only.
    assert resolve({"generator.type": "cgan"}).generator.values["ema"] == 0.0
    for bad in ({"generator.resolution": 48}, {"generator.conditioning": "onehot"}, {"generator.mapping_layers": 0},
                {"generator.r1_gamma": -1.0}):
        with pytest.raises(ConfigError):
            resolve({"generator.type": "stylegan", **bad})


def test_sampling_uses_the_ema_copy(faces):
    gen = trained(faces, conditioning="label")
    model = gen.models()[0]
    assert model.g_ema is not None
    assert any(not torch.equal(a, b) for a, b in zip(model.g.parameters(), model.g_ema.parameters()))
    # The EMA is bias-corrected: after a single step the untrained start has dropped out and it equals G.
    one = trained((faces[0][:8], faces[1][:8]), conditioning="label", ema=0.99).models()[0]
    assert one.steps_done == 1
    for a, b in zip(one.g.parameters(), one.g_ema.parameters()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    no_ema = trained(faces, conditioning="label", ema=0.0)
    assert no_ema.models()[0].g_ema is None
    assert "g_ema.const" not in no_ema.state_dict()
    assert no_ema.sample(3, 2, seed=1).shape == (3, 48, 48)


@pytest.mark.parametrize("conditioning", ["per_class", "label"])
def test_ada_moves_p_and_saves_it(faces, tmp_path, conditioning):
    ps = []
    ada = dict(conditioning=conditioning, augment="ada", ada_target=0.0, ada_kimg=0.1, epochs=2, batch_size=4)
    gen = make(**ada)  # 4 D steps per class: one ADA update (every 4 D steps), which a target of 0 makes move p
    gen.fit(*faces, seed=0, on_step=lambda step, losses: ps.append(losses["ada_p"]))
    assert max(ps) > 0  # p started at 0 and moved
    saved = {k: v for k, v in gen.state_dict().items() if k.endswith("augment.p")}
    assert len(saved) == (7 if conditioning == "per_class" else 1)
    gen.save(tmp_path)
    fresh = make(**ada)
    fresh.load(tmp_path)
    for old, new in zip(gen.models(), fresh.models()):
        assert float(new.augment.p) == float(old.augment.p)
    assert any(float(m.augment.p) > 0 for m in fresh.models())


def test_ada_off_keeps_p_at_zero(faces):
    ps = []
    gen = make(conditioning="label", augment="none")
    gen.fit(*faces, seed=0, on_step=lambda step, losses: ps.append(losses["ada_p"]))
    assert ps and set(ps) == {0.0}


def test_demodulation_keeps_output_scale_bounded():
    torch.manual_seed(0)
    x = torch.randn(8, 32, 16, 16)
    stds = {}
    for demodulate in (True, False):
        conv = ModulatedConv2d(32, 32, 3, w_dim=16, demodulate=demodulate)
        for style_scale in (0.01, 1.0, 30.0):
            with torch.no_grad():
                conv.affine.bias.zero_()
                conv.affine.weight.mul_(style_scale)
            stds[demodulate, style_scale] = float(conv(x, torch.randn(8, 16)).detach().std())
            with torch.no_grad():
                conv.affine.weight.div_(style_scale)
    for s in (0.01, 1.0, 30.0):
        assert 0.5 < stds[True, s] < 1.5, stds  # unit-variance input stays O(1) whatever the styles
    assert stds[False, 0.01] < 0.1 and stds[False, 30.0] > 10, stds  # without it the style sets the scale


def test_generator_and_discriminator_shapes():
    for res in (32, 64):
        g, d = StyleGenerator(16, res, 4, 3, num_classes=7), StyleDiscriminator(res, 4, num_classes=7)
        y = torch.arange(6) % 7
        img = g(torch.randn(6, 16), y)
        assert img.shape == (6, 1, res, res) and torch.isfinite(img).all()
        assert d(img, y).shape == (6,)
    # An odd batch (a small class's last batch) still gets minibatch-stddev groups.
    d = StyleDiscriminator(32, 4)
    assert d(torch.randn(5, 1, 32, 32), torch.zeros(5, dtype=torch.long)).shape == (5,)


def test_r1_penalty_path_runs_and_changes_d(faces):
    """One D step (the first is an R1 step) with and without the penalty; a large gamma must change D's update."""
    one_step = (faces[0][:8], faces[1][:8])
    weights = {}
    for gamma in (0.0, 10.0):
        gen = trained(one_step, conditioning="label", r1_gamma=gamma)
        assert gen.steps_done == 1
        weights[gamma] = gen.models()[0].d.state_dict()
        assert all(torch.isfinite(t).all() for t in weights[gamma].values())
    assert any(not torch.equal(weights[0.0][k], weights[10.0][k]) for k in weights[0.0])
