"""DataOptions: every data.* key that shapes how a source is read (classes, subjects, folds, size, color), in one
object handed to each reader, so a new option reaches every reader and the converted-data cache key at once."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DataOptions:
    image_size: int = 48
    seed: int = 0  # carved validation splits (and the procedural drawing)
    val_fraction: float = 0.1
    classes: str = "fer2013"  # 'fer2013', 'folders', or a comma-separated list of class names
    drop_classes: str = ""  # comma-separated class names left out of the data set
    aliases: str = ""  # 'name=class,...': names fercore does not know, mapped to a class
    group: str = ""  # a regex over each file's path relative to the root (first group: the subject), or a CSV column
    folds: int = 0  # k-fold: 0 none, else K folds (the fold a trial tests on is data.fold)
    channels: int = 1  # 1 gray, 3 color

    def identity(self) -> dict[str, Any]:
        """What decides the converted data set: part of its cache key."""
        return asdict(self)

    @classmethod
    def from_section(cls, data: Any) -> "DataOptions":
        """The options of a resolved data config section (fercore.params.Section or anything with the attributes)."""
        return cls(**{name: getattr(data, name) for name in cls.__dataclass_fields__})
