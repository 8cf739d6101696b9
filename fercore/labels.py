"""The canonical label space (FER2013's order), the name aliases that real data sets use for it, and the class set of
a data set (resolve_classes: data.classes, data.drop_classes and data.aliases applied to the names in its data)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from fercore.errors import ConfigError, DataError

CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASSES)
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}

# Folder names seen in the Kaggle image layouts and elsewhere; matched case-insensitively.
ALIASES = {
    "angry": "angry", "anger": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "neutral": "neutral", "calm": "neutral",
}


def canonical_class(name: str) -> str | None:
    """Return the canonical class for a folder or label name, or None when it names no known class."""
    return ALIASES.get(name.strip().lower())


# ------------------------------------------------------------------------------------ the data set's class set
# data.classes, data.drop_classes and data.aliases (fercore.data.options.DataOptions) turn the names a data set
# holds (its class folders, or the names of its label ids) into its ordered classes. FER2013's seven keep their
# FER2013 names in every mode (a folder `anger` is the class `angry`), so results over different data sets line up.

FER2013 = "fer2013"
FOLDERS = "folders"
_SAFE_NAME = re.compile(r"[a-z0-9_]+")
_FIX = ("to keep it set data.classes: folders (or list it in data.classes), map it to a class with "
        "data.aliases: {name}=<class>, or leave it out with data.drop_classes: {name}")


@dataclass(frozen=True)
class ClassSet:
    """A data set's classes in order, and the class id of every name found in its data (-1: dropped)."""

    names: tuple[str, ...]
    ids: dict[str, int] = field(default_factory=dict)  # found name, lowercased -> class id, or -1 when dropped

    def id_of(self, found: str) -> int:
        """Class id of a name found in the data (as given to resolve_classes); -1 for a dropped class."""
        return self.ids[found.strip().lower()]

    def remap(self, source_names: Sequence[str]) -> np.ndarray:
        """Old id -> new class id (-1 dropped) for a source whose label ids name SOURCE_NAMES in order."""
        return np.array([self.id_of(n) for n in source_names], dtype=np.int64)


def split_names(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (lowercased; empty parts skipped)."""
    return [part.strip().lower() for part in str(text).split(",") if part.strip()]


def parse_aliases(text: str) -> dict[str, str]:
    """data.aliases 'name=class,...' -> {name: class}, both lowercased; the class must be a safe name."""
    out = {}
    for part in split_names(text):
        name, sep, target = part.partition("=")
        name, target = name.strip(), target.strip()
        if not sep or not name or not target:
            raise ConfigError(f"data.aliases: {part!r} is not name=class; expected 'name=class,...' "
                              "(e.g. 'anger=angry,contemptuous=contempt')")
        check_class_name(target, "data.aliases")
        out[name] = target
    return out


def check_class_name(name: str, key: str) -> str:
    """NAME if it can name a class (a column suffix such as test_recall_<class>): lowercase letters, digits, _."""
    if not _SAFE_NAME.fullmatch(name):
        raise ConfigError(f"{key}: class name {name!r} must be lowercase letters, digits and _ (it names result "
                          "columns such as test_recall_<class>); map it with data.aliases: <name>=<class>")
    return name


def names_class(name: str, options: Any) -> bool:
    """Whether folder NAME is a class folder under OPTIONS (any folder is one with data.classes: folders)."""
    name = name.strip().lower()
    if str(options.classes).strip().lower() == FOLDERS:
        return True
    user = parse_aliases(options.aliases)
    named = set(split_names(options.drop_classes)) | set(user)
    if str(options.classes).strip().lower() != FER2013:
        named |= set(split_names(options.classes))
    return name in named or canonical_class(user.get(name, name)) is not None


def resolve_classes(options: Any, found: Iterable[str], where: str,
                    places: dict[str, str] | None = None) -> ClassSet:
    """The class set of a data set whose data holds the class names FOUND (folder names, or the names of its label
    ids), under OPTIONS.classes / drop_classes / aliases; WHERE (a file or folder) names the data in messages.

    - fer2013 (default): FER2013's seven in FER2013's order, each name found mapped through data.aliases and then
      fercore's own aliases (anger -> angry); a class may have no images. A name that maps to none of the seven is
      an error saying how to keep it.
    - folders: the classes found, mapped the same way: those among FER2013's seven in FER2013's order, then the
      others sorted by name.
    - a list: those classes, in that order (names through the aliases too); each must be found in the data and
      every name found must be listed (or dropped).
    data.drop_classes leaves classes out, in every mode; naming a class the data does not hold is an error.
    Raises DataError naming the data key and WHERE (or the PLACES entry of a found name: its folder), or ConfigError
    for a malformed option.
    """
    places = places or {}
    found = list(dict.fromkeys(n.strip().lower() for n in found))
    user = parse_aliases(options.aliases)

    def meaning(name: str) -> str:
        name = user.get(name, name)
        return canonical_class(name) or name

    drops = {meaning(n): n for n in split_names(options.drop_classes)}
    meant = {n: meaning(n) for n in found}
    mode = str(options.classes).strip().lower()
    if mode == FER2013:
        names = [c for c in CLASSES if c not in drops]
        for n, m in meant.items():
            if m not in CLASS_INDEX and m not in drops:
                raise DataError(f"{places.get(n, where)}: class {n!r} is not one of FER2013's seven "
                                f"({', '.join(CLASSES)}; data.classes is fer2013); {_FIX.format(name=n)}")
    elif mode == FOLDERS:
        present = set(meant.values()) - set(drops)
        for n, m in meant.items():
            if m in present:
                check_class_name(m, f"{where}: class folder {n!r}")
        names = [c for c in CLASSES if c in present] + sorted(present - set(CLASSES))
    else:
        listed = [meaning(check_class_name(n, "data.classes")) for n in split_names(options.classes)]
        if len(set(listed)) != len(listed):
            raise ConfigError(f"data.classes: {options.classes!r} names a class twice (names through aliases: "
                              f"{', '.join(listed)})")
        missing = [c for c in listed if c not in set(meant.values())]
        if missing:
            raise DataError(f"{where}: data.classes names {', '.join(repr(c) for c in missing)}, which the data "
                            f"does not hold (it holds {', '.join(found) or 'no class'})")
        for n, m in meant.items():
            if m not in listed and m not in drops:
                raise DataError(f"{places.get(n, where)}: class {n!r} is not in data.classes "
                                f"({', '.join(listed)}); {_FIX.format(name=n)}")
        names = [c for c in listed if c not in drops]
    # A drop must name a class the data holds (under fer2013: or one of the seven, which may have no folder).
    holds = set(meant.values()) | (set(CLASS_INDEX) if mode == FER2013 else set())
    unknown = [given for m, given in drops.items() if m not in holds]
    if unknown:
        raise DataError(f"{where}: data.drop_classes names {', '.join(repr(n) for n in unknown)}, which the data "
                        f"does not hold (it holds {', '.join(found) or 'no class'})")
    if not names:
        raise DataError(f"{where}: no class is left (data.drop_classes drops every one)")
    index = {c: i for i, c in enumerate(names)}
    return ClassSet(tuple(names), {n: (-1 if m in drops else index[m]) for n, m in meant.items()})
