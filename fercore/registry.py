"""One small Registry used for every kind of pluggable part: generators, classifiers, mixing policies, quality
filters, metrics; and the one way to fill it, a decorator on the function or class that makes the part:

    @POLICIES.register("balance", help="top every class up to the largest class")
    def _balance(counts, values): ...

The registry keeps an Entry per name: the decorated target, the config keys the part adds to its section (`params`,
fercore.params.Param), a help line for `fersweep list`, and whatever else its kind declares in an Entry subclass
(a backbone's channels_last_cpu). The decorated function or class itself is returned unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from fercore.errors import ConfigError

T = TypeVar("T")
E = TypeVar("E", bound="Entry")


@dataclass(frozen=True)
class Entry:
    name: str
    target: Any  # the registered function or class: what builds, plans or measures
    params: tuple = ()  # fercore.params.Param: the keys this entry adds to its config section
    help: str = ""


class Registry(Generic[E]):
    """A name -> entry dict filled by a decorator; unknown names are errors that list the valid ones."""

    def __init__(self, kind: str, key: str, entry: type[E] = Entry):
        self.kind = kind  # "generator type", for messages
        self.key = key  # the config key that picks an entry, e.g. "generator.type"
        self._entry = entry
        self._entries: dict[str, E] = {}

    def register(self, name: str, **fields: Any) -> Callable[[T], T]:
        """Decorator: register the function or class as NAME, with the entry's other FIELDS (params, help, ...)."""
        def add(target: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = self._entry(name, target, **fields)
            return target

        return add

    def get(self, name: str) -> E:
        if name not in self._entries:
            raise ConfigError(f"{self.key}: unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, E]]:
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: str) -> bool:
        return name in self._entries
