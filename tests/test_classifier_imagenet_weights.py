"""classifier.weights: imagenet - torchvision's own ImageNet file for the backbone, read from a temporary TORCH_HOME
that the tests fill with state dicts of the right shapes under torchvision's file names. Any download attempt fails
the test. CPU only, batches of a few 48x48 images."""
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml

from fercore.classifiers import build_classifier
from fercore.classifiers import torchvision_adapters as tv
from fercore.classifiers.weights import fold_imagenet_normalisation, imagenet_file
from fercore.cli import main
from fercore.config import resolve
from fercore.errors import ConfigError
from fercore.sweep.spec import load_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    """An empty torch hub cache under a temporary TORCH_HOME, with downloading made an error."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would override TORCH_HOME

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch" / "hub" / "checkpoints"


def file_name(builder: str) -> str:
    """torchvision's file name for BUILDER's default ImageNet weights (the last part of its URL)."""
    return PurePosixPath(urlparse(torchvision.models.get_model_weights(builder).DEFAULT.url).path).name


def write_imagenet(folder: Path, name: str, legacy: bool = False) -> dict[str, torch.Tensor]:
    """A 1000-class torchvision state dict of backbone NAME with seeded, non-default values, saved under
    torchvision's file name in FOLDER; LEGACY: in the pre-zip format of torchvision's older files."""
    torch.manual_seed(1)
    state = getattr(torchvision.models, tv.ARCHS[name].builder)(weights=None, num_classes=1000).state_dict()
    with torch.no_grad():
        for k, v in state.items():
            if k.endswith("running_mean"):
                v.uniform_(-0.5, 0.5)
            elif k.endswith("running_var"):
                v.uniform_(0.5, 2.0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / file_name(tv.ARCHS[name].builder), _use_new_zipfile_serialization=not legacy)
    return state


def build(name, channels=1, **kw):
    flat = {"classifier.backbone": name, "classifier.weights": "imagenet", "data.channels": channels,
            **{f"classifier.{k}": v for k, v in kw.items()}}
    return build_classifier(resolve(flat).classifier, 48, 7, channels)


def under(key, paths):
    return any(key.startswith(p + ".") for p in paths)


def test_each_torchvision_backbone_names_torchvisions_own_file_in_the_hub_cache(checkpoints):
    assert file_name("resnet18") == "resnet18-f37072fd.pth"  # what torchvision.models.resnet18(weights=...) saves
    for name, arch in tv.ARCHS.items():
        expected = checkpoints / file_name(arch.builder)
        with pytest.raises(ConfigError) as err:
            imagenet_file(arch.builder, name)
        assert str(expected) in str(err.value), name
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.touch()
        assert imagenet_file(arch.builder, name) == str(expected)


def test_missing_file_names_the_exact_path_and_how_to_get_it_there(checkpoints):
    with pytest.raises(ConfigError) as err:
        build("resnet18")
    text = str(err.value)
    assert text.startswith("classifier.weights=imagenet: ") and "\n" not in text
    assert f"{checkpoints / 'resnet18-f37072fd.pth'} not found" in text
    assert f"Put resnet18-f37072fd.pth in {checkpoints}/" in text and "nothing is downloaded" in text
    assert "torchvision.models.resnet18(weights='IMAGENET1K_V1')" in text
    assert not checkpoints.exists() or not any(checkpoints.iterdir())  # nothing was fetched or written


def test_resnet18_stem_is_the_files_kernel_with_the_normalisation_folded_in(checkpoints):
    imagenet = write_imagenet(checkpoints, "resnet18", legacy=True)
    state = build("resnet18").state_dict()
    kernel, constant = fold_imagenet_normalisation(imagenet["conv1.weight"])
    assert state["conv1.weight"].shape == (64, 1, 7, 7) and torch.equal(state["conv1.weight"], kernel)
    assert torch.allclose(state["bn1.running_mean"], imagenet["bn1.running_mean"] - constant)
    assert torch.equal(state["layer3.1.conv2.weight"], imagenet["layer3.1.conv2.weight"])
    assert state["fc.weight"].shape == (7, 512)  # the 1000-class head is skipped


def test_colour_input_keeps_three_channels_each_with_its_own_normalisation(checkpoints):
    imagenet = write_imagenet(checkpoints, "resnet18")
    state = build("resnet18", channels=3).state_dict()
    kernel, _ = fold_imagenet_normalisation(imagenet["conv1.weight"], channels=3)
    assert state["conv1.weight"].shape == (64, 3, 7, 7) and torch.equal(state["conv1.weight"], kernel)


def test_densenet_files_old_key_names_are_read(checkpoints):
    """torchvision's densenet121 file says denselayer1.norm.1.weight where the module is denselayer1.norm1 (and,
    older than batch norm's num_batches_tracked, has none)."""
    imagenet = write_imagenet(checkpoints, "densenet121")
    old = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in imagenet.items()
           if not k.endswith("num_batches_tracked")}
    assert old != imagenet
    torch.save(old, checkpoints / file_name("densenet121"))
    state = build("densenet121").state_dict()
    key = "features.denseblock2.denselayer3.norm1.weight"
    assert torch.equal(state[key], imagenet[key])


