"""One result table as immutable Parquet parts that fercore.results.manifest commits, so that adding a trial's rows
costs the same at the 10,000th trial as at the first, and the number of files grows with trials / 100:

    results/<sweep>/trials.parquet/part-00000012-0-1a2b3c4d.parquet  (sequence number, level, a random token)

A flush's new rows become one new part of level 0. When the table ends in FANOUT parts of one level below
MAX_LEVEL, they are merged into one part of the next level (streamed, a batch at a time): a part holds the rows of
1, FANOUT or FANOUT ** MAX_LEVEL flushes, so a table has at most (FANOUT - 1) * MAX_LEVEL smaller parts beside its
parts of FANOUT ** MAX_LEVEL flushes (100: one per hundred trials), and each row is rewritten at most MAX_LEVEL times.
merge_all (when a sweep ends) makes it one part.

A row is keyed (a trial id; a trial id and an epoch): a key put again replaces its rows where they are, in a new copy
of the part that held them. Every part of a table has the table's schema (pyarrow and DuckDB take the columns from
one part): a row that brings a new column or a wider type (null so far, an integer column that gets a fraction)
copies every part with the grown schema, once; new columns appear in the first few trials, so this stays rare.

Nothing here changes what readers see: stage() writes new files and says which parts the table would hold; the
store commits that in the manifest, then tells each table accept() (or discard() on failure).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable

import pyarrow as pa
import pyarrow.parquet as pq

from fercore import faults
from fercore.atomic import atomic_write, fsync_file
from fercore.results.manifest import PART_PREFIX, part_names
from fercore.results.rows import union_keys

FANOUT = 10
MAX_LEVEL = 2  # parts of FANOUT ** MAX_LEVEL flushes are merged no further until the sweep ends
BATCH_ROWS = 65_536  # rows read and written at a time when parts are merged or copied
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"  # pyarrow and DuckDB skip hidden files; fercore.sweep.storage skips *.tmp

Key = tuple[Hashable, ...]
Namer = Callable[[int], str]  # level -> a new part's unique name


def write_table_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts that may differ in keys) as one Parquet file, replacing PATH only when complete."""
    table = rows_to_table(rows)
    atomic_write(path, lambda f: pq.write_table(table, f))


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a table: a column per key in order of first appearance, each typed by pyarrow from its values."""
    return pa.table({c: pa.array([row.get(c) for row in rows]) for c in union_keys(rows)}) if rows else pa.table({})


def part_name(number: int, level: int, token: str) -> str:
    return f"{PART_PREFIX}{number:08d}-{level}-{token}.parquet"


def level_of(name: str) -> int:
    """A part's level from its name; a part named before levels (part-00000000.parquet) is merged no further."""
    fields = name[len(PART_PREFIX):-len(".parquet")].split("-")
    return int(fields[1]) if len(fields) == 3 and fields[1].isdigit() else MAX_LEVEL


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
    for f in schema:
        if f.name in table.column_names:
            column = table[f.name]
            columns.append(column if column.type == f.type else column.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_part(path: Path, pieces, schema: pa.Schema) -> None:
    """Write the tables PIECES yields (each conformed to SCHEMA) as one Parquet file at PATH, synced to disk. PATH is
    a new name no manifest holds yet, so no reader looks at it while it is written."""
    try:
        faults.fail("write-part")
        with pq.ParquetWriter(path, schema) as writer:
            for piece in pieces:
                if piece.num_rows:
                    writer.write_table(conform(piece, schema))
        fsync_file(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def batches(path: Path, columns: list[str] | None = None):
    """The rows of part PATH, BATCH_ROWS at a time (a merge holds one batch, not the part)."""
    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield pa.Table.from_batches([batch])


_GONE = object()


class Overlay:
    """Changes to a dict, kept apart from it until applied: a flush stages where keys go without copying the table's
    index (10,000 keys at 10,000 trials), so its cost does not grow with the sweep."""

    def __init__(self, base: dict):
        self.base, self.changes, self.cleared = base, {}, False

    def get(self, key, default=None):
        value = self.changes.get(key, _GONE if self.cleared else self.base.get(key, default))
        return default if value is _GONE else value

    def __contains__(self, key) -> bool:
        return self.get(key, _GONE) is not _GONE

    def __getitem__(self, key):
        value = self.get(key, _GONE)
        if value is _GONE:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value) -> None:
        self.changes[key] = value

    def pop(self, key, default=None):
        value = self.get(key, default)
        self.changes[key] = _GONE
        return value

    def clear(self) -> None:
        self.changes, self.cleared = {}, True

    def applied(self) -> dict:
        """The base dict with the changes made to it (in place)."""
        if self.cleared:
            self.base.clear()
        for key, value in self.changes.items():
            if value is _GONE:
                self.base.pop(key, None)
            else:
                self.base[key] = value
        return self.base


@dataclass
class Staged:
    """What a table would be after a flush: its parts, where each key is, its schema; the files written for it and
    the parts it stops naming."""

    parts: list[str]
    index: Overlay  # key -> part
    keys_in: Overlay  # part -> its keys
    schema: pa.Schema
    written: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class PartedTable:
    """One table of a results folder. `put` stages a key's rows (no rows: the key's rows go); `stage` writes what was
    staged as new parts, `accept` makes them the table's once the manifest names them."""

    def __init__(self, path: Path, key_columns: tuple[str, ...], parts: list[str] | None = None):
        self.path = Path(path)
        self.key_columns = key_columns
        self._pending: dict[Key, list[dict[str, Any]] | pa.Table] = {}
        self.load(parts)

    def load(self, parts: list[str] | None) -> None:
        """Read where each key is in PARTS (the manifest's; None: a folder from before manifests, every part it holds,
        or the table's single file). Staged rows stay staged."""
        self.schema = pa.schema([])
        self.parts: list[str] = []
        self.index: dict[Key, str] = {}
        self.keys_in: dict[str, list[Key]] = {}
        self._stale: set[str] = set()  # parts whose schema is not the table's (a rewrite was interrupted)
        # Some key's rows are in several parts (an earlier fercore put a trial's epochs one at a time): the next
        # flush merges the parts into one first, so that a key put again is replaced in one place.
        self._split = False
        self.legacy_file = self.path.is_file()  # one Parquet file, as fercore wrote tables before parts
        if self.legacy_file:
            table = pq.read_table(self.path)
            self.schema = table.schema
            self._index(table, "")
            return
        self.parts = list(part_names(self.path) if parts is None else parts)
        schemas = {}
        for name in self.parts:
            with pq.ParquetFile(self.path / name) as f:
                schemas[name] = f.schema_arrow
                keys = f.read(columns=list(self.key_columns)) if f.metadata.num_rows else pa.table({})
            self._index(keys, name)
        for schema in schemas.values():
            self.schema = grown(self.schema, schema)
        self._stale = {name for name, schema in schemas.items() if not schema.equals(self.schema)}

    def _index(self, keys: pa.Table, part: str) -> None:
        found = list(zip(*(keys[c].to_pylist() for c in self.key_columns))) if keys.num_rows else []
        self.keys_in[part] = list(dict.fromkeys(found))
        for key in self.keys_in[part]:
            self._split |= self.index.setdefault(key, part) != part
            self.index[key] = part

    def read(self, columns: tuple[str, ...] | None = None) -> pa.Table:
        """Every committed row, in order; of COLUMNS only (those the table has), if given."""
        schema = self.schema if columns is None else pa.schema([f for f in self.schema if f.name in columns])
        names = None if columns is None else schema.names
        if self.legacy_file:
            return pq.read_table(self.path, columns=names)

        def part(name: str) -> pa.Table:
            path = self.path / name
            # A part may lack some of the table's columns (fercore.results.parts's schema growth was interrupted).
            return conform(pq.read_table(path, columns=None if names is None else [
                n for n in pq.read_schema(path).names if n in names]), schema)
        return pa.concat_tables([schema.empty_table()] + [part(name) for name in self.parts])

    def pending(self) -> dict[Key, list[dict[str, Any]] | pa.Table]:
        """The rows put since the last commit, by key."""
        return dict(self._pending)

    def rows_of(self, key: Key) -> list[dict[str, Any]]:
        """KEY's rows: as put, if not committed yet; else read from the part that holds them."""
        if key in self._pending:
            rows = self._pending[key]
            return rows.to_pylist() if isinstance(rows, pa.Table) else list(rows)
        part = self.index.get(key)
        if part is None:
            raise KeyError(f"{self.path}: no rows of {key}")
        where = [(c, "=", v) for c, v in zip(self.key_columns, key)]
        return pq.read_table(self.path / part if part else self.path, filters=where).to_pylist()

    def put(self, key: Key, rows: list[dict[str, Any]] | pa.Table) -> None:
        self._pending[key] = rows

    @property
    def changed(self) -> bool:
        return bool(self._pending) or self.legacy_file or bool(self._stale) or self._split

    def stage(self, new_name: Namer) -> Staged | None:
        """Write the staged rows as new parts (and the copies and merges they call for); None when nothing changed.
        The table itself is unchanged until accept()."""
        if not self.changed:
            return None
        s = Staged(list(self.parts), Overlay(self.index), Overlay(self.keys_in), self.schema)
        try:
            if self.legacy_file:
                self._stage_legacy(s, new_name)
            if self._split:
                self._stage_merged(s, new_name)
            self._stage_rows(s, new_name)
            self._merge_tail(s, new_name)
        except BaseException:
            self.discard(s)
            raise
        return s

    def _stage_legacy(self, s: Staged, new_name: Namer) -> None:
        """The single file of an earlier fercore, as the first part of a folder: the file moves aside (hidden), the
        folder takes its name, the file is copied in as a part; the manifest then drops the hidden file."""
        table = pq.read_table(self.path)
        aside = legacy_aside(self.path)
        os.replace(self.path, aside)
        self.path.mkdir()
        s.parts = []
        s.keys_in.clear()
        s.index.clear()
        if table.num_rows:
            name = new_name(MAX_LEVEL)
            write_part(self.path / name, [table], table.schema)
            s.written.append(name)
            s.parts.append(name)
            self._restage_keys(s, name, table)
        s.dropped.append(f"../{aside.name}")

    def _stage_merged(self, s: Staged, new_name: Namer) -> None:
        """Every part as one (streamed): each key's rows in one part."""
        merged = merge_all(self.path, s.parts, new_name)
        if merged is None:
            return
        name, replaced = merged
        s.written.append(name)
        s.dropped += replaced
        s.schema = pq.read_schema(self.path / name)
        s.parts = [name]
        _move_keys(s, replaced, name)

    def _restage_keys(self, s: Staged, part: str, table: pa.Table) -> None:
        keys = list(dict.fromkeys(zip(*(table[c].to_pylist() for c in self.key_columns))))
        s.keys_in[part] = keys
        for key in keys:
            s.index[key] = part

    def _stage_rows(self, s: Staged, new_name: Namer) -> None:
        self.path.mkdir(parents=True, exist_ok=True)  # an empty folder is an empty table to every reader
        batch, rows_of = self._batch()
        schema = grown(s.schema, batch.schema)
        rewrite = set(self._stale) & set(s.parts)
        if not schema.equals(s.schema):
            rewrite.update(s.parts)
        s.schema = schema
        replaced: dict[str, set[Key]] = {}
        new: list[Key] = []
        for key in self._pending:
            if key in s.index:
                replaced.setdefault(s.index[key], set()).add(key)
            elif key in rows_of:
                new.append(key)
        for part in sorted(rewrite | set(replaced), key=s.parts.index):
            name = new_name(level_of(part))
            if part in replaced:
                table = self._splice(conform(pq.read_table(self.path / part), schema), replaced[part], batch, rows_of)
                write_part(self.path / name, [table], schema)
            else:
                write_part(self.path / name, batches(self.path / part), schema)
            s.written.append(name)
            s.parts[s.parts.index(part)] = name
            s.dropped.append(part)
            keys = [k for k in s.keys_in.pop(part) if not (k in replaced.get(part, ()) and k not in rows_of)]
            s.keys_in[name] = keys
            for key in replaced.get(part, ()):
                s.index.pop(key, None)
            for key in keys:
                s.index[key] = name
        if new:
            name = new_name(0)
            write_part(self.path / name, [batch.take([i for key in new for i in rows_of[key]])], schema)
            s.written.append(name)
            s.parts.append(name)
            s.keys_in[name] = new
            for key in new:
                s.index[key] = name

    def _merge_tail(self, s: Staged, new_name: Namer) -> None:
        """While the table ends in FANOUT parts of one level below MAX_LEVEL, merge them into one of the next."""
        while len(s.parts) >= FANOUT:
            tail = s.parts[-FANOUT:]
            level = level_of(tail[0])
            if level >= MAX_LEVEL or any(level_of(p) != level for p in tail):
                return
            name = new_name(level + 1)
            write_part(self.path / name, (piece for p in tail for piece in batches(self.path / p)), s.schema)
            s.written.append(name)
            s.parts[-FANOUT:] = [name]
            _move_keys(s, tail, name)
            s.dropped += [p for p in tail if p not in s.written]
            for p in tail:  # a part this flush wrote and merged at once is never named: remove it now
                if p in s.written:
                    s.written.remove(p)
                    (self.path / p).unlink(missing_ok=True)

    def accept(self, s: Staged | None) -> None:
        """The manifest now names S's parts: they are the table's; the staged rows are written."""
        if s is not None:
            self.parts, self.schema = s.parts, s.schema
            self.index, self.keys_in = s.index.applied(), s.keys_in.applied()
            self.legacy_file = False
            self._stale = set()
            self._split = False
        self._pending.clear()

    def discard(self, s: Staged | None) -> None:
        """A flush failed before its commit: remove the files it wrote (the rows stay staged for the next flush)."""
        if s is None:
            return
        for name in s.written:
            (self.path / name).unlink(missing_ok=True)
        if self.legacy_file is False:
            return
        aside = legacy_aside(self.path)
        if aside.exists() and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
            os.replace(aside, self.path)

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
                pieces.append(conform(batch.take(rows_of[key]), table.schema))
            done.add(key)
        pieces.append(table.slice(start))
        return pa.concat_tables(pieces)


def _move_keys(s: Staged, parts: list[str], name: str) -> None:
    """The keys of PARTS are in part NAME now (that merged them); a key that was in several of them is listed once."""
    s.keys_in[name] = list(dict.fromkeys(k for p in parts for k in s.keys_in.pop(p)))
    for key in s.keys_in[name]:
        s.index[key] = name


def legacy_aside(path: Path) -> Path:
    """Where a table's single file (from before parts) waits while the table becomes a folder."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}.legacy{TEMP_SUFFIX}")


def restore_interrupted_migration(path: Path, committed: bool) -> None:
    """A stop while a single-file table became a folder: put the file back unless the manifest already names the
    folder's part (COMMITTED), in which case the file was copied and goes."""
    aside = legacy_aside(path)
    if not aside.exists():
        return
    if committed:
        aside.unlink()
        return
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    os.replace(aside, path)


def merge_all(path: Path, parts: list[str], new_name: Namer) -> tuple[str, list[str]] | None:
    """Merge the table's PARTS (in folder PATH) into one new part, streamed a batch at a time, in their order; None
    when it is one part already. Returns the new part's name and the parts it replaces."""
    if len(parts) <= 1:
        return None
    schema = pa.schema([])
    for p in parts:
        schema = grown(schema, pq.read_schema(path / p))
    name = new_name(MAX_LEVEL + 1)
    write_part(path / name, (piece for p in parts for piece in batches(path / p)), schema)
    return name, list(parts)
