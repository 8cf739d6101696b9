"""One small Registry used for every kind of pluggable part: generators, classifiers, mixing policies, metrics."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from fercore.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> entry dict filled by a decorator; unknown names are errors that list the valid ones."""

    def __init__(self, kind: str, key: str):
        self.kind = kind  # "generator type", for messages
        self.key = key  # the config key that picks an entry, e.g. "generator.type"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"{self.key}: unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: str) -> bool:
        return name in self._entries
