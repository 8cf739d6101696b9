"""Reader for RAF-DB (basic emotions): EmoLabel/list_patition_label.txt plus its aligned or original faces."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fercore.data.options import DataOptions
from fercore.data.faceset import SPLIT_INDEX, FaceSet, make_faceset
from fercore.data.folders import read_images
from fercore.data.groups import settle_splits, subjects_from_paths
from fercore.errors import DataError
from fercore.labels import CLASS_INDEX, CLASSES, resolve_classes

LABEL_FILE = "list_patition_label.txt"  # sic: RAF-DB's own spelling.
# RAF-DB's label ids 1-7 -> canonical class ids.
RAFDB_CLASSES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
RAFDB_TO_CANONICAL = {k: CLASS_INDEX[v] for k, v in RAFDB_CLASSES.items()}
_LABEL_HINT = "1-7 (" + ", ".join(f"{k}={v}" for k, v in RAFDB_CLASSES.items()) + ")"
_PREFIXES = {"train_": "train", "test_": "test"}


def find_label_file(root: Path) -> Path | None:
    """ROOT's list_patition_label.txt, looked for in ROOT, ROOT/EmoLabel and ROOT/basic/EmoLabel; else None."""
    root = Path(root)
    for folder in (root, root / "EmoLabel", root / "basic" / "EmoLabel"):
        if (folder / LABEL_FILE).is_file():
            return folder / LABEL_FILE
    return None


def read_rafdb(path: Path, image_size: int = 48, seed: int = 0, val_fraction: float = 0.1,
               options: DataOptions | None = None) -> FaceSet:
    """Read RAF-DB from its folder (or its label file): train_*/test_* images -> train/test, val carved from train.

    Images are looked for, relative to the data set's root (the label file's folder, or its parent when that is
    EmoLabel), in Image/aligned/<stem>_aligned.jpg, Image/original/<name>, aligned/<stem>_aligned.jpg,
    original/<name>, then <name> next to the label file; the first place that holds the first listed image is
    used for all of them. Faces become image_size x image_size, gray or (options.channels 3) RGB; val is
    val_fraction of each class of train, drawn with `seed`.
    """
    path = Path(path)
    options = options or DataOptions(image_size=image_size, seed=seed, val_fraction=val_fraction)
    label_file = path if path.is_file() else find_label_file(path)
    if label_file is None:
        raise DataError(f"{path}: no {LABEL_FILE} in it, its EmoLabel/ or its basic/EmoLabel/ folder")
    entries = _parse_label_file(label_file)
    # Its seven labels are FER2013's classes; data.drop_classes leaves some out (data.classes may only reorder them).
    classes = resolve_classes(options, CLASSES, str(label_file))
    new_ids = classes.remap(CLASSES)
    entries = [(line, name, int(new_ids[label]), split) for line, name, label, split in entries if new_ids[label] >= 0]
    if not entries:
        raise DataError(f"{label_file}: no image is left once data.drop_classes is applied")
    image_paths = _locate_images(label_file, entries)
    labels = np.array([label for _, _, label, _ in entries], dtype=np.int64)
    splits = np.array([SPLIT_INDEX[split] for _, _, _, split in entries], dtype=np.uint8)
    train_idx = np.flatnonzero(splits == SPLIT_INDEX["train"])
    if len(train_idx) == 0:
        raise DataError(f"{label_file}: lists no train_ image; a training split is required")
    # Subjects (data.group, a regex over the image paths relative to the data set's root): train_ and test_ may not
    # share one, and validation takes whole subjects.
    groups, group_names = None, ()
    if options.group:
        groups, group_names = subjects_from_paths(image_paths, dataset_root(label_file), options.group)
    fixed = ["the test_ images"] if (splits == SPLIT_INDEX["test"]).any() else []
    folds = settle_splits(labels, splits, groups, group_names, options, str(label_file), fixed,
                          (("val", val_fraction, seed),))
    images = read_images(image_paths, image_size, channels=options.channels)
    return make_faceset(images, labels, splits, source=str(dataset_root(label_file)), groups=groups,
                        group_names=group_names, folds=folds, class_names=classes.names)


def dataset_root(label_file: Path) -> Path:
    """The folder RAF-DB's image paths are relative to: the label file's folder, or its parent for EmoLabel/."""
    return label_file.parent.parent if label_file.parent.name == "EmoLabel" else label_file.parent


def _parse_label_file(label_file: Path) -> list[tuple[int, str, int, str]]:
    """[(line number, image name, canonical class id, split)] from lines like 'train_00001.jpg 5'."""
    try:
        text = label_file.read_bytes()
    except OSError as e:
        raise DataError(f"{label_file}: cannot be read ({e.strerror or e})") from e
    entries, first_seen = [], {}
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{label_file}: line {number}"
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not readable text ({e}); expected lines like 'train_00001.jpg 5'") from e
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{where}: expected '<image name> <label>' like 'train_00001.jpg 5', found {line!r}")
        name, label = fields
        if not (label.isascii() and label.lstrip("-").isdigit()):
            raise DataError(f"{where}: label {label!r} is not an integer; expected {_LABEL_HINT}")
        if int(label) not in RAFDB_TO_CANONICAL:
            raise DataError(f"{where}: label {label} is outside {_LABEL_HINT}")
        split = next((s for prefix, s in _PREFIXES.items() if name.startswith(prefix)), None)
        if split is None:
            raise DataError(f"{where}: image name {name!r} starts with neither train_ nor test_")
        if name in first_seen:
            raise DataError(f"{where}: {name} is already listed on line {first_seen[name]}")
        first_seen[name] = number
        entries.append((number, name, RAFDB_TO_CANONICAL[int(label)], split))
    if not entries:
        raise DataError(f"{label_file}: the label file is empty; expected one line per image like "
                        "'train_00001.jpg 5'")
    return entries


def _locate_images(label_file: Path, entries) -> list[Path]:
    """The image path of every entry, all from the first layout that holds the first entry's image."""
    root = dataset_root(label_file)
    aligned = lambda folder: (lambda name: folder / f"{Path(name).stem}_aligned.jpg")  # noqa: E731
    original = lambda folder: (lambda name: folder / name)  # noqa: E731
    layouts = [aligned(root / "Image" / "aligned"), original(root / "Image" / "original"),
               aligned(root / "aligned"), original(root / "original"), original(label_file.parent)]
    first_line, first_name = entries[0][0], entries[0][1]
    layout = next((f for f in layouts if f(first_name).is_file()), None)
    if layout is None:
        tried = ", ".join(str(f(first_name)) for f in layouts)
        raise DataError(f"{label_file}: line {first_line}: image {first_name} is missing; looked for {tried}")
    paths = [layout(name) for _, name, _, _ in entries]
    # One listing per folder instead of a stat per image: RAF-DB has 15,339 of them.
    listings: dict[Path, set[str]] = {}
    for (line, name, _, _), p in zip(entries, paths):
        if p.parent not in listings:
            listings[p.parent] = set(os.listdir(p.parent))
        if p.name not in listings[p.parent]:
            raise DataError(f"{p}: image missing (listed as {name} on line {line} of {label_file})")
    return paths
