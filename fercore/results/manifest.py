"""The commit record of a results folder: manifest.json names, for every table, the Parquet parts that hold its rows
now. Parts are immutable and uniquely named; a flush writes its new parts first (each synced to disk), then commits
by replacing manifest.json whole (written beside it, synced, renamed, the folder synced). So:

- a trial's rows in every table appear together or not at all: one flush adds them to one manifest;
- a reader that takes the files the manifest names never sees a row twice or a half written trial, also while the
  parts are merged: a merge writes the merged part, then commits the manifest that names it instead of its inputs;
- a driver killed at any point leaves the last committed manifest, and its parts, as they were. Parts it wrote and
  never committed are orphans: the next writer removes them.

Parts a commit stops naming are kept GRACE_S seconds more (the manifest's `garbage`), so a reader that took the files
of the previous manifest can finish; then removed. When a sweep ends every table is merged into one part and all
garbage goes, so that any Parquet reader given the folder itself (pd.read_parquet("results/x/trials.parquet")) reads
each row once. During a sweep, read through the manifest (table_files, read_table; docs/results-tables.md shows
pandas, pyarrow, DuckDB and Polars).

A commit may also name attachments: whole files that must change together with the rows (the sweep layer's snapshot
of Ray Tune's state, which must know every trial that has a row). Each is written under attachments/ with a new name
and replaces the one the previous manifest named, which becomes garbage like a dropped part.

A folder written before the manifest (a table as a folder of parts, or one file) has every part committed; its next
flush writes the first manifest.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from fercore.atomic import fsync_dir
from fercore.errors import UserError

MANIFEST = "manifest.json"
FORMAT = "fercore-results-1"
GRACE_S = 60.0  # how long a part no manifest names any more stays for readers of an older manifest
PART_PREFIX = "part-"
ATTACHMENTS = "attachments"  # the folder of the files a manifest attaches (never a table: no .parquet suffix)


@dataclass
class Manifest:
    version: int = 0  # 0: no manifest written yet
    next_part: int = 0  # the sequence number the next part's name takes
    tables: dict[str, list[str]] = field(default_factory=dict)  # table -> its parts' names, in row order
    garbage: list[tuple[str, float]] = field(default_factory=list)  # (table/part, when the manifest dropped it)
    attachments: dict[str, str] = field(default_factory=dict)  # name -> its file, relative to the folder

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": self.version, "next_part": self.next_part,
                           "tables": self.tables, "garbage": [list(g) for g in self.garbage],
                           "attachments": self.attachments}, indent=1)

    def named(self) -> set[str]:
        """Every file (table/part, attachments/file) this manifest names, as a table's part, as an attachment or as
        garbage not yet removed."""
        return ({f"{t}/{p}" for t, parts in self.tables.items() for p in parts} | {g for g, _ in self.garbage}
                | set(self.attachments.values()))

    def attachment(self, folder: str | Path, name: str) -> Path | None:
        """The file this manifest attaches as NAME in results folder FOLDER, or None."""
        rel = self.attachments.get(name)
        return Path(folder) / rel if rel else None


def read_manifest(folder: str | Path) -> Manifest | None:
    """FOLDER's committed manifest, or None when it has none (a folder written before manifests, or no flush yet)."""
    path = Path(folder) / MANIFEST
    try:
        return manifest_from(path.read_bytes(), path)
    except FileNotFoundError:
        return None


def manifest_from(data: bytes, path: str | Path = MANIFEST) -> Manifest:
    """The manifest whose JSON is DATA (read from PATH, named in errors)."""
    try:
        raw = json.loads(data)
    except ValueError as e:  # it is only ever replaced whole, so this is damage from outside
        raise UserError(f"{path}: not a readable results manifest ({e}); expected JSON written by fercore") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UserError(f"{path}: not a fercore results manifest (expected \"format\": \"{FORMAT}\")")
    attachments = {str(k): str(v) for k, v in raw.get("attachments", {}).items()}
    for name, rel in attachments.items():
        folder, _, file = rel.partition("/")
        if folder != ATTACHMENTS or not file or "/" in file or "\\" in file or file.startswith("."):
            raise UserError(f"{path}: attachment {name!r} is {rel!r}; expected {ATTACHMENTS}/<file name>")
    return Manifest(int(raw["version"]), int(raw["next_part"]), {t: list(p) for t, p in raw["tables"].items()},
                    [(g, float(t)) for g, t in raw.get("garbage", [])], attachments)


def commit(folder: str | Path, manifest: Manifest) -> None:
    """Replace FOLDER's manifest with MANIFEST: written beside it, synced, renamed over it, the folder synced."""
    folder = Path(folder)
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    fsync_dir(folder)


def part_names(folder: str | Path) -> list[str]:
    """The Parquet part files in a table's folder, sorted by name (committed or not)."""
    try:
        return sorted(n for n in os.listdir(folder) if n.startswith(PART_PREFIX) and n.endswith(".parquet"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def table_files(folder: str | Path, table: str, manifest: Manifest | None = None) -> list[Path]:
    """The files that hold TABLE's rows in results folder FOLDER now, in row order: the manifest's parts, or (a folder
    written before manifests) every part of the table's folder, or the table's single file. [] when absent."""
    folder = Path(folder)
    path = folder / table
    if path.is_file():  # one file: from before parts, or put there by hand after the sweep (no parts to name)
        return [path]
    manifest = manifest if manifest is not None else read_manifest(folder)
    if manifest is not None:
        return [path / p for p in manifest.tables.get(table, [])]
    return [path / p for p in part_names(path)]


def read_table(folder: str | Path, table: str, columns: list[str] | None = None) -> pa.Table | None:
    """TABLE of results folder FOLDER as committed now (None when the folder has no such table). Read through the
    manifest, so a sweep writing meanwhile shows each trial once; taken again if a part went between reading the
    manifest and opening it (a reader slower than GRACE_S)."""
    for attempt in range(3):
        manifest = read_manifest(folder)
        if manifest is None and not (Path(folder) / table).exists():
            return None
        if manifest is not None and table not in manifest.tables and not (Path(folder) / table).is_file():
            return None
        files = table_files(folder, table, manifest)
        try:
            return _read_files(files, columns)
        except FileNotFoundError:
            if attempt == 2:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _read_files(files: list[Path], columns: list[str] | None) -> pa.Table:
    if not files:
        return pa.table({})
    schemas = [ds.dataset(str(f), format="parquet").schema for f in files]
    schema = schemas[0]
    for s in schemas[1:]:  # parts share one schema; a folder from before may not (a rewrite it never finished)
        if not s.equals(schema):
            schema = pa.unify_schemas([schema, s], promote_options="permissive")
    dataset = ds.dataset([str(f) for f in files], format="parquet", schema=schema)
    return dataset.to_table(columns=[c for c in columns if c in schema.names] if columns is not None else None)


def count_rows(folder: str | Path, table: str) -> int:
    """How many rows TABLE holds as committed now (0 when absent)."""
    files = table_files(folder, table)
    return ds.dataset([str(f) for f in files], format="parquet").count_rows() if files else 0
