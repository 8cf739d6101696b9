"""The ground floor of configuration: `Param`, one declared hyperparameter (name, default, valid values) with its
coercion from command-line strings, and `Section`, the resolved values of one config section.

Every registry entry declares its own keys with Params, so this module imports nothing of fercore but its errors:
the registries stand on it, and `fercore.config` stands on the registries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from fercore.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its name inside the section, default, and what values are valid."""

    name: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""

    @property
    def kind(self) -> type:
        return type(self.default)

    def valid_text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low is not None or self.high is not None:
            return f"a {self.kind.__name__} in [{self.low}, {self.high}]"
        return f"a {self.kind.__name__}"

    def coerce(self, key: str, value: Any) -> Any:
        """Convert VALUE (possibly a string from the command line) to this parameter's type and check its range."""
        try:
            value = _convert(self.kind, value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {self.valid_text()}, got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{key}: expected {self.valid_text()}, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ConfigError(f"{key}: expected {self.valid_text()}, got {value!r}")
        return value


def _convert(kind: type, value: Any) -> Any:
    """VALUE as KIND; ValueError where it is not one (a bool is not a number, 2.5 is not an int, nan is no float)."""
    if kind is bool:
        return _to_bool(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError
        value = float(value)
        if not math.isfinite(value):
            raise ValueError
        return value
    # A list or a mapping written in YAML (data.classes: [anger, contempt]) is kept as the comma-separated text a
    # command line would give (anger,contempt; name=class,...), so every key has one type and one form.
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.lower() in ("true", "yes", "1", "on")
    raise ValueError


@dataclass(frozen=True)
class Section:
    """The resolved values of one section; attribute access (cfg.generator.lr_g) for code, `values` for storage."""

    name: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, item: str) -> Any:
        try:
            return self.values[item]
        except KeyError:
            raise AttributeError(f"{self.name}.{item} is not a parameter of this config") from None
