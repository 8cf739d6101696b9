"""Classifier backbones: every one builds from a config, runs, trains; freeze_stages, small_stem and weights behave.

CPU only, tiny batches of 48x48 one-channel images; ResEmoteNet at width 8 except where its published size matters.
"""
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fercore.classifiers import CLASSIFIERS, build_classifier
from fercore.classifiers import resemotenet as ren
from fercore.classifiers import torchvision_adapters as tv
from fercore.classifiers.common import FrozenBatchNorm2d
from fercore.classifiers.weights import IMAGENET_MEAN, IMAGENET_STD, fold_imagenet_normalisation, load_weights
from fercore.config import resolve
from fercore.errors import ConfigError
from fercore.transforms import normalise

TV = list(tv.ARCHS)
HEAVY = {"resnet50", "densenet121", "convnext_tiny"}
SMALL = {"resemotenet": {"width": 8}}  # extra config keeping a test quick


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(name, size=48, **kw):
    flat = {"classifier.backbone": name, "data.image_size": size,
            **{f"classifier.{k}": v for k, v in {**SMALL.get(name, {}), **kw}.items()}}
    return build_classifier(resolve(flat).classifier, size, 7)


def batch(name, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = 2 if name in HEAVY else 4
    return torch.randn(n, 1, 48, 48, generator=g), torch.arange(n) % 7


def sgd_step(model, x, y, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, **kw)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def under(key, paths):
    return any(key == p or key.startswith(p + ".") for p in paths)


def head_path(name):
    return tv.FAMILIES[tv.ARCHS[name].family].head if name in tv.ARCHS else {"resemotenet": ren.HEAD}[name]


def stages_of(name, model):
    return tv.stages(name, model) if name in tv.ARCHS else ren.STAGES


CASES = [(n, None) for n in ("linear", "cnn3", "resemotenet")] + [(n, s) for n in TV for s in (False, True)]


@pytest.mark.slow
@pytest.mark.parametrize("name,small_stem", CASES, ids=[f"{n}-{'small' if s else 'std'}" if s is not None else n
                                                          for n, s in CASES])
def test_builds_runs_and_trains(name, small_stem):
    torch.manual_seed(0)
    model = build(name, **({} if small_stem is None else {"small_stem": small_stem}))
    x, y = batch(name)
    model.train()
    assert model(x).shape == (len(x), 7)
    params = list(model.named_parameters())
    before = {k: p.detach().clone() for k, p in params}
    sgd_step(model, x, y)
    changed = {k for k, p in params if not torch.equal(p, before[k])}
    assert params[0][0] in changed and params[-1][0] in changed  # the first layer and the final Linear
    assert len(changed) > 0.8 * len(params)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 7)
    if small_stem:  # 3x3 stride-1 first conv, no stem pooling
        fam = tv.FAMILIES[tv.ARCHS[name].family]
        conv = model.get_submodule(fam.first_conv)
        assert (conv.in_channels, conv.kernel_size, conv.stride) == (1, (3, 3), (1, 1))
        assert fam.stem_pool is None or isinstance(model.get_submodule(fam.stem_pool), torch.nn.Identity)


def test_registry_help_and_params():
    for name, entry in CLASSIFIERS.items():
        assert re.search(r"\b00[0-4]\b", entry.help), f"{name}: help names no source report"
        own = {p.name: p for p in entry.params}
        assert own["weights"].default == ""
        if name in tv.ARCHS:
            assert own["small_stem"].default is False
            assert (own["freeze_stages"].low, own["freeze_stages"].high) == (0, tv.ARCHS[name].n_stages)
        elif name == "resemotenet":
            assert own["freeze_stages"].high == len(ren.STAGES) - 1 and "small_stem" not in own
        else:
            assert "freeze_stages" not in own and "small_stem" not in own
    with pytest.raises(ConfigError, match="classifier.freeze_stages"):
        resolve({"classifier.backbone": "shufflenet_v2", "classifier.freeze_stages": 4})


def test_resemotenet_is_the_published_size():
    model = build("resemotenet", width=64)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 80.2  # 004's table 1


@pytest.mark.parametrize("name", TV)
def test_stage_rule_matches_declared_count_and_covers_the_body(name):
    n = tv.ARCHS[name].n_stages
    model = build(name, freeze_stages=n)
    assert len(tv.stages(name, model)) == n + 1
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    head = tv.FAMILIES[tv.ARCHS[name].family].head.split(".")[0]
    assert trainable and all(k.startswith(head + ".") for k in trainable), trainable  # only the head trains


