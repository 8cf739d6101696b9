"""The driver's results store: trial rows, epochs and artifacts in, Parquet tables out. Each flush writes what changed
since the last one as new immutable parts (fercore.results.parts) and commits them, every table at once, in the
folder's manifest (fercore.results.manifest): a trial's rows appear in every table together, or not at all."""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from fercore import faults
from fercore.labels import CLASSES
from fercore.atomic import fsync_dir, fsync_file
from fercore.results import freed
from fercore.results.manifest import (ATTACHMENTS, GRACE_S, PART_PREFIX, Manifest, commit, part_names,
                                      read_manifest)
from fercore.results.parts import (TEMP_PREFIX, TEMP_SUFFIX, PartedTable, merge_all, part_name,
                                   restore_interrupted_migration)
from fercore.results.rows import (CONFUSION, EMBEDDINGS, EPOCHS, GENERATORS, PER_CLASS, PREDICTIONS, SOURCES,
                                  TRIALS, GeneratorUse, per_class_rows, row_classes, scalars)

# Each table's key: the columns whose values name the rows that a trial recorded again replaces.
TABLE_KEYS = {TRIALS: ("trial_id",), EPOCHS: ("trial_id",), PER_CLASS: ("trial_id",),
              GENERATORS: ("generator_key",), CONFUSION: ("trial_id",), EMBEDDINGS: ("trial_id",),
              PREDICTIONS: ("trial_id",)}
