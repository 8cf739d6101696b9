"""Reader for class-per-folder image trees (the Kaggle FER2013 image release and its look-alikes) -> FaceSet.

Also home of `read_images`, the threaded image loader the RAF-DB reader shares.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fercore.data.options import DataOptions
from fercore.data.faceset import SPLIT_INDEX, FaceSet, make_faceset
from fercore.data.groups import settle_splits, subjects_from_paths
from fercore.errors import DataError
from fercore.images import image_shape
from fercore.labels import names_class, resolve_classes

SPLIT_NAMES = {"train": "train", "training": "train",
               "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
# Where no test folder exists, this share of each class's training images becomes the test split. Fixed,
# not the caller's seed or val_fraction, so every trial of every sweep is scored on the same held-out faces.
TEST_FRACTION = 0.1
TEST_SEED = 20130
_JUNK_FILES = {"thumbs.db", "desktop.ini"}
LAYOUTS = ("ROOT/train/<class>/*, with ROOT/test/<class>/* and/or ROOT/val/<class>/* (Kaggle FER2013 images)",
           "ROOT/images/train/<class>/* and ROOT/images/validation/<class>/* (Kaggle face-expression-recognition)",
           "ROOT/<class>/* (one folder per class, no splits)")


def read_image_folders(root: Path, image_size: int = 48, seed: int = 0, val_fraction: float = 0.1,
                       options: DataOptions | None = None) -> FaceSet:
    """Read ROOT/<split>/<class>/<image>, or ROOT/images/<split>/<class>/<image>, or ROOT/<class>/<image>.

    Split folders (case-insensitive): train/training -> train, val/valid/validation -> val, test/testing -> test;
    class folders become the data set's classes under data.classes / drop_classes / aliases
    (fercore.labels.resolve_classes; by default FER2013's seven, through aliases such as anger or sadness). Images
    (png, jpg, bmp, anything PIL reads; hidden files are skipped) become image_size x image_size, gray or, with
    options.channels 3, RGB (gray files then hold their gray value in all three channels).

    Missing splits are carved out of train with seeded stratified hold-outs. The test split must exist and stay
    untouched by tuning, so a missing test split is carved first, with a fixed seed and TEST_FRACTION that do not
    depend on `seed` or `val_fraction`: every sweep and every trial sees the same test faces. A missing val split
    is then carved from what remains, val_fraction of each class, using `seed`.
    """
    root = Path(root)
    options = options or DataOptions(image_size=image_size, seed=seed, val_fraction=val_fraction)
    split_dirs = _find_split_dirs(root, options)
    class_dirs = [(split, class_dir) for split, dirs in split_dirs.items() for split_dir in dirs
                  for class_dir in _visible(split_dir)
                  if class_dir.is_dir()]  # A stray README or zip next to the class folders is not data.
    classes = resolve_classes(options, [d.name for _, d in class_dirs], str(root),
                              places=_first_folders(class_dirs))
    paths, labels, splits = [], [], []
    seen_in = {}  # class id -> a folder it appeared in, to name it if it turns out to have no training image
    for split, class_dir in class_dirs:
        cls = classes.id_of(class_dir.name)
        if cls < 0:
            continue  # data.drop_classes
        seen_in.setdefault(cls, class_dir)
        files = sorted(p for p in _walk_files(class_dir))
        paths += files
        labels += [cls] * len(files)  # Alias folders of one class are merged.
        splits += [SPLIT_INDEX[split]] * len(files)
    if not paths:
        raise DataError(f"{root}: no images found in the class folders")
    labels = np.asarray(labels, dtype=np.int64)
    splits = np.asarray(splits, dtype=np.uint8)
    train = SPLIT_INDEX["train"]
    for cls, folder in sorted(seen_in.items()):
        if not np.any((labels == cls) & (splits == train)):
            raise DataError(f"{root}: class {classes.names[cls]!r} has no training image (it appears in {folder}); "
                            "every class that appears must have at least one image in the training folder")

    # Subjects (data.group): the layout's own split folders may not share one; carved splits take whole subjects.
    # A missing test split is carved first, with its fixed seed; then a missing val split (see the docstring).
    groups, group_names = (subjects_from_paths(paths, root, options.group) if options.group else (None, ()))
    fixed = [str(d) for s in ("val", "test") for d in split_dirs.get(s, [])]
    carve = tuple(c for c in (("test", TEST_FRACTION, TEST_SEED), ("val", val_fraction, seed)) if c[0] not in split_dirs)
    folds = settle_splits(labels, splits, groups, group_names, options, str(root), fixed, carve)
    images = read_images(paths, image_size, channels=options.channels)
    return make_faceset(images, labels, splits, source=str(root), groups=groups, group_names=group_names,
                        folds=folds, class_names=classes.names)


def _first_folders(class_dirs: list[tuple[str, Path]]) -> dict[str, str]:
    """Class name (lowercased) -> the folder to name in a message about it: its training folder when it has one."""
    places: dict[str, str] = {}
    for _, d in sorted(class_dirs, key=lambda pair: pair[0] != "train"):
        places.setdefault(d.name.strip().lower(), str(d))
    return places


def _find_split_dirs(root: Path, options: DataOptions) -> dict[str, list[Path]]:
    """{split: [folders]} for the first of ROOT and ROOT/images that holds split folders, else the flat layout."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected one of these layouts: {'; '.join(LAYOUTS)}")
    candidates = [root] + [d for d in _visible(root) if d.is_dir() and d.name.lower() == "images"]
    for base in candidates:
        found: dict[str, list[Path]] = {}
        for d in _visible(base):
            if d.is_dir() and d.name.lower() in SPLIT_NAMES:
                found.setdefault(SPLIT_NAMES[d.name.lower()], []).append(d)
        if found:
            if "train" not in found:
                names = ", ".join(str(d) for dirs in found.values() for d in dirs)
                raise DataError(f"{base}: has {names} but no train/training folder; expected one of these "
                                f"layouts: {'; '.join(LAYOUTS)}")
            return found
    if any(d.is_dir() and names_class(d.name, options) for d in _visible(root)):
        return {"train": [root]}
    raise DataError(f"{root}: no recognisable image-folder layout; expected one of: {'; '.join(LAYOUTS)}")


