"""Subjects (data.group): which person each image shows, so that splits keep every subject's images together.

A folder tree or RAF-DB names the subject in its file paths: data.group is a regex, and the first group of its
first match names the subject. It is searched in the file's name first, then in the path with one more parent
folder at a time, up to the path relative to the data root (POSIX separators); the first of those it matches
decides. So '^S(\\d+)_' finds S005 in ROOT/happy/S005_001_00000011.png, and '(S\\d+)/' a subject folder
ROOT/happy/S005/001.png. Every file must match: a file it does not match is an error naming data.group and the
file (one unmatched file would otherwise be a subject of its own, or silently join another one's split).

A CSV source names its subject column instead: data.group is the column's name (matched like the CSV's other
columns, case-insensitive).
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np

from fercore.data.faceset import SPLIT_INDEX, SPLITS
from fercore.data.splitting import fold_splits, holdout
from fercore.errors import ConfigError, DataError

KEY = "data.group"


def compile_group(pattern: str) -> re.Pattern:
    """data.group as a compiled regex with at least one group; a ConfigError naming data.group otherwise."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{KEY}: {pattern!r} is not a valid regular expression ({e}); expected e.g. "
                          "'^S(\\d+)_'") from None
    if regex.groups < 1:
        raise ConfigError(f"{KEY}: {pattern!r} has no group; put the part that names the subject in parentheses, "
                          "e.g. '^S(\\d+)_' or '^([A-Z]{2})\\.'")
    return regex


def subject_of(relative: PurePosixPath, regex: re.Pattern) -> str | None:
    """The subject REGEX names in a file's path relative to the data root: tried on the name, then with one more
    parent folder at a time; None when no tail of the path matches (or the group took no part in the match)."""
    parts = relative.parts
    for start in range(len(parts) - 1, -1, -1):
        match = regex.search("/".join(parts[start:]))
        if match is not None and match.group(1):
            return match.group(1)
    return None


def subjects_from_paths(paths: list[Path], root: Path, pattern: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """(subject id per path, int64; subject names, sorted, indexed by those ids) for files under ROOT.

    A DataError naming data.group, the pattern and an example file when some file does not match."""
    regex = compile_group(pattern)
    root = Path(root)
    names: list[str] = []
    unmatched: list[Path] = []
    for p in paths:
        try:
            relative = PurePosixPath(Path(p).relative_to(root).as_posix())
        except ValueError:
            relative = PurePosixPath(Path(p).name)  # not under ROOT (cannot happen for the readers): its name
        name = subject_of(relative, regex)
        if name is None:
            unmatched.append(Path(p))
        names.append(name or "")
    if unmatched:
        if len(unmatched) == len(paths):
            raise DataError(f"{KEY}: {pattern!r} matches no file under {root} (e.g. {unmatched[0]}); it is searched "
                            "in each file's name, then in its path relative to the data root")
        raise DataError(f"{KEY}: {pattern!r} does not match {len(unmatched)} of {len(paths)} files, e.g. "
                        f"{unmatched[0]}; every image needs a subject (searched in the file's name, then in its "
                        "path relative to the data root)")
    return index_subjects(names)


def index_subjects(names: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """(int64 id per entry, sorted unique names) for a list of subject names."""
    unique, ids = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    return ids.astype(np.int64).reshape(-1), tuple(str(u) for u in unique)


def check_fixed_splits(groups: np.ndarray, group_names: tuple[str, ...], splits: np.ndarray,
                       split_names: tuple[str, ...], where: str) -> None:
    """A DataError naming the subject and the splits when a layout's own (fixed) splits share a subject: a subject
    in two splits lets the classifier recognise the person rather than the expression."""
    present = sorted(set(np.unique(splits).tolist()))
    for a_i, a in enumerate(present):
        in_a = set(np.unique(groups[splits == a]).tolist())
        for b in present[a_i + 1:]:
            shared = sorted(in_a & set(np.unique(groups[splits == b]).tolist()))
            if shared:
                first = group_names[shared[0]]
                raise DataError(f"{where}: {KEY}: subject {first!r} has images in both the {split_names[a]} and the "
                                f"{split_names[b]} split ({len(shared)} subject(s) shared in all); the source's own "
                                "splits must keep each subject in one split")


def make_folds(labels: np.ndarray, groups: np.ndarray | None, options, where: str) -> np.ndarray:
    """The N x K split matrix of data.folds K (fercore.data.splitting.fold_splits, seeded by data.seed, validation
    carved with data.val_fraction); a DataError naming data.folds when the images cannot make K folds."""
    try:
        return fold_splits(labels, groups, options.folds, options.seed, options.val_fraction)
    except ValueError as e:
        raise DataError(f"{where}: data.folds: {e}") from None


def refuse_folds_with_fixed_splits(options, fixed: list[str], where: str) -> None:
    """k-fold pools every image of the source, so a source whose layout fixes a held-out split of its own (FIXED
    names it: a test folder, CSV Usage rows, RAF-DB's test_ images) is refused rather than mixed into training."""
    if options is not None and options.folds and fixed:
        raise DataError(f"{where}: data.folds: {options.folds} folds pool every image, but this source fixes its own "
                        f"held-out split ({', '.join(fixed)}); use data.folds: 0, or a source with training images "
                        "only (e.g. ROOT/<class>/*)")


def settle_splits(labels: np.ndarray, splits: np.ndarray, groups: np.ndarray | None, group_names: tuple[str, ...],
                  options, where: str, fixed: list[str], carve: tuple[tuple[str, float, int], ...] = ()
                  ) -> np.ndarray | None:
    """What every reader does once it has its labels, its layout's own splits and (with data.group) its subjects:
    the layout's splits may not share a subject; then either k-fold (data.folds: the N x K split matrix, returned;
    refused when the layout FIXES a held-out split of its own) or, without folds, each split of CARVE
    ((split name, fraction, seed), in order) carved from the training images, whole subjects with data.group
    (SPLITS is changed in place; None returned)."""
    if groups is not None:
        check_fixed_splits(groups, group_names, splits, SPLITS, where)
    if options is not None and options.folds:
        refuse_folds_with_fixed_splits(options, fixed, where)
        return make_folds(labels, groups, options, where)
    for target, fraction, seed in carve:
        train_idx = np.flatnonzero(splits == SPLIT_INDEX["train"])
        try:
            held = holdout(labels[train_idx], None if groups is None else groups[train_idx], fraction, seed)
        except ValueError as e:  # only with subjects: none can be held out
            raise DataError(f"{where}: {KEY}: cannot carve the {target} split from the training images: {e}") \
                from None
        splits[train_idx[held]] = SPLIT_INDEX[target]
    return None
