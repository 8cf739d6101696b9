"""Images of any size and colour (data.image_size, data.channels): read, kept through transforms, classifiers,
generators, copy hashes and a whole trial. Colour arrays are N x H x W x 3 (fercore.images)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fercore import trial
from fercore.cache import entries
from fercore.classifiers import CLASSIFIERS, build_classifier
from fercore.classifiers.weights import IMAGENET_MEAN, IMAGENET_STD, load_weights
from fercore.config import resolve
from fercore.data import DataOptions, load, make_faceset
from fercore.data.faceset import FaceSet
from fercore.data.fer2013 import read_fer2013_csv
from fercore.data.folders import load_gray, read_image_folders
from fercore.errors import ConfigError
from fercore.generators import build_generator
from fercore.images import channels_of, from_unit, to_gray, to_unit, with_channels
from fercore.labels import CLASSES
from fercore.metrics.copies import build_index, nearest_copy
from fercore.results.tensorboard import _png_to_array
from fercore.transforms import Strengths, augment, normalise
from tests.conftest import TINY_TRIAL

CPU = torch.device("cpu")
# One colour per class folder (FER2013 names), so a read image's class can be told from its pixels.
TREE_COLOURS = {"angry": (255, 0, 0), "happy": (0, 255, 0), "sad": (0, 0, 255), "surprise": (255, 255, 0)}
SIZES = [(224, 224), (300, 200), (160, 240), (64, 64)]  # square, wide, tall, small: all resized to image_size


def _write_tree(root):
    """ROOT/train/<class>/ and ROOT/test/<class>/: flat-coloured RGB files of several sizes, one gray file per
    class folder (what a mixed data set such as AffectNet holds), and one file per class in test."""
    for split, per_class in (("train", 6), ("test", 2)):
        for name, rgb in TREE_COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = SIZES[i % len(SIZES)]
                Image.new("RGB", size, rgb).save(folder / f"{i}.png")
            Image.new("L", (224, 224), 128).save(folder / "gray.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _write_tree(tmp_path_factory.mktemp("affectnet_like"))


def test_a_colour_tree_is_read_at_96_px_in_rgb_with_colours_kept(tree):
    data = read_image_folders(tree, image_size=96, options=DataOptions(image_size=96, channels=3))
    assert data.images.shape == (len(data.labels), 96, 96, 3) and data.images.dtype == np.uint8
    assert data.channels == 3 and data.image_size == 96
    by_name = {name: CLASSES.index(name) for name in TREE_COLOURS}
    flat = data.images.reshape(len(data.images), -1, 3)
    uniform = (flat == flat[:, :1]).all(axis=(1, 2))
    assert uniform.all()  # Flat-coloured files of any size and shape stay flat after the resize.
    colours = {tuple(int(v) for v in flat[i, 0]) for i in range(len(flat))}
    for name, cls in by_name.items():
        seen = {tuple(int(v) for v in flat[i, 0]) for i in np.flatnonzero(data.labels == cls)}
        assert seen == {TREE_COLOURS[name], (128, 128, 128)}  # A red file stays red; a gray file is gray in RGB.
    assert (255, 0, 0) in colours and (128, 128, 128) in colours


def test_the_same_tree_with_one_channel_is_gray_as_pil_reads_it(tree):
    gray = read_image_folders(tree, image_size=96, options=DataOptions(image_size=96, channels=1))
    colour = read_image_folders(tree, image_size=96, options=DataOptions(image_size=96, channels=3))
    assert gray.images.shape == (len(gray.labels), 96, 96) and gray.channels == 1
    assert np.array_equal(gray.labels, colour.labels) and np.array_equal(gray.splits, colour.splits)
    # Gray is the colour image's luma, as PIL's convert("L") has it: red 76, green 150, blue 29.
    assert np.abs(gray.images.astype(int) - to_gray(colour.images).astype(int)).max() <= 1
    red = gray.labels == CLASSES.index("angry")
    assert set(np.unique(gray.images[red])) == {76, 128}
    # load_gray, the one-channel reader other code calls, is unchanged: stretched, bilinear, luma.
    one = next((tree / "train" / "angry").glob("1.png"))
    assert load_gray(one, 96).shape == (96, 96) and int(load_gray(one, 96)[0, 0]) == 76


def test_data_channels_reaches_the_converted_data_cache_key(tree, tmp_path):
    gray = load(str(tree), cache_dir=tmp_path, options=DataOptions(image_size=64, channels=1))
    colour = load(str(tree), cache_dir=tmp_path, options=DataOptions(image_size=64, channels=3))
    again = load(str(tree), cache_dir=tmp_path, options=DataOptions(image_size=64, channels=3))
    assert gray.images.ndim == 3 and colour.images.shape[1:] == (64, 64, 3)
    assert gray.fingerprint != colour.fingerprint and again.fingerprint == colour.fingerprint


def test_faceset_takes_gray_or_rgb_and_nothing_else():
    labels, splits = np.zeros(2, np.int64), np.zeros(2, np.uint8)
    assert make_faceset(np.zeros((2, 16, 16), np.uint8), labels, splits, "g").channels == 1
    assert make_faceset(np.zeros((2, 16, 16, 3), np.uint8), labels, splits, "c").channels == 3
    with pytest.raises(ValueError, match="N x H x W x 3"):
        FaceSet(np.zeros((2, 16, 16, 2), np.uint8), labels, splits, "bad", "x")


def test_gray_sources_replicate_into_three_channels(tmp_path):
    gray = load("procedural", scale=0.01, seed=0, image_size=32, use_cache=False)
    colour = load("procedural", scale=0.01, seed=0, use_cache=False,
                  options=DataOptions(image_size=32, channels=3))
    assert colour.images.shape == gray.images.shape + (3,)
    assert all(np.array_equal(colour.images[..., c], gray.images) for c in range(3))
    assert colour.fingerprint != gray.fingerprint  # the fingerprint hashes the shape: colour is in every cache key
    csv = tmp_path / "fer.csv"
    pixels = " ".join(str(v) for v in range(16))
    csv.write_text("emotion,pixels,Usage\n" + "".join(f"{i % 7},{pixels},{u}\n" for i, u in
                                                      enumerate(["Training"] * 7 + ["PublicTest", "PrivateTest"])))
    faces = read_fer2013_csv(csv, image_size=4, options=DataOptions(image_size=4, channels=3))
    assert faces.images.shape == (9, 4, 4, 3) and np.array_equal(faces.images[0, :, :, 2].ravel(), np.arange(16))


def test_layout_conversions_round_trip():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    x = to_unit(torch.from_numpy(rgb))
    assert x.shape == (5, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(from_unit(x).numpy(), rgb)
    gray = rgb[..., 0]
    assert to_unit(torch.from_numpy(gray)).shape == (5, 1, 8, 8)
    assert np.array_equal(from_unit(to_unit(torch.from_numpy(gray))).numpy(), gray)
    assert channels_of(rgb) == 3 and channels_of(gray) == 1
    assert np.array_equal(with_channels(gray, 3)[..., 1], gray) and with_channels(gray, 1) is gray
    pil = np.asarray(Image.fromarray(rgb[0]).convert("L"))
    assert np.abs(pil.astype(int) - to_gray(rgb[:1])[0].astype(int)).max() <= 1


@pytest.mark.parametrize("strengths", [Strengths(flip=0.5, translate=3), Strengths(flip=0.5, rotate=15, crop=0.3),
                                       Strengths(flip=0.5, translate=2, erase=0.5)])
def test_batch_transforms_keep_shape_and_move_every_channel_alike(strengths):
    gray = torch.randint(0, 200, (16, 24, 24), dtype=torch.uint8)
    offsets = torch.tensor([0, 20, 40], dtype=torch.uint8)
    rgb = gray[..., None] + offsets  # each channel the same picture, brighter by a channel's own offset
    out_gray = augment(normalise(gray), strengths, torch.Generator().manual_seed(1))
    out_rgb = augment(normalise(rgb), strengths, torch.Generator().manual_seed(1))
    assert out_rgb.shape == (16, 3, 24, 24) and out_gray.shape == (16, 1, 24, 24)
    # Channel 0 is the gray picture, moved exactly as the gray batch was (the same draws); the other channels keep
    # their offset wherever the picture is (erased rectangles are 0 in every channel).
    assert torch.allclose(out_rgb[:, :1], out_gray, atol=1e-5)
    erased = (out_rgb == 0).all(1)
    for c in (1, 2):
        diff = (out_rgb[:, c] - out_rgb[:, 0])[~erased]
        assert torch.allclose(diff, torch.full_like(diff, float(offsets[c]) / 127.5), atol=1e-4)


CHEAP = ("linear", "cnn3", "resemotenet", "resnet18", "mobilenet_v3_small", "shufflenet_v2")
SMALLEST = ("linear", "cnn3", "resemotenet")  # also run at 96 px; the torchvision ones at 96 px are slow-marked


def _classifier(name, size, channels=3):
    flat = {"classifier.backbone": name, "data.image_size": size}
    if name == "resemotenet":
        flat["classifier.width"] = 8
    return build_classifier(resolve(flat).classifier, size, 7, channels)


def _forward_backward(model, size):
    model.train()
    out = model(torch.randn(2, 3, size, size))
    out.sum().backward()
    first = next(p for p in model.parameters() if p.dim() > 1)
    assert out.shape == (2, 7) and first.grad is not None
    return first


@pytest.mark.parametrize("name,size", [(n, 48) for n in CHEAP] + [(n, 96) for n in SMALLEST]
                         + [pytest.param(n, 96, marks=pytest.mark.slow) for n in CHEAP if n not in SMALLEST])
def test_cheap_backbones_take_colour_at_48_and_96_px(name, size):
    first = _forward_backward(_classifier(name, size), size)
    assert first.shape[1] == 3 or name == "linear"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(CLASSIFIERS.names()) - set(CHEAP)))
def test_every_other_backbone_takes_colour_at_48_px(name):
    first = _forward_backward(_classifier(name, 48), 48)
    assert first.shape[1] == 3


def test_linear_head_grows_with_the_channels():
    assert _classifier("linear", 96).head[2].in_features == 3 * 96 * 96
    assert _classifier("linear", 96, channels=1).head[2].in_features == 96 * 96


class _TinyStem(torch.nn.Module):
    def __init__(self, in_channels: int, classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, classes)

    def forward(self, x):
        return self.conv(x)


def test_an_imagenet_file_into_a_colour_model_folds_the_normalisation_per_channel(tmp_path):
    torch.manual_seed(0)
    rgb = _TinyStem(3, 1000).eval()  # ImageNet's 1000-class head: not the model's, so the file is ImageNet's
    torch.save(rgb.state_dict(), tmp_path / "imagenet.pt")
    colour = _TinyStem(3, 7).eval()
    notes = load_weights(colour, str(tmp_path / "imagenet.pt"), "tiny", first_conv="conv", head="head")
    assert any("3 input channels kept" in n for n in notes)
    image = torch.randint(0, 256, (2, 20, 20, 3), dtype=torch.uint8)
    pixel = image.permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = rgb((pixel - mean) / std)
        got = colour(normalise(image))
    assert torch.allclose(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4)
    # A colour model's own file (its head fits) loads as it is: nothing folded.
    torch.save(colour.state_dict(), tmp_path / "own.pt")
    again = _TinyStem(3, 7)
    assert not any("folded" in n for n in load_weights(again, str(tmp_path / "own.pt"), "tiny", "conv", "head"))
    assert torch.equal(again.conv.weight, colour.conv.weight)


GENERATOR_TINY = {"generator.epochs": 1, "generator.batch_size": 8, "generator.width": 4,
                  "generator.latent_dim": 16, "generator.noise_steps": 20, "generator.sampling_steps": 2}
ADVERSARIAL = ("gan", "dcgan", "cgan", "stylegan")


def _values(kind):
    flat = {"generator.type": kind, **GENERATOR_TINY}
    return dict(resolve(flat, drop_inapplicable=True).generator.values)


@pytest.fixture(scope="module")
def colour_train():
    """Two classes of 8 faces each, 32 px, in three channels (procedural gray, replicated)."""
    data = load("procedural", scale=0.01, seed=0, use_cache=False, options=DataOptions(image_size=32, channels=3))
    x, y = data.split("train")
    keep = np.concatenate([np.flatnonzero(y == c)[:8] for c in (0, 1)])
    return x[keep], y[keep]


@pytest.mark.parametrize("kind", ["gan", "cgan", "diffusion"]
                         + [pytest.param(k, marks=pytest.mark.slow) for k in ("dcgan", "stylegan")])
def test_every_generator_fits_and_samples_colour(kind, colour_train, tmp_path):
    x, y = colour_train
    torch.manual_seed(0)
    gen = build_generator(_values(kind), 32, 2, CPU, channels=3)
    gen.fit(x, y, seed=0)
    out = gen.sample(5, 1, seed=3)
    assert out.shape == (5, 32, 32, 3) and out.dtype == np.uint8
    assert gen.sample(0, 0, seed=3).shape == (0, 32, 32, 3)
    gen.save(tmp_path)
    fresh = build_generator(_values(kind), 32, 2, CPU, channels=3)
    fresh.load(tmp_path)
    assert np.array_equal(fresh.sample(5, 1, seed=3), out)
    if kind in ADVERSARIAL:
        scores = gen.discriminator_scores(x[:4], 0)
        assert scores.shape == (4,) and ((0 <= scores) & (scores <= 1)).all()


def test_the_folder_generator_keeps_colour(tree, tmp_path):
    values = dict(resolve({"generator.type": "folder", "generator.path": str(tree / "train")}).generator.values)
    gen = build_generator(values, 40, 7, CPU, channels=3)
    gen.fit(np.zeros((0, 40, 40, 3), np.uint8), np.zeros(0, np.int64), seed=0)
    red = gen.sample(3, CLASSES.index("angry"), seed=0)
    assert red.shape == (3, 40, 40, 3)
    assert {tuple(int(v) for v in img[0, 0]) for img in red} <= {(255, 0, 0), (128, 128, 128)}
    gen.save(tmp_path)
    fresh = build_generator(values, 40, 7, CPU, channels=3)
    fresh.load(tmp_path)
    assert np.array_equal(fresh.sample(3, CLASSES.index("angry"), seed=0), red)


def test_colour_copies_are_found_by_their_luma():
    data = load("procedural", scale=0.01, seed=0, use_cache=False, options=DataOptions(image_size=32, channels=3))
    test = data.split("test")[0][:20]
    index = build_index(test)
    idx, dist = nearest_copy(test[:, :, ::-1], index)  # mirrored colour copies of the test images
    assert (dist == 0).all() and np.array_equal(idx, np.arange(20))
    gray_index = build_index(to_gray(test))
    assert np.array_equal(index.hashes, gray_index.hashes)


def test_a_colour_grid_is_an_rgb_png():
    grid = np.zeros((2, 3, 8, 8, 3), np.uint8)
    grid[1, :, :, :, 0] = 255
    png = trial.grid_png(grid)
    pixels = _png_to_array(png)
    assert pixels.shape == (16, 24, 3) and tuple(pixels[12, 5]) == (255, 0, 0) and tuple(pixels[2, 2]) == (0, 0, 0)
    assert _png_to_array(trial.grid_png(grid[..., 0])).shape == (16, 24)


def test_data_channels_that_differ_from_the_data_is_a_config_error(tiny_faces):
    with pytest.raises(ConfigError, match=r"^data\.channels: config says 3 .* 1 channel \(gray\)"):
        trial.run({**TINY_TRIAL, "data.channels": 3}, tiny_faces, lambda *a: None)
    colour = make_faceset(with_channels(tiny_faces.images, 3), tiny_faces.labels, tiny_faces.splits, "c")
    with pytest.raises(ConfigError, match=r"^data\.channels: config says 1 .* 3 channels \(colour\)"):
        trial.run(TINY_TRIAL, colour, lambda *a: None)


def test_gray_and_colour_cache_keys_differ_and_gray_keys_name_no_channels(tiny_faces):
    colour = make_faceset(with_channels(tiny_faces.images, 3), tiny_faces.labels, tiny_faces.splits, "c")
    gray_key, gray_parts = entries.reference_key(tiny_faces)
    colour_key, colour_parts = entries.reference_key(colour)
    assert gray_key != colour_key and "channels" not in gray_parts and colour_parts["channels"] == 3


@pytest.mark.slow
def test_a_whole_colour_trial_at_96_px(tmp_path):
    data = load("procedural", scale=0.01, seed=0, use_cache=False, options=DataOptions(image_size=96, channels=3))
    reports = []
    config = {**TINY_TRIAL, "data.image_size": 96, "data.channels": 3, "generator.type": "cgan",
              "generator.resolution": 32, "augment.policy": "balance", "classifier.epochs": 1}
    result = trial.run(config, data, lambda epoch, metrics, artifacts: reports.append(artifacts))
    row = result.row
    assert row["status"] == "completed" and row["data.channels"] == 3 and row["data.image_size"] == 96
    assert 0.0 <= row["test_accuracy"] <= 1.0 and "test_macro_f1" in row and row["n_train_synthetic"] > 0
    samples = Image.open(io.BytesIO(reports[-1]["samples_png"]))
    assert samples.mode == "RGB" and samples.size == (8 * 96, 7 * 96)


def test_data_preview_and_info_show_colour(tree, tmp_path, capsys):
    from fercore.cli import main

    out = tmp_path / "grid.png"
    assert main(["data", "preview", str(tree), "--image-size", "32", "--set", "channels=3", "--per-class", "2",
                 "--out", str(out)]) == 0
    grid = Image.open(out)
    assert grid.mode == "RGB" and grid.size == (2 * 32, len(CLASSES) * 32)
    assert grid.getpixel((1, CLASSES.index("angry") * 32 + 1)) in {(255, 0, 0), (128, 128, 128)}
    assert main(["data", "info", str(tree), "--image-size", "32", "--set", "channels=3"]) == 0
    assert "images of 32x32 RGB" in capsys.readouterr().out


def test_224_px_colour_reads_classifies_and_generates(tree):
    """AffectNet's size: the tree read at 224 px, a cnn3 trained a step on it, a cgan drawing 224 px colour."""
    data = read_image_folders(tree, image_size=224, options=DataOptions(image_size=224, channels=3))
    assert data.images.shape[1:] == (224, 224, 3)
    x, y = data.split("train")
    model = build_classifier(resolve({"classifier.backbone": "cnn3", "classifier.width": 8,
                                      "data.image_size": 224}).classifier, 224, len(CLASSES), 3)
    loss = torch.nn.functional.cross_entropy(model(normalise(torch.from_numpy(x[:4]))), torch.from_numpy(y[:4]))
    loss.backward()
    assert torch.isfinite(loss)
    values = dict(resolve({"generator.type": "cgan", **GENERATOR_TINY, "generator.resolution": 32},
                          drop_inapplicable=True).generator.values)
    gen = build_generator(values, 224, len(CLASSES), CPU, channels=3)
    gen.fit(x[:8], y[:8], seed=0)
    assert gen.sample(2, int(y[0]), seed=0).shape == (2, 224, 224, 3)
