"""Generators of synthetic faces, registered by type name; built from plain config values, usable without Ray."""
from __future__ import annotations

from typing import Any

import torch

from fercore.generators.base import Diverged, Generator
from fercore.registry import Entry, Registry

# Each entry's target: a Generator subclass, built from (generator section values, image size, classes, device,
# channels: 1 gray, 3 colour - what its networks draw and its discriminator reads).
GENERATORS: Registry[Entry] = Registry("generator type", "generator.type")


def build_generator(values: dict[str, Any], image_size: int, num_classes: int, device: torch.device,
                    channels: int = 1, class_names: tuple[str, ...] | None = None) -> Generator:
    """CHANNELS: 1 gray, 3 colour; CLASS_NAMES: the data set's classes in label order (default FER2013's first
    NUM_CLASSES)."""
    from fercore.labels import CLASSES

    gen = GENERATORS.get(values["type"]).target(values, image_size, num_classes, device, channels)
    names = tuple(class_names) if class_names is not None else CLASSES[:num_classes]
    if len(names) == num_classes:
        gen.class_names = names
    return gen


# Register the built-in types: each module's decorator adds its type (a new type adds its module here).
from fercore.generators import cgan, dcgan, diffusion, folder, gan, stylegan  # noqa: E402,F401

__all__ = ["GENERATORS", "Diverged", "Generator", "build_generator"]
