"""torchvision backbones adapted to one-channel (or, with data.channels 3, RGB) input of any small size and
num_classes outputs. Never downloads.

One table describes each family: where its first conv and final Linear are, which pooling small_stem removes, and
how its feature extractor splits into a stem and numbered stages (for classifier.freeze_stages, see common.py):

  family        first conv      stem pool       stages after the stem (stage 0)                     head
  resnet        conv1           maxpool         layer1 .. layer4                                    fc
  convnext      features.0.0    -               features.1, then each downsample + stage (3,5,7)    classifier.2
  mobilenet_v3  features.0.0    -               runs of blocks at one resolution; the last run      classifier.3
                                                also holds the final 1x1 conv (small 4, large 5)
  efficientnet  features.0.0    -               the same rule over features.1-7 (b0: 5 stages)      classifier.1
  shufflenet    conv1.0         maxpool         stage2, stage3, stage4 + conv5                      fc
  densenet      features.conv0  features.pool0  denseblock1-3 each with its transition,             classifier
                                                denseblock4 + norm5

Standard stem: the first conv keeps torchvision's kernel, stride and padding with one input channel (three for
colour data). small_stem: it
becomes 3x3 stride 1 (padding 1) and the stem pool becomes Identity, so the first stage sees the full 48x48 image.
Head: the final Linear is replaced by one with num_classes outputs and classifier.dropout on its input; the dropout
torchvision puts in mobilenet's and efficientnet's heads is removed, so classifier.dropout is the only one. Module
names are torchvision's, so a torchvision ImageNet state dict lines up key for key (see weights.py). The builders
are always called with weights=None: classifier.weights=imagenet reads torchvision's file from the local cache
(weights.imagenet_file), and a weights enum passed to a builder would download it instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torchvision
from torch import nn

from fercore.classifiers.common import DropoutLinear, freeze_stages, get_module, set_module
from fercore.classifiers.weights import IMAGENET, imagenet_file, load_weights

Stages = list[list[str]]


def _strided(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


def _by_resolution(model: nn.Module) -> Stages:
    """mobilenet_v3 / efficientnet: features.0 is the stem; a new stage starts at each block that downsamples."""
    n = len(model.features)
    stages: Stages = [["features.0"], ["features.1"]]
    for i in range(2, n - 1):
        if _strided(model.features[i]):
            stages.append([])
        stages[-1].append(f"features.{i}")
    stages[-1].append(f"features.{n - 1}")  # the final 1x1 conv
    return stages


def _resnet(model) -> Stages:
    return [["conv1", "bn1"]] + [[f"layer{i}"] for i in range(1, 5)]


def _convnext(model) -> Stages:
    return [["features.0"], ["features.1"]] + [[f"features.{i}", f"features.{i + 1}"] for i in (2, 4, 6)]


def _shufflenet(model) -> Stages:
    return [["conv1"], ["stage2"], ["stage3"], ["stage4", "conv5"]]


def _densenet(model) -> Stages:
    return ([["features.conv0", "features.norm0"]]
            + [[f"features.denseblock{i}", f"features.transition{i}"] for i in (1, 2, 3)]
            + [["features.denseblock4", "features.norm5"]])


@dataclass(frozen=True)
class Family:
    first_conv: str
    head: str
    stages: Callable[[nn.Module], Stages]
    stem_pool: str | None = None  # replaced by Identity with small_stem
    head_dropouts: tuple[str, ...] = ()  # torchvision's own dropout before the head, removed
    stage_text: str = ""  # for the freeze_stages help


FAMILIES = {
    "resnet": Family("conv1", "fc", _resnet, "maxpool", stage_text="layer1-4"),
    "convnext": Family("features.0.0", "classifier.2", _convnext,
                       stage_text="the 4 ConvNeXt stages, each with the downsampling before it"),
    "mobilenet_v3": Family("features.0.0", "classifier.3", _by_resolution, head_dropouts=("classifier.2",),
                           stage_text="runs of blocks at one resolution"),
    "efficientnet": Family("features.0.0", "classifier.1", _by_resolution, head_dropouts=("classifier.0",),
                           stage_text="runs of blocks at one resolution"),
    "shufflenet": Family("conv1.0", "fc", _shufflenet, "maxpool", stage_text="stage2-4"),
    "densenet": Family("features.conv0", "classifier", _densenet, "features.pool0",
                       stage_text="denseblock1-4 with their transitions"),
}


@dataclass(frozen=True)
class Arch:
    builder: str  # torchvision.models function
    family: str
    n_stages: int  # checked against the family's stage rule by the tests
    help: str


ARCHS = {  # registry name -> torchvision builder, family, number of stages, help for `fersweep list`
    "resnet18": Arch("resnet18", "resnet", 4,
                     "torchvision ResNet-18, one-channel stem (report 000 froze its first 2 stages; 004)"),
    "resnet50": Arch("resnet50", "resnet", 4, "torchvision ResNet-50, one-channel stem (report 004)"),
    "convnext_tiny": Arch("convnext_tiny", "convnext", 4,
                          "torchvision ConvNeXt-Tiny, one-channel stem (report 004's best)"),
    "mobilenet_v3_small": Arch("mobilenet_v3_small", "mobilenet_v3", 4,
                               "torchvision MobileNetV3-Small, one-channel stem (report 004 used MobileNetV3)"),
    "mobilenet_v3_large": Arch("mobilenet_v3_large", "mobilenet_v3", 5,
                               "torchvision MobileNetV3-Large, one-channel stem (report 004's MobileNetV3, 5.4M)"),
    "efficientnet_b0": Arch("efficientnet_b0", "efficientnet", 5,
                            "torchvision EfficientNet-B0, one-channel stem (report 004)"),
    "shufflenet_v2": Arch("shufflenet_v2_x1_0", "shufflenet", 3,
                          "torchvision ShuffleNetV2 x1.0, one-channel stem (report 004)"),
    "densenet121": Arch("densenet121", "densenet", 4, "torchvision DenseNet-121, one-channel stem (report 004)"),
}


def build(name: str, num_classes: int, dropout: float = 0.5, small_stem: bool = False, freeze: int = 0,
          weights: str = "", in_channels: int = 1) -> nn.Module:
    """The torchvision backbone NAME (a key of ARCHS), adapted as the module docstring says, its first conv taking
    IN_CHANNELS (1 gray; 3 colour, torchvision's own stem shape)."""
    arch = ARCHS[name]
    fam = FAMILIES[arch.family]
    model = getattr(torchvision.models, arch.builder)(weights=None)

    old = get_module(model, fam.first_conv)
    if small_stem:
        conv = nn.Conv2d(in_channels, old.out_channels, 3, stride=1, padding=1, bias=old.bias is not None)
        if fam.stem_pool:
            set_module(model, fam.stem_pool, nn.Identity())
    else:
        conv = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                         bias=old.bias is not None)
    set_module(model, fam.first_conv, conv)

    for path in fam.head_dropouts:
        assert isinstance(get_module(model, path), nn.Dropout), path
        set_module(model, path, nn.Identity())
    head = get_module(model, fam.head)
    set_module(model, fam.head, DropoutLinear(head.in_features, num_classes, dropout))

    if weights:
        path = imagenet_file(arch.builder, name) if weights == IMAGENET else weights
        load_weights(model, path, name, first_conv=fam.first_conv, head=fam.head)
    freeze_stages(model, fam.stages(model), freeze)
    return model


def stages(name: str, model: nn.Module) -> Stages:
    """The stem and stages of a built NAME model, as module paths (stage 0 is the stem)."""
    return FAMILIES[ARCHS[name].family].stages(model)
