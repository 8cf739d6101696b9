"""One result table as a folder of Parquet parts, so that adding a trial's rows costs the same at the 10,000th trial
as at the first, and any Parquet reader takes the folder for one table:

    results/<sweep>/trials.parquet/part-00000000.parquet, part-00000001.parquet, ...

pyarrow (pq.read_table(folder)), pandas (pd.read_parquet(folder)) and DuckDB (SELECT * FROM 'folder') read it as
one data set. They take the columns from one part (pyarrow the first, DuckDB every part by position), so every part
of a table holds the same columns with the same types, the table's schema: a row that brings a new column, or a
wider type (a column null so far, an integer column that gets a fraction), rewrites every part with the grown
schema, once (new columns appear in the first few trials, so this stays rare).

New rows go to the last part (the tail), rewritten whole with them until it holds PART_CELLS cells; then a new part
starts. A row is keyed (a trial id; a trial id and an epoch), and a key put again replaces its rows where they are,
in the part that holds them. Every part is written beside its name (a hidden temporary file, which readers skip)
and renamed over it, so a reader sees each part old or new, never half written, and a key's rows in exactly one
part. Only compact() merges parts, and so removes files.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fercore.atomic import atomic_write
from fercore.results.rows import union_keys

# A tail takes new rows while it holds fewer cells (rows x columns) than this. Rewriting it costs about as much as
# the fixed cost of writing a part (a footer entry per column) up to here: 13 trials' 1,400 embedding points, 300
# trial rows of 200 columns, 2,000 epochs.
PART_CELLS = 65_536
PART_PREFIX = "part-"
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"  # pyarrow and DuckDB skip hidden files; fercore.sweep.storage skips *.tmp

Key = tuple[Hashable, ...]


def write_table_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts that may differ in keys) as one Parquet file, replacing PATH only when complete."""
    table = rows_to_table(rows)
    atomic_write(path, lambda f: pq.write_table(table, f))


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a table: a column per key in order of first appearance, each typed by pyarrow from its values."""
    return pa.table({c: pa.array([row.get(c) for row in rows]) for c in union_keys(rows)}) if rows else pa.table({})


def part_name(number: int) -> str:
    return f"{PART_PREFIX}{number:08d}.parquet"


def part_names(folder: Path) -> list[str]:
    """The parts of the table in FOLDER, in order."""
    return sorted(n for n in os.listdir(folder) if n.startswith(PART_PREFIX) and n.endswith(".parquet"))


def grown(schema: pa.Schema, other: pa.Schema) -> pa.Schema:
    """SCHEMA with OTHER's new columns after its own, and a type wide enough for both where they differ (null and
    int64 become double in a double column); pyarrow's ArrowTypeError where no type holds both (text and numbers)."""
    if schema.equals(other):
        return schema
    return pa.unify_schemas([schema, other], promote_options="permissive")


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """TABLE with exactly SCHEMA's columns, in its order: absent ones null, others cast to the schema's type."""
    if table.schema.equals(schema):
        return table
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table[field.name]
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_part(folder: Path, name: str, table: pa.Table | Callable[[str], None]) -> None:
    """Write TABLE as part NAME of FOLDER (or call TABLE with the path to write): to a hidden temporary file there,
    then renamed over the part."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX + name, suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        table(tmp) if callable(table) else pq.write_table(table, tmp)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PartedTable:
    """One table of a results folder, written by one driver. `put` stages a key's rows (no rows: the key's rows go);
    `write` writes what was staged, and must run under fercore.results.store.folder_lock, as compact() does."""

    def __init__(self, path: Path, key_columns: tuple[str, ...]):
        self.path = Path(path)
        self.key_columns = key_columns
        self._pending: dict[Key, list[dict[str, Any]] | pa.Table] = {}
        self.load()

    def load(self) -> None:
        """What the folder holds: its parts, their schema, and which part holds each key."""
        self.schema = pa.schema([])
        self.parts: list[str] = []
        self.index: dict[Key, str] = {}
        self._stale: set[str] = set()  # parts whose schema is not the table's (a rewrite was interrupted)
        self._tail: pa.Table | None = None  # the last part's rows, once read
        self._legacy = self.path.is_file()  # one Parquet file, as fercore wrote tables before it wrote parts
        if self._legacy:
            self._tail = pq.read_table(self.path)
            self.schema = self._tail.schema
            self._index(self._tail, "")
        elif self.path.is_dir():
            schemas = {}
            for name in part_names(self.path):
                part = pq.ParquetFile(self.path / name)
                schemas[name] = part.schema_arrow
                self._index(part.read(columns=list(self.key_columns)) if part.metadata.num_rows else
                            pa.table({}), name)
                self.parts.append(name)
            for schema in schemas.values():
                self.schema = grown(self.schema, schema)
            self._stale = {name for name, schema in schemas.items() if not schema.equals(self.schema)}
        self._seen = self._stamp()

    def _index(self, keys: pa.Table, part: str) -> None:
        if not keys.num_rows:
            return  # (fercore wrote an empty table as a file with no columns)
        for key in zip(*(keys[c].to_pylist() for c in self.key_columns)):
            self.index[key] = part

    def _stamp(self) -> tuple[int, bool] | None:
        """What shows that someone else (compact() in `fersweep report`) changed the folder since this table did."""
        try:
            return os.stat(self.path).st_mtime_ns, bool(self.parts) and (self.path / self.parts[-1]).exists()
        except FileNotFoundError:
            return None

    def read(self) -> pa.Table:
        """Every row, as readers see the folder (parts in order)."""
        if self._legacy:
            return self._tail
        return pa.concat_tables([self.schema.empty_table()] +
                                [conform(pq.read_table(self.path / p), self.schema) for p in self.parts])

    def put(self, key: Key, rows: list[dict[str, Any]] | pa.Table) -> None:
        self._pending[key] = rows

    def write(self) -> None:
        try:
            self._write_pending()
        except BaseException:
            self._seen = None  # what the folder holds now is read again at the next write; the rows stay staged
            raise

    def _write_pending(self) -> None:
        if self._seen is None or self._stamp() != self._seen:
            self.load()
        if self._legacy:
            self._migrate()
        self.path.mkdir(parents=True, exist_ok=True)  # an empty folder is an empty table to every reader
        batch, rows_of = self._batch()
        schema = grown(self.schema, batch.schema)
        if not schema.equals(self.schema):
            self.schema = schema
            self._stale.update(self.parts)
        batch = conform(batch, schema)
        replaced: dict[str, set[Key]] = {}
        new: list[Key] = []
        for key in self._pending:
            if key in self.index:
                replaced.setdefault(self.index[key], set()).add(key)
            elif key in rows_of:
                new.append(key)
        # The first part first: pyarrow takes the table's columns from it.
        for part in sorted(self._stale | set(replaced)):
            table = conform(self._read_part(part), schema)
            if part in replaced:
                table = self._splice(table, replaced[part], batch, rows_of)
                for key in replaced[part] - set(rows_of):
                    del self.index[key]
            self._write(part, table)
        self._stale.clear()
        if new:
            rows = batch.take([i for key in new for i in rows_of[key]])
            tail = self._read_part(self.parts[-1]) if self.parts else None
            if tail is not None and tail.num_rows * tail.num_columns < PART_CELLS:
                # One chunk per column: the writer pays per chunk (44 rows of 200 columns: 48 ms in 44 chunks, 10 ms).
                rows = pa.concat_tables([tail, rows]).combine_chunks()
            else:
                self.parts.append(part_name(int(self.parts[-1][len(PART_PREFIX):-8]) + 1 if self.parts else 0))
            self._write(self.parts[-1], rows)
            for key in new:
                self.index[key] = self.parts[-1]
        self._pending.clear()
        self._seen = self._stamp()

    def _batch(self) -> tuple[pa.Table, dict[Key, list[int]]]:
        """The staged rows as one table, and the row numbers of each key's rows in it."""
        dicts = [row for rows in self._pending.values() if isinstance(rows, list) for row in rows]
        tables = [rows for rows in self._pending.values() if isinstance(rows, pa.Table) and rows.num_rows]
        if dicts:
            tables.insert(0, rows_to_table(dicts))
        if not tables:
            return self.schema.empty_table(), {}
        batch = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        rows_of: dict[Key, list[int]] = {}
        for i, key in enumerate(zip(*(batch[c].to_pylist() for c in self.key_columns))):
            rows_of.setdefault(key, []).append(i)
        return batch, rows_of

    def _splice(self, table: pa.Table, keys: set[Key], batch: pa.Table, rows_of: dict[Key, list[int]]) -> pa.Table:
        """TABLE with the rows of KEYS replaced by their rows in BATCH, where the first of the old ones was."""
        pieces, start, done = [], 0, set()
        for i, key in enumerate(zip(*(table[c].to_pylist() for c in self.key_columns))):
            if key not in keys:
                continue
            pieces.append(table.slice(start, i - start))
            start = i + 1
            if key not in done and key in rows_of:
                pieces.append(batch.take(rows_of[key]))
            done.add(key)
        pieces.append(table.slice(start))
        return pa.concat_tables(pieces)

    def _read_part(self, part: str) -> pa.Table:
        if part == self.parts[-1] and self._tail is not None:
            return self._tail
        table = pq.read_table(self.path / part)
        if part == self.parts[-1]:
            self._tail = table
        return table

    def _write(self, part: str, table: pa.Table) -> None:
        write_part(self.path, part, table)
        if part == self.parts[-1]:
            self._tail = table

    def _migrate(self) -> None:
        """Make the single file of an earlier fercore the folder's first part. The file stays until the folder is
        complete; restore_interrupted_migration puts it back if a stop came between the two renames."""
        table = self._tail
        folder = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f"{TEMP_PREFIX}{self.path.name}",
                                       suffix=TEMP_SUFFIX))
        self.parts = [part_name(0)] if table.num_rows else []  # (an empty table is an empty folder)
        if self.parts:
            write_part(folder, self.parts[0], table)
        old = self.path.with_name(f"{TEMP_PREFIX}{self.path.name}.legacy{TEMP_SUFFIX}")
        os.replace(self.path, old)
        os.rename(folder, self.path)
        old.unlink()
        self._legacy = False
        self.index = dict.fromkeys(self.index, self.parts[0]) if self.parts else {}
        self._tail = table if self.parts else None


