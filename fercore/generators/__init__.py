"""Generators of synthetic faces, registered by type name; built from plain config values, usable without Ray."""
from __future__ import annotations

from typing import Any

import torch

from fercore.generators.base import Diverged, Generator
from fercore.registry import Registry

GENERATORS: Registry[type[Generator]] = Registry("generator type", "generator.type")


def build_generator(values: dict[str, Any], image_size: int, num_classes: int, device: torch.device) -> Generator:
    return GENERATORS.get(values["type"])(values, image_size, num_classes, device)


def _register_builtin_types() -> None:
    """Import every module of this package, so each type registers itself; a new type needs no edit here."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_register_builtin_types()

__all__ = ["GENERATORS", "Diverged", "Generator", "build_generator"]