FREEZE = [("resnet18", 2), ("convnext_tiny", 2), ("mobilenet_v3_large", 3), ("efficientnet_b0", 2),
          ("shufflenet_v2", 2), ("densenet121", 1), ("resemotenet", 3)]  # one per family


@pytest.mark.parametrize("name,n", FREEZE)
def test_freeze_stages(name, n):
    torch.manual_seed(0)
    model = build(name, freeze_stages=n)
    frozen = [p for stage in stages_of(name, model)[: n + 1] for p in stage]
    for k, p in model.named_parameters():
        assert p.requires_grad != under(k, frozen), k
    assert list(model.state_dict()) == list(build(name).state_dict())  # freezing renames nothing
    before = snapshot(model)
    model.train()
    frozen_bn = [m for p in frozen for m in model.get_submodule(p).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(isinstance(m, FrozenBatchNorm2d) and not m.training for m in frozen_bn)
    x, y = batch(name)
    sgd_step(model, x, y, momentum=0.9, weight_decay=1e-2)
    after = model.state_dict()
    for k, v in before.items():
        if under(k, frozen):  # weights and batch-norm running statistics alike
            assert torch.equal(after[k], v), k
    head = head_path(name)
    assert not torch.equal(after[head + ".weight"], before[head + ".weight"])
    moved = [k for k in before if k.endswith("running_mean") and not under(k, frozen)
             and not torch.equal(after[k], before[k])]
    has_bn = any(k.endswith("running_mean") and not under(k, frozen) for k in before)
    assert moved or not has_bn  # batch norm outside the frozen stages still learns its statistics


def test_freeze_stages_zero_freezes_nothing():
    model = build("resnet18", freeze_stages=0)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())


def _perturbed_file(model, path):
    g = torch.Generator().manual_seed(1)
    state = {k: v * (1 + 0.1 * torch.rand(v.shape, generator=g)) + 0.01 * torch.rand(v.shape, generator=g)
             if v.is_floating_point() else v for k, v in model.state_dict().items()}  # variances stay positive
    torch.save(state, path)
    model.load_state_dict(state)
    return model.eval()