def restore_interrupted_migration(path: Path) -> None:
    """A stop between PartedTable._migrate's renames left the table's file under its temporary name: put it back."""
    old = path.with_name(f"{TEMP_PREFIX}{path.name}.legacy{TEMP_SUFFIX}")
    if not path.exists() and old.exists():
        os.replace(old, path)


COMPACT_ROWS = 1 << 20  # rows per row group of a compacted part, taken and written one group at a time


# The columns an order needs, and the rows' positions in that order (None: as they are).
Order = tuple[tuple[str, ...], Callable[[pa.Table], np.ndarray | None]]


def compact_table(path: Path, order: Order | None = None) -> bool:
    """Merge the parts of the table in folder PATH into one, its rows in ORDER (the columns it reads, and a function
    of those columns giving the merged rows' positions in the order wanted; None keeps the parts' order), and remove
    stray temporary files. True when it rewrote the table; a table of one part, in order, is left as it is.

    The merged table is held in memory, text columns dictionary-encoded (14 million embedding points: 0.4 GB of
    Arrow buffers), and written back as text a row group at a time."""
    restore_interrupted_migration(path)
    if not path.is_dir():
        return False  # absent, or a single file already
    for name in os.listdir(path):
        if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
            (path / name).unlink(missing_ok=True)
    names = part_names(path)
    if not names:
        return False
    schemas = [pq.read_schema(path / n) for n in names]
    schema = pa.schema([])
    for s in schemas:
        schema = grown(schema, s)
    text = [f.name for f in schema if pa.types.is_string(f.type)]
    encoded = pa.schema([f.with_type(pa.dictionary(pa.int32(), f.type)) if f.name in text else f for f in schema])

    def read(columns: list[str] | None = None) -> pa.Table:
        wanted = encoded if columns is None else pa.schema([encoded.field(c) for c in columns])
        return pa.concat_tables([conform(pq.read_table(path / n, columns=[c for c in wanted.names if c in s.names],
                                                       read_dictionary=text), wanted)
                                 for n, s in zip(names, schemas)])

    indices = None
    if order is not None and set(order[0]) <= set(schema.names):
        indices = order[1](read(list(order[0])))
    in_order = indices is None or bool(np.array_equal(indices, np.arange(len(indices))))
    if len(names) == 1 and in_order and schemas[0].equals(schema):
        return False
    table = read()

    def write(where: str) -> None:
        with pq.ParquetWriter(where, schema) as writer:
            for start in range(0, max(table.num_rows, 1), COMPACT_ROWS):
                rows = table.slice(start, COMPACT_ROWS) if in_order else table.take(indices[start:start + COMPACT_ROWS])
                writer.write_table(conform(rows, schema))

    merged = part_name(int(names[-1][len(PART_PREFIX):-8]) + 1)
    write_part(path, merged, write)
    for name in names:
        (path / name).unlink()
    return True


def by_runs(column: pa.ChunkedArray) -> np.ndarray | None:
    """The positions of COLUMN's values in a stable sort (None when they are in order), for a column whose equal
    values mostly stand together (a trial's rows): sorts its runs of equal values rather than its rows (14 million
    rows: 10,000 runs)."""
    starts, values, offset = [], [], 0
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        codes = chunk.indices.to_numpy(zero_copy_only=False)
        if len(codes):
            at = np.concatenate([[0], np.flatnonzero(np.diff(codes)) + 1])
            starts.append(at + offset)
            values += chunk.dictionary.take(pa.array(codes[at])).to_pylist()
        offset += len(chunk)
    runs = sorted(range(len(values)), key=values.__getitem__)  # stable: equal values keep their order
    if runs == list(range(len(values))):
        return None  # in order already (a compacted table): no 14 million positions to hold
    starts = np.concatenate(starts)
    ends = np.append(starts[1:], offset)
    return np.concatenate([np.arange(starts[i], ends[i]) for i in runs])
