"""Registration of the built-in backbones: the small networks of the reports and torchvision adapters."""
from __future__ import annotations

from fercore.classifiers import register
from fercore.classifiers.simple import CNN3, LinearClassifier
from fercore.classifiers.torchvision_adapters import resnet
from fercore.config import Param


@register("linear", help="flattened pixels -> 7 logits (000)")
def _linear(cfg, image_size, num_classes):
    return LinearClassifier(image_size, num_classes, dropout=cfg.dropout)


@register("cnn3", params=(Param("width", 32, 4, 256, help="channels of the first conv; doubled twice"),),
          help="3-conv baseline CNN (003, table 1)")
def _cnn3(cfg, image_size, num_classes):
    return CNN3(image_size, num_classes, dropout=cfg.dropout, width=cfg.width)


@register("resnet18", params=(Param("small_stem", False, help="3x3 stride-1 stem without max-pool, for small images"),),
          help="torchvision ResNet-18 adapted to one-channel input and 7 classes")
def _resnet18(cfg, image_size, num_classes):
    return resnet("resnet18", num_classes, dropout=cfg.dropout, small_stem=cfg.small_stem)