# Every torchvision key is checked against a torchvision state dict below; exact outputs on the light ones suffice.
LIGHT = ("linear", "cnn3", "resemotenet", "resnet18", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2")


@pytest.mark.parametrize("name,kw", [(n, {}) for n in LIGHT]
                         + [("resnet18", {"small_stem": True}), ("resemotenet", {"freeze_stages": 2})])
def test_weights_file_reproduces_outputs(tmp_path, name, kw):
    path = tmp_path / "w.pt"
    ref = _perturbed_file(build(name, **kw), path)
    loaded = build(name, weights=str(path), **kw).eval()
    x, _ = batch(name)
    with torch.no_grad():
        assert torch.equal(loaded(x), ref(x))


def test_trainer_checkpoint_and_compiled_prefix_load(tmp_path):
    ref = _perturbed_file(build("cnn3"), tmp_path / "plain.pt")
    state = {"model": {"_orig_mod." + k: v for k, v in ref.state_dict().items()}, "epoch": 3, "opt": {}}
    torch.save(state, tmp_path / "ckpt.pt")
    loaded = build("cnn3", weights=str(tmp_path / "ckpt.pt")).eval()
    x, _ = batch("cnn3")
    with torch.no_grad():
        assert torch.equal(loaded(x), ref(x))


@pytest.mark.parametrize("name", TV)
def test_imagenet_state_dict_loads_with_summed_first_conv(tmp_path, name):
    fam = tv.FAMILIES[tv.ARCHS[name].family]
    original = getattr(torchvision.models, tv.ARCHS[name].builder)(weights=None)
    imagenet = original.state_dict()
    torch.save(imagenet, tmp_path / "imagenet.pt")
    model = build(name, weights=str(tmp_path / "imagenet.pt"))
    # The standard stem is torchvision's, with one input channel.
    ours, ref = model.get_submodule(fam.first_conv), original.get_submodule(fam.first_conv)
    assert ours.in_channels == 1 and (ours.kernel_size, ours.stride, ours.padding) == (
        ref.kernel_size, ref.stride, ref.padding)
    state = model.state_dict()
    conv = fam.first_conv + ".weight"
    kernel, constant = fold_imagenet_normalisation(imagenet[conv])
    assert imagenet[conv].shape[1] == 3 and torch.equal(state[conv], kernel)
    assert state[fam.head + ".weight"].shape[0] == 7  # the 1000-class head is skipped
    # The normalisation's offset lands in the conv's bias, or in the running mean of the batch norm after it.
    offset = fam.first_conv + ".bias" if fam.first_conv + ".bias" in imagenet else next(
        k for k in imagenet if k.endswith(".running_mean") and imagenet[k].shape == constant.shape)
    sign = 1 if offset.endswith(".bias") else -1
    assert torch.allclose(state[offset], imagenet[offset] + sign * constant) and constant.abs().sum() > 0
    for k, v in imagenet.items():
        if not k.startswith((fam.head + ".", conv)) and k != offset:
            assert torch.equal(state[k], v), k


def test_imagenet_resnet18_with_small_stem_keeps_a_fresh_first_conv(tmp_path):
    imagenet = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(imagenet, tmp_path / "imagenet.pt")
    with pytest.warns(UserWarning, match="conv1"):
        state = build("resnet18", small_stem=True, weights=str(tmp_path / "imagenet.pt")).state_dict()
    assert state["conv1.weight"].shape == (64, 1, 3, 3)
    assert torch.equal(state["layer1.0.conv1.weight"], imagenet["layer1.0.conv1.weight"])


@pytest.mark.parametrize("name,other", [("resnet18", "resnet50"), ("mobilenet_v3_large", "mobilenet_v3_small"),
                                        ("resemotenet", "cnn3")])
def test_file_of_another_backbone_is_a_config_error(tmp_path, name, other):
    path = tmp_path / f"{other}.pt"
    torch.save(build(other).state_dict(), path)
    with pytest.raises(ConfigError, match=r"classifier\.weights: .*" + re.escape(str(path))) as err:
        build(name, weights=str(path))
    assert re.search(r"(missing|unexpected) keys \(\w", str(err.value))


def test_missing_or_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"classifier\.weights: .*nope\.pt: no such file"):
        build("resnet18", weights=str(tmp_path / "nope.pt"))
    (tmp_path / "text.pt").write_text("not a tensor file")
    with pytest.raises(ConfigError, match=r"classifier\.weights: .*text\.pt: not a state dict"):
        build("cnn3", weights=str(tmp_path / "text.pt"))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match=r"classifier\.weights: .*list\.pt: expected a state dict"):
        build("cnn3", weights=str(tmp_path / "list.pt"))


def test_image_too_small_for_the_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.image_size=16 is too small for classifier\.backbone=convnext_tiny"):
        build("convnext_tiny", size=16)
    assert build("convnext_tiny", size=16, small_stem=True)(torch.zeros(2, 1, 16, 16)).shape == (2, 7)


class _TinyStem(torch.nn.Module):
    """A first conv (with or without bias; a batch norm after it when without), as in torchvision's stems."""

    def __init__(self, in_channels: int, bias: bool):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1, bias=bias)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 7)

    def forward(self, x):
        return self.bn(self.conv(x))


@pytest.mark.parametrize("bias", [True, False])
def test_folded_imagenet_normalisation_on_a_grey_image_equals_the_rgb_conv_on_its_normalised_copy(tmp_path, bias):
    torch.manual_seed(0)
    rgb = _TinyStem(3, bias).eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity, so the running mean's shift shows
        rgb.bn.running_mean.uniform_(-1, 1)
        rgb.bn.running_var.uniform_(0.5, 2)
    torch.save(rgb.state_dict(), tmp_path / "imagenet.pt")
    grey = _TinyStem(1, bias).eval()
    notes = load_weights(grey, str(tmp_path / "imagenet.pt"), "tiny", first_conv="conv", head="head")
    assert any("mean and std folded in" in n for n in notes)

    image = torch.randint(0, 256, (2, 20, 20), dtype=torch.uint8)
    pixel = image.float().unsqueeze(1) / 255  # what an ImageNet pipeline reads: [0, 1], the grey copied to RGB
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = rgb((pixel.expand(-1, 3, -1, -1) - mean) / std)
        got = grey(normalise(image))  # fercore's input: one channel in [-1, 1]
    # Equal wherever the 3x3 kernel does not reach the zero padding (the module docstring says why the border differs).
    assert torch.allclose(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4)
    assert not torch.allclose(grey.conv.weight, rgb.conv.weight.sum(1, keepdim=True))  # a plain sum would not do
