"""Generators of synthetic faces, registered by type name; built from plain config values, usable without Ray."""
from __future__ import annotations

from typing import Any

import torch

from fercore.generators.base import Diverged, Generator
from fercore.registry import Registry

GENERATORS: Registry[type[Generator]] = Registry("generator type", "generator.type")


def build_generator(values: dict[str, Any], image_size: int, num_classes: int, device: torch.device) -> Generator:
    return GENERATORS.get(values["type"])(values, image_size, num_classes, device)


# Register the built-in types.
from fercore.generators import cgan as _cgan  # noqa: E402,F401

__all__ = ["GENERATORS", "Diverged", "Generator", "build_generator"]
