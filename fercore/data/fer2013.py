"""Reader for the Kaggle FER2013 CSV (`emotion,pixels,Usage`, one 48x48 face per row) -> FaceSet.

Two paths give the same result. The fast one parses the whole file with pyarrow (about 2-3 s for the real
35,887 rows) and only checks that everything is well formed; when it finds anything wrong, or cannot parse the
file at all, the slow exact one re-reads the file row by row in Python and raises a DataError naming the first
bad line as a text editor counts it (header = line 1). If the slow path finds nothing wrong (say, a pixel string
with two spaces in a row, which the fast path does not accept) its result is used.
"""
from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fercore.data.options import DataOptions
from fercore.data.faceset import FaceSet, make_faceset
from fercore.data.groups import index_subjects, settle_splits
from fercore.images import with_channels
from fercore.errors import DataError
from fercore.labels import CLASSES, FER2013, FOLDERS, check_class_name, resolve_classes, split_names

REQUIRED = ("emotion", "pixels", "Usage")
# Usage value -> index into SPLITS (train, val, test).
USAGES = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
_HEADER_LIMIT = 1 << 16  # A header longer than this is not a FER2013 header; stops a binary file being read whole.


def _label_hint(names: tuple[str, ...]) -> str:
    return (f"an integer 0-{len(names) - 1} (" + ", ".join(f"{i}={name}" for i, name in enumerate(names)) + ")"
            + ("; a CSV with other classes lists them, in label order, in data.classes" if names == CLASSES else ""))


def label_names(options: DataOptions | None) -> tuple[str, ...]:
    """What the emotion column's integers name: FER2013's seven, or the data.classes list in its order."""
    mode = str(options.classes).strip().lower() if options else FER2013
    if mode in (FER2013, FOLDERS):  # A CSV has no folders: its labels are FER2013's unless listed.
        return CLASSES
    return tuple(check_class_name(n, "data.classes") for n in split_names(options.classes))


def read_fer2013_csv(path: Path, image_size: int = 48, options: DataOptions | None = None) -> FaceSet:
    """Read a FER2013-style CSV: columns emotion, pixels and Usage in any order, extra columns ignored.

    Usage Training -> train, PublicTest -> val, PrivateTest -> test. Pixels are space-separated integers 0-255,
    a square number of them per row, the same for every row; faces are resized to image_size when they differ.
    The emotion integers index FER2013's seven, or the data.classes list when one is given (an 8-class CSV lists
    its 8 names in label order); rows of data.drop_classes are left out and the other classes renumbered.
    The faces are gray: with options.channels 3 each holds its gray value in all three channels.
    """
    path = Path(path)
    options = options or DataOptions(image_size=image_size)
    names = label_names(options)
    columns = _read_header(path)
    try:
        arrays = _fast_parse(path, columns, len(names))
    except Exception:  # noqa: BLE001 - any trouble in the fast path means: let the exact path judge the file.
        arrays = None
    if arrays is None:
        arrays = _exact_parse(path, columns, names)
    labels, splits, pixels, side = arrays
    classes = resolve_classes(options, names, str(path))
    new_ids = classes.remap(names)[labels]
    keep = new_ids >= 0  # data.drop_classes
    # Subjects (data.group names a column): the Usage splits may not share one. k-fold pools every row, so it
    # takes a file of Training rows only.
    groups, group_names = None, ()
    if options.group:
        subjects = _read_group_column(path, columns, options.group, len(labels))
        groups, group_names = index_subjects([s for s, kept in zip(subjects, keep) if kept])
    images = pixels.reshape(len(labels), side, side)[keep]
    labels, splits = new_ids[keep], splits[keep]
    if not len(labels):
        raise DataError(f"{path}: no row is left once data.drop_classes is applied")
    held_out = sorted({u for u, i in USAGES.items() if i != USAGES["Training"] and (splits == i).any()})
    folds = settle_splits(labels, splits, groups, group_names, options, str(path),
                          [f"Usage {u} rows" for u in held_out])
    if side != image_size:
        images = _resize_all(images, image_size)
    images = with_channels(images, options.channels)
    return make_faceset(images, labels, splits, source=str(path), groups=groups, group_names=group_names,
                        folds=folds, class_names=classes.names)