GENERATOR_USE = ("trial_id", "generator_key", "generator_cache_hit")  # what a store loads of each trial row


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold FOLDER's lock (flock on the folder itself, dropped by the OS if the holder dies): one commit of its
    manifest at a time (the sweep's flushes, the end-of-sweep merge, `fersweep trial --storage`)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Transaction:
    """New part names for one commit, and the manifest it commits: the folder's sequence of part numbers goes on
    from the manifest's, and a random token keeps two writers' names apart even so."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.next_part = manifest.next_part

    def name(self, level: int) -> str:
        self.next_part += 1
        return part_name(self.next_part - 1, level, os.urandom(4).hex())

    def attachment_name(self, name: str, suffix: str) -> str:
        """A new file for attachment NAME, relative to the folder."""
        self.next_part += 1
        return f"{ATTACHMENTS}/{name}-{self.next_part - 1:08d}-{os.urandom(4).hex()}{suffix}"

    def committed(self, folder: Path, tables: dict[str, list[str]], dropped: list[str],
                  keep_garbage: bool = True, attachments: dict[str, str] | None = None) -> Manifest:
        """Commit TABLES (each table's parts) with DROPPED (table/part) as new garbage, and ATTACHMENTS (name ->
        file) in place of the attachments of the same names; returns the new manifest."""
        now = time.time()
        attached = {**self.manifest.attachments, **(attachments or {})}
        dropped = dropped + [old for name, old in self.manifest.attachments.items() if attached[name] != old]
        garbage = [(g, t) for g, t in self.manifest.garbage if keep_garbage] + [(d, now) for d in dropped]
        manifest = Manifest(self.manifest.version + 1, self.next_part, tables, garbage, attached)
        commit(folder, manifest)
        return manifest


def first_manifest(folder: Path) -> Manifest:
    """Commit the first manifest of a new folder, or of one from before manifests: it names what the folder holds now
    (every part of a table folder; a table's single file is read as it is), so that a flush killed before its commit
    leaves parts no manifest names, never parts a reader would take for committed ones."""
    tables = {name: part_names(folder / name) for name in TABLE_KEYS if (folder / name).is_dir()}
    return Transaction(Manifest()).committed(folder, tables, [])


def remove_garbage(folder: Path, manifest: Manifest, everything: bool = False) -> Manifest:
    """Remove the files MANIFEST dropped more than GRACE_S ago (EVERYTHING: all of them), and files in the tables'
    folders that no manifest names (parts of a flush that never committed; temporary files). Must run under
    folder_lock, where no flush is between writing parts and committing them. Returns the manifest to keep using;
    the removed garbage leaves it at the next commit."""
    now = time.time()
    expired = {g for g, t in manifest.garbage if everything or now - t >= GRACE_S}
    for g in expired:
        (folder / g).unlink(missing_ok=True)
    named = manifest.named()
    for table in [*manifest.tables, ATTACHMENTS]:
        path = folder / table
        if not path.is_dir():
            continue
        for name in os.listdir(path):
            orphan = (name.startswith(PART_PREFIX) or table == ATTACHMENTS) and f"{table}/{name}" not in named
            temporary = name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)
            if orphan or temporary:
                (path / name).unlink(missing_ok=True)
    manifest.garbage = [(g, t) for g, t in manifest.garbage if g not in expired]
    return manifest


class ResultsStore:
    """The Parquet tables of one sweep; a store made on an existing folder (a resumed sweep) loads where each table's
    rows are, so that a trial recorded again replaces its rows in every table.

    Memory per trial: its id, a key per table and, for a trial that used a generator, its key; every row stays on
    disk once flushed. trial_rows() reads them back (the sweep's summary and Pareto step, at its end).
    """

    def __init__(self, folder: Path, after_flush: Callable[[], None] | None = None):
        self.folder = Path(folder)
        self.after_flush = after_flush  # called once the tables are committed: fercore.sweep.storage uploads them
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tables = {name: PartedTable(self.folder / name, keys, []) for name, keys in TABLE_KEYS.items()}
        self._attached: dict[str, tuple[bytes, str]] = {}  # name -> (data, file suffix), for the next commit
        with folder_lock(self.folder):
            self._load()
        self._ids: dict[str, None] = {}  # every trial recorded, in the order of its first record
        self._generators = GeneratorUse(lookup=self.trial_row)
        for row in self.tables[TRIALS].read(columns=GENERATOR_USE).to_pylist():
            self._ids[row["trial_id"]] = None
            self._generators.update(row, whole=False)
        self._generators.changed.clear()

    def _load(self) -> None:
        """What the folder has committed (staged rows stay staged); leftovers of a flush that never committed go."""
        manifest = read_manifest(self.folder)
        for name in TABLE_KEYS:
            restore_interrupted_migration(self.folder / name, manifest is not None and name in manifest.tables)
        if manifest is None:
            manifest = first_manifest(self.folder)
        self.manifest = remove_garbage(self.folder, manifest)
        for name, table in self.tables.items():
            table.load(manifest.tables.get(name, []))

    def add_epochs(self, trial_id: str, epochs: list[dict[str, Any]]) -> None:
        """The trial's epochs, all of them (a trial recorded again replaces its epochs as a whole): one key per trial,
        so the store's memory per trial does not grow with its epochs."""
        self.tables[EPOCHS].put((trial_id,), [{"trial_id": trial_id, **scalars(m)} for m in epochs])

    def add_trial(self, row: dict[str, Any]) -> None:
        row = {"trial_id": row["trial_id"], **scalars(row)}
        trial_id = row["trial_id"]
        self._generators.update(row)
        self._ids[trial_id] = None
        self.tables[TRIALS].put((trial_id,), [row])
        self.tables[PER_CLASS].put((trial_id,), per_class_rows(row))

    def trial_ids(self) -> list[str]:
        """Every recorded trial's id (committed or staged), in the order of its first record."""
        return list(self._ids)

    def trial_rows(self, columns: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Every recorded trial's row, staged ones over committed ones, in the order of trial_ids(); read from disk
        (each with every column of the table, None where it has no value), of COLUMNS only (with trial_id) if
        given."""
        if columns is not None:
            columns = ("trial_id", *columns)
        rows = {r["trial_id"]: r for r in self.tables[TRIALS].read(columns).to_pylist()}
        for (trial_id,), staged in self.tables[TRIALS].pending().items():
            rows[trial_id] = staged[0] if columns is None else {k: v for k, v in staged[0].items() if k in columns}
        return [rows[t] for t in self._ids]

    def trial_row(self, trial_id: str) -> dict[str, Any]:
        """One trial's row (its staged one, else as committed)."""
        return self.tables[TRIALS].rows_of((trial_id,))[0]

    def add_artifacts(self, trial_id: str, artifacts: dict[str, Any]) -> None:
        """The trial's test confusion matrix (rows true, columns predicted), embedding points and per-image test
        predictions, when it has them."""
        # The data set's classes, which the class ids of these artifacts index (FER2013's for an older trial).
        classes = artifacts.get("classes")
        if not classes:
            classes = row_classes(self.trial_row(trial_id) if trial_id in self._ids else {})
        classes = tuple(classes)
        if artifacts.get("predictions") is not None:
            self.tables[PREDICTIONS].put((trial_id,), predictions_table(trial_id, artifacts["predictions"], classes))
        if "confusion" in artifacts:
            matrix = np.asarray(artifacts["confusion"])
            self.tables[CONFUSION].put((trial_id,), [
                {"trial_id": trial_id, "true": classes[i], "predicted": classes[j], "count": int(matrix[i, j])}
                for i in range(matrix.shape[0]) for j in range(matrix.shape[1])])
        points = artifacts.get("embedding")
        if points is not None and len(points.get("x", ())):
            n = len(points["x"])
            self.tables[EMBEDDINGS].put((trial_id,), pa.table({
                "trial_id": pa.array([trial_id] * n, pa.string()),
                "source": pa.array(np.asarray(SOURCES, dtype=object)[np.asarray(points["source"], dtype=int)],
                                   pa.string()),
                "class": pa.array(np.asarray(classes, dtype=object)[np.asarray(points["label"], dtype=int)],
                                  pa.string()),
                "x": pa.array(np.asarray(points["x"], dtype=np.float64)),
                "y": pa.array(np.asarray(points["y"], dtype=np.float64))}))

    @property
    def dirty(self) -> bool:
        """Whether anything is staged that the next flush would commit."""
        return bool(self._attached) or any(t.changed for t in self.tables.values()) or bool(self._generators.changed)

    def attach(self, name: str, data: bytes, suffix: str = "") -> None:
        """Commit DATA as attachment NAME with the next flush, together with the rows staged by then (replacing the
        attachment of that name the last commit named); read back as manifest.attachment(folder, NAME)."""
        self._attached[name] = (data, suffix)

    def flush(self) -> None:
        """Write what changed since the last flush as new parts and commit them, every table in one manifest with
        the attachments given since; then call after_flush. On failure (a full disk) nothing is committed, and the
        rows and attachments stay staged for the next flush."""
        for key, row in self._generators.take_changed():
            self.tables[GENERATORS].put((key,), [row] if row is not None else [])
        if not self.dirty and set(TABLE_KEYS) <= set(self.manifest.tables):
            return  # nothing to commit, and every table is readable (its parts, maybe none, are named)
        with folder_lock(self.folder):
            on_disk = read_manifest(self.folder)
            if (on_disk.version if on_disk else 0) != self.manifest.version:
                self._load()  # another writer committed (`fersweep trial --storage` into this folder)
            self._commit_staged()
        freed.give_back()  # a driver that lives for days does not keep its largest commit's memory
        if self.after_flush is not None:
            self.after_flush()

    def _commit_staged(self) -> None:
        transaction = Transaction(self.manifest)
        staged, attached = {}, {}
        try:
            for name, table in self.tables.items():
                staged[name] = table.stage(transaction.name)
                faults.point("flush-between-tables")
            for name, (data, suffix) in self._attached.items():
                attached[name] = transaction.attachment_name(name, suffix)
                _write_synced(self.folder / attached[name], data)
            faults.point("flush-before-commit")
            tables = {name: (s.parts if s is not None else table.parts) for (name, table), s
                      in zip(self.tables.items(), staged.values())}
            dropped = [f"{name}/{p}" for name, s in staged.items() if s is not None for p in s.dropped]
            manifest = transaction.committed(self.folder, tables, dropped, attachments=attached)
        except BaseException:
            for name, s in staged.items():
                self.tables[name].discard(s)
            for rel in attached.values():
                (self.folder / rel).unlink(missing_ok=True)
            raise
        self._attached.clear()
        for name, s in staged.items():
            self.tables[name].accept(s)
        faults.point("flush-after-commit")
        self.manifest = remove_garbage(self.folder, manifest)

    def compact(self) -> list[str]:
        """compact() this store's folder (its tables then read where their rows now are)."""
        merged = compact(self.folder)
        with folder_lock(self.folder):
            self._load()
        return merged


def _write_synced(path: Path, data: bytes) -> None:
    """A new file, its data and its folder entry on disk before the manifest that names it is committed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    fsync_file(path)
    fsync_dir(path.parent)


TRIAL_MODEL = "trial"  # predictions.parquet's model of a trial's own rows (and of rows written before the column)


def predictions_table(trial_id: str, predictions: dict[str, Any], classes: tuple[str, ...] = CLASSES) -> pa.Table:
    """A trial's rows of predictions.parquet, from its artifacts["predictions"] ({"index": test index, "face_id":
    the image's id in the whole data set (absent from older trials' artifacts: null), "true" and
    "predicted": class ids, "proba": n x classes, and under "paired" the "predicted" and "proba" of each model it was
    compared against}): trial_id, model ("trial" for its own rows; "baseline", "control", "subset" for the compared
    models', on the same test images), index, face_id, true, predicted (class names), and p_<class>, each class's
    probability, so two trials, or a trial and its baseline or controls, are compared image by image (paired) after
    the sweep.

    The model column is always there, so every part written now has one schema; parts of an older folder, written
    before it, grow it (fercore.results.parts, as null: read as "trial")."""
    index = np.asarray(predictions["index"], dtype=np.int64)
    face_id = predictions.get("face_id")
    face_id = pa.array(np.asarray(face_id, dtype=np.int64)) if face_id is not None else pa.nulls(len(index), pa.int64())
    models = {TRIAL_MODEL: predictions, **(predictions.get("paired") or {})}
    return pa.concat_tables([_model_rows(trial_id, model, index, face_id, predictions["true"], p["predicted"],
                                         p["proba"], classes) for model, p in models.items()])


def _model_rows(trial_id: str, model: str, index: np.ndarray, face_id: pa.Array, true: Any, predicted: Any,
                proba: Any, classes: tuple[str, ...]) -> pa.Table:
    proba = np.asarray(proba, dtype=np.float32).reshape(len(index), -1)
    if proba.shape[1] > len(classes):
        raise ValueError(f"predictions: {proba.shape[1]} class probabilities per image, but there are "
                         f"{len(classes)} classes")
    names = np.asarray(classes, dtype=object)
    return pa.table({
        "trial_id": pa.array([trial_id] * len(index), pa.string()),
        "model": pa.array([model] * len(index), pa.string()),
        "index": pa.array(index),
        "face_id": face_id,
        "true": pa.array(names[np.asarray(true, dtype=int)], pa.string()),
        "predicted": pa.array(names[np.asarray(predicted, dtype=int)], pa.string()),
        **{f"p_{c}": pa.array(proba[:, i]) for i, c in enumerate(classes[:proba.shape[1]])}})


def compact(folder: str | Path) -> list[str]:
    """Merge each table's parts into one (streamed, in their order: trials as committed) and remove every file no
    manifest names, so that any Parquet reader given the folder reads each row once. Called when a sweep ends.
    Returns the tables it merged. Readers of the manifest meanwhile see the old parts or the merged one, never both."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    with folder_lock(folder):
        manifest = read_manifest(folder)
        if manifest is None:  # a folder from before manifests
            for name in TABLE_KEYS:
                restore_interrupted_migration(folder / name, False)
            if not any((folder / name).is_dir() for name in TABLE_KEYS):
                return []
            manifest = first_manifest(folder)
        transaction = Transaction(manifest)
        tables, dropped, merged = dict(manifest.tables), [], []
        try:
            for name, parts in manifest.tables.items():
                done = merge_all(folder / name, parts, transaction.name)
                if done is not None:
                    tables[name] = [done[0]]
                    dropped += [f"{name}/{p}" for p in done[1]]
                    merged.append(name)
            faults.point("compact-before-commit")
            if merged:
                manifest = transaction.committed(folder, tables, dropped)
        except BaseException:
            for name in merged:
                (folder / name / tables[name][0]).unlink(missing_ok=True)
            raise
        faults.point("compact-after-commit")
        manifest = remove_garbage(folder, manifest, everything=True)
        if manifest.version and read_manifest(folder).garbage:
            Transaction(manifest).committed(folder, manifest.tables, [], keep_garbage=False)
        fsync_dir(folder)
    return merged