def _visible(folder: Path) -> list[Path]:
    """Entries of FOLDER, sorted, without hidden or OS bookkeeping ones (.DS_Store, __MACOSX, Thumbs.db)."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith((".", "__")) and p.name.lower() not in _JUNK_FILES)


def _walk_files(folder: Path):
    """Every visible file under FOLDER, subfolders included (some archives nest one level deeper)."""
    for entry in _visible(folder):
        if entry.is_dir():
            yield from _walk_files(entry)
        else:
            yield entry


# ------------------------------------------------------------------------------------------- image loading

def read_images(paths: list[Path], image_size: int, channels: int = 1) -> np.ndarray:
    """Load PATHS as image_size x image_size uint8 faces, in order: N x H x W gray (channels 1) or N x H x W x 3 RGB.

    Threads overlap the file reads and PIL's decoding (which releases the GIL); the first unreadable image in
    list order is the one reported.
    """
    out = np.empty((len(paths), *image_shape(image_size, channels)), np.uint8)
    if not paths:
        return out
    step = 256

    def load_range(start: int) -> None:
        for i in range(start, min(start + step, len(paths))):
            out[i] = load_image(paths[i], image_size, channels)

    workers = min(16, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(load_range, s) for s in range(0, len(paths), step)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()  # Fail now rather than after decoding the rest of the set.
            raise
    return out


def load_gray(path: Path, image_size: int) -> np.ndarray:
    """One image as a grayscale image_size x image_size uint8 array; non-square images are stretched."""
    return load_image(path, image_size, 1)


def load_image(path: Path, image_size: int, channels: int = 1) -> np.ndarray:
    """One image as uint8 image_size x image_size (gray, channels 1) or image_size x image_size x 3 (RGB); non-square
    images are stretched. Colour is read as RGB whatever the file holds (palette, CMYK, gray, alpha dropped)."""
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (image_size, image_size):
                # PIL's bilinear filter widens its support when shrinking, so it averages like an area filter.
                im = im.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError as e:
        raise DataError(f"{path}: image not found") from e
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file; all mean the same to the user.
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