def _read_group_column(path: Path, columns: list[str], name: str, rows: int) -> list[str]:
    """The subject column data.group names, one value per data row (blank lines skipped, as the readers skip them);
    a DataError naming data.group when the header lacks it or a row leaves it empty."""
    lower = [c.lower() for c in columns]
    if name.lower() not in lower:
        raise DataError(f"{path}: data.group: no column {name!r} (for a CSV, data.group names the subject column); "
                        f"the header has {', '.join(repr(c) for c in columns)}")
    index = lower.index(name.lower())
    values = []
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, 1 << 28))
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for fields in reader:
                if not any(x.strip() for x in fields):
                    continue
                value = fields[index].strip() if index < len(fields) else ""
                if not value:
                    raise DataError(f"{path}: line {reader.line_num}: data.group: column {columns[index]!r} is empty; "
                                    "every row needs its subject")
                values.append(value)
    finally:
        csv.field_size_limit(old_limit)
    if len(values) != rows:  # the parsers above accepted the file, so this would be a bug, not a user error
        raise ValueError(f"{path}: {len(values)} subject values for {rows} rows")
    return values


def _read_header(path: Path) -> list[str]:
    """Column names from line 1; raises for an empty, non-text or header-less file, or missing columns."""
    try:
        with open(path, "rb") as f:
            raw = f.readline(_HEADER_LIMIT)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; expected a header line '{','.join(REQUIRED)}' "
                        "followed by one row per face")
    try:
        text = raw.decode("utf-8-sig")
        if "\x00" in text or (len(raw) >= _HEADER_LIMIT and not raw.endswith((b"\n", b"\r"))):
            raise ValueError("no text line ending in the first 64 KiB")
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: line 1: not a readable text file ({e}); expected a FER2013 CSV with "
                        f"header '{','.join(REQUIRED)}'") from e
    names = [n.strip() for n in next(csv.reader([text.rstrip("\r\n")]), [])]
    lower = [n.lower() for n in names]
    missing = [c for c in REQUIRED if c.lower() not in lower]
    if missing:
        raise DataError(f"{path}: line 1: missing column(s) {', '.join(repr(m) for m in missing)}; the header has "
                        f"{', '.join(repr(n) for n in names)} (expected {', '.join(REQUIRED)})")
    return names


def _column_index(columns: list[str]) -> dict[str, int]:
    lower = [n.lower() for n in columns]
    return {c: lower.index(c.lower()) for c in REQUIRED}


# ----------------------------------------------------------------------------------------------- fast path

def _fast_parse(path: Path, columns: list[str], num_classes: int = len(CLASSES)):
    """(labels, splits, flat pixels, side), or None when anything is off (the exact path then reports it)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    index = _column_index(columns)
    # Our own column names, so duplicate or odd header names cannot confuse pyarrow.
    names = [f"c{i}" for i in range(len(columns))]
    wanted = {c: names[i] for c, i in index.items()}
    table = pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(column_names=names, skip_rows=1, block_size=1 << 24),
        parse_options=pcsv.ParseOptions(newlines_in_values=False),
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in wanted.values()},
                                            include_columns=list(wanted.values())),
    )
    n = table.num_rows
    if n == 0:
        return None
    label_text = pc.utf8_trim_whitespace(table[wanted["emotion"]])
    if not pc.all(pc.match_substring_regex(label_text, r"^[0-9]{1,3}$")).as_py():
        return None  # pyarrow's cast would take '0x3'; the exact path says what is wrong.
    labels = pc.cast(label_text, pa.int64()).to_numpy()
    if labels.min() < 0 or labels.max() >= num_classes:
        return None
    usage = pc.index_in(pc.utf8_trim_whitespace(table[wanted["Usage"]]), value_set=pa.array(list(USAGES)))
    if usage.null_count:
        return None
    splits = usage.to_numpy().astype(np.uint8)

    # Splitting and casting 80 M pixel strings is the slow part; pyarrow releases the GIL, so chunks run in parallel.
    chunks = table[wanted["pixels"]].chunks
    with ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 1)) as pool:
        parsed = list(pool.map(_parse_pixel_chunk, chunks))
    if any(p is None for p in parsed):
        return None
    lengths = np.concatenate([p[0] for p in parsed])
    count = int(lengths[0])
    side = math.isqrt(count)
    if count == 0 or side * side != count or (lengths != count).any():
        return None
    pixels = np.concatenate([p[1] for p in parsed])
    return labels, splits, pixels, side


def _parse_pixel_chunk(chunk):
    """(pixel count per row, flat uint8 pixels) for one pyarrow string chunk, or None if it is not clean."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # Only digits and single spaces may pass: pyarrow's integer cast alone would accept e.g. '0x1f'.
    offsets = np.frombuffer(chunk.buffers()[1], np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
    data = np.frombuffer(chunk.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    if not (((data - np.uint8(48)) < 10) | (data == 32)).all():
        return None
    tokens = pc.split_pattern(chunk, " ")
    try:
        values = pc.cast(pc.list_flatten(tokens), pa.uint8())  # Fails on '' (double space) and on > 255.
    except pa.ArrowInvalid:
        return None
    return pc.list_value_length(tokens).to_numpy(), values.to_numpy()


# ---------------------------------------------------------------------------------------------- exact path

def _exact_parse(path: Path, columns: list[str], names: tuple[str, ...] = CLASSES):
    """Row-by-row reading that raises a DataError naming the first bad line; returns what _fast_parse returns."""
    index = _column_index(columns)
    rows = []  # (line number, label text, usage text, uint8 pixels or the problem with them, pixel count)
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, 1 << 28))  # Rows of large faces exceed csv's 128 KiB default.
    try:
        with open(path, "rb") as f:
            reader = csv.reader(_decoded_lines(f, path))
            try:
                next(reader)  # The header, already checked.
                for fields in reader:
                    if not any(x.strip() for x in fields):
                        continue  # Blank lines are allowed, as pyarrow allows them.
                    line = reader.line_num
                    if len(fields) != len(columns):
                        raise DataError(f"{path}: line {line}: expected {len(columns)} comma-separated fields as "
                                        f"in the header, found {len(fields)}")
                    pixels, count = _parse_pixels(fields[index["pixels"]])
                    rows.append((line, fields[index["emotion"]], fields[index["Usage"]], pixels, count))
            except csv.Error as e:
                raise DataError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from e
    finally:
        csv.field_size_limit(old_limit)
    if not rows:
        raise DataError(f"{path}: no data rows after the header on line 1; expected one row per face")

    count = _expected_pixel_count(path, rows)
    side = math.isqrt(count)
    labels = np.empty(len(rows), np.int64)
    splits = np.empty(len(rows), np.uint8)
    pixels = np.empty((len(rows), count), np.uint8)
    for i, (line, label, usage, values, n) in enumerate(rows):
        where = f"{path}: line {line}"
        try:
            labels[i] = _int(label)
        except ValueError:
            raise DataError(f"{where}: emotion {label!r} is not {_label_hint(names)}") from None
        if not 0 <= labels[i] < len(names):
            raise DataError(f"{where}: emotion {label.strip()} is out of range; expected {_label_hint(names)}")
        if usage.strip() not in USAGES:
            raise DataError(f"{where}: Usage {usage!r} is unknown; expected one of {', '.join(USAGES)}")
        splits[i] = USAGES[usage.strip()]
        if isinstance(values, str):
            raise DataError(f"{where}: {values}")
        if n != count:
            raise DataError(f"{where}: expected {count} pixels ({side}x{side}) like the other rows, found {n}")
        pixels[i] = values
    return labels, splits, pixels.reshape(-1), side


