"""Classifier backbones, registered by name. Each entry builds an nn.Module from config values; none trains itself."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from fercore.config import Param, Section
from fercore.registry import Registry


@dataclass(frozen=True)
class ClassifierEntry:
    build: Callable[[Section, int, int], nn.Module]  # (classifier section, image size, number of classes) -> network
    params: tuple[Param, ...] = ()
    help: str = ""


CLASSIFIERS: Registry[ClassifierEntry] = Registry("backbone", "classifier.backbone")


def register(name: str, params: tuple[Param, ...] = (), help: str = ""):
    def add(build):
        CLASSIFIERS.register(name)(ClassifierEntry(build, params, help))
        return build

    return add


def build_classifier(cfg: Section, image_size: int, num_classes: int) -> nn.Module:
    return CLASSIFIERS.get(cfg.backbone).build(cfg, image_size, num_classes)


# Register the built-in backbones.
from fercore.classifiers import builtin as _builtin  # noqa: E402,F401