def test_report_000_frozen_fine_tune_keeps_stem_and_first_two_stages(checkpoints):
    """Report 000: an ImageNet ResNet-18 with its stem and layer1-2 frozen; a training step moves only the rest."""
    imagenet = write_imagenet(checkpoints, "resnet18")
    model = build("resnet18", freeze_stages=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.equal(before["conv1.weight"], fold_imagenet_normalisation(imagenet["conv1.weight"])[0])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 1, 48, 48, generator=g), torch.arange(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    after = model.state_dict()
    frozen = ("conv1", "bn1", "layer1", "layer2")
    for k, v in before.items():
        if under(k, frozen):  # weights and batch-norm running statistics alike
            assert torch.equal(after[k], v), k
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    assert not torch.equal(after["layer3.0.conv1.weight"], before["layer3.0.conv1.weight"])


@pytest.mark.parametrize("name,extra", [("linear", {}), ("cnn3", {}), ("resemotenet", {"width": 8})])
def test_backbones_without_imagenet_weights_refuse_it_listing_those_that_take_it(checkpoints, name, extra):
    with pytest.raises(ConfigError, match=rf"classifier\.weights=imagenet: classifier\.backbone={name} has no") as e:
        build(name, **extra)
    assert all(b in str(e.value) for b in tv.ARCHS)


def test_the_word_passes_config_and_sweep_validation(tmp_path):
    assert resolve({"classifier.backbone": "resnet18", "classifier.weights": "imagenet"}).classifier.weights == \
        "imagenet"
    sweep = {"name": "t", "data": {"source": "procedural", "scale": 0.01}, "sampler": "grid",
             "grid": {"classifier.backbone": ["resnet18", "mobilenet_v3_small"]},
             "fixed": {"classifier.weights": "imagenet", "classifier.freeze_stages": 2, "classifier.epochs": 1}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(sweep))
    assert load_sweep(tmp_path / "t.yaml").fixed["classifier.weights"] == "imagenet"


TINY = ["data.scale=0.01", "classifier.backbone=resnet18", "classifier.weights=imagenet",
        "classifier.freeze_stages=2", "classifier.epochs=1", "classifier.batch_size=32"]


def test_fersweep_trial_without_the_file_exits_2_with_one_line(checkpoints, capsys):
    assert main(["trial", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fersweep: error: classifier.weights=imagenet: ")
    assert str(checkpoints / "resnet18-f37072fd.pth") in err[0]


@pytest.mark.slow
def test_fersweep_trial_trains_from_the_file(checkpoints, capsys):
    write_imagenet(checkpoints, "resnet18")
    assert main(["trial", *TINY]) == 0
    assert '"test_macro_f1"' in capsys.readouterr().out