_CLEAN_PIXELS = re.compile(r"[0-9]{1,3}(?:\s+[0-9]{1,3})*")


def _parse_pixels(text: str) -> tuple[np.ndarray | str, int]:
    """(uint8 values, count) for a pixel string, or (what is wrong with it, count)."""
    text = text.strip()
    if _CLEAN_PIXELS.fullmatch(text):
        # Exact once the characters are known to be digits and whitespace, and ~20x faster than int() per token.
        values = np.fromstring(text, dtype=np.int64, sep=" ")
        if values.max() <= 255:
            return values.astype(np.uint8), len(values)
    tokens = text.split()
    for j, token in enumerate(tokens):
        try:
            value = _int(token)
        except ValueError:
            return f"pixel {j + 1} is {token!r}; expected an integer 0-255", len(tokens)
        if not 0 <= value <= 255:
            return f"pixel {j + 1} is {value}, outside 0-255", len(tokens)
    # Valid after all, just not in the fast pattern's shape: e.g. '0007', or an empty field.
    return np.array([_int(t) for t in tokens], dtype=np.uint8), len(tokens)


def _decoded_lines(f, path: Path):
    """The file's lines as text, raising a DataError with the line number on bytes that are not UTF-8."""
    for number, raw in enumerate(f, start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: line {number}: not readable text ({e}); expected a FER2013 CSV") from e
        yield text


def _int(text: str) -> int:
    """A plain decimal integer, optionally negative; rejects what int() would also take ('1_0', '+3', '٣')."""
    text = text.strip()
    digits = text[1:] if text.startswith("-") else text
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(text)
    return int(text)


def _expected_pixel_count(path: Path, rows) -> int:
    """The pixel count most rows have among square ones, so a single short row is the one reported."""
    counts = Counter(n for *_, n in rows)
    square = [(n, c) for c, n in counts.items() if c > 0 and math.isqrt(c) ** 2 == c]
    if not square:
        line, *_, n = rows[0]
        raise DataError(f"{path}: line {line}: expected a square number of pixels (48x48 = 2304 in FER2013), "
                        f"found {n}")
    return max(square)[1]


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((len(images), size, size), np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return out
