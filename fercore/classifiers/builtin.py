"""Registration of the built-in backbones: the small networks of the reports, ResEmoteNet and torchvision adapters.

Every entry declares classifier.weights (a local state-dict file, see weights.py; for the torchvision ones also
`imagenet`, torchvision's own ImageNet weights from the local torch cache); the torchvision ones also declare
small_stem and freeze_stages, ResEmoteNet freeze_stages and width. classifier.dropout (common) is the dropout before
each network's final Linear.
"""
from __future__ import annotations

from fercore.classifiers import CLASSIFIERS
from fercore.classifiers import resemotenet as ren
from fercore.classifiers import torchvision_adapters as tv
from fercore.classifiers.common import IMAGENET_WEIGHTS, SMALL_STEM, WEIGHTS, freeze_param, freeze_stages
from fercore.classifiers.simple import CNN3, LinearClassifier
from fercore.classifiers.weights import IMAGENET, load_weights
from fercore.errors import ConfigError
from fercore.params import Param


def _local_file(weights: str, backbone: str) -> str:
    """WEIGHTS for a backbone torchvision has no ImageNet weights for: a file, never the word imagenet."""
    if weights == IMAGENET:
        raise ConfigError(f"classifier.weights=imagenet: classifier.backbone={backbone} has no torchvision ImageNet "
                          f"weights; expected a local state-dict file, or one of the backbones that take imagenet: "
                          f"{', '.join(tv.ARCHS)}")
    return weights


@CLASSIFIERS.register("linear", params=(WEIGHTS,), help="flattened pixels -> 7 logits, the baseline of report 000")
def _linear(cfg, image_size, num_classes, in_channels=1):
    model = LinearClassifier(image_size, num_classes, dropout=cfg.dropout, in_channels=in_channels)
    if cfg.weights:
        load_weights(model, _local_file(cfg.weights, "linear"), "linear")
    return model


@CLASSIFIERS.register("cnn3", params=(Param("width", 32, 4, 256, help="channels of the first conv; doubled twice"),
                                      WEIGHTS),
                      help="3-conv baseline CNN (report 003, table 1)")
def _cnn3(cfg, image_size, num_classes, in_channels=1):
    model = CNN3(image_size, num_classes, dropout=cfg.dropout, width=cfg.width, in_channels=in_channels)
    if cfg.weights:
        load_weights(model, _local_file(cfg.weights, "cnn3"), "cnn3", first_conv="features.0", head="head.4")
    return model


@CLASSIFIERS.register("resemotenet", params=(
    Param("width", 64, 4, 128, help="channels of the first conv (64: the published 80M-parameter network); "
                                    "the blocks have 1, 2, 4, 8, 16, 32 times as many"),
    freeze_param(6, "the 3 conv blocks, the 3rd with its SE block, then the 3 residual blocks"), WEIGHTS),
    help="ResEmoteNet: conv blocks, squeeze-excitation, 3 residual blocks (report 002)")
def _resemotenet(cfg, image_size, num_classes, in_channels=1):
    model = ren.ResEmoteNet(num_classes, dropout=cfg.dropout, width=cfg.width, in_channels=in_channels)
    if cfg.weights:
        load_weights(model, _local_file(cfg.weights, "resemotenet"), "resemotenet", first_conv=ren.FIRST_CONV,
                     head=ren.HEAD)
    freeze_stages(model, ren.STAGES, cfg.freeze_stages)
    return model


def _register_torchvision(name: str, arch: tv.Arch) -> None:
    stage_text = tv.FAMILIES[arch.family].stage_text
    params = (SMALL_STEM, freeze_param(arch.n_stages, stage_text), IMAGENET_WEIGHTS)

    @CLASSIFIERS.register(name, params=params, help=arch.help, channels_last_cpu=arch.family != "convnext")
    def _build(cfg, image_size, num_classes, in_channels=1):
        return tv.build(name, num_classes, dropout=cfg.dropout, small_stem=cfg.small_stem,
                        freeze=cfg.freeze_stages, weights=cfg.weights, in_channels=in_channels)


for _name, _arch in tv.ARCHS.items():
    _register_torchvision(_name, _arch)
